package wsframe

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// utf8Samples holds valid and invalid inputs, including every boundary of
// RFC 3629 section 4 and Markus Kuhn's stress test classics.
var utf8Samples = []string{
	"",
	"Hello",
	"κόσμε",
	"Hello-µ@ßöäüàá-UTF-8!!",
	"\x00\x7f",
	"\u0080\u07ff\u0800\uffff\U00010000\U0010ffff",
	"\ud7ff\ue000\ufffd",
	"😀 emoji 😀 and ascii " + strings.Repeat("x", 40) + " € end",
	strings.Repeat("abcdefgh", 9) + "é",
	strings.Repeat("é", 30),
	// Invalid.
	"\x80",
	"\xbf",
	"a\x80b",
	"\xc0\x80",             // overlong NUL
	"\xc1\xbf",             // overlong
	"\xc2",                 // truncated
	"\xc2\x41",             // bad continuation
	"\xe0\x80\x80",         // overlong
	"\xe0\x9f\xbf",         // overlong
	"\xe0\xa0",             // truncated
	"\xed\xa0\x80",         // surrogate U+D800
	"\xed\xbf\xbf",         // surrogate U+DFFF
	"\xed\x9f",             // truncated
	"\xef\xbf",             // truncated
	"\xf0\x80\x80\x80",     // overlong
	"\xf0\x8f\xbf\xbf",     // overlong
	"\xf0\x90\x80",         // truncated
	"\xf4\x90\x80\x80",     // over U+10FFFF
	"\xf4\x8f\xbf",         // truncated
	"\xf5\x80\x80\x80",     // never a lead
	"\xf8\x88\x80\x80\x80", // 5-byte form
	"\xfe",                 // never a lead
	"\xff",                 // never a lead
	"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", // Autobahn 6.x surrogate
	strings.Repeat("x", 17) + "\xe2\x82",
	strings.Repeat("x", 17) + "\x80" + strings.Repeat("y", 20),
	"€" + "\xe2\x82",
	"\xe2\x82\xac\xe2",
	"\xf0\x9f\x98",
	"\xf0\x9f\x98\x80\x80",
	strings.Repeat("é", 10) + "\xc3" + strings.Repeat("a", 10),
}

// validPrefix reports whether b can be completed into valid UTF-8: b
// itself or b followed by 1 to 3 more bytes is valid. Only the second byte
// of a sequence has a range narrower than 0x80-0xBF, and each of those
// ranges (80-BF, A0-BF, 80-9F, 90-BF, 80-8F) holds 0x80, 0x90 or 0xA0, so
// trying those then 0x80 covers every completion.
func validPrefix(b []byte) bool {
	if utf8.Valid(b) {
		return true
	}
	var tail [3]byte
	for extra := 1; extra <= 3; extra++ {
		for _, c := range []byte{0x80, 0x90, 0xA0} {
			tail = [3]byte{c, 0x80, 0x80}
			if utf8.Valid(append(b[:len(b):len(b)], tail[:extra]...)) {
				return true
			}
		}
	}
	return false
}

// checkChunks feeds chunks to a validator and checks, after every chunk,
// that Write fails exactly when the input so far cannot be completed, and
// that Finish agrees with utf8.Valid of the whole input.
func checkChunks(t testing.TB, chunks [][]byte) {
	t.Helper()
	var v UTF8Validator
	var all []byte
	base := 0 // all[:base] is complete valid UTF-8: check only from there
	failed := false
	for i, c := range chunks {
		all = append(all, c...)
		err := v.Write(c)
		if failed {
			if err != ErrInvalidUTF8 {
				t.Fatalf(
					"chunk %d: Write after an error = %v, want ErrInvalidUTF8 (chunks %q)",
					i, err, chunks)
			}
			continue
		}
		wantErr := !validPrefix(all[base:])
		if !wantErr {
			// Move base to the start of the last, maybe incomplete, rune.
			for k := len(all) - 1; k >= base; k-- {
				if utf8.RuneStart(all[k]) {
					base = k
					break
				}
			}
		}
		if (err != nil) != wantErr || (err != nil && err != ErrInvalidUTF8) {
			t.Fatalf(
				"chunk %d: Write = %v, want error %v (chunks %q)",
				i, err, wantErr, chunks)
		}
		failed = err != nil
	}
	err := v.Finish()
	if want := utf8.Valid(all); (err == nil) != want {
		t.Fatalf(
			"Finish = %v, utf8.Valid = %v (chunks %q)",
			err, want, chunks)
	}
	if v != (UTF8Validator{}) {
		t.Fatalf(
			"Finish did not reset: %+v",
			v)
	}
}

func TestUTF8EverySplit(t *testing.T) {
	for _, s := range utf8Samples {
		b := []byte(s)
		checkChunks(t, [][]byte{b})
		for i := 0; i <= len(b); i++ {
			checkChunks(t, [][]byte{b[:i], b[i:]})
			for j := i; j <= len(b) && j <= i+5; j++ {
				checkChunks(t, [][]byte{b[:i], b[i:j], b[j:]})
			}
		}
		// One byte at a time, with empty chunks between.
		var chunks [][]byte
		for i := range b {
			chunks = append(chunks, b[i:i+1], nil)
		}
		checkChunks(t, chunks)
	}
}

// TestUTF8Immediate pins the "as soon as certain" contract on examples of
// the brief: an impossible prefix is an error on the chunk that makes it so.
func TestUTF8Immediate(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		errAt  int // index of the chunk whose Write fails; -1: only Finish fails; -2: no error
	}{
		{
			name:   "0xF5 at a chunk end",
			chunks: []string{"ok\xf5", "\x80\x80\x80"},
			errAt:  0,
		},
		{
			name:   "overlong 0xC0 at a chunk end",
			chunks: []string{"\xc0", "\x80"},
			errAt:  0,
		},
		{
			name:   "surrogate ED A0 split",
			chunks: []string{"abc\xed", "\xa0\x80"},
			errAt:  1,
		},
		{
			name:   "surrogate ED A0 in one chunk, cut",
			chunks: []string{"abc\xed\xa0"},
			errAt:  0,
		},
		{
			name:   "overlong E0 80 cut",
			chunks: []string{"\xe0\x80"},
			errAt:  0,
		},
		{
			name:   "over U+10FFFF F4 90 cut",
			chunks: []string{"\xf4", "\x90"},
			errAt:  1,
		},
		{
			name:   "4-byte rune over three chunks",
			chunks: []string{"\xf0", "\x9f\x98", "\x80!"},
			errAt:  -2,
		},
		{
			name:   "truncated at the message end",
			chunks: []string{"abc\xe2\x82"},
			errAt:  -1,
		},
		{
			name:   "ASCII after an incomplete sequence",
			chunks: []string{"\xe2\x82", "a"},
			errAt:  1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v UTF8Validator
			for i, c := range tc.chunks {
				err := v.Write([]byte(c))
				if wantErr := i >= tc.errAt && tc.errAt >= 0; (err != nil) != wantErr {
					t.Fatalf(
						"Write(chunk %d %q) = %v, want error %v",
						i, c, err, wantErr)
				}
			}
			err := v.Finish()
			if wantErr := tc.errAt != -2; (err != nil) != wantErr {
				t.Fatalf(
					"Finish = %v, want error %v",
					err, wantErr)
			}
		})
	}
}

func TestUTF8Reset(t *testing.T) {
	var v UTF8Validator
	if v.Write([]byte{0xff}) == nil {
		t.Fatal("0xff accepted")
	}
	v.Reset()
	if err := v.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	v.Write([]byte{0xe2})
	v.Reset()
	if err := v.Finish(); err != nil {
		t.Fatalf(
			"Finish after Reset = %v",
			err)
	}
}

// TestUTF8AllShortInputs checks the validator, in one chunk and split in
// two, on every input of up to 3 bytes (4 after a 4-byte lead) drawn from an alphabet covering each
// lead and continuation class, alone and after 13 bytes of ASCII.
func TestUTF8AllShortInputs(t *testing.T) {
	alphabet := []byte{0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF}
	pad := bytes.Repeat([]byte("p"), 13)
	var b []byte
	var rec func(depth int)
	rec = func(depth int) {
		for _, p := range [][]byte{nil, pad} {
			in := append(bytes.Clone(p), b...)
			in = append(in, "tail-ascii-bytes"[:len(p)]...)
			checkChunks(t, [][]byte{in})
			if len(b) > 1 {
				checkChunks(t, [][]byte{in[:len(p)+1], in[len(p)+1:]})
			}
		}
		// Four bytes only matter after a 4-byte lead; this keeps the
		// test fast under -race.
		if depth == 4 || (depth == 3 && b[0] < 0xF0) {
			return
		}
		for _, c := range alphabet {
			b = append(b, c)
			rec(depth + 1)
			b = b[:len(b)-1]
		}
	}
	rec(0)
}
