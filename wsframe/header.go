package wsframe

import (
	"encoding/binary"
	"io"
	"slices"
)

// RSV bit masks as they appear in [Header.Rsv], which holds the three RSV
// bits of the first header byte (byte0 >> 4 & 7), RFC 6455 section 5.2.
// Extensions define their meaning (section 9); permessage-deflate uses Rsv1
// (RFC 7692 section 6).
const (
	Rsv1 byte = 0x4
	Rsv2 byte = 0x2
	Rsv3 byte = 0x1
)

// Size limits from RFC 6455 section 5.2 and 5.5.
const (
	// MaxHeaderSize is the largest frame header: 2 bytes, 8 bytes of
	// extended payload length and a 4-byte masking key (section 5.2).
	MaxHeaderSize = 14
	// MaxControlPayload is the largest control frame payload (section 5.5).
	MaxControlPayload = 125
	// MaxCloseReason is the largest close reason: a control payload less
	// the 2-byte status code (section 5.5.1).
	MaxCloseReason = MaxControlPayload - 2
)

// Header is a decoded frame header (RFC 6455 section 5.2).
type Header struct {
	Fin    bool   // final fragment of a message (section 5.4)
	Rsv    byte   // RSV bits: Rsv1|Rsv2|Rsv3 (section 5.2)
	Opcode Opcode // frame opcode (section 5.2)
	Masked bool   // a masking key follows the length (section 5.3)
	Length int64  // payload length in bytes, 0 to 1<<63-1 (section 5.2)
	Mask   [4]byte
}

const (
	bitFin  = 0x80
	bitMask = 0x80

	len16 = 126 // 7-bit length value announcing a 16-bit length
	len64 = 127 // 7-bit length value announcing a 64-bit length
)

// Size returns the encoded size of h with the payload length in minimal
// form (RFC 6455 section 5.2): 2 to [MaxHeaderSize] bytes.
func (h Header) Size() int {
	n := 2
	switch {
	case uint64(h.Length) < len16:
		// 7-bit length.
	case uint64(h.Length) <= 0xFFFF:
		n += 2
	default:
		n += 8
	}
	if h.Masked {
		n += 4
	}
	return n
}

// Encode writes h to b with the payload length in minimal form (RFC 6455
// section 5.2) and returns the number of bytes written, [Header.Size]. It
// panics if len(b) < h.Size(). Rsv and Opcode are truncated to 3 and 4 bits.
// A negative Length is written as its 64-bit two's complement, which a
// reader rejects with [ErrLengthMSB]. Encode does not allocate.
func (h Header) Encode(b []byte) int {
	b0 := h.Rsv&7<<4 | byte(h.Opcode)&0xF
	if h.Fin {
		b0 |= bitFin
	}
	var b1 byte
	if h.Masked {
		b1 = bitMask
	}
	var n int
	switch l := uint64(h.Length); {
	case l < len16:
		_ = b[1]
		b[0] = b0
		b[1] = b1 | byte(l)
		n = 2
	case l <= 0xFFFF:
		_ = b[3]
		b[0] = b0
		b[1] = b1 | len16
		binary.BigEndian.PutUint16(b[2:4], uint16(l))
		n = 4
	default:
		_ = b[9]
		b[0] = b0
		b[1] = b1 | len64
		binary.BigEndian.PutUint64(b[2:10], l)
		n = 10
	}
	if h.Masked {
		copy(b[n:n+4], h.Mask[:])
		n += 4
	}
	return n
}

// HeaderSize returns the full size of the header whose first two bytes are
// b0 and b1 (RFC 6455 section 5.2): 2 to [MaxHeaderSize].
func HeaderSize(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7F {
	case len16:
		n += 2
	case len64:
		n += 8
	}
	if b1&bitMask != 0 {
		n += 4
	}
	return n
}

// DecodeHeader decodes the frame header at the start of b (RFC 6455 section
// 5.2) and returns it with its size n. It does not validate the header
// beyond the length encoding; see [Header.Check] and [MessageState.Next].
//
// If b holds less than the whole header, it returns n == 0 and
// [ErrShortHeader]: the caller reads more bytes and retries. A 64-bit length
// with its most significant bit set returns [ErrLengthMSB], a fatal error;
// h then holds the other fields, Length is 0 and n is the header size. A
// length not in minimal form returns h and n fully valid together with
// [ErrNonMinimalLength], so a caller may tolerate it. DecodeHeader does not
// allocate.
func DecodeHeader(b []byte) (h Header, n int, err error) {
	if len(b) < 2 {
		return Header{}, 0, ErrShortHeader
	}
	b0, b1 := b[0], b[1]
	n = HeaderSize(b0, b1)
	if len(b) < n {
		return Header{}, 0, ErrShortHeader
	}
	h.Fin = b0&bitFin != 0
	h.Rsv = b0 >> 4 & 7
	h.Opcode = Opcode(b0 & 0xF)
	h.Masked = b1&bitMask != 0
	p := 2
	switch l := b1 & 0x7F; l {
	case len16:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		p = 4
		if h.Length < len16 {
			err = ErrNonMinimalLength
		}
	case len64:
		l64 := binary.BigEndian.Uint64(b[2:10])
		p = 10
		if l64 > 1<<63-1 {
			err = ErrLengthMSB
			l64 = 0
		} else if l64 <= 0xFFFF {
			err = ErrNonMinimalLength
		}
		h.Length = int64(l64)
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[p:p+4])
	}
	return h, n, err
}

// ReadHeader reads one frame header from r into buf and decodes it (RFC 6455
// section 5.2). It reads exactly the header's bytes, never into the
// payload: two bytes, then the rest [HeaderSize] announces in one more read.
// The buffer is the caller's, so ReadHeader does not allocate.
//
// Errors follow [DecodeHeader] ([ErrLengthMSB] fatal, [ErrNonMinimalLength]
// with a valid header), plus io.EOF if r is at EOF before the first byte and
// io.ErrUnexpectedEOF if it ends inside the header. Other read errors are
// returned as is.
func ReadHeader(r io.Reader, buf *[MaxHeaderSize]byte) (Header, error) {
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return Header{}, err // io.EOF at a frame boundary, io.ErrUnexpectedEOF inside
	}
	n := HeaderSize(buf[0], buf[1])
	if n > 2 {
		_, err := io.ReadFull(r, buf[2:n])
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return Header{}, err
		}
	}
	h, _, err := DecodeHeader(buf[:n])
	return h, err
}

// AppendFrame appends a whole frame to dst: h, with Length set to
// len(payload), then the payload, masked with h.Mask if h.Masked (RFC 6455
// sections 5.2 and 5.3). payload is not modified. It is meant for control
// frames and tests; the relay streams large payloads instead.
func AppendFrame(dst []byte, h Header, payload []byte) []byte {
	h.Length = int64(len(payload))
	n := h.Size()
	start := len(dst)
	dst = slices.Grow(dst, n+len(payload))[:start+n]
	h.Encode(dst[start:])
	p := len(dst)
	dst = append(dst, payload...)
	if h.Masked {
		Mask(h.Mask, 0, dst[p:])
	}
	return dst
}
