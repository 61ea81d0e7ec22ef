package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
)

// sink takes a conn's writes (its pongs) in tests that read from a byte stream.
type sink struct {
	net.Conn // nil: only Write is used
	out      bytes.Buffer
}

func (s *sink) Write(p []byte) (int, error) { return s.out.Write(p) }

// streamConn returns a conn that reads stream (through a small buffer, so frames straddle
// reads) and writes into a sink.
func streamConn(stream []byte) (*conn, *sink) {
	s := &sink{}
	return &conn{nc: s, br: bufio.NewReaderSize(bytes.NewReader(stream), 16), mask: 0x9E3779B97F4A7C15}, s
}

// serverFrame encodes one frame as a server would send it (masked with key when mask is set,
// which servers must not do but wsload tolerates), in the minimal length form.
func serverFrame(fin bool, op byte, payload []byte, mask bool, key uint32) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xFFFF:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	start := len(b)
	if mask {
		b = binary.BigEndian.AppendUint32(b, key)
		start = len(b)
	}
	b = append(b, payload...)
	if mask {
		maskBytes(b[start:], key)
	}
	return b
}

// clientFrames decodes the masked frames a conn wrote (its pongs) into opcodes and payloads.
func clientFrames(t *testing.T, b []byte) (ops []byte, payloads [][]byte) {
	for len(b) > 0 {
		if len(b) < 6 || b[1]&0x80 == 0 || b[1]&0x7F > 125 {
			t.Fatalf("not a masked control frame: % x", b)
		}
		n := int(b[1] & 0x7F)
		if len(b) < 6+n {
			t.Fatalf("frame cut short: % x", b)
		}
		p := append([]byte(nil), b[6:6+n]...)
		maskBytes(p, binary.BigEndian.Uint32(b[2:6]))
		ops = append(ops, b[0])
		payloads = append(payloads, p)
		b = b[6+n:]
	}
	return ops, payloads
}

type script struct {
	data []byte
	i    int
}

func (s *script) next() byte {
	if s.i >= len(s.data) {
		return 0
	}
	s.i++
	return s.data[s.i-1]
}

// FuzzReadMessage: readMessage parses what a target sends. Any bytes: it returns messages
// no longer than the input, or an error, and never panics. Messages built from the input
// (text or binary, fragmented, masked or not, pings between fragments, lengths in all three
// forms): it returns exactly those messages in order, answers every ping with a pong carrying
// its payload, and reports io.EOF at the end of the stream.
func FuzzReadMessage(f *testing.F) {
	f.Add([]byte{0x82, 0x03, 'a', 'b', 'c'})
	f.Add([]byte{0x01, 0x01, 'a', 0x89, 0x01, 'p', 0x80, 0x01, 'b'})
	f.Add([]byte{0x82, 0x7F, 0, 0, 0, 0, 0x03, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{0x3F, 0x10, 0x20, 0x41, 0x7E, 0xFF})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Any bytes.
		c, _ := streamConn(data)
		total := 0
		for {
			op, p, err := c.readMessage()
			if err != nil {
				break
			}
			if total += len(p); total > len(data) {
				t.Fatalf("returned %d payload bytes from %d bytes of input", total, len(data))
			}
			if op == opClose || op == opPing || op == opPong {
				t.Fatalf("a control opcode %#x returned as a message", op)
			}
		}

		// Messages built from the input.
		s := &script{data: data}
		var stream []byte
		var wantOps []byte
		var wantMsgs, wantPings [][]byte
		for k := 0; k < 6 && s.i < len(s.data); k++ {
			ctl := s.next()
			op := byte(opBinary)
			if ctl&1 != 0 {
				op = opText
			}
			size := int(s.next())
			switch ctl >> 6 {
			case 1:
				size += 200 // 16-bit length form
			case 2:
				size += 70000 // 64-bit length form
			}
			msg := make([]byte, size)
			for j := range msg {
				msg[j] = s.next() ^ byte(j)
			}
			frags := 1 + int(ctl>>1&3)
			mask := ctl&8 != 0
			for j := 0; j < frags; j++ {
				part := msg[len(msg)*j/frags : len(msg)*(j+1)/frags]
				fop := byte(opCont)
				if j == 0 {
					fop = op
				}
				stream = append(stream, serverFrame(j == frags-1, fop, part, mask, 0xA1B2C3D4+uint32(j))...)
				if ctl&16 != 0 && j < frags-1 || ctl&32 != 0 && j == frags-1 {
					ping := []byte{s.next(), byte(k), byte(j)}
					stream = append(stream, serverFrame(true, opPing, ping, mask, 0x01020304)...)
					wantPings = append(wantPings, ping)
				}
			}
			wantOps = append(wantOps, op)
			wantMsgs = append(wantMsgs, msg)
		}
		c, out := streamConn(stream)
		for k := range wantMsgs {
			op, p, err := c.readMessage()
			if err != nil {
				t.Fatalf("message %d: %v", k, err)
			}
			if op != wantOps[k] || !bytes.Equal(p, wantMsgs[k]) {
				t.Fatalf("message %d: opcode %#x, %d bytes; want %#x, %d bytes", k, op, len(p), wantOps[k], len(wantMsgs[k]))
			}
		}
		if _, _, err := c.readMessage(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the last message: %v, want io.EOF", err)
		}
		ops, pongs := clientFrames(t, out.out.Bytes())
		if len(pongs) != len(wantPings) {
			t.Fatalf("%d pongs for %d pings", len(pongs), len(wantPings))
		}
		for k := range pongs {
			if ops[k] != 0x80|opPong || !bytes.Equal(pongs[k], wantPings[k]) {
				t.Fatalf("pong %d: %#x % x, want a pong with % x", k, ops[k], pongs[k], wantPings[k])
			}
		}
	})
}

// TestClaimedLengthCostsNoMemory: a frame header that claims 64 MiB and then ends costs
// the reader only what arrived (plus one 64 KiB step), not the claimed length.
func TestClaimedLengthCostsNoMemory(t *testing.T) {
	c, _ := streamConn([]byte{0x82, 0x7F, 0, 0, 0, 0, 0x03, 0xFF, 0xFF, 0xFF, 'x'})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := c.readMessage()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v, want io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("allocated %d bytes for a frame that sent 1 byte of its 64 MiB", got)
	}
}

// TestReadMessageAllocatesNothing: reading a message, whole or in fragments, allocates nothing
// once the reassembly buffer has grown: the generator's cost per message is the target's
// echoes, not garbage.
func TestReadMessageAllocatesNothing(t *testing.T) {
	payload := make([]byte, 64)
	var stream []byte
	for range 1100 {
		stream = append(stream, serverFrame(true, opBinary, payload, false, 0)...)
		stream = append(stream, serverFrame(false, opText, payload[:30], false, 0)...)
		stream = append(stream, serverFrame(true, opCont, payload[30:], true, 0x01020304)...)
	}
	c, _ := streamConn(stream)
	c.br = bufio.NewReaderSize(bytes.NewReader(stream), 4096)
	allocs := testing.AllocsPerRun(1000, func() {
		for range 2 {
			if _, p, err := c.readMessage(); err != nil || len(p) != 64 {
				t.Fatalf("readMessage: %d bytes, %v", len(p), err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per two messages, want 0", allocs)
	}
}
