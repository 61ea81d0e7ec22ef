package proxy

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/wsgate/wsgate/wsframe"
)

// testNoRun, set by tests, turns relayRun off so that every frame takes relayFrames' general
// path (the two must put the same frames on the wire).
var testNoRun bool

// relayRun relays the run of small whole messages at the front of src's read buffer: the
// common case of a busy connection, done without relayFrames' per-frame generality. Each
// frame is decoded in place, checked, and copied to out (from *w) with its masking changed,
// and the whole run is consumed from src.br at once. It stops, leaving the frame to
// relayFrames, at anything else: a control frame, a fragment or a message in progress, a
// reserved bit or opcode, a 64-bit or non-minimal length, masking the wrong way for src's
// role, a frame not all buffered or that does not fit out, a size limit it reaches, a rate
// limit whose locally held credit does not cover it, or text that is not valid UTF-8. So the
// frames on the wire, the limits and the close codes are relayFrames' own. out is taken from
// the pool when the first frame is copied; frames masked on neither side are written straight
// from src's buffer instead (verbatim). It returns how many frames it relayed.
func (p *Pair) relayRun(src, dst *side, out **[bufSize]byte, w *int) int {
	if testNoRun || testPanicHook != nil || src.msg.frames.InMessage() {
		return 0
	}
	b, _ := src.br.Peek(src.br.Buffered())
	var (
		masked   = src.role == wsframe.RoleServer // frames from a client are masked
		maxFrame = p.opts.MaxFrameSize
		maxMsg   = p.opts.MaxMessageSize
		validate = p.opts.ValidateUTF8
		lim      = src.lim
		o        = *w // bytes pending in *out
		i        int  // bytes of b consumed
		frames   int
		bytes    int64
		last     int64
		lastOp   wsframe.Opcode
		// Frames that are masked on neither side come out byte for byte as they went in
		// (the same minimal length form), so they are written from src's buffer itself when
		// nothing is pending in out: no copy and no output buffer.
		verbatim = !masked && !dst.mask && o == 0
	)
	for len(b)-i >= 2 {
		b0, b1 := b[i], b[i+1]
		if b0 != 0x80|byte(wsframe.OpBinary) && b0 != 0x80|byte(wsframe.OpText) {
			break // a fragment, a control frame, a reserved bit or opcode
		}
		if (b1&0x80 != 0) != masked {
			break
		}
		hs, n := 2, int(b1&0x7F)
		if n == 127 {
			break
		}
		if n == 126 {
			if len(b)-i < 4 {
				break
			}
			if n = int(binary.BigEndian.Uint16(b[i+2:])); n < 126 {
				break // not minimal
			}
			hs = 4
		}
		var key [4]byte
		if masked {
			if len(b)-i < hs+4 {
				break
			}
			copy(key[:], b[i+hs:])
			hs += 4
		}
		ohs := wsframe.Header{Length: int64(n), Masked: dst.mask}.Size() // the header written
		text := validate && b0&0xF == byte(wsframe.OpText)
		if len(b)-i < hs+n || !verbatim && o+ohs+n > bufSize ||
			maxFrame > 0 && int64(n) > maxFrame || maxMsg > 0 && int64(n) > maxMsg {
			break
		}
		if verbatim {
			if text && !utf8.Valid(b[i+hs:i+hs+n]) || lim != nil && !lim.spendLocal(int64(n)) {
				break
			}
		} else if !copyFrame(b[i:i+hs+n], hs, n, key, masked, dst.mask, text, (*outBuf(out))[o:o+ohs+n]) ||
			lim != nil && !lim.spendLocal(int64(n)) {
			break
		}
		if !verbatim {
			o += ohs + n
		}
		i += hs + n
		frames++
		bytes += int64(n)
		last = int64(n)
		lastOp = wsframe.Opcode(b0 & 0xF)
	}
	if frames == 0 {
		return 0
	}
	if verbatim {
		p.writeData(dst, b[:i])
	}
	src.br.Discard(i)
	*w = o
	src.msg.frames.Next(wsframe.Header{Fin: true, Opcode: lastOp})
	src.msg.size = last
	src.stats.DataFrames += uint64(frames)
	src.stats.Messages += uint64(frames)
	src.stats.Bytes += uint64(bytes)
	if !p.active.Load() {
		p.active.Store(true)
	}
	return frames
}

// outBuf returns *out, taken from the pool if it is nil.
func outBuf(out **[bufSize]byte) *[bufSize]byte {
	if *out == nil {
		*out = bufPool.Get().(*[bufSize]byte)
	}
	return *out
}

// copyFrame copies frame (a header of hs bytes, masked with key if masked, then n payload
// bytes) to buf as relayFrames writes it (buf is the header's size plus n): a header in minimal
// form, with a fresh key if toMask, and the payload's masking changed in one pass. With text it
// checks the plain payload as UTF-8 and reports false if it is not valid.
func copyFrame(frame []byte, hs, n int, key [4]byte, masked, toMask, text bool, buf []byte) bool {
	ohs := len(buf) - n
	payload := buf[ohs:]
	copy(payload, frame[hs:])
	var okey [4]byte
	if toMask {
		putKey(&okey)
	}
	switch {
	case text:
		if masked {
			wsframe.Mask(key, 0, payload)
		}
		if !utf8.Valid(payload) {
			return false
		}
		if toMask {
			wsframe.Mask(okey, 0, payload)
		}
	case masked && toMask:
		wsframe.Remask(key, okey, 0, payload)
	case masked:
		wsframe.Mask(key, 0, payload)
	case toMask:
		wsframe.Mask(okey, 0, payload)
	}
	wsframe.Header{Fin: true, Opcode: wsframe.Opcode(frame[0] & 0xF), Length: int64(n), Masked: toMask, Mask: okey}.Encode(buf)
	return true
}
