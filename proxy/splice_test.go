//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// spliceCounter makes splice_linux.go count what it moves, for one test.
func spliceCounter(t *testing.T) *spliceStats {
	c := new(spliceStats)
	testSplice = c
	t.Cleanup(func() { testSplice = nil })
	return c
}

// tcpTestPair starts a pair over loopback TCP (the sockets splice works between) and returns
// the test's client and backend ends.
func tcpTestPair(t *testing.T, opts Options) (client, backend *net.TCPConn, done chan Result) {
	cg, ct := tcpPair(t)
	bg, bt := tcpPair(t)
	done = make(chan Result, 1)
	p := NewPair(cg, GetReader(cg), bg, GetReader(bg), &opts)
	p.Start(func(r Result) { done <- r })
	return ct, bt, done
}

// message is one data message as a peer sends or receives it, with its frames' lengths.
type message struct {
	op     wsframe.Opcode
	data   []byte
	frames []int64
}

// readMessages reads n data messages from br (server frames: unmasked), answering nothing.
func readMessages(c net.Conn, br *bufio.Reader, n int) ([]message, error) {
	var out []message
	var cur *message
	for len(out) < n {
		h, p, err := readFrame(c, br)
		if err != nil {
			return out, err
		}
		if h.Masked {
			return out, fmt.Errorf("masked frame from the gateway to the client")
		}
		if h.Opcode.IsControl() {
			continue
		}
		if cur == nil {
			cur = &message{op: h.Opcode}
		}
		cur.data = append(cur.data, p...)
		cur.frames = append(cur.frames, h.Length)
		if h.Fin {
			out = append(out, *cur)
			cur = nil
		}
	}
	return out, nil
}

// TestSpliceRelaysBackendFrames sends the client large and small backend messages through the
// relay and checks every byte, opcode and message boundary, and that the fragments are the
// buffered path's (ChunkSize pieces) however the bytes moved. Large binary payloads go through
// a pipe; text with validate_utf8 and small frames do not. A backend writing in many small
// packets (random pieces) fills a pipe's slots before a chunk is in, and so does a one-page
// pipe: those chunks fall back to the buffered path, and the frames are still the same.
func TestSpliceRelaysBackendFrames(t *testing.T) {
	defer goleak.VerifyNone(t)
	sizes := []int{100, 20 << 10, ChunkSize, ChunkSize + 1, 200 << 10, 17 << 10}
	for _, tc := range []struct {
		name     string
		pipe     int
		noSplice bool
		pieces   bool // the backend writes in random small pieces with pauses
		want     string
	}{
		{"buffered", 256 << 10, true, true, "none"},
		{"spliced", 256 << 10, false, false, "spliced"},
		{"small packets", 256 << 10, false, true, "any"},
		{"one-page pipe", 4096, false, true, "fallbacks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pipeSize, testNoSplice = tc.pipe, tc.noSplice
			trimSplicersNow() // new pipes get this test's size
			defer func() { pipeSize, testNoSplice = 256<<10, false; trimSplicersNow() }()
			spliced := spliceCounter(t)
			client, backend, done := tcpTestPair(t, Options{ValidateUTF8: true, WriteTimeout: 5 * time.Second, CloseTimeout: time.Second})
			defer func() { client.Close(); backend.Close(); <-done }()

			rng := rand.New(rand.NewPCG(1, 2))
			var sent []message
			var stream []byte
			for i, size := range sizes {
				m := message{op: wsframe.OpBinary, data: make([]byte, size)}
				if i == len(sizes)-1 {
					m.op = wsframe.OpText // checked as UTF-8, so never spliced
				}
				for j := range m.data {
					m.data[j] = 'a' + byte(rng.IntN(26))
				}
				sent = append(sent, m)
				stream = wsframe.AppendFrame(stream, wsframe.Header{Fin: true, Opcode: m.op}, m.data)
			}
			writeErr := make(chan error, 1)
			go func() {
				if tc.pieces {
					writeErr <- writeSplit(backend, stream, 7)
					return
				}
				for _, m := range sent { // a frame per write
					if _, err := backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: m.op}, m.data)); err != nil {
						writeErr <- err
						return
					}
				}
				writeErr <- nil
			}()

			got, err := readMessages(client, bufio.NewReader(client), len(sent))
			if err != nil {
				t.Fatalf("after %d messages: %v", len(got), err)
			}
			if err := <-writeErr; err != nil {
				t.Fatal(err)
			}
			for i, m := range got {
				if m.op != sent[i].op || !bytes.Equal(m.data, sent[i].data) {
					t.Fatalf("message %d (%d bytes) changed in transit: opcode %v, %d bytes", i, len(sent[i].data), m.op, len(m.data))
				}
				for j, n := range m.frames {
					if want := min(int64(len(m.data)-j*ChunkSize), ChunkSize); n != want {
						t.Fatalf("message %d of %d bytes came in fragments %v, want ChunkSize pieces", i, len(m.data), m.frames)
					}
				}
			}
			n, fb := spliced.bytes.Load(), spliced.fallbacks.Load()
			t.Logf("%d payload bytes spliced, %d chunks fell back", n, fb)
			switch {
			case tc.want == "none" && n+fb != 0:
				t.Fatalf("splicing off, but %d bytes spliced and %d fallbacks", n, fb)
			case tc.want == "spliced" && (n < 200<<10 || fb != 0):
				// Up to 16 KiB of each chunk was in the read buffer already (not spliced).
				t.Fatalf("%d bytes spliced and %d fallbacks; want most of the 348 KiB of large binary payload spliced", n, fb)
			case tc.want == "fallbacks" && fb == 0:
				t.Fatal("a one-page pipe never filled")
			}
		})
	}
}

// TestSpliceConcurrentPairs runs 16 pairs at once, each backend sending 30 large binary
// messages (in whole writes or in random pieces) while its client pings: every message
// arrives intact and in order, every ping is answered, and when the pairs end no pipe is
// left in use.
func TestSpliceConcurrentPairs(t *testing.T) {
	defer goleak.VerifyNone(t)
	spliced := spliceCounter(t)
	const pairs, msgs = 16, 30
	errs := make(chan error, pairs)
	for i := range pairs {
		client, backend, done := tcpTestPair(t, Options{WriteTimeout: 5 * time.Second, CloseTimeout: time.Second})
		go func() {
			errs <- func() error {
				defer func() { client.Close(); backend.Close(); <-done }()
				rng := rand.New(rand.NewPCG(uint64(i), 9))
				var stream []byte
				var sent [][]byte
				for range msgs {
					m := make([]byte, 16<<10+rng.IntN(200<<10))
					for j := range m {
						m[j] = byte(rng.Uint32())
					}
					sent = append(sent, m)
					stream = wsframe.AppendFrame(stream, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, m)
				}
				go func() {
					if i%2 == 0 {
						backend.Write(stream)
					} else {
						writeSplit(backend, stream, uint64(i))
					}
				}()
				go func() {
					for range msgs / 3 {
						client.Write(clientFrame(wsframe.OpPing, []byte("p")))
						time.Sleep(2 * time.Millisecond)
					}
				}()
				br := bufio.NewReader(client)
				pongs := 0
				var cur []byte
				for got := 0; got < msgs || pongs < msgs/3; {
					h, p, err := readFrame(client, br)
					if err != nil {
						return fmt.Errorf("pair %d after %d messages, %d pongs: %v", i, got, pongs, err)
					}
					switch {
					case h.Opcode == wsframe.OpPong:
						pongs++
						continue
					case h.Opcode.IsControl():
						return fmt.Errorf("pair %d: unexpected %v", i, h.Opcode)
					}
					cur = append(cur, p...)
					if h.Fin {
						if !bytes.Equal(cur, sent[got]) {
							return fmt.Errorf("pair %d: message %d (%d bytes) arrived as %d different bytes", i, got, len(sent[got]), len(cur))
						}
						got++
						cur = nil
					}
				}
				return nil
			}()
		}()
	}
	for range pairs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	open, free := splicePipes()
	t.Logf("%d MiB spliced, %d chunks fell back; %d pipes open, all pooled", spliced.bytes.Load()>>20, spliced.fallbacks.Load(), open)
	if open != free || open > maxSplicers {
		t.Fatalf("%d pipes open, %d of them pooled, after every pair ended", open, free)
	}
	if spliced.bytes.Load() == 0 {
		t.Fatal("nothing spliced")
	}
}

// TestSpliceWaitsForBackendWithoutWriteLock: while a large frame's payload is still on its
// way from the backend, the client's side is free for other frames: the gateway answers the
// client's ping at once, and the frame then arrives whole.
func TestSpliceWaitsForBackendWithoutWriteLock(t *testing.T) {
	defer goleak.VerifyNone(t)
	spliced := spliceCounter(t)
	client, backend, done := tcpTestPair(t, Options{WriteTimeout: 5 * time.Second, CloseTimeout: time.Second})
	defer func() { client.Close(); backend.Close(); <-done }()

	payload := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB
	frame := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, payload)
	if _, err := backend.Write(frame[:20<<10]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the pump is waiting for the rest, in the pipe's fill
	client.Write(clientFrame(wsframe.OpPing, []byte("are you there")))
	cbr := bufio.NewReader(client)
	h, p, err := readFrame(client, cbr)
	if err != nil || h.Opcode != wsframe.OpPong || string(p) != "are you there" {
		t.Fatalf("client got %+v %q, %v; want the pong before the frame", h, p, err)
	}
	backend.Write(frame[20<<10:])
	h, p, err = readFrame(client, cbr)
	if err != nil || h.Opcode != wsframe.OpBinary || !h.Fin || !bytes.Equal(p, payload) {
		t.Fatalf("client got %+v (%d bytes), %v; want the 64 KiB frame whole", h, len(p), err)
	}
	if spliced.bytes.Load() == 0 {
		t.Fatal("the frame was not spliced")
	}
}

// TestSpliceBackendCutMidFrame: a backend that closes its connection half way through a large
// frame makes the gateway close the client with the code it sends for any lost backend
// (1014), spliced or not; nothing of the cut frame reaches the client, and the pipe that held
// its bytes is closed, not pooled.
func TestSpliceBackendCutMidFrame(t *testing.T) {
	defer goleak.VerifyNone(t)
	codes := map[bool]wsframe.CloseCode{}
	for _, noSplice := range []bool{true, false} {
		testNoSplice = noSplice
		spliced := spliceCounter(t)
		client, backend, done := tcpTestPair(t, Options{WriteTimeout: 5 * time.Second, CloseTimeout: time.Second})
		frame := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, make([]byte, 60<<10))
		backend.Write(frame[:40<<10])
		time.Sleep(50 * time.Millisecond)
		backend.Close()
		cbr := bufio.NewReader(client)
		for {
			h, p, err := readFrame(client, cbr)
			if err != nil {
				t.Fatalf("splice off %v: %v before a close", noSplice, err)
			}
			if h.Opcode == wsframe.OpClose {
				codes[noSplice], _, _ = wsframe.ParseClosePayload(p)
				break
			}
			if !h.Opcode.IsControl() {
				t.Fatalf("splice off %v: part of the cut frame reached the client: %+v", noSplice, h)
			}
		}
		client.Close()
		<-done
		if n := spliced.bytes.Load(); n != 0 {
			t.Fatalf("%d bytes of the cut frame were counted as sent", n)
		}
	}
	testNoSplice = false
	if codes[false] != wsframe.CloseBadGateway || codes[true] != wsframe.CloseBadGateway {
		t.Fatalf("client got close %d spliced, %d buffered; want 1014 both", codes[false], codes[true])
	}
	open, free := splicePipes()
	if open != free {
		t.Fatalf("%d pipes open, %d of them pooled: a failed chunk's pipe leaked", open, free)
	}
}

// TestSplicePipesTrimmed: no more than maxSplicers pipes are open at once (past it the relay
// copies), and pooled pipes unused for pipeIdle are closed.
func TestSplicePipesTrimmed(t *testing.T) {
	trimSplicersNow()
	var sps []*splicer
	for range maxSplicers {
		sp := getSplicer()
		if sp == nil {
			t.Fatalf("no pipe after %d", len(sps))
		}
		sps = append(sps, sp)
	}
	if getSplicer() != nil {
		t.Fatalf("a pipe past the cap of %d", maxSplicers)
	}
	for _, sp := range sps {
		sp.put()
	}
	if n, _ := splicePipes(); n != maxSplicers {
		t.Fatalf("%d pipes open, want the %d pooled", n, maxSplicers)
	}
	trimSplicersNow() // ages them past pipeIdle, then trims as the timer would
	if n, _ := splicePipes(); n != 0 {
		t.Fatalf("%d pipes open after a trim of idle ones", n)
	}
}

// BenchmarkRelayDown measures the backend-to-client pump over loopback TCP with 64 KiB
// frames, buffered and spliced: ns per frame and throughput. allocs/op must be 0.
func BenchmarkRelayDown(b *testing.B) {
	for _, mode := range []string{"buffered", "spliced"} {
		b.Run(mode, func(b *testing.B) {
			testNoSplice = mode == "buffered"
			defer func() { testNoSplice = false }()
			const size = 64 << 10
			cg, ct := tcpPair(b)
			bg, bt := tcpPair(b)
			p := NewPair(cg, GetReader(cg), bg, GetReader(bg), &Options{WriteTimeout: 10 * time.Second})
			done := make(chan Result, 1)
			p.Start(func(r Result) { done <- r })
			const batch = 8
			var frames []byte
			for range batch {
				frames = wsframe.AppendFrame(frames, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, make([]byte, size))
			}
			rounds := b.N/batch + 1
			end := sink(b, ct, bt, done, int64(rounds)*int64(len(frames)))
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			for range rounds {
				if _, err := bt.Write(frames); err != nil {
					b.Fatal(err)
				}
			}
			end()
		})
	}
}

// trimSplicersNow closes every pooled pipe.
func trimSplicersNow() {
	splicers.mu.Lock()
	for _, sp := range splicers.free {
		sp.lastUsed -= pipeIdle
	}
	splicers.mu.Unlock()
	trimSplicers()
}

// splicePipes returns how many splice pipes are open (pooled or in use), and how many of them
// are pooled.
func splicePipes() (open, free int) {
	splicers.mu.Lock()
	defer splicers.mu.Unlock()
	return splicers.open, len(splicers.free)
}
