package wsframe

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
	"unicode/utf8"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; f.Add adds the RFC 6455
// section 5.7 examples on top.

func FuzzDecodeHeader(f *testing.F) {
	for _, fr := range rfcFrames() {
		f.Add(fr.wire[:min(len(fr.wire), 20)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := DecodeHeader(data)
		if err == ErrShortHeader {
			if n != 0 || h != (Header{}) {
				t.Fatalf(
					"short header with n %d, h %+v",
					n, h)
			}
			if len(data) >= 2 && len(data) >= HeaderSize(data[0], data[1]) {
				t.Fatalf(
					"ErrShortHeader with %d bytes for a %d-byte header",
					len(data), HeaderSize(data[0], data[1]))
			}
			return
		}
		if n != HeaderSize(data[0], data[1]) || n > len(data) || n < 2 || n > MaxHeaderSize {
			t.Fatalf(
				"n = %d for % x",
				n, data)
		}
		// ReadHeader agrees, and leaves the rest unread.
		var buf [MaxHeaderSize]byte
		r := bytes.NewReader(data)
		rh, rerr := ReadHeader(r, &buf)
		if rh != h || rerr != err || r.Len() != len(data)-n {
			t.Fatalf(
				"ReadHeader = %+v, %v, %d left; DecodeHeader = %+v, %v, %d",
				rh, rerr, r.Len(), h, err, len(data)-n)
		}
		// Validation never panics.
		var s MessageState
		_ = h.Check(RoleServer, 0)
		_ = h.Check(RoleClient, Rsv1)
		_ = s.Next(h)

		switch err {
		case nil:
			// Minimal form: encoding gives back the same bytes.
			if h.Size() != n {
				t.Fatalf(
					"Size() = %d, decoded %d bytes",
					h.Size(), n)
			}
			var out [MaxHeaderSize]byte
			if m := h.Encode(out[:]); m != n || !bytes.Equal(out[:m], data[:n]) {
				t.Fatalf(
					"Encode = % x, decoded from % x",
					out[:m], data[:n])
			}
		case ErrNonMinimalLength:
			// The minimal encoding is shorter and decodes cleanly.
			if h.Size() >= n {
				t.Fatalf(
					"non-minimal header of %d bytes, minimal Size() %d",
					n, h.Size())
			}
			var out [MaxHeaderSize]byte
			m := h.Encode(out[:])
			h2, m2, err2 := DecodeHeader(out[:m])
			if err2 != nil || h2 != h || m2 != m {
				t.Fatalf(
					"re-encoded header decodes to %+v, %d, %v",
					h2, m2, err2)
			}
		case ErrLengthMSB:
			if data[1]&0x7F != 127 || data[2]&0x80 == 0 || h.Length != 0 {
				t.Fatalf(
					"ErrLengthMSB for % x, Length %d",
					data[:n], h.Length)
			}
		default:
			t.Fatalf(
				"unexpected error %v",
				err)
		}

		// A whole frame round trip: AppendFrame then DecodeHeader.
		if err == nil && h.Length <= 1<<10 {
			payload := bytes.Repeat([]byte{0xA5}, int(h.Length))
			wire := AppendFrame(nil, h, payload)
			h3, m3, err3 := DecodeHeader(wire)
			if err3 != nil || h3 != h || m3 != n {
				t.Fatalf(
					"AppendFrame round trip = %+v, %d, %v",
					h3, m3, err3)
			}
			got := wire[m3:]
			if h.Masked {
				Mask(h.Mask, 0, got)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("AppendFrame payload round trip differs")
			}
		}
	})
}

// FuzzReadHeaderEOF checks the io.EOF / io.ErrUnexpectedEOF contract on every
// prefix of the input.
func FuzzReadHeaderEOF(f *testing.F) {
	f.Add([]byte{0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		var buf [MaxHeaderSize]byte
		for i := 0; i <= len(data) && i <= MaxHeaderSize; i++ {
			_, err := ReadHeader(bytes.NewReader(data[:i]), &buf)
			switch {
			case i == 0:
				if err != io.EOF {
					t.Fatalf(
						"empty input: %v",
						err)
				}
			case i < 2 || i < HeaderSize(data[0], data[1]):
				if err != io.ErrUnexpectedEOF {
					t.Fatalf(
						"%d of a header: %v",
						i, err)
				}
			}
		}
	})
}

func FuzzParseClosePayload(f *testing.F) {
	f.Add([]byte{0x03, 0xE8}, uint16(1000), "normal")
	f.Fuzz(func(t *testing.T, p []byte, code16 uint16, reason string) {
		code, r, err := ParseClosePayload(p)
		switch {
		case len(p) == 0:
			if code != CloseNoStatus || r != nil || err != nil {
				t.Fatalf(
					"empty: %d %q %v",
					code, r, err)
			}
		case len(p) == 1:
			if err != ErrClosePayloadLength {
				t.Fatalf(
					"length 1: %v",
					err)
			}
		case len(p) > MaxControlPayload:
			if err != ErrControlTooLong {
				t.Fatalf(
					"length %d: %v",
					len(p), err)
			}
		case !CloseCode(binary.BigEndian.Uint16(p)).ValidOnWire():
			if err != ErrInvalidCloseCode || code != CloseCode(binary.BigEndian.Uint16(p)) {
				t.Fatalf(
					"code %d: %v",
					code, err)
			}
		case !utf8.Valid(p[2:]):
			if err != ErrInvalidUTF8 {
				t.Fatalf(
					"reason %q: %v",
					p[2:], err)
			}
		default:
			if err != nil || !bytes.Equal(r, p[2:]) {
				t.Fatalf(
					"valid payload % x: %d %q %v",
					p, code, r, err)
			}
			// Encoding the parsed values gives the same bytes back.
			if out := AppendClosePayload(nil, code, string(r)); !bytes.Equal(out, p) {
				t.Fatalf(
					"AppendClosePayload(%d, %q) = % x, want % x",
					code, r, out, p)
			}
		}

		// Whatever the reason, AppendClosePayload builds a body that parses.
		c := CloseCode(code16)
		out := AppendClosePayload(nil, c, reason)
		if c == 0 || c == CloseNoStatus {
			if len(out) != 0 {
				t.Fatalf(
					"code %d appended % x",
					c, out)
			}
			return
		}
		if len(out) > MaxControlPayload || len(out) < 2 {
			t.Fatalf(
				"AppendClosePayload built %d bytes",
				len(out))
		}
		pc, pr, perr := ParseClosePayload(out)
		if pc != c || (c.ValidOnWire() && perr != nil) || (!c.ValidOnWire() && perr != ErrInvalidCloseCode) {
			t.Fatalf(
				"ParseClosePayload(AppendClosePayload(%d, %q)) = %d, %q, %v",
				c, reason, pc, pr, perr)
		}
		if utf8.ValidString(reason) && len(reason) <= MaxCloseReason && perr == nil && string(pr) != reason {
			t.Fatalf(
				"valid reason %q came back as %q",
				reason, pr)
		}
	})
}

func FuzzUTF8Validator(f *testing.F) {
	f.Add([]byte("κόσμε"), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		// Chunk sizes come from cuts, cycled; size 0 gives empty chunks.
		var chunks [][]byte
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(int(cuts[i%len(cuts)]%24), len(rest))
				if n == 0 && i > 4*len(data)+8 {
					n = len(rest) // no endless run of empty chunks
				}
			}
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		checkChunks(t, chunks)
	})
}

func FuzzMask(f *testing.F) {
	f.Add(uint32(0x3d21fa37), uint32(0), uint(0), []byte("Hello"))
	f.Fuzz(func(t *testing.T, key, key2 uint32, pos uint, data []byte) {
		var k, k2 [4]byte
		binary.LittleEndian.PutUint32(k[:], key)
		binary.LittleEndian.PutUint32(k2[:], key2)
		p := int(pos >> 1) // non-negative

		got := bytes.Clone(data)
		want := bytes.Clone(data)
		if next := Mask(k, p, got); next != p+len(data) {
			t.Fatalf(
				"Mask returned %d, want %d",
				next, p+len(data))
		}
		maskBytes(k, p, want)
		if !bytes.Equal(got, want) {
			t.Fatalf(
				"Mask(%x, %d) = % x, want % x",
				k, p, got, want)
		}
		// Remask from k to k2 equals unmasking with k then masking with k2;
		// want then holds data masked with k2.
		if next := Remask(k, k2, p, got); next != p+len(data) {
			t.Fatalf(
				"Remask returned %d",
				next)
		}
		maskBytes(k, p, want)
		maskBytes(k2, p, want)
		if !bytes.Equal(got, want) {
			t.Fatalf(
				"Remask(%x, %x, %d) = % x, want % x",
				k, k2, p, got, want)
		}
		// Chunked at the point key2 picks, carrying the position.
		if len(data) > 0 {
			cut := int(key2 % uint32(len(data)+1))
			c := bytes.Clone(data)
			Mask(k2, Mask(k2, p, c[:cut]), c[cut:])
			if !bytes.Equal(c, want) {
				t.Fatalf(
					"chunked Mask at %d differs",
					cut)
			}
		}
	})
}
