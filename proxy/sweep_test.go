//go:build linux

package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/wsframe"
)

// parkRequests is how many park requests the lot's sweep has made so far.
func parkRequests() uint64 {
	lockLot()
	defer unlockLot()
	return lot.requests
}

// skipFrame reads one frame's header and payload from c.
func skipFrame(t *testing.T, c net.Conn) wsframe.Header {
	t.Helper()
	var hb [wsframe.MaxHeaderSize]byte
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := wsframe.ReadHeader(c, &hb)
	if err != nil {
		t.Errorf("read header: %v", err)
		return h
	}
	if _, err := io.CopyN(io.Discard, c, h.Length); err != nil {
		t.Errorf("read payload: %v", err)
	}
	return h
}

// TestSweepLeavesBusySidesAlone: sides with data every 100 ms, in small frames (relayed from
// the read callback) or inside one large frame streamed slowly either way (spliced, or read
// with blocking reads where splice is not supported), are never
// asked to park and never parked over 2.5 park periods; once the traffic stops, every side is
// asked to park and parks 1 to 1.5 periods after its last data.
func TestSweepLeavesBusySidesAlone(t *testing.T) {
	if !parkingSupported {
		t.Skip("no parking on this system")
	}
	defer goleak.VerifyNone(t)
	const pairs = 20
	tps := make([]*testPair, pairs)
	for i := range tps {
		tps[i] = startPair(t, Options{CloseTimeout: time.Second, WriteTimeout: 5 * time.Second})
	}
	defer func() {
		for _, tp := range tps {
			tp.close()
			<-tp.done
		}
	}()
	// The last pair streams one large frame to the backend, 1,000 bytes per tick, and the one
	// before it one to the client: each is larger than the read buffer, so the pump moves it
	// through a pipe or with blocking reads.
	const tick = 100 * time.Millisecond
	rounds := int(5 * parkAfter / 2 / tick)
	big, down := tps[pairs-1], tps[pairs-2]
	bigPayload := bytes.Repeat([]byte("y"), 1000*rounds)
	bigFrame := clientFrame(wsframe.OpBinary, bigPayload)
	downFrame := wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpBinary}, bigPayload)
	// piece is what round r sends of frame: 1,000 payload bytes, after the header in round 0.
	piece := func(frame []byte, r int) []byte {
		hdrLen := len(frame) - len(bigPayload)
		if r == 0 {
			return frame[:hdrLen+1000]
		}
		return frame[hdrLen+1000*r : hdrLen+1000*(r+1)]
	}

	before := parkRequests()
	var wg sync.WaitGroup
	wg.Go(func() { // the large frame's reader
		if h := skipFrame(t, big.backend); h.Length != int64(len(bigPayload)) {
			t.Errorf("large frame arrived with length %d", h.Length)
		}
	})
	wg.Go(func() { // and the one to the client
		if h := skipFrame(t, down.client); h.Length != int64(len(bigPayload)) {
			t.Errorf("large frame to the client arrived with length %d", h.Length)
		}
	})
	start := time.Now()
	var lateRound time.Duration // the most a round started behind its schedule
	for r := range rounds {
		lateRound = max(lateRound, time.Since(start.Add(time.Duration(r)*tick)))
		for _, tp := range tps[:pairs-2] {
			tp.client.Write(clientFrame(wsframe.OpBinary, []byte("ping")))
			tp.backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("pong")))
		}
		for _, tp := range tps[:pairs-2] {
			skipFrame(t, tp.backend)
			skipFrame(t, tp.client)
		}
		big.client.Write(piece(bigFrame, r))
		big.backend.Write(wsframe.AppendFrame(nil, wsframe.Header{Fin: true, Opcode: wsframe.OpText}, []byte("pong")))
		skipFrame(t, big.client)
		down.backend.Write(piece(downFrame, r))
		down.client.Write(clientFrame(wsframe.OpBinary, []byte("ping")))
		skipFrame(t, down.backend)
		for i, tp := range tps {
			if tp.p.client.parked.Load() || tp.p.backend.parked.Load() {
				t.Fatalf("round %d: pair %d has a side parked while its data flows", r, i)
			}
		}
		time.Sleep(time.Until(start.Add(time.Duration(r+1) * tick)))
	}
	wg.Wait()
	if n := parkRequests() - before; n != 0 {
		if lateRound > 2*sweepEvery-2*tick {
			// The test itself stalled long enough for a side to look idle to two sweeps (a
			// gap of over 2 sweepEvery between its data).
			t.Skipf("a traffic round started %v late; cannot judge %d park requests", lateRound, n)
		}
		t.Fatalf("the sweep asked busy sides to park %d times", n)
	}

	// Idle now: all sides park within 1.5 periods (plus scheduling slack), not before 1.
	stopped := time.Now()
	deadline := stopped.Add(parkAfter*3/2 + 500*time.Millisecond)
	for {
		all := true
		for _, tp := range tps {
			if !tp.p.client.parked.Load() || !tp.p.backend.parked.Load() {
				all = false
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sides not parked %v after their last data", time.Since(stopped))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(stopped); took < parkAfter-tick {
		t.Fatalf("sides parked %v after their last data, before a park period", took)
	}
	if n := parkRequests() - before; n < 2*pairs {
		t.Fatalf("%d park requests for %d idle sides", n, 2*pairs)
	}

	// A parked side still relays.
	tp := tps[0]
	tp.client.Write(clientFrame(wsframe.OpBinary, []byte("again")))
	if h := skipFrame(t, tp.backend); h.Length != 5 {
		t.Fatalf("after parking: frame length %d", h.Length)
	}
}

// BenchmarkSweep measures the sweep's cost per hot side with data flowing (the common case:
// one flag test and clear), over sides spread in memory like real pairs.
func BenchmarkSweep(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) {
			pairs := make([]*Pair, n)
			for i := range pairs {
				pairs[i] = &Pair{}
				pairs[i].client.pair = pairs[i]
			}
			var l parkingLot
			for _, p := range pairs {
				l.hot = append(l.hot, &p.client)
				p.client.hotSlot = int32(len(l.hot))
			}
			l.sweeper = time.NewTimer(time.Hour)
			defer l.sweeper.Stop()
			b.ResetTimer()
			for range b.N {
				for _, p := range pairs {
					p.client.seen.Store(true)
				}
				l.sweep()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/side")
		})
	}
}

// TestEpollWaitNow: the lot's non-blocking wait reports nothing on a quiet descriptor, at
// once, and the descriptor once it is readable.
func TestEpollWaitNow(t *testing.T) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(epfd)
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(pipe[0])
	defer syscall.Close(pipe[1])
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(pipe[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
		t.Fatal(err)
	}
	var events [4]syscall.EpollEvent
	start := time.Now()
	if n, err := epollWaitNow(uintptr(epfd), events[:]); n != 0 || err != nil {
		t.Fatalf("quiet: %d events, %v", n, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("quiet wait took %v", d)
	}
	syscall.Write(pipe[1], []byte{1})
	n, err := epollWaitNow(uintptr(epfd), events[:])
	if n != 1 || err != nil || events[0].Fd != int32(pipe[0]) || events[0].Events&syscall.EPOLLIN == 0 {
		t.Fatalf("readable: %d events %+v, %v", n, events[:n], err)
	}
	if _, err := epollWaitNow(uintptr(pipe[0]), events[:]); err != syscall.EINVAL {
		t.Fatalf("not an epoll descriptor: %v, want EINVAL", err)
	}
}
