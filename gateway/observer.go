package gateway

import (
	"time"

	"github.com/wsgate/wsgate/proxy"
)

// Observer receives the gateway's events, for metrics. Calls come from connection goroutines
// at handshake and close time, never per frame; implementations must be safe for concurrent
// use.
type Observer interface {
	// Handshake records a finished client handshake: status 101 or the refusal's status.
	// route is "" when no route matched.
	Handshake(route string, status int)
	// DialLatency records a backend dial plus handshake that succeeded.
	DialLatency(route string, d time.Duration)
	// Opened and Closed bracket a relayed connection.
	Opened(route string)
	Closed(route string, r *proxy.Result)
	// Limit records a limit that fired, by name (max_frame_size, rate, per_ip_connections...).
	Limit(route, limit string)
}

type nopObserver struct{}

func (nopObserver) Handshake(string, int)             {}
func (nopObserver) DialLatency(string, time.Duration) {}
func (nopObserver) Opened(string)                     {}
func (nopObserver) Closed(string, *proxy.Result)      {}
func (nopObserver) Limit(string, string)              {}
