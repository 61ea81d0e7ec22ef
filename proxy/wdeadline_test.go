//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/internal/testcert"
	"github.com/wsgate/wsgate/wsframe"
)

// TestWriteDeadlineOnlyWhenBlocked: a plain side sets no write deadline while its writes go
// straight into the socket buffer; a write that finds the buffer full arms one; that deadline
// does not outlive the stall (after a quiet spell longer than write_timeout the next message
// still goes through); and a client that stays stalled is cut write_timeout after the write
// blocked, the backend being told 1001. Both the buffered and the spliced write paths, and a
// TLS client side over TLSSocket.
func TestWriteDeadlineOnlyWhenBlocked(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, mode := range []string{"buffered", "spliced", "tls"} {
		t.Run(mode, func(t *testing.T) {
			sets := countDeadlineSets(t)
			spliced := spliceCounter(t)
			opts := Options{WriteTimeout: time.Second, CloseTimeout: time.Second}
			client, backend, done := modePair(t, mode, opts)
			defer func() { client.Close(); backend.Close(); <-done }()
			checkLazyDeadline(t, client, backend, sets, opts.WriteTimeout)
			if mode == "spliced" && spliced.bytes.Load() == 0 {
				t.Fatal("nothing was spliced")
			}
		})
	}
}

// checkLazyDeadline runs the stages of TestWriteDeadlineOnlyWhenBlocked over a started pair.
func checkLazyDeadline(t *testing.T, client, backend net.Conn, sets *atomic.Int64, wt time.Duration) {
	t.Helper()
	cbr, bbr := bufio.NewReader(client), bufio.NewReader(backend)

	roundTrips := func(stage string, n int) {
		t.Helper()
		for i := range n {
			msg := []byte(fmt.Sprintf("%s %d", stage, i))
			if _, err := client.Write(clientFrame(wsframe.OpText, msg)); err != nil {
				t.Fatalf("%s: client write: %v", stage, err)
			}
			if h, p, err := readFrame(backend, bbr); err != nil || h.Opcode != wsframe.OpText || !bytes.Equal(p, msg) {
				t.Fatalf("%s: backend got %+v %q, %v; want %q", stage, h, p, err, msg)
			}
			if _, err := backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, msg)); err != nil {
				t.Fatalf("%s: backend write: %v", stage, err)
			}
			if h, p, err := readFrame(client, cbr); err != nil || h.Opcode != wsframe.OpText || !bytes.Equal(p, msg) {
				t.Fatalf("%s: client got %+v %q, %v; want %q", stage, h, p, err, msg)
			}
		}
	}

	// 1. Writes that never block set no deadline.
	roundTrips("warm", 100)
	if n := sets.Load(); n != 0 {
		t.Fatalf("%d write deadlines set or cleared for 200 writes that never blocked, want 0", n)
	}

	// 2. The client stops reading: the gateway's write to it blocks and arms the deadline.
	// The client reads everything within the write timeout, and every frame is whole.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 2<<10) // 32 KiB
	frame := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, payload)
	const frames = 256 // 8 MiB: more than the sockets between backend and client hold
	wrote := flood(backend, frame, frames)
	blockedAt := waitFor(t, sets, 1)
	if el := time.Since(blockedAt); el > wt/2 {
		t.Fatalf("the stall was seen after %v; the test needs it within write_timeout/2", el)
	}
	for i := range frames {
		h, p, err := readFrame(client, cbr)
		if err != nil || h.Opcode != wsframe.OpBinary || !bytes.Equal(p, payload) {
			t.Fatalf("stalled frame %d: client got %+v (%d bytes), %v; want 32 KiB whole", i, h, len(p), err)
		}
	}
	wrote()

	// 3. A quiet spell longer than the write timeout: the deadline armed by the stall
	// must not fail the next write.
	time.Sleep(wt + wt/2)
	roundTrips("after the stall", 3)

	// 4. The client stalls for good: cut write_timeout after the write blocked.
	armed := sets.Load()
	stopFlood := flood(backend, frame, 0)
	blockedAt = waitFor(t, sets, armed+1)
	h, p, err := readFrame(backend, bbr)
	el := time.Since(blockedAt)
	if err != nil || h.Opcode != wsframe.OpClose {
		t.Fatalf("backend got %+v, %v; want a close frame", h, err)
	}
	if code, _, _ := wsframe.ParseClosePayload(p); code != wsframe.CloseGoingAway {
		t.Fatalf("backend was sent close %d, want 1001 (client gone)", code)
	}
	if el < wt*3/4 || el > 2*wt {
		t.Fatalf("client cut %v after its write blocked, want write_timeout (%v)", el, wt)
	}
	backend.Close()
	stopFlood()
}

// flood writes frame to c n times (n <= 0: over and over) on a goroutine, a peer sending more
// than the other side reads, until a write fails or the returned function is called; that
// function waits for the goroutine to end.
func flood(c net.Conn, frame []byte, n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for i := 0; n <= 0 || i < n; i++ {
			select {
			case <-done:
				return
			default:
			}
			if _, err := c.Write(frame); err != nil {
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// waitFor waits until c reaches at least n and returns when it saw that.
func waitFor(t *testing.T, c *atomic.Int64, n int64) time.Time {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if c.Load() >= n {
			return time.Now()
		}
	}
	t.Fatalf("write deadline count stayed at %d, want %d: no write blocked", c.Load(), n)
	return time.Time{}
}

// modePair makes a relayed pair over loopback for a test mode: "tls" has a TLS client side
// over TLSSocket, any other mode plain TCP on both sides; "buffered" turns splicing off until
// the test ends.
func modePair(t *testing.T, mode string, opts Options) (client, backend net.Conn, done chan Result) {
	t.Helper()
	if mode == "buffered" {
		testNoSplice = true
		t.Cleanup(func() { testNoSplice = false })
	}
	if mode == "tls" {
		return tlsTestPair(t, opts)
	}
	return tcpTestPair(t, opts)
}

// countDeadlineSets counts the write deadlines the relay sets or clears until the test ends.
func countDeadlineSets(t *testing.T) *atomic.Int64 {
	sets := new(atomic.Int64)
	testDeadlineSets = sets
	t.Cleanup(func() { testDeadlineSets = nil })
	return sets
}

// tlsTestPair starts a pair whose client side is TLS over TLSSocket (as the gateway makes it)
// and returns the test's TLS client and plain backend ends.
func tlsTestPair(t *testing.T, opts Options) (client *tls.Conn, backend *net.TCPConn, done chan Result) {
	t.Helper()
	return tlsTestPairOver(t, opts, nil)
}

// tlsTestPairOver is tlsTestPair with the test client's TLS running over wrap(its TCP
// connection) (nil: the connection itself).
func tlsTestPairOver(t testing.TB, opts Options, wrap func(net.Conn) net.Conn) (client *tls.Conn, backend *net.TCPConn, done chan Result) {
	t.Helper()
	cg, ct := tcpPair(t)
	srv := tls.Server(TLSSocket(cg), &tls.Config{Certificates: []tls.Certificate{testcert.TLS(t)}})
	if _, ok := srv.NetConn().(*tlsSocket); !ok {
		t.Fatalf("TLSSocket gave %T, want *tlsSocket", srv.NetConn())
	}
	var cc net.Conn = ct
	if wrap != nil {
		cc = wrap(ct)
	}
	client = tls.Client(cc, &tls.Config{InsecureSkipVerify: true})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	bg, bt := tcpPair(t)
	done = make(chan Result, 1)
	p := NewPair(srv, GetReader(srv), bg, GetReader(bg), &opts)
	p.Start(func(r Result) { done <- r })
	return client, bt, done
}
