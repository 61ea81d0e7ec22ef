package wsframe

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// rfcFrame is one of the examples of RFC 6455 section 5.7: the header, the
// unmasked payload and the exact bytes on the wire.
type rfcFrame struct {
	name    string
	header  Header
	payload []byte
	wire    []byte
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func rfcFrames() []rfcFrame {
	hello := []byte("Hello")
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	p256 := seq(256)
	p64k := seq(65536)
	return []rfcFrame{
		{
			name:    "single-frame unmasked text",
			header:  Header{Fin: true, Opcode: OpText, Length: 5},
			payload: hello,
			wire:    []byte{0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f},
		},
		{
			name:    "single-frame masked text",
			header:  Header{Fin: true, Opcode: OpText, Masked: true, Mask: key, Length: 5},
			payload: hello,
			wire:    []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
		},
		{
			name:    "fragmented unmasked text, first",
			header:  Header{Opcode: OpText, Length: 3},
			payload: []byte("Hel"),
			wire:    []byte{0x01, 0x03, 0x48, 0x65, 0x6c},
		},
		{
			name:    "fragmented unmasked text, last",
			header:  Header{Fin: true, Opcode: OpContinuation, Length: 2},
			payload: []byte("lo"),
			wire:    []byte{0x80, 0x02, 0x6c, 0x6f},
		},
		{
			name:    "unmasked ping",
			header:  Header{Fin: true, Opcode: OpPing, Length: 5},
			payload: hello,
			wire:    []byte{0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f},
		},
		{
			name:    "masked pong",
			header:  Header{Fin: true, Opcode: OpPong, Masked: true, Mask: key, Length: 5},
			payload: hello,
			wire:    []byte{0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
		},
		{
			name:    "256 bytes binary, unmasked",
			header:  Header{Fin: true, Opcode: OpBinary, Length: 256},
			payload: p256,
			wire:    append([]byte{0x82, 0x7E, 0x01, 0x00}, p256...),
		},
		{
			name:    "64KiB binary, unmasked",
			header:  Header{Fin: true, Opcode: OpBinary, Length: 65536},
			payload: p64k,
			wire:    append([]byte{0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00}, p64k...),
		},
	}
}

func TestRFCExamplesEncode(t *testing.T) {
	for _, tc := range rfcFrames() {
		t.Run(tc.name, func(t *testing.T) {
			payload := bytes.Clone(tc.payload)
			got := AppendFrame(nil, tc.header, payload)
			if !bytes.Equal(got, tc.wire) {
				t.Fatalf(
					"AppendFrame = % x\nwant          % x",
					head(got), head(tc.wire))
			}
			if !bytes.Equal(payload, tc.payload) {
				t.Fatalf(
					"AppendFrame modified its payload argument: % x",
					head(payload))
			}
			hdrLen := len(tc.wire) - len(tc.payload)
			if n := tc.header.Size(); n != hdrLen {
				t.Fatalf(
					"Size() = %d, want %d",
					n, hdrLen)
			}
			var buf [MaxHeaderSize + 1]byte
			for i := range buf {
				buf[i] = 0xEE
			}
			n := tc.header.Encode(buf[:])
			if n != hdrLen || !bytes.Equal(buf[:n], tc.wire[:n]) {
				t.Fatalf(
					"Encode = %d, % x; want %d, % x",
					n, buf[:n], hdrLen, tc.wire[:hdrLen])
			}
			for i := n; i < len(buf); i++ {
				if buf[i] != 0xEE {
					t.Fatalf(
						"Encode wrote past its %d bytes at %d",
						n, i)
				}
			}
			// Appending to a non-empty dst keeps the prefix.
			pre := []byte("prefix")
			got = AppendFrame(pre, tc.header, tc.payload)
			if !bytes.Equal(got[:len(pre)], []byte("prefix")) || !bytes.Equal(got[len(pre):], tc.wire) {
				t.Fatalf(
					"AppendFrame(prefix) = % x",
					head(got))
			}
		})
	}
}

func TestRFCExamplesDecode(t *testing.T) {
	for _, tc := range rfcFrames() {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := DecodeHeader(tc.wire)
			if err != nil {
				t.Fatalf(
					"DecodeHeader: %v",
					err)
			}
			if h != tc.header || n != len(tc.wire)-len(tc.payload) {
				t.Fatalf(
					"DecodeHeader = %+v, %d\nwant            %+v, %d",
					h, n, tc.header, len(tc.wire)-len(tc.payload))
			}
			if n != HeaderSize(tc.wire[0], tc.wire[1]) {
				t.Fatalf(
					"HeaderSize = %d, want %d",
					HeaderSize(tc.wire[0], tc.wire[1]), n)
			}
			payload := bytes.Clone(tc.wire[n:])
			if h.Masked {
				Mask(h.Mask, 0, payload)
			}
			if !bytes.Equal(payload, tc.payload) {
				t.Fatalf(
					"payload = % x, want % x",
					head(payload), head(tc.payload))
			}

			// ReadHeader reads exactly the header, also one byte at a time.
			for _, r := range []io.Reader{
				bytes.NewReader(tc.wire),
				iotest.OneByteReader(bytes.NewReader(tc.wire)),
				iotest.DataErrReader(bytes.NewReader(tc.wire)),
			} {
				var buf [MaxHeaderSize]byte
				h2, err := ReadHeader(r, &buf)
				if err != nil || h2 != tc.header {
					t.Fatalf(
						"ReadHeader = %+v, %v; want %+v",
						h2, err, tc.header)
				}
				rest, _ := io.ReadAll(r)
				if !bytes.Equal(rest, tc.wire[n:]) {
					t.Fatalf(
						"ReadHeader consumed %d payload bytes",
						len(tc.wire)-n-len(rest))
				}
			}

			// Every strict prefix of the header is short.
			for i := 0; i < n; i++ {
				h, m, err := DecodeHeader(tc.wire[:i])
				if err != ErrShortHeader || m != 0 || h != (Header{}) {
					t.Fatalf(
						"DecodeHeader(%d of %d bytes) = %+v, %d, %v; want ErrShortHeader",
						i, n, h, m, err)
				}
			}
		})
	}
}

// TestRFCFragmentedMessage runs the "Hel" + "lo" example through a
// MessageState with a ping in between (RFC 6455 sections 5.4 and 5.7).
func TestRFCFragmentedMessage(t *testing.T) {
	wire := []byte{
		0x01, 0x03, 0x48, 0x65, 0x6c,
		0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f,
		0x80, 0x02, 0x6c, 0x6f,
	}
	var (
		s   MessageState
		v   UTF8Validator
		msg []byte
		buf [MaxHeaderSize]byte
	)
	r := bytes.NewReader(wire)
	for {
		h, err := ReadHeader(r, &buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Check(RoleClient, 0); err != nil {
			t.Fatalf(
				"Check(%+v) = %v",
				h, err)
		}
		if err := s.Next(h); err != nil {
			t.Fatalf(
				"Next(%+v) = %v",
				h, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatal(err)
		}
		if h.Opcode.IsControl() {
			if !s.InMessage() || string(p) != "Hello" {
				t.Fatalf(
					"ping %q, in message %v",
					p, s.InMessage())
			}
			continue
		}
		if err := v.Write(p); err != nil {
			t.Fatal(err)
		}
		msg = append(msg, p...)
	}
	if err := v.Finish(); err != nil {
		t.Fatal(err)
	}
	if string(msg) != "Hello" || s.InMessage() || s.Opcode() != OpText {
		t.Fatalf(
			"message %q, in message %v, opcode %v",
			msg, s.InMessage(), s.Opcode())
	}
}

func head(b []byte) []byte {
	if len(b) > 24 {
		return b[:24]
	}
	return b
}

func TestDecodeHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		h    Header
		n    int
		err  error
	}{
		{
			name: "empty",
			in:   nil,
			err:  ErrShortHeader,
		},
		{
			name: "one byte",
			in:   []byte{0x81},
			err:  ErrShortHeader,
		},
		{
			name: "16-bit length cut",
			in:   []byte{0x82, 0x7E, 0x01},
			err:  ErrShortHeader,
		},
		{
			name: "64-bit length cut",
			in:   []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0},
			err:  ErrShortHeader,
		},
		{
			name: "mask cut",
			in:   []byte{0x82, 0xFE, 0x01, 0x00, 1, 2, 3},
			err:  ErrShortHeader,
		},
		{
			name: "64-bit length MSB",
			in:   []byte{0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0},
			h:    Header{Fin: true, Opcode: OpBinary},
			n:    10,
			err:  ErrLengthMSB,
		},
		{
			name: "64-bit length all ones, masked",
			in:   []byte{0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4},
			h:    Header{Opcode: OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, 4}},
			n:    14,
			err:  ErrLengthMSB,
		},
		{
			name: "16-bit length 125",
			in:   []byte{0x82, 0x7E, 0x00, 0x7D},
			h:    Header{Fin: true, Opcode: OpBinary, Length: 125},
			n:    4,
			err:  ErrNonMinimalLength,
		},
		{
			name: "16-bit length 0, masked",
			in:   []byte{0x82, 0xFE, 0x00, 0x00, 9, 8, 7, 6},
			h:    Header{Fin: true, Opcode: OpBinary, Length: 0, Masked: true, Mask: [4]byte{9, 8, 7, 6}},
			n:    8,
			err:  ErrNonMinimalLength,
		},
		{
			name: "64-bit length 65535",
			in:   []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF},
			h:    Header{Fin: true, Opcode: OpBinary, Length: 65535},
			n:    10,
			err:  ErrNonMinimalLength,
		},
		{
			name: "64-bit length 5",
			in:   []byte{0x81, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5},
			h:    Header{Fin: true, Opcode: OpText, Length: 5},
			n:    10,
			err:  ErrNonMinimalLength,
		},
		{
			name: "16-bit length 126 is minimal",
			in:   []byte{0x82, 0x7E, 0x00, 0x7E},
			h:    Header{Fin: true, Opcode: OpBinary, Length: 126},
			n:    4,
		},
		{
			name: "64-bit length 65536 is minimal",
			in:   []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0},
			h:    Header{Fin: true, Opcode: OpBinary, Length: 65536},
			n:    10,
		},
		{
			name: "64-bit length max",
			in:   []byte{0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
			h:    Header{Fin: true, Opcode: OpBinary, Length: 1<<63 - 1},
			n:    10,
		},
		{
			name: "all RSV bits, reserved opcode: decoded, not checked",
			in:   []byte{0x7B, 0x00},
			h:    Header{Rsv: Rsv1 | Rsv2 | Rsv3, Opcode: 0xB},
			n:    2,
		},
		{
			name: "RSV1 only",
			in:   []byte{0xC1, 0x01, 'x'},
			h:    Header{Fin: true, Rsv: Rsv1, Opcode: OpText, Length: 1},
			n:    2,
		},
		{
			name: "RSV3 only",
			in:   []byte{0x91, 0x00},
			h:    Header{Fin: true, Rsv: Rsv3, Opcode: OpText},
			n:    2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := DecodeHeader(tc.in)
			if h != tc.h || n != tc.n || err != tc.err {
				t.Fatalf(
					"DecodeHeader(% x) = %+v, %d, %v\nwant %+v, %d, %v",
					tc.in, h, n, err, tc.h, tc.n, tc.err)
			}
			var buf [MaxHeaderSize]byte
			h, err = ReadHeader(bytes.NewReader(tc.in), &buf)
			want := tc.err
			switch tc.err {
			case ErrShortHeader:
				want = io.ErrUnexpectedEOF
				if len(tc.in) == 0 {
					want = io.EOF
				}
			}
			if err != want || (want == tc.err && h != tc.h) {
				t.Fatalf(
					"ReadHeader(% x) = %+v, %v; want %+v, %v",
					tc.in, h, err, tc.h, want)
			}
		})
	}
}

func TestReadHeaderError(t *testing.T) {
	boom := errors.New("boom")
	var buf [MaxHeaderSize]byte
	_, err := ReadHeader(iotest.ErrReader(boom), &buf)
	if err != boom {
		t.Fatalf(
			"ReadHeader = %v, want %v",
			err, boom)
	}
	r := io.MultiReader(bytes.NewReader([]byte{0x82, 0x7E}), iotest.ErrReader(boom))
	_, err = ReadHeader(r, &buf)
	if err != boom {
		t.Fatalf(
			"ReadHeader after 2 bytes = %v, want %v",
			err, boom)
	}
}

func TestHeaderEncodeLengths(t *testing.T) {
	tests := []struct {
		length int64
		wire   []byte
	}{
		{
			length: 0,
			wire:   []byte{0x82, 0x00},
		},
		{
			length: 125,
			wire:   []byte{0x82, 0x7D},
		},
		{
			length: 126,
			wire:   []byte{0x82, 0x7E, 0x00, 0x7E},
		},
		{
			length: 65535,
			wire:   []byte{0x82, 0x7E, 0xFF, 0xFF},
		},
		{
			length: 65536,
			wire:   []byte{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0},
		},
		{
			length: 1<<63 - 1,
			wire:   []byte{0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
		},
		{
			length: -1,
			wire:   []byte{0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
		},
	}
	for _, tc := range tests {
		for _, masked := range []bool{false, true} {
			h := Header{Fin: true, Opcode: OpBinary, Length: tc.length, Masked: masked, Mask: [4]byte{0xA, 0xB, 0xC, 0xD}}
			want := tc.wire
			if masked {
				want = append([]byte{want[0], want[1] | 0x80}, want[2:]...)
				want = append(want, 0xA, 0xB, 0xC, 0xD)
			}
			var buf [MaxHeaderSize]byte
			n := h.Encode(buf[:])
			if n != h.Size() || !bytes.Equal(buf[:n], want) {
				t.Fatalf(
					"Encode(%+v) = % x (Size %d), want % x",
					h, buf[:n], h.Size(), want)
			}
			got, m, err := DecodeHeader(buf[:n])
			if !masked {
				h.Mask = [4]byte{} // not encoded
			}
			if tc.length < 0 {
				if err != ErrLengthMSB {
					t.Fatalf(
						"DecodeHeader(negative length) = %v, want ErrLengthMSB",
						err)
				}
				continue
			}
			if err != nil || m != n || got != h {
				t.Fatalf(
					"DecodeHeader(Encode(%+v)) = %+v, %d, %v",
					h, got, m, err)
			}
		}
	}
}

func TestEncodePanicsOnShortBuffer(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Encode into a short buffer did not panic")
		}
	}()
	h := Header{Fin: true, Opcode: OpBinary, Length: 300}
	h.Encode(make([]byte, 3))
}

func TestEncodeTruncatesFields(t *testing.T) {
	h := Header{Fin: false, Rsv: 0xFF, Opcode: 0xF3, Length: 1}
	var buf [MaxHeaderSize]byte
	n := h.Encode(buf[:])
	if n != 2 || buf[0] != 0x73 || buf[1] != 0x01 {
		t.Fatalf(
			"Encode = % x",
			buf[:n])
	}
}

func TestHeaderSize(t *testing.T) {
	for b1 := 0; b1 < 256; b1++ {
		want := 2
		switch b1 & 0x7F {
		case 126:
			want = 4
		case 127:
			want = 10
		}
		if b1&0x80 != 0 {
			want += 4
		}
		for _, b0 := range []byte{0x00, 0x81, 0xFF} {
			if got := HeaderSize(b0, byte(b1)); got != want {
				t.Fatalf(
					"HeaderSize(%#x, %#x) = %d, want %d",
					b0, b1, got, want)
			}
		}
	}
}

func TestOpcode(t *testing.T) {
	names := map[Opcode]string{
		0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong",
	}
	for o := Opcode(0); o < 16; o++ {
		name, defined := names[o]
		if !defined {
			name = "reserved(" + string(rune('0'+o/10)) + string(rune('0'+o%10)) + ")"
			if o < 10 {
				name = "reserved(" + string(rune('0'+o)) + ")"
			}
		}
		if got := o.String(); got != name {
			t.Errorf(
				"Opcode(%d).String() = %q, want %q",
				o, got, name)
		}
		if got, want := o.IsControl(), o >= 8; got != want {
			t.Errorf(
				"Opcode(%d).IsControl() = %v",
				o, got)
		}
		if got, want := o.IsData(), o <= 2; got != want {
			t.Errorf(
				"Opcode(%d).IsData() = %v",
				o, got)
		}
		if got, want := o.IsReserved(), !defined; got != want {
			t.Errorf(
				"Opcode(%d).IsReserved() = %v",
				o, got)
		}
	}
	if !Opcode(0x10).IsReserved() || Opcode(0x10).String() != "reserved(16)" {
		t.Error("Opcode(16) is not reserved")
	}
}

func TestAllocs(t *testing.T) {
	wire := []byte{0x81, 0xFE, 0x01, 0x00, 1, 2, 3, 4}
	var buf [MaxHeaderSize]byte
	r := bytes.NewReader(wire)
	payload := make([]byte, 1000)
	closeBuf := make([]byte, 0, MaxControlPayload)
	text := []byte("héllo wörld, ascii and more ascii text 😀")
	var v UTF8Validator
	var s MessageState
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{
			name: "DecodeHeader",
			f:    func() { DecodeHeader(wire) },
		},
		{
			name: "Encode",
			f:    func() { Header{Masked: true, Length: 300}.Encode(buf[:]) },
		},
		{
			name: "ReadHeader",
			f: func() {
				r.Reset(wire)
				ReadHeader(r, &buf)
			},
		},
		{
			name: "Check+Next",
			f: func() {
				h := Header{Fin: true, Opcode: OpText, Masked: true}
				h.Check(RoleServer, 0)
				s.Next(h)
			},
		},
		{
			name: "Mask",
			f:    func() { Mask([4]byte{1, 2, 3, 4}, 3, payload) },
		},
		{
			name: "Remask",
			f:    func() { Remask([4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, 1, payload) },
		},
		{
			name: "UTF8Validator",
			f: func() {
				v.Write(text[:10])
				v.Write(text[10:])
				v.Finish()
			},
		},
		{
			name: "ParseClosePayload",
			f:    func() { ParseClosePayload([]byte{0x03, 0xE8, 'o', 'k'}) },
		},
		{
			name: "AppendClosePayload",
			f:    func() { AppendClosePayload(closeBuf[:0], CloseGoingAway, "going away \xff") },
		},
		{
			name: "AppendFrame",
			f:    func() { AppendFrame(closeBuf[:0], Header{Fin: true, Opcode: OpPing, Masked: true}, text) },
		},
		{
			name: "CloseCodeOf",
			f:    func() { CloseCodeOf(ErrInvalidUTF8) },
		},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf(
				"%s: %v allocs/op, want 0",
				tc.name, n)
		}
	}
}
