package gateway

import "time"

// SetConnWorkerLimits sets the connection worker pool's bound and idle time for listeners
// bound from now on, and returns a function that restores the defaults.
func SetConnWorkerLimits(max int32, idle time.Duration) (restore func()) {
	oldMax, oldIdle := maxConnWorkers, connWorkerIdle
	maxConnWorkers, connWorkerIdle = max, idle
	return func() { maxConnWorkers, connWorkerIdle = oldMax, oldIdle }
}

// ConnWorkers returns a function that reports the named listener's connection workers: alive,
// and waiting for a connection. It goes on reporting them after the listener has closed.
func (g *Gateway) ConnWorkers(name string) func() (alive, free int) {
	g.mu.Lock()
	l := g.listeners[name]
	g.mu.Unlock()
	return func() (int, int) { return int(l.workers.n.Load()), int(l.workers.free.Load()) }
}

// ConnWorkerIdle is the default time an idle connection worker waits before it ends.
var ConnWorkerIdle = connWorkerIdle
