package gateway_test

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/gateway"
	"github.com/wsgate/wsgate/wsframe"
)

// TestConnWorkersReused checks that connections accepted one after another are served by one
// reused goroutine, not a new one each.
func TestConnWorkersReused(t *testing.T) {
	defer gateway.SetConnWorkerLimits(8, time.Minute)()
	b := newBackend(t)
	g := startGateway(t, baseConfig(b.addr(), "", ""))
	workers := g.ConnWorkers("pub")
	for i := range 10 {
		c := dialRaw(t, g.Addr("pub").String(), "/echo")
		if c.resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("connection %d: status %d", i, c.resp.StatusCode)
		}
		b.next(t, "request")
		c.send(true, wsframe.OpText, []byte("hi"))
		if f := c.read(); string(f.payload) != "hi" {
			t.Fatalf("connection %d: echo %q", i, f.payload)
		}
		c.conn.Close()
		waitFor(t, "the worker to be free again", func() bool { _, free := workers(); return free == 1 })
	}
	if alive, _ := workers(); alive != 1 {
		t.Fatalf("%d workers served 10 connections one after another, want 1", alive)
	}
}

// TestConnWorkersBound checks that connections beyond the pool's bound are still served (on
// goroutines of their own), that workers end after their idle time, and that all of them end
// when the listener closes.
func TestConnWorkersBound(t *testing.T) {
	defer gateway.SetConnWorkerLimits(3, 300*time.Millisecond)()
	b := newBackend(t)
	g := startGateway(t, baseConfig(b.addr(), "", ""))
	workers := g.ConnWorkers("pub")
	addr := g.Addr("pub").String()

	// Five connections whose requests have not come yet: each holds a goroutine.
	conns := make([]net.Conn, 5)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	waitFor(t, "three busy workers", func() bool { alive, free := workers(); return alive == 3 && free == 0 })
	for i, c := range conns {
		rc := upgradeRaw(t, c, addr, "/echo")
		if rc.resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("connection %d: status %d", i, rc.resp.StatusCode)
		}
		b.next(t, "request")
		rc.send(true, wsframe.OpBinary, []byte{byte(i)})
		if f := rc.read(); len(f.payload) != 1 || f.payload[0] != byte(i) {
			t.Fatalf("connection %d: echo %v", i, f.payload)
		}
	}
	if alive, _ := workers(); alive > 3 {
		t.Fatalf("%d workers, bound 3", alive)
	}
	waitFor(t, "idle workers to end", func() bool { alive, _ := workers(); return alive == 0 })

	// Workers waiting for connections end with the listener, long before their idle time.
	restore := gateway.SetConnWorkerLimits(3, time.Minute)
	defer restore()
	g2 := startGateway(t, baseConfig(b.addr(), "", ""))
	workers2 := g2.ConnWorkers("pub")
	c := dialRaw(t, g2.Addr("pub").String(), "/echo")
	b.next(t, "request")
	c.conn.Close()
	waitFor(t, "a free worker", func() bool { _, free := workers2(); return free == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := g2.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if alive, _ := workers2(); alive != 0 {
		t.Fatalf("%d workers alive after the drain", alive)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("drain took %v", d)
	}
}

// TestConnWorkersKeepStackOnTLS checks which wait a worker uses between connections: on a TLS
// listener the one that keeps its stack through collections (nextKeepingStack: the handshake
// would grow it again), on a plain listener the shallow one, which lets the collector shrink
// it. The goroutine dump shows the frame the waiting worker is in.
func TestConnWorkersKeepStackOnTLS(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "ws"
		if useTLS {
			name = "wss"
		}
		t.Run(name, func(t *testing.T) {
			defer gateway.SetConnWorkerLimits(8, time.Minute)()
			b := newBackend(t)
			g := startGateway(t, pubConfig(t, b.addr(), useTLS))
			workers := g.ConnWorkers("pub")
			c := dialPark(t, g.Addr("pub").String(), useTLS)
			if c.resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", c.resp.StatusCode)
			}
			b.next(t, "request")
			c.conn.Close()
			waitFor(t, "the worker to wait for the next connection", func() bool { _, free := workers(); return free == 1 })
			buf := make([]byte, 1<<20)
			dump := string(buf[:runtime.Stack(buf, true)])
			if got := strings.Contains(dump, "(*connWorkers).nextKeepingStack"); got != useTLS {
				t.Fatalf("a waiting worker in nextKeepingStack: %v, want %v", got, useTLS)
			}
			if !strings.Contains(dump, "(*connWorkers).next(") {
				t.Fatal("no worker waiting in next")
			}
		})
	}
}
