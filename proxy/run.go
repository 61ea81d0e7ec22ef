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
// the pool when the first frame is relayed. It returns how many frames it relayed.
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
		ohs := 2 // the header written: the same length form, a key if dst is masked
		if n >= 126 {
			ohs = 4
		}
		if dst.mask {
			ohs += 4
		}
		if len(b)-i < hs+n || o+ohs+n > bufSize ||
			maxFrame > 0 && int64(n) > maxFrame || maxMsg > 0 && int64(n) > maxMsg {
			break
		}
		if *out == nil {
			*out = bufPool.Get().(*[bufSize]byte)
		}
		buf := (*out)[o : o+ohs+n]
		payload := buf[ohs:]
		copy(payload, b[i+hs:i+hs+n])
		var okey [4]byte
		if dst.mask {
			putKey(&okey)
		}
		if validate && b0&0xF == byte(wsframe.OpText) {
			if masked {
				wsframe.Mask(key, 0, payload)
			}
			if !utf8.Valid(payload) {
				break
			}
			if dst.mask {
				wsframe.Mask(okey, 0, payload)
			}
		} else if masked && dst.mask {
			wsframe.Remask(key, okey, 0, payload)
		} else if masked {
			wsframe.Mask(key, 0, payload)
		} else if dst.mask {
			wsframe.Mask(okey, 0, payload)
		}
		if lim != nil && !lim.spendLocal(int64(n)) {
			break
		}
		buf[0] = b0
		if n < 126 {
			buf[1] = byte(n)
		} else {
			buf[1] = 126
			binary.BigEndian.PutUint16(buf[2:], uint16(n))
		}
		if dst.mask {
			buf[1] |= 0x80
			copy(buf[ohs-4:], okey[:])
		}
		o += ohs + n
		i += hs + n
		frames++
		bytes += int64(n)
		last = int64(n)
		lastOp = wsframe.Opcode(b0 & 0xF)
	}
	if frames == 0 {
		return 0
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
