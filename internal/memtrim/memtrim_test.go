package memtrim

import (
	"context"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// sink keeps allocations alive until a test drops them.
var sink [][]byte

func heapFree() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

type trim struct {
	released uint64
	at       time.Time
}

func start(t *testing.T, o Options) (trims chan trim, stop func()) {
	trims = make(chan trim, 16)
	o.OnTrim = func(released uint64, _ time.Duration) { trims <- trim{released, time.Now()} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, o) }()
	return trims, func() { cancel(); <-done }
}

// burst allocates n MiB in 64 KiB pieces and keeps them referenced.
func burst(n int) {
	for range n * 16 {
		sink = append(sink, make([]byte, 64<<10))
	}
}

// TestTrimAfterBurst: after a burst of allocation whose memory is then freed, the first quiet
// interval trims: the freed pages go back to the operating system (released grows by most of
// the burst) and the heap keeps almost no free pages.
func TestTrimAfterBurst(t *testing.T) {
	defer goleak.VerifyNone(t)
	trims, stop := start(t, Options{Interval: 100 * time.Millisecond, After: 16 << 20, Quiet: 1 << 20, MinGap: time.Millisecond})
	defer stop()
	burst(64)
	sink = nil // the burst's memory becomes garbage, as a handshake storm's does
	end := time.Now()
	select {
	case tr := <-trims:
		if d := tr.at.Sub(end); d > time.Second {
			t.Errorf("trim %v after the burst, want within two quiet intervals", d)
		}
		if tr.released < 32<<20 {
			t.Errorf("trim released %d bytes, want most of the 64 MiB burst", tr.released)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no trim after the burst")
	}
	if f := heapFree(); f > 4<<20 {
		t.Errorf("heap keeps %d free bytes after the trim, want under 4 MiB", f)
	}
}

// TestNoTrimDuringBurst: while the process keeps allocating more than Quiet per interval it
// is never interrupted by a trim; the trim comes once allocation stops. Small bursts (under
// After) trigger nothing.
func TestNoTrimDuringBurst(t *testing.T) {
	defer goleak.VerifyNone(t)
	trims, stop := start(t, Options{Interval: 50 * time.Millisecond, After: 8 << 20, Quiet: 1 << 20, MinGap: time.Millisecond})
	defer stop()
	until := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(until) {
		burst(2) // 2 MiB per 10 ms: well above Quiet per interval
		sink = sink[:0]
		time.Sleep(10 * time.Millisecond)
		select {
		case <-trims:
			t.Fatal("trimmed in the middle of a burst")
		default:
		}
	}
	stopped := time.Now()
	select {
	case tr := <-trims:
		if d := tr.at.Sub(stopped); d > time.Second {
			t.Errorf("trim %v after the burst ended", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no trim after the burst ended")
	}
	runtime.GC()
	burst(1) // 1 MiB since the trim: under After
	sink = nil
	select {
	case <-trims:
		t.Fatal("trimmed after a small burst")
	case <-time.After(400 * time.Millisecond):
	}
}
