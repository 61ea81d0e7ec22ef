package proxy

import (
	"time"

	"golang.org/x/time/rate"
)

// Limiter meters the data one side sends: messages per second and bytes per second, each a
// token bucket (golang.org/x/time/rate). One Limiter belongs to one pump; it is not shared.
type Limiter struct {
	msgs     *rate.Limiter // nil = unlimited
	bytes    *rate.Limiter // nil = unlimited
	throttle bool
}

// NewLimiter returns a limiter for msgsPerSec messages and bytesPerSec bytes per second with
// burst messages of burst (bytes: a burst of one second's worth, at least one chunk). throttle
// selects backpressure (delay reading) over closing with 1008. It returns nil when both rates
// are zero (unlimited).
func NewLimiter(msgsPerSec float64, bytesPerSec int64, burst int, throttle bool) *Limiter {
	if msgsPerSec <= 0 && bytesPerSec <= 0 {
		return nil
	}
	l := &Limiter{throttle: throttle}
	if msgsPerSec > 0 {
		l.msgs = rate.NewLimiter(rate.Limit(msgsPerSec), max(burst, 1))
	}
	if bytesPerSec > 0 {
		l.bytes = rate.NewLimiter(rate.Limit(bytesPerSec), int(max(bytesPerSec, ChunkSize)))
	}
	return l
}

// reserve charges one frame of n payload bytes (and one message if newMsg) at now. It returns
// 0 if the frame is within the rates, else how long the reader must wait before the frame is
// within them. In close mode a positive result means "over the limit" and nothing is charged.
// A frame larger than the byte burst is charged in burst-sized pieces (rate.ReserveN fails
// for n above the burst).
func (l *Limiter) reserve(now time.Time, newMsg bool, n int64) time.Duration {
	if !l.throttle {
		if newMsg && l.msgs != nil && !l.msgs.AllowN(now, 1) {
			return time.Nanosecond
		}
		if l.bytes != nil && n > 0 {
			b := int64(l.bytes.Burst())
			if n > b || l.bytes.TokensAt(now) < float64(n) {
				return time.Nanosecond
			}
			l.bytes.AllowN(now, int(n))
		}
		return 0
	}
	var d time.Duration
	if newMsg && l.msgs != nil {
		d = l.msgs.ReserveN(now, 1).DelayFrom(now)
	}
	if l.bytes != nil {
		b := int64(l.bytes.Burst())
		for n > 0 {
			c := min(n, b)
			n -= c
			d = max(d, l.bytes.ReserveN(now, int(c)).DelayFrom(now))
		}
	}
	return d
}
