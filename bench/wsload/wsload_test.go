package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// echoServer echoes every message; mangle, when set, may drop or hold back messages by sequence
// number: it returns the messages to send now (in order) for the one received.
func echoServer(t *testing.T, mangle func(seq uint64, msg []byte) [][]byte) *httptest.Server {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			out := [][]byte{msg}
			if mangle != nil && len(msg) >= msgHeader {
				seq, _ := getHeader(msg)
				out = mangle(seq, msg)
			}
			for _, m := range out {
				if err := c.WriteMessage(op, m); err != nil {
					return
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func testOptions(srv *httptest.Server, conns int) *options {
	return &options{
		mode:     "throughput",
		url:      "ws" + strings.TrimPrefix(srv.URL, "http") + "/any/path",
		conns:    conns,
		window:   4,
		size:     64,
		duration: 300 * time.Millisecond,
		drain:    2 * time.Second,
		timeout:  5 * time.Second,
		dialPar:  4,
		lagLimit: time.Millisecond,
	}
}

func TestThroughputCleanEcho(t *testing.T) {
	srv := echoServer(t, nil)
	res, err := runLoad(testOptions(srv, 4))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msgs == 0 || res.Sent == 0 {
		t.Fatalf("no messages echoed: %+v", res)
	}
	if res.Errors != 0 {
		t.Fatalf("errors on a correct echo: %+v", res)
	}
	if res.P50 <= 0 || res.P99 < res.P50 {
		t.Fatalf("implausible latency: p50 %v p99 %v", res.P50, res.P99)
	}
}

func TestThroughputDetectsLossAndReorder(t *testing.T) {
	var held []byte
	srv := echoServer(t, func(seq uint64, msg []byte) [][]byte {
		switch seq {
		case 5: // dropped
			return nil
		case 10: // held back, sent after 11
			held = append([]byte(nil), msg...)
			return nil
		case 11:
			return [][]byte{msg, held}
		case 20: // duplicated
			return [][]byte{msg, msg}
		}
		return [][]byte{msg}
	})
	res, err := runLoad(testOptions(srv, 1))
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 30 {
		t.Fatalf("too few messages sent to test: %+v", res)
	}
	if res.Lost != 1 || res.Reordered != 1 || res.Dup != 1 {
		t.Fatalf("want lost 1, reordered 1, duplicated 1; got lost %d, reordered %d, duplicated %d",
			res.Lost, res.Reordered, res.Dup)
	}
	if res.Errors != 3 {
		t.Fatalf("want 3 errors, got %d", res.Errors)
	}
}

func TestRateOpenLoop(t *testing.T) {
	srv := echoServer(t, nil)
	o := testOptions(srv, 4)
	o.mode = "rate"
	o.rate = 400
	res, err := runLoad(o)
	if err != nil {
		t.Fatal(err)
	}
	// 400 msg/s for 0.3 s = 120 scheduled sends.
	if res.Sent < 110 || res.Sent > 125 || res.Errors != 0 {
		t.Fatalf("rate run: sent %d, errors %d (%+v)", res.Sent, res.Errors, res)
	}
}

// TestRateWarmup: a target that holds each connection's first echo for 300 ms (as a cold
// process might) delays the messages sent in the first 300 ms. With a 500 ms warm-up those are
// kept apart: the warm-up's p99 shows the stall, the measured figures do not, and the counts
// cover the measured part only. Without the warm-up the same stall is in the p99.
func TestRateWarmup(t *testing.T) {
	const stall = 300 * time.Millisecond
	srv := echoServer(t, func(seq uint64, msg []byte) [][]byte {
		if seq == 0 {
			time.Sleep(stall)
		}
		return [][]byte{msg}
	})
	run := func(warmup time.Duration) *result {
		o := testOptions(srv, 4)
		o.mode = "rate"
		o.rate = 200 // 50 msg/s per connection
		o.duration = 500 * time.Millisecond
		o.warmup = warmup
		res, err := runLoad(o)
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 {
			t.Fatalf("errors on a correct echo: %+v", res)
		}
		return res
	}

	res := run(500 * time.Millisecond)
	stallUs := float64(stall.Microseconds())
	if res.WarmupP99 < stallUs*0.8 || res.WarmupMsgs < 40 {
		t.Errorf("warm-up: %d round trips, p99 %vµs; want about 100 and the %v stall", res.WarmupMsgs, res.WarmupP99, stall)
	}
	if res.P99 > stallUs/3 {
		t.Errorf("measured p99 %vµs holds the warm-up's stall", res.P99)
	}
	// 200 msg/s over the measured 0.5 s: about 100 echoes, where the whole run sent about 200.
	if res.Msgs < 80 || res.Msgs > 120 || res.AchievedRate < 160 || res.AchievedRate > 240 || res.Sent < 180 {
		t.Errorf("measured part: %d echoes at %.0f msg/s sent, %d sent in all; want about 100 at 200, 200 in all",
			res.Msgs, res.AchievedRate, res.Sent)
	}
	if res.Duration < 0.45 || res.Duration > 0.6 {
		t.Errorf("measured duration %.3fs, want 0.5s", res.Duration)
	}

	res = run(0)
	if res.P99 < stallUs*0.8 || res.WarmupMsgs != 0 || res.Warmup != 0 {
		t.Errorf("without a warm-up: p99 %vµs (want the %v stall), warm-up figures %+v", res.P99, stall, res)
	}
}

// TestPingsAnsweredWhileOpening: a target that pings each connection right after its upgrade
// gets the pong at once, while wsload is still opening the other connections (the second
// upgrade is held for a second), and wsload's latencies still count from the send times.
func TestPingsAnsweredWhileOpening(t *testing.T) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var mu sync.Mutex
	var upgrades int
	pongAfter := make(chan time.Duration, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upgrades++
		second := upgrades == 2
		mu.Unlock()
		if second {
			time.Sleep(time.Second)
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		sent := time.Now()
		c.SetPongHandler(func(string) error {
			pongAfter <- time.Since(sent)
			return nil
		})
		if err := c.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
			return
		}
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(op, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	for _, mode := range []string{"throughput", "rate"} {
		o := testOptions(srv, 2)
		o.mode, o.rate, o.dialPar = mode, 100, 1
		mu.Lock()
		upgrades = 0
		mu.Unlock()
		res, err := runLoad(o)
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 || res.Msgs == 0 {
			t.Fatalf("%s: errors %d, msgs %d (%+v)", mode, res.Errors, res.Msgs, res)
		}
		// The opening phase took a second: latencies that counted from it would show it.
		if res.P99 > 500_000 {
			t.Fatalf("%s: p99 %v µs includes the opening phase", mode, res.P99)
		}
		for range 2 {
			select {
			case d := <-pongAfter:
				if d > 500*time.Millisecond {
					t.Fatalf("%s: a ping waited %v for its pong (the opening phase took 1 s)", mode, d)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: a ping was never answered", mode)
			}
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 100000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 50000}, {0.99, 99000}, {0.999, 99900}} {
		got := float64(h.quantile(c.q)) / 1000
		if got < c.want*0.99 || got > c.want*1.01 {
			t.Errorf("q%v = %vµs, want ≈ %vµs", c.q, got, c.want)
		}
	}
	for _, v := range []int64{0, 1, 255, 256, 257, 1000, 123456789, 1 << 40} {
		i := histIndex(v)
		if mid := histValue(i); v > 256 && (float64(mid) < float64(v)*0.99 || float64(mid) > float64(v)*1.01) {
			t.Errorf("value %d -> bucket %d -> %d", v, i, mid)
		}
	}
}

// TestHistPrefault: recording into prefaulted histograms touches almost no new page, where fresh
// ones fault a page in per bucket range first used (on a virtual machine about 10 µs each:
// with a thousand connections, a stall of the generator at the start of every run).
func TestHistPrefault(t *testing.T) {
	const n = 200
	if minorFaults() < 0 {
		t.Skip("no page fault count on this system")
	}
	fill := func(prefault bool) int64 {
		hs := make([]*hist, n)
		for i := range hs {
			hs[i] = new(hist)
			if prefault {
				hs[i].prefault()
			}
		}
		before := minorFaults()
		for _, h := range hs {
			for v := time.Duration(1); v < time.Minute; v *= 4 {
				h.record(v)
			}
		}
		return minorFaults() - before
	}
	fresh := fill(false)
	pre := fill(true)
	// (Under the race detector the first access to each word's shadow memory faults too, so
	// the bound is relative.)
	if pre*4 > fresh || fresh < n {
		t.Fatalf("page faults recording into %d histograms: %d fresh, %d prefaulted", n, fresh, pre)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	o := &options{mode: "throughput", url: "ws://10.0.0.1:80/", conns: 1, window: 1, size: 64}
	if _, err := runLoad(o); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("want loopback refusal, got %v", err)
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	for _, size := range []int{64, 64 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			c := &conn{mask: 1}
			p := make([]byte, size)
			buf := make([]byte, 0, size+maxHeader)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				buf = c.appendFrame(buf[:0], opBinary, p)
			}
		})
	}
}

// TestMaskMatchesDefinition checks the masking against RFC 6455's definition, byte i XOR key
// byte i mod 4, for every length up to 200 (the vector routine's blocks and tails), and a
// frame appendFrame builds.
func TestMaskMatchesDefinition(t *testing.T) {
	const key = 0xA1B2C3D4
	kb := [4]byte{0xA1, 0xB2, 0xC3, 0xD4}
	src := make([]byte, 200)
	for i := range src {
		src[i] = byte(i*37 + 11)
	}
	for n := 0; n <= len(src); n++ {
		want := make([]byte, n)
		for i := range want {
			want[i] = src[i] ^ kb[i%4]
		}
		got := append([]byte(nil), src[:n]...)
		maskBytes(got, key)
		if !bytes.Equal(got, want) {
			t.Fatalf("maskBytes, %d bytes: % x, want % x", n, got, want)
		}
	}
	c := &conn{mask: 1}
	f := c.appendFrame(nil, opBinary, src[:130])
	if len(f) != 4+4+130 || !bytes.Equal(f[:4], []byte{0x82, 0x80 | 126, 0, 130}) {
		t.Fatalf("frame header % x", f[:min(8, len(f))])
	}
	k := [4]byte(f[4:8])
	for i, v := range f[8:] {
		if v^k[i%4] != src[i] {
			t.Fatalf("payload byte %d: %#x, key % x, want %#x", i, v, k, src[i])
		}
	}
}

func TestHandshakeAndIdle(t *testing.T) {
	srv := echoServer(t, nil)
	o := testOptions(srv, 2)
	o.mode = "handshake"
	hs, err := runHandshake(o)
	if err != nil {
		t.Fatal(err)
	}
	if hs.Handshakes == 0 || hs.Errors != 0 {
		t.Fatalf("handshake run: %+v", hs)
	}

	o = testOptions(srv, 0)
	o.mode = "idle"
	o.n = 30
	o.sample = 5
	o.perIP = 10 // 127.0.0.2, .3, .4
	o.srcBase = "127.0.0.2"
	o.pids = []int{os.Getpid()}
	idle, err := runIdle(o)
	if err != nil {
		t.Fatal(err)
	}
	if idle.Open != 30 || idle.AliveOK != 5 || idle.Errors != 0 || idle.RSSAfter == 0 {
		t.Fatalf("idle run: %+v", idle)
	}
}

// TestIdleAnswersPings: idle mode answers the target's keepalive pings while it holds the
// connections. The server pings every 50 ms and drops a connection whose pong is 200 ms
// late; after a second of holding, every sampled connection must still echo.
func TestIdleAnswersPings(t *testing.T) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetPongHandler(func(string) error { return c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)) })
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if c.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)) != nil {
						return
					}
				}
			}
		}()
		for {
			op, msg, err := c.ReadMessage() // fails once a pong is 200 ms late
			if err != nil {
				return
			}
			if err := c.WriteMessage(op, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	o := testOptions(srv, 0)
	o.mode, o.n, o.sample, o.settle = "idle", 10, 10, time.Second
	res, err := runIdle(o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Open != 10 || res.AliveOK != 10 || res.Errors != 0 {
		t.Fatalf("idle run: %d open, %d of 10 alive, %d errors (%s)", res.Open, res.AliveOK, res.Errors, res.FirstError)
	}
}

// TestRateStalledConnectionHoldsUpNoOther: in rate mode one goroutine sends for many plain
// connections. The target stops reading one of them for longer than the run, while 512 KiB
// messages fill its socket within about a second. The other connections' messages must keep
// arriving on schedule (the target sees no gap near a second between two of them; a sender
// blocked on the stalled socket leaves a gap of over 1.5 s), every scheduled message must be
// sent, and once the target reads again the stalled connection's queued messages must arrive
// whole and in order: no errors, nothing lost.
func TestRateStalledConnectionHoldsUpNoOther(t *testing.T) {
	const stall = 3 * time.Second
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var mu sync.Mutex
	accepted := 0
	var arrivals [][]time.Time // per healthy connection, when each message arrived
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		mu.Lock()
		accepted++
		stalled, slot := accepted == 1, len(arrivals)
		if !stalled {
			arrivals = append(arrivals, nil)
		}
		mu.Unlock()
		if stalled {
			time.Sleep(stall)
		}
		for {
			op, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if !stalled {
				mu.Lock()
				arrivals[slot] = append(arrivals[slot], time.Now())
				mu.Unlock()
			}
			if err := c.WriteMessage(op, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)

	o := testOptions(srv, 4)
	o.mode = "rate"
	o.rate = 40 // 10 msg/s per connection: 25 per connection over the run
	o.size = 512 << 10
	o.duration = 2500 * time.Millisecond
	o.lagLimit = time.Second
	o.drain = 10 * time.Second
	o.dialPar = 1 // the first connection opened is the first accepted
	res, err := runLoad(o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 96 || res.Sent > 104 {
		t.Errorf("sent %d messages, want the 100 scheduled", res.Sent)
	}
	if res.Errors != 0 {
		t.Errorf("errors: %+v", res)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, at := range arrivals {
		if len(at) < 24 {
			t.Errorf("healthy connection %d: %d messages arrived, want 25", k, len(at))
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap > 900*time.Millisecond {
				t.Errorf("healthy connection %d: no message for %v (messages %d to %d): the stalled connection held up its sends",
					k, gap.Round(time.Millisecond), i-1, i)
				break
			}
		}
	}
}
