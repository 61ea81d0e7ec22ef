package proxy

import (
	"bufio"
	"io"
	"net"
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

	const period = 400 * time.Millisecond
	for _, c := range []struct {
		name      string
		opts      Options
		op        wsframe.Opcode
		lo, hi    time.Duration // the window of the first frame after the start
		minSpread time.Duration // the least spread expected of 40 random phases
	}{
		{"first ping", Options{PingInterval: period, CloseTimeout: time.Second, WriteTimeout: time.Second},
			wsframe.OpPing, period * 3 / 4, period, period / 10},
		{"idle close", Options{IdleTimeout: period, CloseTimeout: 100 * time.Millisecond, WriteTimeout: time.Second},
			wsframe.OpClose, period, period * 5 / 4, period / 40},
	} {
		t.Run(c.name, func(t *testing.T) {
			tps, start := startPairs(t, n, c.opts)
			ops, at := firstFrames(t, tps, start)
			for _, tp := range tps {
				tp.close()
				<-tp.done
			}
			for i, op := range ops {
				if op != c.op {
					t.Fatalf("pair %d: first frame %v, want %v", i, op, c.op)
				}
			}
			lo, hi := spread(at)
			if lo < c.lo || hi > c.hi+slack {
				t.Fatalf("%v frames %v to %v after the start, want %v to %v", c.op, lo, hi, c.lo, c.hi)
			}
			if hi-lo < c.minSpread {
				t.Fatalf("%v frames of %d pairs started together all within %v", c.op, n, hi-lo)
			}
		})
	}
}

// TestPongWakeParksAgain: the pong to a keepalive ping wakes a parked plain side, which parks
// again at once instead of staying hot (a goroutine and its stack) until the sweep parks it a
// second later; a ping from a peer does the same. Data still makes a woken side relay. Both
// peers answer every ping; the test samples the sides between the keepalive cycles.
func TestPongWakeParksAgain(t *testing.T) {
	if !parkingSupported {
		t.Skip("no parking on this system")
	}
	defer goleak.VerifyNone(t)
	tp := startPair(t, Options{PingInterval: 200 * time.Millisecond, PongTimeout: 150 * time.Millisecond, WriteTimeout: time.Second, CloseTimeout: time.Second})
	var wg sync.WaitGroup
	defer func() { tp.close(); <-tp.done; wg.Wait() }()
	var mu sync.Mutex
	pongs := map[bool]int{}
	data := make(chan []byte, 1)
	answer := func(c net.Conn, masked bool) {
		br := bufio.NewReader(c)
		for {
			var hb [wsframe.MaxHeaderSize]byte
			h, err := wsframe.ReadHeader(br, &hb)
			if err != nil {
				return
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(br, p); err != nil {
				return
			}
			if h.Masked {
				wsframe.Mask(h.Mask, 0, p)
			}
			switch h.Opcode {
			case wsframe.OpPing:
				out := wsframe.Header{Fin: true, Opcode: wsframe.OpPong, Masked: masked, Mask: [4]byte{1, 2, 3, 4}}
				q := slices.Clone(p)
				if masked {
					wsframe.Mask(out.Mask, 0, q)
				}
				c.Write(wsframe.AppendFrame(nil, out, q))
				mu.Lock()
				pongs[masked]++
				mu.Unlock()
			case wsframe.OpBinary:
				data <- p
			}
		}
	}
	wg.Go(func() { answer(tp.client, true) })
	wg.Go(func() { answer(tp.backend, false) })

	// Five keepalive cycles (1 s): after the first 100 ms both sides must be parked at nearly
	// every sample; a side kept hot by a pong would stay so for 1 to 1.5 s.
	hot := 0
	for i := range 50 {
		time.Sleep(20 * time.Millisecond)
		if i >= 5 && !(tp.p.client.parked.Load() && tp.p.backend.parked.Load()) {
			hot++
		}
	}
	mu.Lock()
	n := min(pongs[true], pongs[false])
	mu.Unlock()
	if n < 3 {
		t.Fatalf("only %d keepalive pings answered on each side in 1 s", n)
	}
	t.Logf("sides awake at %d of 45 samples, %d pongs each side", hot, n)
	if hot > 20 { // 42 of 45 when pongs kept sides hot; room for a loaded machine
		t.Fatalf("a side was awake at %d of 45 samples across %d pong wakes: pongs keep sides hot", hot, n)
	}
	// The backend's own ping is answered by the gateway, and the backend side parks again.
	tp.backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpPing}, []byte("b")))
	time.Sleep(100 * time.Millisecond)
	if !tp.p.backend.parked.Load() {
		time.Sleep(100 * time.Millisecond) // a keepalive pong may have just woken it
		if !tp.p.backend.parked.Load() {
			t.Fatal("the backend side stayed awake after its own ping")
		}
	}
	// Data wakes a side that relays it.
	tp.client.Write(clientFrame(wsframe.OpBinary, []byte("data")))
	select {
	case p := <-data:
		if string(p) != "data" {
			t.Fatalf("backend got %q", p)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("data after pong wakes was not relayed")
	}
}
