package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// loadConn is one connection of a throughput or rate run: a writer goroutine (window-limited or
// scheduled) and a reader goroutine that checks sequence numbers and records round trips.
type loadConn struct {
	c      *conn
	size   int
	sent   atomic.Uint64 // messages written
	unique atomic.Uint64 // distinct echoes received
	chk    seqChecker    // reader-owned
	rtt    hist          // reader-owned
	lag    hist          // writer-owned (rate mode: actual - scheduled send time)
	behind uint64        // writer-owned (rate mode)
	bad    uint64        // reader-owned: wrong length or opcode
	werr   error
	rerr   error
	dead   atomic.Bool // reader has returned
}

func (lc *loadConn) readLoop(base time.Time, tokens chan struct{}, stopping *atomic.Bool) {
	defer lc.dead.Store(true)
	pending := 0
	for {
		op, p, err := lc.c.readMessage()
		now := time.Since(base)
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
			lc.rtt.record(now - ts)
			lc.unique.Store(lc.chk.unique)
			pending++
		}
		// Hand the freed window slots to the writer once per read batch (when the next read
		// will be a syscall), so it wakes once and writes them all in one go.
		if tokens != nil && pending > 0 && lc.c.br.Buffered() == 0 {
			for ; pending > 0; pending-- {
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// windowWriteLoop keeps up to len(tokens) messages in flight, batching every message it may send
// into one Write.
func (lc *loadConn) windowWriteLoop(base time.Time, tokens chan struct{}, stop <-chan struct{}) {
	payload := make([]byte, lc.size)
	for i := msgHeader; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	var seq uint64
	for {
		select {
		case <-stop:
			return
		case <-tokens:
		}
		n := 1
	drain:
		for n < cap(tokens) {
			select {
			case <-tokens:
				n++
			default:
				break drain
			}
		}
		c := lc.c
		c.wmu.Lock()
		b := c.wbuf[:0]
		for i := 0; i < n; i++ {
			putHeader(payload, seq, time.Since(base))
			seq++
			b = c.appendFrame(b, opBinary, payload)
		}
		c.wbuf = b
		_, err := c.nc.Write(b)
		c.wmu.Unlock()
		lc.sent.Store(seq)
		if err != nil {
			lc.werr = err
			return
		}
	}
}

// scheduledWriteLoop sends one message every interval starting at base+offset until end, stamping
// each with its scheduled send time. A message whose actual send is later than scheduled still
// carries the scheduled time, so the queueing delay is part of its measured latency (no
// coordinated omission). Messages due together are written in one batch.
func (lc *loadConn) scheduledWriteLoop(base time.Time, offset, interval, end, lagLimit time.Duration) {
	payload := make([]byte, lc.size)
	for i := msgHeader; i < len(payload); i++ {
		payload[i] = byte(i)
	}
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
			late := now - next
			lc.lag.record(late)
			if late > lagLimit {
				lc.behind++
			}
			putHeader(payload, seq, next)
			seq++
			b = c.appendFrame(b, opBinary, payload)
			next += interval
		}
		c.wbuf = b
		_, err := c.nc.Write(b)
		c.wmu.Unlock()
		lc.sent.Store(seq)
		if err != nil {
			lc.werr = err
			return
		}
	}
}

// dialAll opens n connections with at most par dials in flight. Source addresses rotate in
// blocks of perIP connections when dc.LocalAddrs is set. It returns the connections that
// succeeded (in order, nil for failures) and the failures.
func dialAll(dc *dialConfig, n, par, perIP int) ([]*conn, uint64, error) {
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
			}
		}()
	}
	wg.Wait()
	return conns, failed.Load(), firstErr
}

// runLoad runs throughput (rate == 0) or rate mode.
func runLoad(o *options) (*result, error) {
	if o.size < msgHeader {
		return nil, fmt.Errorf("-size must be at least %d (sequence number + timestamp)", msgHeader)
	}
	dc, err := o.dialConfig()
	if err != nil {
		return nil, err
	}
	conns, failed, firstErr := dialAll(dc, o.conns, o.dialPar, o.perIP)
	res := &result{Mode: o.mode, URL: o.url, Conns: o.conns, Size: o.size, ConnErrors: failed}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	var lcs []*loadConn
	for _, c := range conns {
		if c != nil {
			lcs = append(lcs, &loadConn{c: c, size: o.size})
		}
	}
	if len(lcs) == 0 {
		return res, fmt.Errorf("no connection could be opened: %v", firstErr)
	}
	defer func() {
		for _, lc := range lcs {
			lc.c.nc.Close()
		}
	}()
	rateMode := o.mode == "rate"
	var interval time.Duration
	if rateMode {
		if o.rate <= 0 {
			return nil, errors.New("-rate must be > 0")
		}
		res.Rate = o.rate
		interval = time.Duration(float64(len(lcs)) / o.rate * float64(time.Second))
		if interval <= 0 {
			return nil, errors.New("-rate too high for the connection count")
		}
	} else {
		if o.window < 1 {
			return nil, errors.New("-window must be >= 1")
		}
		res.Window = o.window
	}

	meter := startCPU(o.pids)
	base := time.Now()
	stop := make(chan struct{})
	var stopping atomic.Bool
	var writers, readers sync.WaitGroup
	for i, lc := range lcs {
		var tokens chan struct{}
		if !rateMode {
			tokens = make(chan struct{}, o.window)
			for j := 0; j < o.window; j++ {
				tokens <- struct{}{}
			}
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			lc.readLoop(base, tokens, &stopping)
		}()
		writers.Add(1)
		if rateMode {
			offset := interval * time.Duration(i) / time.Duration(len(lcs))
			go func() {
				defer writers.Done()
				lc.scheduledWriteLoop(base, offset, interval, o.duration, o.lagLimit)
			}()
		} else {
			go func() {
				defer writers.Done()
				lc.windowWriteLoop(base, tokens, stop)
			}()
		}
	}
	// Run for the duration, then snapshot the echo count (the throughput figure).
	time.Sleep(o.duration - time.Since(base))
	wall := time.Since(base)
	var recvAtStop uint64
	for _, lc := range lcs {
		recvAtStop += lc.unique.Load()
	}
	close(stop)
	writers.Wait()
	selfCPU, tgtCPU := meter.stop()
	res.CoresBusy = meter.coresBusy

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
	}
	readers.Wait()

	var h, lag hist
	for _, lc := range lcs {
		sent := lc.sent.Load()
		res.Sent += sent
		res.Lost += lc.chk.lost(sent)
		res.Dup += lc.chk.dup
		res.Reordered += lc.chk.reordered
		res.Corrupt += lc.bad
		res.Behind += lc.behind
		h.merge(&lc.rtt)
		lag.merge(&lc.lag)
		if lc.werr != nil || lc.rerr != nil {
			err := lc.werr
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
	res.Msgs = recvAtStop
	res.MsgsPerSec = float64(recvAtStop) / wall.Seconds()
	res.MBPerSec = res.MsgsPerSec * float64(o.size) / 1e6
	res.setLatency(&h)
	if rateMode {
		res.LagP99 = us(lag.quantile(0.99))
		res.LagMax = us(lag.max)
		res.AchievedRate = float64(res.Sent) / wall.Seconds()
	}
	res.GenCPU = selfCPU
	res.TargetCPU = tgtCPU
	res.Errors = res.Lost + res.Dup + res.Reordered + res.Corrupt + res.ConnErrors
	return res, nil
}
