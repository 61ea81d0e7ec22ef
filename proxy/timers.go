package proxy

import (
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// Keepalive and idle detection run on timers (no goroutine per connection while idle). Each
// callback registers in timerWG while the pair is running, so Run returns only after every
// callback has finished.
//
// Each pair's timers start at a random phase: connections opened together (a reconnect storm
// after a deploy) would otherwise ping and check together for as long as they live, a burst
// of work every period instead of an even load. The first ping comes 3/4 to 1 ping_interval
// after the start, and the idle ticks are shifted by up to one tick (the close still comes 1
// to 1.25 idle_timeout after the last data, the start counting as data).

func (p *Pair) startTimers() {
	p.timerMu.Lock()
	defer p.timerMu.Unlock()
	if d := p.opts.PingInterval; d > 0 {
		p.pingTimer = time.AfterFunc(d-jitter(d/4), p.pingTick)
	}
	if d := p.opts.IdleTimeout; d > 0 {
		p.active.Store(true)
		p.idleTimer = time.AfterFunc(d/idleTicks-jitter(d/idleTicks), p.idleTick)
	}
}

// jitter returns a random duration in [0, d), or 0 if d is not positive.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// stopTimers stops the timers and waits for callbacks and helper goroutines in flight.
func (p *Pair) stopTimers() {
	p.timerMu.Lock()
	p.timersDone = true
	for _, t := range []*time.Timer{p.pingTimer, p.idleTimer} {
		if t != nil {
			t.Stop()
		}
	}
	p.timerMu.Unlock()
	p.timerWG.Wait()
}

// enter registers a callback; it reports false once the pair has stopped.
func (p *Pair) enter() bool {
	p.timerMu.Lock()
	defer p.timerMu.Unlock()
	if p.timersDone {
		return false
	}
	p.timerWG.Add(1)
	return true
}

// rearm resets t to d unless the pair has stopped.
func (p *Pair) rearm(t *time.Timer, d time.Duration) {
	p.timerMu.Lock()
	if !p.timersDone {
		t.Reset(d)
	}
	p.timerMu.Unlock()
}

// spawn runs f in a goroutine owned by the pair (Run waits for it).
func (p *Pair) spawn(f func()) {
	if !p.enter() {
		return
	}
	go func() {
		defer p.timerWG.Done()
		defer p.recoverTimer()
		f()
	}()
}

// recoverTimer contains a panic in a timer callback or helper goroutine: it is logged with
// its stack and the pair is cut, instead of crashing the process.
func (p *Pair) recoverTimer() {
	if r := recover(); r != nil {
		p.logger().Error("relay timer panic", "panic", r, "stack", string(debug.Stack()))
		p.Close()
	}
}

// sleep waits d for a throttled pump; false if the pair ended meanwhile.
func (p *Pair) sleep(d time.Duration) bool {
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		return false
	}
	if p.done == nil {
		p.done = make(chan struct{})
	}
	done := p.done
	p.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// pingTick alternates between sending keepalive pings to both sides and, pong_timeout later,
// checking that both answered. A side that did not is presumed dead (DESIGN.md close table).
func (p *Pair) pingTick() {
	if !p.enter() {
		return
	}
	defer p.timerWG.Done()
	defer p.recoverTimer()
	if p.isFinished() {
		return
	}
	if !p.pingPhase {
		for _, s := range []*side{&p.client, &p.backend} {
			s.awaitPong.Store(true)
			if !p.writeControl(s, wsframe.OpPing, nil) {
				s.awaitPong.Store(false)
			}
		}
		if p.opts.PongTimeout <= 0 {
			// pong_timeout 0: keep pinging (NAT keepalive), never presume a side dead.
			p.rearm(p.pingTimer, p.opts.PingInterval)
			return
		}
		p.pingPhase = true
		p.rearm(p.pingTimer, p.opts.PongTimeout)
		return
	}
	p.pingPhase = false
	switch {
	case p.client.awaitPong.Load():
		p.limitFired(&p.client, "pong_timeout")
		p.fail(&p.client, wsframe.CloseGoingAway, "pong timeout", wsframe.CloseGoingAway, "client gone", "client pong timeout")
	case p.backend.awaitPong.Load():
		p.limitFired(&p.backend, "pong_timeout")
		p.fail(&p.backend, wsframe.CloseGoingAway, "pong timeout", wsframe.CloseBadGateway, "backend closed", "backend pong timeout")
	default:
		next := p.opts.PingInterval - p.opts.PongTimeout
		if next <= 0 {
			next = p.opts.PingInterval
		}
		p.rearm(p.pingTimer, next)
	}
}

// idleTicks is how many quarter periods without data make an idle connection: it is closed
// between 1 and 1.25 idle_timeout after its last data frame.
const idleTicks = 4

func (p *Pair) idleTick() {
	if !p.enter() {
		return
	}
	defer p.timerWG.Done()
	defer p.recoverTimer()
	if p.isFinished() {
		return
	}
	if p.active.Swap(false) {
		p.idleCount = 0
	} else {
		p.idleCount++
	}
	if p.idleCount >= idleTicks {
		p.limitFired(&p.client, "idle_timeout")
		p.fail(nil, wsframe.CloseGoingAway, "idle timeout", wsframe.CloseGoingAway, "idle timeout", "idle timeout")
		return
	}
	p.rearm(p.idleTimer, p.opts.IdleTimeout/idleTicks)
}

func (p *Pair) isFinished() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.finished
}
