package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"runtime"
	"testing"
)

// clientFrame encodes one masked frame as a client sends it, in the minimal length form.
func clientFrame(b0 byte, payload []byte, key uint32) []byte {
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = binary.BigEndian.AppendUint32(b, key)
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], key)
	for i, c := range payload {
		b = append(b, c^k[i&3])
	}
	return b
}

// serverFrame encodes one unmasked frame as a server sends it, in the minimal length form.
func serverFrame(b0 byte, payload []byte) []byte {
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// FuzzEcho: Echo parses what a client sends. Any bytes: no panic, and no more bytes out than
// in (frames come back unmasked, pongs not at all). Frames built from the input (data and
// continuation frames of any size, pings, pongs, a close), with the whole-frame limit, the
// streaming chunk and the reader's and writer's buffer sizes also taken from the input so that
// every way of echoing runs (a run from the buffer, whole frames, streamed ones): every data
// frame comes back unmasked with the same first byte and payload, every ping as a pong with
// its payload, pongs are dropped, and a close is echoed and ends the connection.
func FuzzEcho(f *testing.F) {
	f.Add([]byte{0x82, 0x83, 1, 2, 3, 4, 'a', 'b', 'c'})
	f.Add([]byte{0x10, 0x05, 0x01, 0xFF, 0x42, 0x89, 0x00, 0x8A})
	f.Add([]byte{0x82, 0xFF, 0, 0, 0, 0, 0x03, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Any bytes.
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, 64)
		_ = echo(bufio.NewReaderSize(bytes.NewReader(data), 16), w, wholeFrame, chunkSize)
		_ = w.Flush()
		if out.Len() > len(data) {
			t.Fatalf("%d bytes out for %d in", out.Len(), len(data))
		}

		// Frames built from the input.
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		whole, chunk := int64(next()%80), 1+int64(next()%40)
		rsize, wsize := 16+int(next()%128), 16+int(next()%128)
		var in, want []byte
		closed := false
		for k := 0; k < 8 && len(data) > 0; k++ {
			ctl := next()
			size := int(next())
			if ctl&0x40 != 0 {
				size += 300
			}
			p := make([]byte, size)
			for i := range p {
				p[i] = next() ^ byte(i)
			}
			key := uint32(ctl)*0x01010101 ^ 0x5A00A5FF
			switch ctl & 7 {
			case 0, 1, 2: // a data frame: text, binary, or a continuation; fin or not
				b0 := []byte{0x1, 0x2, 0x0}[ctl&7] | ctl&0x80
				in = append(in, clientFrame(b0, p, key)...)
				want = append(want, serverFrame(b0, p)...)
			case 3, 4: // a ping
				p = p[:min(len(p), 125)]
				in = append(in, clientFrame(0x89, p, key)...)
				want = append(want, serverFrame(0x8A, p)...)
			case 5, 6: // a pong
				p = p[:min(len(p), 125)]
				in = append(in, clientFrame(0x8A, p, key)...)
			case 7: // a close, which ends the connection
				p = p[:min(len(p), 125)]
				in = append(in, clientFrame(0x88, p, key)...)
				want = append(want, serverFrame(0x88, p)...)
				closed = true
				k = 8
			}
		}
		out.Reset()
		w = bufio.NewWriterSize(&out, wsize)
		err := echo(bufio.NewReaderSize(bytes.NewReader(in), rsize), w, whole, chunk)
		_ = w.Flush()
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("whole %d, chunk %d, buffers %d/%d: echoed\n% x\nwant\n% x", whole, chunk, rsize, wsize, out.Bytes(), want)
		}
		if closed && err != nil || !closed && err != io.EOF {
			t.Fatalf("echo ended with %v (close sent: %v), want nil after a close, io.EOF otherwise", err, closed)
		}
	})
}

// TestClaimedLengthCostsNoMemory: a frame header that claims 60 MiB and then ends costs the
// backend one streaming chunk, not the claimed length.
func TestClaimedLengthCostsNoMemory(t *testing.T) {
	in := []byte{0x82, 0xFF, 0, 0, 0, 0, 0x03, 0xC0, 0, 0, 1, 2, 3, 4, 'x'}
	w := bufio.NewWriter(io.Discard)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := Echo(bufio.NewReader(bytes.NewReader(in)), w)
	runtime.ReadMemStats(&after)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("Echo: %v, want io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > chunkSize+64<<10 {
		t.Fatalf("allocated %d bytes for a frame that sent 1 byte of its 60 MiB", got)
	}
}
