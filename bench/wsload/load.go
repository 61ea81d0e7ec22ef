package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// loadConn is one connection of a throughput or rate run: a reader goroutine that checks
// sequence numbers and records round trips, and a sender. The throughput sender is the reader
// itself (refill), except over TLS with more than readerSendMax bytes in flight, where it is a
// writer goroutine woken through a window. The rate sender is a rateShard shared with other
// connections on plain TCP, a writer goroutine of the connection's own over TLS.
type loadConn struct {
	c      *conn
	size   int
	sent   atomic.Uint64 // messages written
	unique atomic.Uint64 // distinct echoes received
	chk    seqChecker    // reader-owned
	rtt    hist          // reader-owned: messages sent after the warm-up
	warm   *hist         // reader-owned: messages sent during the warm-up (nil without one)
	lag    hist          // writer-owned (rate mode: actual - scheduled send time)
	behind uint64        // writer-owned (rate mode)
	bad    uint64        // reader-owned: wrong length or opcode
	werr   error         // writer-owned (a connection with its own writer goroutine)
	rerr   error
	dead   atomic.Bool // reader has returned
	win    *window     // throughput mode with a writer goroutine: free window slots (reader to writer)

	// Throughput mode without a writer goroutine: the reader sends a new message for each
	// echo it reads, while sending is set.
	sending *atomic.Bool
	payload []byte // under c.wmu
	next    uint64 // the next sequence number; under c.wmu
}

// readerSendMax is the most bytes a throughput connection may have in flight for its reader to
// send over TLS. A TLS write cannot be tried without waiting, so the reader's write may block;
// it can then only wait on its own unread echoes if those fill a socket buffer on the way
// back, and no buffer on the way (64 KiB at least on Linux) fills with this much.
const readerSendMax = 64 << 10

// refill sends n messages of a throughput connection in one write, stamped now (writeWith): on
// plain TCP a write that never waits; over TLS a blocking one, the window being small
// (readerSendMax). The reader calls it for the echoes of each read batch, in place of waking a
// writer goroutine: one goroutine hand-off less per batch on the generator's core. A write
// error is kept as the connection's (reported with the results), and later refills send
// nothing.
func (lc *loadConn) refill(n int, now time.Duration) {
	_ = lc.c.writeWith(func(b []byte) []byte {
		for range n {
			putHeader(lc.payload, lc.next, now)
			lc.next++
			b = lc.c.appendFrame(b, opBinary, lc.payload)
		}
		lc.sent.Store(lc.next)
		return b
	})
}

// window counts a throughput connection's free slots: the reader gives back the slots of the
// echoes it has read, once per read batch, and the writer takes all that are free at once. A
// counter and one wake-up per batch, where a channel of tokens cost a send and a receive per
// message on the generator's core.
type window struct {
	free atomic.Int64
	wake chan struct{} // one pending wake-up at most
}

func newWindow(slots int) *window {
	w := &window{wake: make(chan struct{}, 1)}
	w.free.Store(int64(slots))
	w.wake <- struct{}{}
	return w
}

// give frees n slots and wakes the writer. A wake-up already pending covers these slots too:
// the writer takes the count after it wakes.
func (w *window) give(n int) {
	w.free.Add(int64(n))
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take waits until slots are free or stop is closed, and returns how many it took: 0 once stop
// is closed, even with slots free.
func (w *window) take(stop <-chan struct{}) int {
	for {
		select {
		case <-stop:
			return 0
		default:
		}
		if n := w.free.Swap(0); n > 0 {
			return int(n)
		}
		select {
		case <-stop:
			return 0
		case <-w.wake:
		}
	}
}

// readLoop reads lc's echoes until an error, recording round trips on the messages' clock
// (time since epoch), and hands freed window slots back to the writer through win, or sends
// their messages itself (refill) while lc.sending is set. The
// round trip of a message stamped before measureFrom (on the messages' clock) goes to the
// warm-up histogram; measureFrom is read atomically as nanoseconds, since it is only known
// once the connections are open.
func (lc *loadConn) readLoop(epoch time.Time, win *window, stopping *atomic.Bool, measureFrom *atomic.Int64) {
	defer lc.dead.Store(true)
	pending := 0
	for {
		op, p, err := lc.c.readMessage()
		now := time.Since(epoch)
		if err != nil {
			if !stopping.Load() || !isTimeout(err) {
				lc.rerr = err
			}
			return
		}
		if op != opBinary || len(p) != lc.size {
			lc.bad++
			if len(p) < msgHeader {
				continue
			}
		}
		seq, ts := getHeader(p)
		before := lc.chk.unique
		lc.chk.see(seq)
		if lc.chk.unique != before {
			if int64(ts) < measureFrom.Load() {
				if lc.warm != nil {
					lc.warm.record(now - ts)
				}
			} else {
				lc.rtt.record(now - ts)
			}
			lc.unique.Store(lc.chk.unique)
			pending++
		}
		// Hand the freed window slots on once per read batch (when the next read will be a
		// syscall), so their messages leave together in one write.
		if pending > 0 && lc.c.br.Buffered() == 0 {
			switch {
			case win != nil:
				win.give(pending)
			case lc.sending != nil && lc.sending.Load():
				lc.refill(pending, now)
			}
			pending = 0
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// windowWriteLoop keeps up to the window's slots of messages in flight, batching every message it
// may send into one Write; the messages of one batch carry the same send time.
func (lc *loadConn) windowWriteLoop(epoch time.Time, win *window, stop <-chan struct{}) {
	payload := newPayload(lc.size)
	var seq uint64
	for {
		n := win.take(stop)
		if n == 0 {
			return
		}
		c := lc.c
		c.wmu.Lock()
		b := c.wbuf[:0]
		now := time.Since(epoch)
		for i := 0; i < n; i++ {
			putHeader(payload, seq, now)
			seq++
			b = c.appendFrame(b, opBinary, payload)
		}
		c.wbuf = b
		err := c.writeFrames(b)
		c.wmu.Unlock()
		lc.sent.Store(seq)
		if err != nil {
			lc.werr = err
			return
		}
	}
}

// newPayload returns a message body of size bytes: room for the header, then filler.
func newPayload(size int) []byte {
	payload := make([]byte, size)
	for i := msgHeader; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	return payload
}

// noteLag records how late a scheduled send left (rate mode; writer-owned).
func (lc *loadConn) noteLag(late, limit time.Duration) {
	lc.lag.record(late)
	if late > limit {
		lc.behind++
	}
}

// rateShard sends the scheduled messages of many connections from one goroutine: rate mode on
// plain TCP, where offer never blocks. lcs[j] sends every interval from offsets[j] until end
// (offsets ascending and below interval, so the sends come round by round in the order of lcs),
// each message stamped with its scheduled time like scheduledWriteLoop's. With one goroutine
// per core for all connections, instead of a goroutine and a timer per connection, sends wait
// less for the scheduler: at 20,000 msg/s over 1,000 connections the send lag's p99 halved.
// A send's lateness is taken when it leaves, so a slow write shows in the lateness of the
// sends after it.
func rateShard(lcs []*loadConn, offsets []time.Duration, base time.Time, shift, interval, warmup, end, lagLimit time.Duration) {
	payload := newPayload(lcs[0].size)
	seqs := make([]uint64, len(lcs))
	round, j := time.Duration(0), 0
	for {
		next := offsets[j] + round*interval
		if next >= end {
			return // every later send is later still
		}
		now := time.Since(base)
		if next > now {
			time.Sleep(next - now)
			now = time.Since(base)
		}
		lc := lcs[j]
		if next >= warmup {
			lc.noteLag(now-next, lagLimit)
		}
		putHeader(payload, seqs[j], shift+next)
		if lc.c.offer(opBinary, payload) == nil {
			seqs[j]++
			lc.sent.Store(seqs[j])
		}
		if j++; j == len(lcs) {
			j = 0
			round++
		}
	}
}

// scheduledWriteLoop sends one message every interval starting at base+offset until end, stamping
// each with its scheduled send time (on the messages' clock: shift + the time since base). A message whose actual send is later than scheduled still
// carries the scheduled time, so the queueing delay is part of its measured latency (no
// coordinated omission). Messages due together are written in one batch.
func (lc *loadConn) scheduledWriteLoop(base time.Time, shift, offset, interval, warmup, end, lagLimit time.Duration) {
	payload := newPayload(lc.size)
	var seq uint64
	next := offset
	for {
		now := time.Since(base)
		if next >= end {
			return
		}
		if next > now {
			time.Sleep(next - now)
			now = time.Since(base)
		}
		c := lc.c
		c.wmu.Lock()
		b := c.wbuf[:0]
		for next <= now && next < end {
			if next >= warmup {
				lc.noteLag(now-next, lagLimit)
			}
			putHeader(payload, seq, shift+next)
			seq++
			b = c.appendFrame(b, opBinary, payload)
			next += interval
		}
		c.wbuf = b
		err := c.writeFrames(b)
		c.wmu.Unlock()
		lc.sent.Store(seq)
		if err != nil {
			lc.werr = err
			return
		}
	}
}

// dialAll opens n connections with at most par dials in flight. Source addresses rotate in
// blocks of perIP connections when dc.LocalAddrs is set. opened, if not nil, is called with
// each connection as soon as it is open (from the dialing goroutine). It returns the
// connections that succeeded (in order, nil for failures) and the failures.
func dialAll(dc *dialConfig, n, par, perIP int, opened func(i int, c *conn)) ([]*conn, uint64, error) {
	conns := make([]*conn, n)
	var failed atomic.Uint64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	var next atomic.Int64
	if par < 1 {
		par = 1
	}
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				var ip net.IP
				if len(dc.LocalAddrs) > 0 && perIP > 0 {
					ip = dc.LocalAddrs[(i/perIP)%len(dc.LocalAddrs)]
				}
				c, err := dial(dc, ip)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				conns[i] = c
				if opened != nil {
					opened(i, c)
				}
			}
		}()
	}
	wg.Wait()
	return conns, failed.Load(), firstErr
}

// runLoad runs throughput (rate == 0) or rate mode.
//
// Each connection's reader starts as soon as the connection is open, so it answers the
// target's keepalive pings while the other connections are still being opened (a gateway
// with ping_interval shorter than the opening phase would otherwise close them for a missed
// pong). Timestamps in messages count from epoch, taken before the first dial; the schedule
// counts from base, taken when every connection is open.
func runLoad(o *options) (*result, error) {
	if o.size < msgHeader {
		return nil, fmt.Errorf("-size must be at least %d (sequence number + timestamp)", msgHeader)
	}
	rateMode := o.mode == "rate"
	if rateMode && o.rate <= 0 {
		return nil, errors.New("-rate must be > 0")
	}
	if !rateMode && o.window < 1 {
		return nil, errors.New("-window must be >= 1")
	}
	dc, err := o.dialConfig()
	if err != nil {
		return nil, err
	}
	if o.split && dc.TLS == nil {
		return nil, errors.New("-split needs a wss:// URL (it makes every message a TLS record of its own)")
	}
	epoch := time.Now()
	var stopping, sending atomic.Bool
	var measureFrom atomic.Int64 // on the messages' clock; nothing counts as measured until set
	measureFrom.Store(math.MaxInt64)
	var readers, flushers sync.WaitGroup
	opened := make([]*loadConn, o.conns)
	conns, failed, firstErr := dialAll(dc, o.conns, o.dialPar, o.perIP, func(i int, c *conn) {
		lc := &loadConn{c: c, size: o.size}
		lc.rtt.prefault()
		lc.lag.prefault()
		if o.warmup > 0 {
			lc.warm = new(hist)
			lc.warm.prefault()
		}
		if o.split {
			c.split = frameSize(o.size)
		}
		c.setNonblocking(&flushers) // plain TCP: then sent by a rateShard or the reader, not a goroutine of its own
		switch {
		case rateMode:
		case c.nonblocking || o.window*(o.size+maxHeader) <= readerSendMax:
			lc.sending, lc.payload = &sending, newPayload(o.size)
		default:
			lc.win = newWindow(o.window)
		}
		opened[i] = lc
		readers.Add(1)
		go func() {
			defer readers.Done()
			lc.readLoop(epoch, lc.win, &stopping, &measureFrom)
		}()
	})
	res := &result{Mode: o.mode, URL: o.url, Conns: o.conns, Size: o.size, Split: o.split, ConnErrors: failed}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	var lcs []*loadConn
	for i, c := range conns {
		if c != nil {
			lcs = append(lcs, opened[i])
		}
	}
	defer func() {
		stopping.Store(true)
		for _, lc := range lcs {
			lc.c.nc.Close()
		}
		readers.Wait()
		flushers.Wait()
	}()
	if len(lcs) == 0 {
		return res, fmt.Errorf("no connection could be opened: %v", firstErr)
	}
	var interval time.Duration
	if rateMode {
		res.Rate = o.rate
		interval = time.Duration(float64(len(lcs)) / o.rate * float64(time.Second))
		if interval <= 0 {
			return nil, errors.New("-rate too high for the connection count")
		}
	} else {
		res.Window = o.window
	}

	base := time.Now()
	shift := base.Sub(epoch) // base on the messages' clock
	measureFrom.Store(int64(shift + o.warmup))
	end := o.warmup + o.duration // on the writers' clock (time since base)
	stop := make(chan struct{})
	var writers sync.WaitGroup
	// Rate mode on plain TCP: connection i goes to shard i mod GOMAXPROCS, keeping its offset.
	shards := make([]struct {
		lcs     []*loadConn
		offsets []time.Duration
	}, runtime.GOMAXPROCS(0))
	for i, lc := range lcs {
		offset := interval * time.Duration(i) / time.Duration(len(lcs))
		if lc.sending != nil {
			continue // the reader sends, after the first window below
		}
		if lc.c.nonblocking {
			sh := &shards[i%len(shards)]
			sh.lcs = append(sh.lcs, lc)
			sh.offsets = append(sh.offsets, offset)
			continue
		}
		writers.Add(1)
		if rateMode {
			go func() {
				defer writers.Done()
				lc.scheduledWriteLoop(base, shift, offset, interval, o.warmup, end, o.lagLimit)
			}()
		} else {
			go func() {
				defer writers.Done()
				lc.windowWriteLoop(epoch, lc.win, stop)
			}()
		}
	}
	for _, sh := range shards {
		if len(sh.lcs) > 0 {
			writers.Add(1)
			go func() {
				defer writers.Done()
				rateShard(sh.lcs, sh.offsets, base, shift, interval, o.warmup, end, o.lagLimit)
			}()
		}
	}
	if !rateMode {
		sending.Store(true)
		for _, lc := range lcs {
			if lc.sending != nil {
				lc.refill(o.window, time.Since(epoch))
			}
		}
	}
	// Warm up, then run for the duration; the echo and send counts at both ends of the
	// measured part give the throughput figures.
	counts := func() (recv, sent uint64) {
		for _, lc := range lcs {
			recv += lc.unique.Load()
			sent += lc.sent.Load()
		}
		return recv, sent
	}
	time.Sleep(o.warmup - time.Since(base))
	recvAtStart, sentAtStart := counts()
	meter := startCPU(o.pids)
	measured := time.Now()
	time.Sleep(end - time.Since(base))
	wall := time.Since(measured)
	recvAtStop, sentAtStop := counts()
	close(stop)
	sending.Store(false)
	writers.Wait()
	selfCPU, tgtCPU := meter.stop()
	res.CoresBusy = meter.coresBusy
	res.CoresSteal = meter.coresSteal

	// Drain: wait (bounded) for the echoes still in flight, then unblock the readers.
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) {
		pending := false
		for _, lc := range lcs {
			if lc.unique.Load() < lc.sent.Load() && !lc.dead.Load() {
				pending = true
				break
			}
		}
		if !pending {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopping.Store(true)
	for _, lc := range lcs {
		_ = lc.c.nc.SetReadDeadline(time.Now())
		if lc.sending != nil && !lc.c.nonblocking {
			_ = lc.c.nc.SetWriteDeadline(time.Now()) // a reader in a blocking write
		}
	}
	readers.Wait()
	// Flushers still writing (to a target that stopped reading) end at a write deadline.
	for _, lc := range lcs {
		if lc.c.nonblocking {
			_ = lc.c.nc.SetWriteDeadline(time.Now())
		}
	}
	flushers.Wait()

	var h, warm, lag hist
	for _, lc := range lcs {
		sent := lc.sent.Load()
		res.Sent += sent
		res.Lost += lc.chk.lost(sent)
		res.Dup += lc.chk.dup
		res.Reordered += lc.chk.reordered
		res.Corrupt += lc.bad
		res.Behind += lc.behind
		h.merge(&lc.rtt)
		if lc.warm != nil {
			warm.merge(lc.warm)
		}
		lag.merge(&lc.lag)
		werr := lc.werr
		if lc.sending != nil || lc.c.nonblocking {
			werr = lc.c.writeErr()
		}
		if werr != nil || lc.rerr != nil {
			err := werr
			if err == nil {
				err = lc.rerr
			}
			res.ConnErrors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		}
	}
	res.Duration = wall.Seconds()
	res.Msgs = recvAtStop - recvAtStart
	res.MsgsPerSec = float64(res.Msgs) / wall.Seconds()
	res.MBPerSec = res.MsgsPerSec * float64(o.size) / 1e6
	res.setLatency(&h)
	if o.warmup > 0 {
		res.Warmup = o.warmup.Seconds()
		res.WarmupMsgs = warm.n
		res.WarmupP99 = us(warm.quantile(0.99))
		res.WarmupMax = us(warm.max)
	}
	if rateMode {
		res.LagP99 = us(lag.quantile(0.99))
		res.LagMax = us(lag.max)
		res.AchievedRate = float64(sentAtStop-sentAtStart) / wall.Seconds()
	}
	res.GenCPU = selfCPU
	res.TargetCPU = tgtCPU
	res.Errors = res.Lost + res.Dup + res.Reordered + res.Corrupt + res.ConnErrors
	return res, nil
}
