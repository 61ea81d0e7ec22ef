package main

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runIdle opens o.n connections, lets the target settle, and reports the growth of the target's
// RSS per connection, then checks that a sample of the connections still echoes. Every
// connection is read from the moment it opens, so the target's keepalive pings are answered
// (a gateway with ping_interval on closes connections whose pongs do not come) and its data
// messages wait in the connection's inbox for the liveness check.
func runIdle(o *options) (*result, error) {
	dc, err := o.dialConfig()
	if err != nil {
		return nil, err
	}
	res := &result{Mode: "idle", URL: o.url, Conns: o.n, Size: msgHeader}
	if len(o.pids) > 0 {
		if res.RSSBefore, err = procRSS(o.pids); err != nil {
			return nil, fmt.Errorf("read target RSS: %w", err)
		}
	}
	meter := startCPU(o.pids)
	t0 := time.Now()
	conns, failed, firstErr := dialAll(dc, o.n, o.dialPar, o.perIP, func(_ int, c *conn) {
		c.inbox = make(chan idleMsg, 2)
		go c.readIdle()
	})
	res.ConnectSeconds = time.Since(t0).Seconds()
	res.ConnErrors = failed
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	defer closeAll(conns)
	var up []*conn
	for _, c := range conns {
		if c != nil {
			up = append(up, c)
		}
	}
	res.Open = uint64(len(up))
	if len(up) == 0 {
		return res, fmt.Errorf("no connection could be opened: %v", firstErr)
	}
	time.Sleep(o.settle)
	if len(o.pids) > 0 {
		if res.RSSAfter, err = procRSS(o.pids); err != nil {
			return nil, fmt.Errorf("read target RSS: %w", err)
		}
		res.BytesPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(len(up))
	}
	res.GenCPU, res.TargetCPU = meter.stop()
	res.CoresBusy = meter.coresBusy
	res.CoresSteal = meter.coresSteal
	res.Duration = time.Since(t0).Seconds()

	// Liveness: echo one message on an evenly spread sample.
	k := o.sample
	if k > len(up) {
		k = len(up)
	}
	var h hist
	var mu sync.Mutex
	var ok atomic.Uint64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for j := 0; j < k; j++ {
		c := up[j*len(up)/k]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := echoOnce(c, 5*time.Second)
			if err != nil {
				mu.Lock()
				if res.FirstError == "" {
					res.FirstError = "liveness: " + err.Error()
				}
				mu.Unlock()
				return
			}
			ok.Add(1)
			mu.Lock()
			h.record(d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.AliveChecked = uint64(k)
	res.AliveOK = ok.Load()
	res.Msgs = res.AliveOK
	res.setLatency(&h)
	res.Errors = res.ConnErrors + (res.AliveChecked - res.AliveOK)
	return res, nil
}

// idleMsg is a data message (or the read error that ended the connection) read by readIdle.
type idleMsg struct {
	op  byte
	p   []byte
	err error
}

// readIdle reads c until it fails (closeAll ends it), answering pings (readMessage does) and
// handing data messages to c.inbox, then the error. It never blocks on the inbox: a message
// nobody asked for is dropped when the inbox is full.
func (c *conn) readIdle() {
	for {
		op, p, err := c.readMessage()
		m := idleMsg{op: op, p: bytes.Clone(p), err: err}
		select {
		case c.inbox <- m:
		default:
		}
		if err != nil {
			return
		}
	}
}

// echoOnce sends one 16-byte message on a connection readIdle reads, and waits for its echo.
func echoOnce(c *conn, timeout time.Duration) (time.Duration, error) {
	var p [msgHeader]byte
	putHeader(p[:], 0xEC40, 0)
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	defer c.nc.SetWriteDeadline(time.Time{})
	t := time.Now()
	if err := c.writeFrame(opBinary, p[:]); err != nil {
		return 0, err
	}
	var m idleMsg
	select {
	case m = <-c.inbox:
	case <-time.After(timeout):
		return 0, errors.New("no echo within " + timeout.String())
	}
	if m.err != nil {
		return 0, m.err
	}
	if m.op != opBinary || len(m.p) != msgHeader {
		return 0, errors.New("echo differs from the message sent")
	}
	if seq, _ := getHeader(m.p); seq != 0xEC40 {
		return 0, errors.New("echo differs from the message sent")
	}
	return time.Since(t), nil
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.nc.Close()
		}
	}
}
