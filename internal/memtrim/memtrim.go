// Package memtrim gives the Go heap's free pages back to the operating system once a burst of
// allocation is over: a storm of new connections (TLS handshakes, upgrade requests) leaves
// megabytes of freed heap that the runtime's background scavenger returns only slowly and only
// down to its GC goal. A proxy holding many idle connections afterwards allocates next to
// nothing, so one forced collection and scavenge at that moment costs little and shows in
// its RSS at once. HAProxy trims its pools after load for the same reason.
package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Options tune the trimmer; zero values take the defaults.
type Options struct {
	// Interval is how often allocation is sampled (default 1s).
	Interval time.Duration
	// After is how many bytes must have been allocated since the last trim before another is
	// worth it (default 32 MiB).
	After uint64
	// Quiet is the allocation per Interval below which the process counts as quiet (default
	// 1 MiB): a trim waits for a quiet interval, so it never runs in the middle of a burst.
	Quiet uint64
	// MinGap is the least time between two trims (default 10s).
	MinGap time.Duration
	// OnTrim, if set, is called after each trim with the bytes it returned to the operating
	// system and how long it took.
	OnTrim func(released uint64, took time.Duration)
}

const (
	allocsMetric   = "/gc/heap/allocs:bytes"
	releasedMetric = "/memory/classes/heap/released:bytes"
)

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

// Run trims until ctx is done.
func Run(ctx context.Context, o Options) {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.After == 0 {
		o.After = 32 << 20
	}
	if o.Quiet == 0 {
		o.Quiet = 1 << 20
	}
	if o.MinGap <= 0 {
		o.MinGap = 10 * time.Second
	}
	samples := []metrics.Sample{{Name: allocsMetric}, {Name: releasedMetric}}
	read := func() (allocs, released uint64) {
		metrics.Read(samples)
		return samples[0].Value.Uint64(), samples[1].Value.Uint64()
	}
	prev, _ := read()
	sinceTrim := prev // allocation count at the last trim
	var lastTrim time.Time
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			allocs, before := read()
			burst := allocs - prev
			prev = allocs
			if allocs-sinceTrim < o.After || burst >= o.Quiet || now.Sub(lastTrim) < o.MinGap {
				continue
			}
			start := time.Now()
			debug.FreeOSMemory()
			took := time.Since(start)
			var after uint64
			prev, after = read()
			sinceTrim, lastTrim = prev, time.Now()
			if o.OnTrim != nil {
				var released uint64
				if after > before {
					released = after - before
				}
				o.OnTrim(released, took)
			}
		}
	}
}
