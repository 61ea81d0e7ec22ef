package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// runHandshake runs o.conns workers, each repeatedly connecting (TCP, TLS for wss, HTTP upgrade)
// and closing with a close handshake, for o.duration. Latency is connect start to 101 verified;
// the close is not part of it but is part of the cycle rate.
func runHandshake(o *options) (*result, error) {
	dc, err := o.dialConfig()
	if err != nil {
		return nil, err
	}
	res := &result{Mode: "handshake", URL: o.url, Conns: o.conns}
	type wstate struct {
		h      hist
		n      uint64
		failed uint64
		err    error
	}
	ws := make([]wstate, o.conns)
	meter := startCPU(o.pids)
	base := time.Now()
	var done atomic.Bool
	var wg sync.WaitGroup
	for i := range ws {
		w := &ws[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				t := time.Now()
				c, err := dial(dc, nil)
				if err != nil {
					w.failed++
					if w.err == nil {
						w.err = err
					}
					time.Sleep(time.Millisecond)
					continue
				}
				if !done.Load() {
					w.h.record(time.Since(t))
					w.n++
				}
				c.closeGracefully(2 * time.Second)
			}
		}()
	}
	time.Sleep(o.duration)
	wall := time.Since(base)
	done.Store(true)
	selfCPU, tgtCPU := meter.stop()
	res.CoresBusy = meter.coresBusy
	res.CoresSteal = meter.coresSteal
	wg.Wait()
	var h hist
	for i := range ws {
		w := &ws[i]
		h.merge(&w.h)
		res.Handshakes += w.n
		res.ConnErrors += w.failed
		if w.err != nil && res.FirstError == "" {
			res.FirstError = w.err.Error()
		}
	}
	res.Duration = wall.Seconds()
	res.HandshakesPerSec = float64(res.Handshakes) / wall.Seconds()
	res.setLatency(&h)
	res.GenCPU, res.TargetCPU = selfCPU, tgtCPU
	res.Errors = res.ConnErrors
	return res, nil
}
