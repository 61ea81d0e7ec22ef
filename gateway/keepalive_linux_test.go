//go:build linux

package gateway_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// tcpTimer returns the timer column of the established IPv4 socket that match selects from
// /proc/net/tcp: the kind (0 none, 2 keepalive) and the time left in seconds.
func tcpTimer(t *testing.T, match func(local, remote int) bool) (kind int, left float64) {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	port := func(addr string) int {
		_, hex, _ := strings.Cut(addr, ":")
		p, _ := strconv.ParseInt(hex, 16, 32)
		return int(p)
	}
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when ...
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[3] != "01" || !match(port(fs[1]), port(fs[2])) {
			continue
		}
		kindHex, whenHex, _ := strings.Cut(fs[5], ":")
		k, _ := strconv.ParseInt(kindHex, 16, 32)
		when, _ := strconv.ParseInt(whenHex, 16, 64)
		return int(k), float64(when) / 100 // clock ticks (USER_HZ)
	}
	t.Fatal("socket not found in /proc/net/tcp")
	return 0, 0
}

// TestTCPKeepalive: the gateway's sockets, accepted and dialed, carry no TCP keepalive probes
// by default (Go would send them every 15 s), and a route's tcp_keepalive arms them on both.
func TestTCPKeepalive(t *testing.T) {
	for _, tc := range []struct {
		limits string
		kind   int
		min    float64 // seconds left on the keepalive timer, at least
		max    float64
	}{
		{"", 0, 0, 0},
		{`tcp_keepalive = "45s"`, 2, 30, 45},
	} {
		t.Run(tc.limits, func(t *testing.T) {
			b := newBackend(t)
			g := startGateway(t, baseConfig(b.addr(), tc.limits, ""))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, g.url("pub", "/echo"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hi" {
				t.Fatalf("echo %q, %v", msg, err)
			}
			gwPort := g.Addr("pub").(*net.TCPAddr).Port
			_, bp, _ := net.SplitHostPort(b.addr())
			backendPort, _ := strconv.Atoi(bp)
			for _, s := range []struct {
				name  string
				match func(local, remote int) bool
			}{
				{"client socket", func(local, _ int) bool { return local == gwPort }},
				{"backend socket", func(_, remote int) bool { return remote == backendPort }},
			} {
				kind, left := tcpTimer(t, s.match)
				for deadline := time.Now().Add(3 * time.Second); kind == 1 && time.Now().Before(deadline); {
					// The retransmit timer runs until the peer's (delayed) ACK of the echo.
					time.Sleep(20 * time.Millisecond)
					kind, left = tcpTimer(t, s.match)
				}
				if kind != tc.kind || tc.kind == 2 && (left < tc.min || left > tc.max) {
					t.Errorf("%s: timer %d with %.1fs left, want %d (%v to %v s)", s.name, kind, left, tc.kind, tc.min, tc.max)
				}
			}
		})
	}
}
