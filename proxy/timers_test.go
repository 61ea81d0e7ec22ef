package proxy

import (
	"bufio"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// startPairs starts n pairs with opts at the same moment and returns them with that moment.
func startPairs(t *testing.T, n int, opts Options) ([]*testPair, time.Time) {
	tps := make([]*testPair, n)
	for i := range tps {
		cg, ct := socketPair(t)
		bg, bt := socketPair(t)
		tps[i] = &testPair{client: ct, backend: bt, done: make(chan Result, 1)}
		tps[i].p = NewPair(cg, bufio.NewReaderSize(cg, readerSize), bg, bufio.NewReaderSize(bg, readerSize), &opts)
	}
	start := time.Now()
	for _, tp := range tps {
		go func() { tp.done <- tp.p.Run() }()
	}
	return tps, start
}

// firstFrames reads every pair's first frame to its client, all at once, and returns the
// opcodes and when each arrived after start.
func firstFrames(t *testing.T, tps []*testPair, start time.Time) ([]wsframe.Opcode, []time.Duration) {
	ops := make([]wsframe.Opcode, len(tps))
	at := make([]time.Duration, len(tps))
	var wg sync.WaitGroup
	for i, tp := range tps {
		wg.Go(func() {
			var hb [wsframe.MaxHeaderSize]byte
			tp.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			h, err := wsframe.ReadHeader(tp.client, &hb)
			if err != nil {
				t.Errorf("pair %d: read: %v", i, err)
				return
			}
			ops[i], at[i] = h.Opcode, time.Since(start)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return ops, at
}

// spread returns the smallest and largest of ds.
func spread(ds []time.Duration) (time.Duration, time.Duration) {
	return slices.Min(ds), slices.Max(ds)
}

// TestTimersStartAtRandomPhases: pairs started together send their first keepalive ping at
// different moments in the last quarter of the first interval, and close for idleness at
// different moments between 1 and 1.25 idle_timeout, instead of all at once.
func TestTimersStartAtRandomPhases(t *testing.T) {
	defer goleak.VerifyNone(t)
	const n = 40
	// Timers never fire early, so the lower bounds are strict; the upper bounds allow for a
	// loaded machine (a CI run with other packages' tests alongside).
	const slack = time.Second

	t.Run("first ping", func(t *testing.T) {
		const interval = 400 * time.Millisecond
		tps, start := startPairs(t, n, Options{PingInterval: interval, CloseTimeout: time.Second, WriteTimeout: time.Second})
		ops, at := firstFrames(t, tps, start)
		for i, op := range ops {
			if op != wsframe.OpPing {
				t.Fatalf("pair %d: first frame %v, want a ping", i, op)
			}
		}
		for _, tp := range tps {
			tp.close()
			<-tp.done
		}
		lo, hi := spread(at)
		if lo < interval*3/4 || hi > interval+slack {
			t.Fatalf("first pings %v to %v after the start, want %v to %v", lo, hi, interval*3/4, interval)
		}
		if hi-lo < interval/10 {
			t.Fatalf("first pings of %d pairs started together all within %v", n, hi-lo)
		}
	})

	t.Run("idle close", func(t *testing.T) {
		const idle = 400 * time.Millisecond
		tps, start := startPairs(t, n, Options{IdleTimeout: idle, CloseTimeout: 100 * time.Millisecond, WriteTimeout: time.Second})
		ops, at := firstFrames(t, tps, start)
		for i, op := range ops {
			if op != wsframe.OpClose {
				t.Fatalf("pair %d: first frame %v, want a close", i, op)
			}
		}
		for _, tp := range tps {
			tp.close()
			<-tp.done
		}
		lo, hi := spread(at)
		if lo < idle || hi > idle*5/4+slack {
			t.Fatalf("idle closes %v to %v after the start, want %v to %v", lo, hi, idle, idle*5/4)
		}
		if hi-lo < idle/40 {
			t.Fatalf("idle closes of %d pairs started together all within %v", n, hi-lo)
		}
	})
}
