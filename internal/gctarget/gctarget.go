// Package gctarget keeps the garbage collector from running after every MiB or two while a
// proxy with few connections is busy. With GOGC=50 and a live heap of a few MiB, a storm of
// TLS handshakes (tens of KiB allocated each) runs dozens of collections a second, each with
// a fixed cost (stacks, globals, assists). While the process allocates (at least Quiet per
// Interval), GOGC is raised so that the heap goal stays about Headroom above the live heap;
// once it is quiet, or when the live heap is large, GOGC is Percent, so that an idle proxy
// keeps no more garbage than before and a large one keeps garbage to Percent of its live
// heap. The memory limit (GOMEMLIMIT), if set, still caps the heap.
package gctarget

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Options tune the target; zero values take the defaults.
type Options struct {
	// Percent is the GOGC while quiet or with a large live heap (default 50).
	Percent int
	// Headroom is about the least allocation between two collections while busy (default
	// 8 MiB: 32 MiB saved a little more CPU but left idle connections 8% larger, their objects
	// spread over more spans after a storm).
	Headroom uint64
	// Interval is how often allocation and the live heap are read (default 1s).
	Interval time.Duration
	// Quiet is the allocation per Interval below which GOGC is Percent (default 1 MiB).
	Quiet uint64
	// OnChange, if set, is called with each new GOGC value.
	OnChange func(percent int)
}

// The GC's goal is live + (live + stacks + globals) × GOGC/100 (the last two are what it
// scans of goroutine stacks and global variables).
var sampleNames = []string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes",
	allocsName}

// allocsName is the bytes allocated since the process started.
const allocsName = "/gc/heap/allocs:bytes"

// minScan is the runtime's smallest heap goal at GOGC=100 (4 MiB, scaled by GOGC like the
// rest of the goal): a smaller scan does not lower the goal further.
const minScan = 4 << 20

// Percent returns the GOGC that puts the heap goal about headroom above the live heap, given
// the bytes the GC scans (live heap, stacks and globals; at least minScan counts):
// max(base, headroom×100/scan), rounded down to a multiple of 10.
func Percent(scan, headroom uint64, base int) int {
	scan = max(scan, minScan)
	p := headroom * 100 / scan
	if p <= uint64(base) {
		return base
	}
	return max(base, int(min(p, 1<<20)/10*10))
}

// Start runs Run in a goroutine of its own and returns a function that waits for it to end
// (after ctx is done).
func Start(ctx context.Context, o Options) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, o)
	}()
	return func() { <-done }
}

// Run adjusts GOGC every Interval until ctx is done, and leaves it at Percent.
func Run(ctx context.Context, o Options) {
	if o.Percent <= 0 {
		o.Percent = 50
	}
	if o.Headroom == 0 {
		o.Headroom = 8 << 20
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Quiet == 0 {
		o.Quiet = 1 << 20
	}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	cur, lastAllocs := -1, read().allocs
	set := func(p int) {
		if p != cur {
			cur = p
			debug.SetGCPercent(p)
			if o.OnChange != nil {
				o.OnChange(p)
			}
		}
	}
	defer set(o.Percent)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r := read()
		p := o.Percent
		if r.allocs-lastAllocs >= o.Quiet {
			p = Percent(r.scan, o.Headroom, o.Percent)
		}
		lastAllocs = r.allocs
		set(p)
	}
}

// reading is what Run needs from runtime/metrics.
type reading struct {
	scan   uint64 // what the GC scans: live heap, stacks, globals
	allocs uint64 // bytes allocated so far
}

func read() reading {
	s := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		s[i].Name = n
	}
	metrics.Read(s)
	var r reading
	for _, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			continue
		}
		if v.Name == allocsName {
			r.allocs = v.Value.Uint64()
		} else {
			r.scan += v.Value.Uint64()
		}
	}
	return r
}
