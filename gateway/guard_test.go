package gateway

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

func testRoute(lim config.Limits) *config.Route {
	return &config.Route{Path: "/r", Backend: &url.URL{Scheme: "ws", Host: "b"}, Limits: lim}
}

// TestGuardSprayBounded: 100,000 distinct client addresses, each doing one handshake and
// leaving, do not grow the per-IP table past its bound, and idle entries are evicted.
func TestGuardSprayBounded(t *testing.T) {
	g := newGuard(slog.New(slog.NewTextHandler(io.Discard, nil)), nopObserver{})
	rt := testRoute(config.DefaultLimits())
	now := time.Unix(1e9, 0)
	peak := 0
	for i := 0; i < 100_000; i++ {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
		release, ref := g.admit(ip, rt, now)
		if ref != nil {
			t.Fatalf("address %d refused: %v", i, ref)
		}
		release()
		peak = max(peak, g.entries())
		now = now.Add(10 * time.Microsecond)
	}
	t.Logf("peak per-IP entries %d for 100000 addresses (bound %d)", peak, maxIPEntries)
	if peak > maxIPEntries {
		t.Fatalf("per-IP table grew to %d, bound is %d", peak, maxIPEntries)
	}
	// Once their buckets have refilled, a sweep drops them all.
	now = now.Add(sweepEvery + time.Second)
	release, _ := g.admit("192.0.2.1", rt, now)
	release()
	if n := g.entries(); n > 1 {
		t.Fatalf("%d entries left after the sweep, want at most 1", n)
	}
}

// TestGuardKeepsActiveEntries: entries with open connections survive sweeps, so per-IP caps
// cannot be dodged by making the table evict.
func TestGuardKeepsActiveEntries(t *testing.T) {
	g := newGuard(slog.New(slog.NewTextHandler(io.Discard, nil)), nopObserver{})
	lim := config.DefaultLimits()
	lim.MaxConnectionsPerIP = 1
	rt := testRoute(lim)
	now := time.Unix(1e9, 0)
	if _, ref := g.admit("203.0.113.5", rt, now); ref != nil {
		t.Fatal(ref)
	}
	for i := 0; i < maxIPEntries+10; i++ {
		release, _ := g.admit(fmt.Sprintf("10.0.%d.%d", i>>8, i&255), rt, now)
		if release != nil {
			release()
		}
	}
	now = now.Add(time.Hour)
	if _, ref := g.admit("203.0.113.5", rt, now); ref == nil || ref.status != 429 {
		t.Fatalf("second connection from a capped IP after sweeps: %v, want 429", ref)
	}
}

func TestGuardHandshakeRate(t *testing.T) {
	g := newGuard(slog.New(slog.NewTextHandler(io.Discard, nil)), nopObserver{})
	lim := config.DefaultLimits()
	lim.HandshakesPerIPPerSecond = 2
	rt := testRoute(lim)
	now := time.Unix(1e9, 0)
	for i := 0; i < 2; i++ {
		release, ref := g.admit("198.51.100.7", rt, now)
		if ref != nil {
			t.Fatalf("handshake %d refused", i)
		}
		release()
	}
	_, ref := g.admit("198.51.100.7", rt, now)
	if ref == nil || ref.status != 429 || ref.header.Get("Retry-After") != "1" {
		t.Fatalf("third handshake in the same instant: %+v, want 429 Retry-After 1", ref)
	}
	if release, ref := g.admit("198.51.100.7", rt, now.Add(600*time.Millisecond)); ref != nil {
		t.Fatalf("after 600ms at 2/s a handshake should pass: %v", ref)
	} else {
		release()
	}
}

func BenchmarkGuardAdmit(b *testing.B) {
	g := newGuard(slog.New(slog.NewTextHandler(io.Discard, nil)), nopObserver{})
	rt := testRoute(config.DefaultLimits())
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		release, _ := g.admit("127.0.0.1", rt, now)
		if release != nil {
			release()
		}
		now = now.Add(time.Second)
	}
}

// countingObserver counts Limit events.
type countingObserver struct {
	nopObserver
	limits int
}

func (o *countingObserver) Limit(string, string) { o.limits++ }

// TestLimitLogIsRateLimited: every limit that fires is counted, but a flood of them writes at
// most the log limiter's burst of lines, and the next line says how many were suppressed.
func TestLimitLogIsRateLimited(t *testing.T) {
	var buf strings.Builder
	obs := &countingObserver{}
	g := newGuard(slog.New(slog.NewTextHandler(&buf, nil)), obs)
	for i := 0; i < 1000; i++ {
		g.limited("/r", "198.51.100.1:1234", "max_connections_per_ip")
	}
	if obs.limits != 1000 {
		t.Fatalf("%d limit events counted, want 1000", obs.limits)
	}
	lines := strings.Count(buf.String(), "\n")
	if lines < 1 || lines > 25 {
		t.Fatalf("%d log lines for 1000 events, want about the burst of 20", lines)
	}
	if !strings.Contains(buf.String(), "client=198.51.100.1:1234 route=/r limit=max_connections_per_ip") {
		t.Fatalf("log line lacks client, route or limit:\n%s", buf.String())
	}
	time.Sleep(150 * time.Millisecond) // the log limiter refills one line per 100 ms
	buf.Reset()
	g.limited("/r", "198.51.100.1:1234", "max_connections_per_ip")
	if !strings.Contains(buf.String(), "suppressed=") || strings.Contains(buf.String(), "suppressed=0") {
		t.Fatalf("the next line does not report the suppressed count: %s", buf.String())
	}
}
