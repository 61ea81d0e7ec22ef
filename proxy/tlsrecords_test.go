//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// heldConn passes writes through until hold is set; from then on it keeps them until flush
// sends what it holds in one write. A TLS client over it puts several records in one TCP
// segment, as a browser's back-to-back messages arrive.
type heldConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	held []byte
}

func (h *heldConn) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.hold {
		return h.Conn.Write(b)
	}
	h.held = append(h.held, b...)
	return len(b), nil
}

// flush writes the first n held bytes (all of them if n < 0) in one write.
func (h *heldConn) flush(t testing.TB, n int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if n < 0 || n > len(h.held) {
		n = len(h.held)
	}
	h.Conn.SetWriteDeadline(time.Time{}) // tls.Conn.CloseWrite leaves one in the past
	if _, err := h.Conn.Write(h.held[:n]); err != nil {
		t.Fatal(err)
	}
	h.held = append(h.held[:0], h.held[n:]...)
}

// TestTLSRecordsRelayedTogether: a TLS client that sends each message in a record of its own
// (as browsers do) has the messages that arrived in one socket read relayed to the backend
// in one write, not one write per record, and a record split between two reads, or the
// client's close_notify right behind its last records, loses nothing.
func TestTLSRecordsRelayedTogether(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		name   string
		whole  int  // records sent whole in the first segment
		split  bool // then one more record, cut in two segments 20 ms apart
		notify bool // then the client's close_notify, in the same segment
		writes int  // backend writes expected for the data
	}{
		{name: "burst", whole: 8, writes: 1},
		{name: "record split between reads", whole: 3, split: true, writes: 2},
		{name: "close_notify behind the records", whole: 2, notify: true, writes: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var writes [2]atomic.Int64
			testDataWrites = &writes
			defer func() { testDataWrites = nil }()
			var hc *heldConn
			client, backend, done := tlsTestPairOver(t, Options{CloseTimeout: time.Second},
				func(c net.Conn) net.Conn { hc = &heldConn{Conn: c}; return hc })
			defer func() { client.Close(); backend.Close(); <-done }()
			bbr := bufio.NewReader(backend)

			// One round trip first: the pump is running and has parked or gone hot.
			if _, err := client.Write(clientFrame(wsframe.OpText, []byte("hello"))); err != nil {
				t.Fatal(err)
			}
			if _, p, err := readFrame(backend, bbr); err != nil || string(p) != "hello" {
				t.Fatalf("backend got %q, %v; want hello", p, err)
			}
			writes[SideBackend].Store(0)

			hc.mu.Lock()
			hc.hold = true
			hc.mu.Unlock()
			n := tc.whole
			if tc.split {
				n++
			}
			var msgs []string
			for i := range n {
				msg := fmt.Sprintf("message %d of a burst", i)
				msgs = append(msgs, msg)
				if _, err := client.Write(clientFrame(wsframe.OpText, []byte(msg))); err != nil {
					t.Fatal(err)
				}
			}
			if tc.notify {
				if err := client.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			if tc.split {
				hc.mu.Lock()
				last := len(hc.held) - (5 + 2 + 4 + len(msgs[n-1]) + 1 + 16) // the last record: header, frame, type, tag
				hc.mu.Unlock()
				hc.flush(t, last+9)
				time.Sleep(20 * time.Millisecond)
			}
			hc.flush(t, -1)

			for i, msg := range msgs {
				if h, p, err := readFrame(backend, bbr); err != nil || h.Opcode != wsframe.OpText || string(p) != msg {
					t.Fatalf("message %d: backend got %v %q, %v; want text %q", i, h.Opcode, p, err, msg)
				}
			}
			if tc.notify {
				h, p, err := readFrame(backend, bbr)
				if err != nil || h.Opcode != wsframe.OpClose {
					t.Fatalf("after the messages the backend got %v %q, %v; want a close frame", h.Opcode, p, err)
				}
				if code, _, _ := wsframe.ParseClosePayload(p); code != wsframe.CloseGoingAway {
					t.Fatalf("close code %d, want %d (client gone)", code, wsframe.CloseGoingAway)
				}
			}
			if got := writes[SideBackend].Load(); got != int64(tc.writes) {
				t.Fatalf("%d messages reached the backend in %d writes, want %d", n, got, tc.writes)
			}
		})
	}
}

// BenchmarkRelayTLS is BenchmarkRelay's 64 B case with the client side over TLS (TLSSocket, as
// the gateway runs it): 16 frames per round, in one record or in a record each, sent in one
// TCP write. The client's encryption runs in the loop too. allocs/op must be 0.
func BenchmarkRelayTLS(b *testing.B) {
	for _, perMessage := range []bool{false, true} {
		name := "one record"
		if perMessage {
			name = "record per message"
		}
		b.Run(name, func(b *testing.B) {
			var hc *heldConn
			client, backend, done := tlsTestPairOver(b, Options{WriteTimeout: 10 * time.Second},
				func(c net.Conn) net.Conn { hc = &heldConn{Conn: c}; return hc })
			const batch, size = 16, 64
			var frames []byte
			for i := range batch {
				h := wsframe.Header{Fin: true, Opcode: wsframe.OpBinary, Masked: true, Mask: [4]byte{1, 2, 3, byte(i)}}
				frames = wsframe.AppendFrame(frames, h, make([]byte, size))
			}
			frameLen := len(frames) / batch
			rounds := b.N/batch + 1
			end := sink(b, backend, client, done, int64(rounds*batch*(2+4+size)))
			hc.mu.Lock()
			hc.hold = true
			hc.mu.Unlock()
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			for range rounds {
				if perMessage {
					for i := 0; i < len(frames); i += frameLen {
						client.Write(frames[i : i+frameLen])
					}
				} else {
					client.Write(frames)
				}
				hc.flush(b, -1)
			}
			end()
		})
	}
}

// TestTLSRecordsAnyCut: whatever way the client's records are cut into TCP segments, and
// whatever way its frames are cut into records, the backend gets every message whole and in
// order. 20 seeded runs of 40 messages of 1 B to 3 KiB; a third of the frames are written in
// two records, and the held bytes leave in random pieces, some after a pause.
func TestTLSRecordsAnyCut(t *testing.T) {
	defer goleak.VerifyNone(t)
	for seed := range uint64(20) {
		rng := mrand.New(mrand.NewPCG(seed, 7))
		var hc *heldConn
		client, backend, done := tlsTestPairOver(t, Options{CloseTimeout: time.Second},
			func(c net.Conn) net.Conn { hc = &heldConn{Conn: c}; return hc })
		bbr := bufio.NewReader(backend)
		hc.mu.Lock()
		hc.hold = true
		hc.mu.Unlock()

		var msgs [][]byte
		for i := range 40 {
			msg := make([]byte, 1+rng.IntN(3<<10))
			for j := range msg {
				msg[j] = byte(i + j)
			}
			msgs = append(msgs, msg)
			frame := clientFrame(wsframe.OpBinary, msg)
			if rng.IntN(3) == 0 {
				cut := rng.IntN(len(frame))
				client.Write(frame[:cut])
				frame = frame[cut:]
			}
			if _, err := client.Write(frame); err != nil {
				t.Fatal(err)
			}
		}
		got := make(chan error, 1)
		go func() {
			for i, msg := range msgs {
				h, p, err := readFrame(backend, bbr)
				if err != nil || h.Opcode != wsframe.OpBinary || !bytes.Equal(p, msg) {
					got <- fmt.Errorf("seed %d, message %d (%d B): backend got %v, %d B, %v", seed, i, len(msg), h.Opcode, len(p), err)
					return
				}
			}
			got <- nil
		}()
		for {
			hc.mu.Lock()
			left := len(hc.held)
			hc.mu.Unlock()
			if left == 0 {
				break
			}
			hc.flush(t, 1+rng.IntN(min(left, 4<<10)))
			if rng.IntN(4) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		client.Close()
		backend.Close()
		<-done
	}
}
