package gctarget

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		scan, headroom uint64
		base, want     int
	}{
		{0, 32 * mib, 50, 800},          // before the first collection: as 4 MiB
		{1024, 32 * mib, 50, 800},       // a near-empty heap: as 4 MiB
		{1 * mib, 32 * mib, 50, 800},    // the runtime's 4 MiB minimum, times 8: 32 MiB
		{4 * mib, 32 * mib, 50, 800},    // a few connections: goal live + 32 MiB
		{10 * mib, 32 * mib, 50, 320},   // 320%: 32 MiB
		{30 * mib, 32 * mib, 50, 100},   // 106% rounds down to 100
		{64 * mib, 32 * mib, 50, 50},    // exactly half: base
		{1024 * mib, 32 * mib, 50, 50},  // many connections: base
		{3 * mib, 32 * mib, 100, 800},   // another base
		{500 * mib, 32 * mib, 100, 100}, // ... and it is the floor
		{8 * mib, 1 * mib, 50, 50},      // a small headroom
		{7 * mib, 32 * mib, 50, 450},    // 457% rounds down to 450
		{40 * mib, 32 * mib, 50, 80},    // 80%
		{1 << 40, 32 * mib, 50, 50},     // a huge heap
		{1, 1 << 40, 50, 1<<20 - 6},     // a huge headroom: bounded (rounded down)
		{2 * mib, 32 * mib, 3000, 3000}, // a base above the result stays
	} {
		if got := Percent(c.scan, c.headroom, c.base); got != c.want {
			t.Errorf("Percent(scan %d, headroom %d, base %d) = %d, want %d", c.scan, c.headroom, c.base, got, c.want)
		}
	}
}

// gogc reads the runtime's current GOGC.
func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestStartFollowsAllocation: while the process allocates, GOGC is raised so that the goal
// stays Headroom above a small live heap; with a live heap over twice Headroom it is Percent
// even while allocating; once allocation stops it is Percent again. The goroutine ends with
// its context and leaves GOGC at Percent.
func TestStartFollowsAllocation(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	wait := Start(ctx, Options{Percent: 50, Headroom: 4 << 20, Quiet: 16 << 10, Interval: 20 * time.Millisecond})

	waitGOGC(t, func(p int) bool { return p == 50 }, "50 while quiet")

	var busy atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if busy.Load() {
				sink = make([]byte, 16<<10)
			} else {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	defer func() { close(stop); <-done }()

	busy.Store(true)
	waitGOGC(t, func(p int) bool { return p > 50 }, "above 50 while allocating with a small live heap")

	// 64 MiB live: the goal at 50% is 32 MiB above it, more than Headroom.
	hold = make([][]byte, 64)
	for i := range hold {
		hold[i] = make([]byte, 1<<20)
	}
	runtime.GC()
	waitGOGC(t, func(p int) bool { return p == 50 }, "50 with 64 MiB live")
	for range 10 { // and it stays there while the allocation goes on
		time.Sleep(20 * time.Millisecond)
		if p := gogc(); p != 50 {
			t.Fatalf("GOGC %d with 64 MiB live while allocating, want 50", p)
		}
	}

	hold = nil
	runtime.GC()
	waitGOGC(t, func(p int) bool { return p > 50 }, "above 50 once the 64 MiB are freed")

	busy.Store(false)
	waitGOGC(t, func(p int) bool { return p == 50 }, "50 once allocation stops")

	busy.Store(true)
	waitGOGC(t, func(p int) bool { return p > 50 }, "above 50 again")
	cancel()
	wait()
	if p := gogc(); p != 50 {
		t.Fatalf("GOGC %d after Run ended, want 50", p)
	}
}

// hold keeps memory live, and sink makes garbage, for TestStartFollowsAllocation.
var (
	hold [][]byte
	sink []byte
)

func waitGOGC(t *testing.T, ok func(int) bool, want string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if ok(gogc()) {
			return
		}
	}
	t.Fatalf("GOGC stayed %d, want %s", gogc(), want)
}
