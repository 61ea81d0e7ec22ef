package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testcert"
	"github.com/wsgate/wsgate/metrics"
	"github.com/wsgate/wsgate/proxy"
	"github.com/wsgate/wsgate/wsframe"
)

// TestIdlePairsPark checks that idle connections hold no goroutine (both sides parked in the
// relay's epoll set), that data wakes them in either direction, that they park again after
// about a second without data, and that a close handshake and a drain reach parked sides.
func TestIdlePairsPark(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "ws"
		if useTLS {
			name = "wss"
		}
		t.Run(name, func(t *testing.T) { testIdlePairsPark(t, useTLS) })
	}
}

func testIdlePairsPark(t *testing.T, useTLS bool) {
	const n = 40
	b := newBackend(t)
	g := startGateway(t, pubConfig(t, b.addr(), useTLS))
	waitFor(t, "nothing parked before the test", func() bool { return proxy.Parked() == 0 })
	base := runtime.NumGoroutine()

	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialPark(t, g.Addr("pub").String(), useTLS)
		if clients[i].resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", clients[i].resp.StatusCode)
		}
		b.next(t, "request")
	}
	waitFor(t, "both sides of every pair parked", func() bool { return proxy.Parked() == 2*n })
	if got := parkedGauge(t); got != 2*n {
		t.Fatalf("wsgate_relay_parked_sides = %d, want %d", got, 2*n)
	}
	// The backend (gorilla/websocket behind net/http) keeps one goroutine per connection;
	// the gateway, with every pair parked, none.
	if got := runtime.NumGoroutine() - base; got > n+n/4 {
		t.Fatalf("%d goroutines more with %d idle pairs, want about %d (the backend's)", got, n, n)
	}

	// Data wakes the client side, the echo wakes the backend side.
	for i, c := range clients {
		msg := []byte(fmt.Sprintf("hello %d", i))
		c.send(true, wsframe.OpText, msg)
		f := c.read()
		if f.h.Opcode != wsframe.OpText || string(f.payload) != string(msg) {
			t.Fatalf("client %d: echo %v %q, want %q", i, f.h.Opcode, f.payload, msg)
		}
	}
	start := time.Now()
	waitFor(t, "pairs parked again after their data", func() bool { return proxy.Parked() == 2*n })
	if el := time.Since(start); el > 2500*time.Millisecond {
		t.Fatalf("parked again after %v, want within 2 s", el)
	}

	// A ping (like the pong to a keepalive ping) wakes a parked side for a control frame
	// only: the gateway answers it, and the side parks again at once, not a second later.
	for i, c := range clients {
		c.send(true, wsframe.OpPing, []byte("p"))
		if f := c.read(); f.h.Opcode != wsframe.OpPong || string(f.payload) != "p" {
			t.Fatalf("client %d: %v %q, want the pong", i, f.h.Opcode, f.payload)
		}
	}
	start = time.Now()
	waitFor(t, "pairs parked again after pings", func() bool { return proxy.Parked() == 2*n })
	// A hot side parks 1 to 1.5 s after its last data; 900 ms leaves room for a loaded CI
	// machine and still tells the two apart.
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Fatalf("parked again %v after the pongs, want at once", el)
	}

	// A close from a parked client is forwarded and answered.
	for _, c := range clients[:n/2] {
		c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, 1000, "bye"))
		if code, reason := c.readClose(); code != 1000 || reason != "bye" {
			t.Fatalf("close reply %d %q, want 1000 bye", code, reason)
		}
		if e := b.next(t, "close"); e.code != 1000 || e.reason != "bye" {
			t.Fatalf("backend close %d %q, want 1000 bye", e.code, e.reason)
		}
		c.expectEOF()
	}
	waitFor(t, "closed pairs gone from the parking lot", func() bool { return proxy.Parked() == n })

	// A drain reaches the parked rest: 1001 to both sides.
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Drain(ctx)
	}()
	for _, c := range clients[n/2:] {
		if code, _ := c.readClose(); code != 1001 {
			t.Fatalf("drain: client got %d, want 1001", code)
		}
		c.send(true, wsframe.OpClose, wsframe.AppendClosePayload(nil, 1001, ""))
		if e := b.next(t, "close"); e.code != 1001 {
			t.Fatalf("drain: backend got %d, want 1001", e.code)
		}
	}
	<-done
	waitFor(t, "parking lot empty", func() bool { return proxy.Parked() == 0 })
}

// pubConfig is baseConfig, with listener "pub" on TLS (a self-signed certificate, see
// tlsFileConfig) when useTLS is set.
func pubConfig(t *testing.T, backendAddr string, useTLS bool) string {
	t.Helper()
	if !useTLS {
		return baseConfig(backendAddr, "", "")
	}
	cert, key := selfSigned(t)
	return tlsFileConfig(backendAddr, cert, key, "")
}

// dialPark opens a raw client, over TLS (any certificate) when useTLS is set.
func dialPark(t *testing.T, addr string, useTLS bool) *rawClient {
	t.Helper()
	if !useTLS {
		return dialRaw(t, addr, "/echo")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	return upgradeRaw(t, conn, addr, "/echo")
}

// selfSigned writes an ECDSA P-256 certificate for 127.0.0.1 and its key; it returns the
// files' paths.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := testcert.PEM(t)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// parkedGauge reads wsgate_relay_parked_sides from a metrics registry.
func parkedGauge(t *testing.T) int {
	t.Helper()
	mfs, err := metrics.New().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "wsgate_relay_parked_sides" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("wsgate_relay_parked_sides not exported")
	return 0
}
