package gateway

import (
	"net"
	"sync/atomic"
	"time"
)

// A new connection's goroutine spends much of its first milliseconds growing its stack: a TLS
// handshake and a backend dial run deep, and every growth copies the stack (runtime.morestack,
// about 5% of the CPU of a wss handshake storm). connWorkers serves a listener's connections
// on goroutines that are reused instead: each keeps the stack its first handshake grew while
// it waits, briefly, for the next connection. After the upgrade the relay runs on goroutines
// of its own and the worker is free again, so an idle connection still holds no stack.
//
// The pool is bounded (beyond maxConnWorkers a connection gets a goroutine of its own, as
// before) and shrinks by itself: a worker that gets no connection for connWorkerIdle ends, and
// all of them end when the listener closes.
type connWorkers struct {
	work chan net.Conn // unbuffered: a send succeeds only when a worker is waiting
	stop chan struct{} // closed when the listener closes
	max  int32
	idle time.Duration
	n    atomic.Int32 // workers alive
	free atomic.Int32 // workers waiting for a connection
}

// Defaults of new listeners' pools (tests lower them).
var (
	// maxConnWorkers bounds the reused goroutines per listener: enough for the handshakes in
	// flight on a busy gateway, at a few tens of KiB of stack each (a few MiB at most).
	maxConnWorkers int32 = 128
	// connWorkerIdle is how long a worker waits for a connection before it ends: long enough
	// to carry a storm of handshakes, short enough that its stack is not kept for long after.
	connWorkerIdle = 2 * time.Second
)

func newConnWorkers() *connWorkers {
	return &connWorkers{work: make(chan net.Conn), stop: make(chan struct{}), max: maxConnWorkers, idle: connWorkerIdle}
}

// dispatch serves c on a waiting worker, a new one, or (at the bound) a goroutine of its own.
// The caller has counted c in g.wg, as serveConn expects.
func (g *Gateway) dispatch(l *listener, c net.Conn) {
	w := l.workers
	select {
	case w.work <- c:
		return
	default:
	}
	if w.n.Add(1) > w.max {
		w.n.Add(-1)
		go g.serveConn(l, c)
		return
	}
	g.wg.Add(1)
	go g.connWorker(l, c)
}

// connWorker serves c, then the connections handed to it, until it has waited w.idle for one
// or the listener has closed.
func (g *Gateway) connWorker(l *listener, c net.Conn) {
	w := l.workers
	defer g.wg.Done()
	defer w.n.Add(-1)
	g.serveConn(l, c)
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		var ok bool
		if l.tls.Load() != nil {
			c, ok = w.nextKeepingStack(t)
		} else {
			c, ok = w.next(t)
		}
		if !ok {
			return
		}
		g.serveConn(l, c)
		t.Reset(w.idle)
	}
}

// next waits for a connection; false when the idle timer t fired or the listener closed.
func (w *connWorkers) next(t *time.Timer) (net.Conn, bool) {
	w.free.Add(1)
	defer w.free.Add(-1)
	select {
	case c := <-w.work:
		return c, true
	case <-t.C:
		return nil, false
	case <-w.stop:
		return nil, false
	}
}

// stackKeep is the frame a TLS listener's waiting worker sits in. The collector halves a
// goroutine's stack when less than a quarter of it is in use, and a worker waiting in a
// shallow frame uses almost none: during a wss handshake storm (a collection every few
// milliseconds) each worker's stack was shrunk between handshakes and grown again, copy by
// copy, by the next one (runtime.morestack: 3% of the CPU). A waiting frame of 8 KiB keeps
// stacks of up to 32 KiB, which a TLS handshake and the backend dial need. Plain listeners'
// handshakes are shallow: their workers wait in next, so that they hold no more stack than
// their connections grew (a kept frame there cost idle ws:// connections 60–95 bytes each in
// bench/compare.sh, the workers' stacks at the time of the reading).
const stackKeep = 8 << 10

// nextKeepingStack is next, waited from inside a frame of stackKeep bytes.
//
//go:noinline
func (w *connWorkers) nextKeepingStack(t *time.Timer) (net.Conn, bool) {
	var keep [stackKeep]byte
	holdStack(&keep)
	return w.next(t)
}

// holdStack keeps its argument on the caller's stack (it does not escape) and in use.
//
//go:noinline
func holdStack(*[stackKeep]byte) {}
