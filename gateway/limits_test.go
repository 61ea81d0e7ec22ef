package gateway_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/wsframe"
)

// TestThrottleKeepsEveryMessage: in throttle mode a burst of messages is delayed, never
// dropped or reordered, and the elapsed time follows the rate.
func TestThrottleKeepsEveryMessage(t *testing.T) {
	b := newBackend(t, func(b *testBackend) { b.echo = false })
	g := startGateway(t, baseConfig(b.addr(), `messages_per_second = 50
    burst = 5
    on_limit = "throttle"`, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, g.url("pub", "/echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	const n = 55
	start := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			if c.Write(ctx, websocket.MessageText, []byte(fmt.Sprint(i))) != nil {
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		e := b.next(t, "message")
		if string(e.data) != fmt.Sprint(i) {
			t.Fatalf("message %d arrived as %q: lost or reordered", i, e.data)
		}
	}
	// 5 pass at once, the other 50 at 50/s: about 1 s.
	el := time.Since(start)
	t.Logf("%d messages at 50/s burst 5 took %v", n, el)
	if el < 800*time.Millisecond || el > 5*time.Second {
		t.Fatalf("elapsed %v, want about 1s", el)
	}
}

// TestByteRateThrottle: bytes_per_second paces large traffic the same way.
func TestByteRateThrottle(t *testing.T) {
	b := newBackend(t, func(b *testBackend) { b.echo = false })
	g := startGateway(t, baseConfig(b.addr(), `bytes_per_second = "256KiB"`, ""))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, g.url("pub", "/echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// 768 KiB in 16 KiB messages; the first 256 KiB (one second's burst) pass at once, the
	// rest at 256 KiB/s: about 2 s.
	const msgs = 48
	start := time.Now()
	go func() {
		for i := 0; i < msgs; i++ {
			msg := make([]byte, 16<<10)
			msg[0] = byte(i)
			if c.Write(ctx, websocket.MessageBinary, msg) != nil {
				return
			}
		}
	}()
	for i := 0; i < msgs; i++ {
		if e := b.next(t, "message"); e.data[0] != byte(i) || len(e.data) != 16<<10 {
			t.Fatalf("message %d wrong", i)
		}
	}
	el := time.Since(start)
	t.Logf("768 KiB at 256 KiB/s took %v", el)
	if el < 1500*time.Millisecond || el > 6*time.Second {
		t.Fatalf("elapsed %v, want about 2s", el)
	}
}

// TestListenerCap: a listener at max_connections answers 503 at once and established
// connections keep working.
func TestListenerCap(t *testing.T) {
	b := newBackend(t)
	g := startGateway(t, fmt.Sprintf(`
listen "pub" {
  address = "127.0.0.1:0"
  max_connections = 2
}
route "/echo" { backend = "ws://%s/" }
`, b.addr()))
	addr := g.Addr("pub").String()
	c1 := dialRaw(t, addr, "/echo")
	c2 := dialRaw(t, addr, "/echo")
	if c1.resp.StatusCode != 101 || c2.resp.StatusCode != 101 {
		t.Fatalf("first two: %d %d", c1.resp.StatusCode, c2.resp.StatusCode)
	}
	start := time.Now()
	c3 := dialRaw(t, addr, "/echo")
	if c3.resp.StatusCode != 503 {
		t.Fatalf("third: %d, want 503", c3.resp.StatusCode)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("503 took %v", el)
	}
	for _, c := range []*rawClient{c1, c2} {
		c.send(true, wsframe.OpText, []byte("alive"))
		if f := c.read(); string(f.payload) != "alive" {
			t.Fatalf("established connection broken: %q", f.payload)
		}
	}
}

// TestSlowloris: 2,000 connections trickling their request head do not stop a normal client,
// and all of them are cut at handshake_timeout.
func TestSlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 connections")
	}
	b := newBackend(t)
	g2 := startGateway(t, fmt.Sprintf(`
listen "pub" { address = "127.0.0.1:0" }
limits {
  handshake_timeout = "2s"
  max_connections_per_ip = 0
  handshakes_per_ip_per_second = 0
}
route "/echo" { backend = "ws://%s/" }
`, b.addr()))
	addr := g2.Addr("pub").String()
	const n = 2000
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	cut := make(chan time.Duration, n)
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			head := "GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: "
			for i := 0; ; i++ {
				if _, err := c.Write([]byte{head[i%len(head)]}); err != nil {
					break
				}
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				var one [1]byte
				if _, err := c.Read(one[:]); err != nil && !isTimeout(err) {
					break // the gateway closed it
				}
				if time.Since(start) > 10*time.Second {
					return
				}
			}
			cut <- time.Since(start)
		}(c)
	}
	// A normal client gets through within a second while they trickle.
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	t0 := time.Now()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatalf("normal client blocked by slowloris: %v", err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hi" {
		t.Fatalf("echo: %q %v", msg, err)
	}
	t.Logf("normal client connected and echoed in %v", time.Since(t0))
	c.Close(websocket.StatusNormalClosure, "")
	wg.Wait()
	close(cut)
	got := 0
	var latest time.Duration
	for d := range cut {
		got++
		latest = max(latest, d)
	}
	if got != n {
		t.Fatalf("%d of %d slow connections were cut", got, n)
	}
	t.Logf("all %d cut, the last after %v (handshake_timeout 2s)", n, latest)
	if latest > 7*time.Second { // 2s plus generous slack for a loaded machine
		t.Fatalf("slow connections cut after %v, want about 2s", latest)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestNonReadingClient: a client that stops reading while the backend floods it does not pin
// memory, and is cut at write_timeout; the backend is told 1001 "client gone".
func TestNonReadingClient(t *testing.T) {
	b := newBackend(t, func(b *testBackend) { b.manual = true })
	g := startGateway(t, baseConfig(b.addr(), `write_timeout = "1s"`, ""))
	c := dialRaw(t, g.Addr("pub").String(), "/echo")
	if tc, ok := c.conn.(*net.TCPConn); ok {
		tc.SetReadBuffer(4096)
	}
	bc := <-b.conns
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	closed := make(chan backendEvent, 1)
	go func() {
		// The manual backend reads nothing itself; read here to see the close.
		for {
			_, _, err := bc.ReadMessage()
			if ce, ok := err.(*gorilla.CloseError); ok {
				closed <- backendEvent{code: ce.Code, reason: ce.Text}
				return
			}
			if err != nil {
				closed <- backendEvent{code: -1, reason: err.Error()}
				return
			}
		}
	}()
	msg := make([]byte, 64<<10)
	start := time.Now()
	sent := 0
	for time.Since(start) < 10*time.Second {
		bc.SetWriteDeadline(time.Now().Add(3 * time.Second))
		if err := bc.WriteMessage(gorilla.BinaryMessage, msg); err != nil {
			break
		}
		sent += len(msg)
		select {
		case e := <-closed:
			closed <- e
			goto done
		default:
		}
	}
done:
	runtime.ReadMemStats(&ms)
	growth := int64(ms.HeapInuse) - int64(base)
	select {
	case e := <-closed:
		if e.code != 1001 || e.reason != "client gone" {
			t.Fatalf("backend got %d %q, want 1001 client gone", e.code, e.reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend never told the client is gone")
	}
	el := time.Since(start)
	t.Logf("backend pushed %d KiB before the cut after %v; heap growth %d KiB", sent>>10, el, growth>>10)
	if el > 6*time.Second {
		t.Fatalf("cut after %v, want about write_timeout (1s) after the buffers filled", el)
	}
	if growth > 8<<20 {
		t.Fatalf("heap grew %d KiB while a client did not read", growth>>10)
	}
	if !strings.Contains(g.log.String(), "client") {
		t.Fatal("no log line")
	}
}
