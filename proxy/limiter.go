package proxy

import (
	"time"

	"golang.org/x/time/rate"
)

// Limiter meters the data one side sends: messages per second and bytes per second, each a
// token bucket (golang.org/x/time/rate). One Limiter belongs to one pump; it is not shared.
//
// Per-frame cost: tokens are taken from the rate.Limiter in batches (up to 1/16 of the burst
// or 10 ms of refill at a time) and spent locally, so most frames cost a comparison and a subtraction, and only
// every few dozen frames a call into the limiter and a clock read.
type Limiter struct {
	msgs     bucket // message tokens
	bytes    bucket // byte tokens
	throttle bool
}

// bucket is one rate.Limiter with locally held credit. A nil lim means unlimited.
type bucket struct {
	lim    *rate.Limiter
	credit int64 // tokens already taken from lim and not yet spent
	batch  int64 // extra tokens taken at a time
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
		b := max(burst, 1)
		l.msgs = bucket{lim: rate.NewLimiter(rate.Limit(msgsPerSec), b), batch: batchOf(b, msgsPerSec)}
	}
	if bytesPerSec > 0 {
		b := int(max(bytesPerSec, ChunkSize))
		l.bytes = bucket{lim: rate.NewLimiter(rate.Limit(bytesPerSec), b), batch: batchOf(b, float64(bytesPerSec))}
	}
	return l
}

// batchOf is how many extra tokens a bucket takes at a time: at most 1/16 of the burst and
// what the rate refills in 10 ms, so taking them early shifts timing by 10 ms at most.
func batchOf(burst int, perSec float64) int64 {
	return int64(min(float64(burst/16), perSec/100))
}

// reserve charges one frame of n payload bytes (and one message if newMsg). It returns 0 if
// the frame is within the rates, else how long the reader must wait before the frame is
// within them. In close mode a positive result means "over the limit". now is called only
// when the local credit does not cover the frame.
func (l *Limiter) reserve(now func() time.Time, newMsg bool, n int64) time.Duration {
	var d time.Duration
	if newMsg {
		d = l.msgs.take(now, 1, l.throttle)
		if d > 0 && !l.throttle {
			return d
		}
	}
	return max(d, l.bytes.take(now, n, l.throttle))
}

// take spends n tokens: from the local credit when it covers them, else from the limiter
// together with a batch of extra tokens (in close mode only as many as it has now).
func (b *bucket) take(now func() time.Time, n int64, throttle bool) time.Duration {
	if b.covers(n) {
		b.spend(n)
		return 0
	}
	t := now()
	need := n - b.credit
	burst := int64(b.lim.Burst())
	if !throttle {
		avail := int64(b.lim.TokensAt(t))
		if avail < need || need > burst {
			return time.Nanosecond // over the limit; nothing charged
		}
		grab := min(avail, need+b.batch)
		b.lim.AllowN(t, int(grab))
		b.credit += grab - n
		return 0
	}
	// Throttle: reserve what is needed (in burst-sized pieces: rate.ReserveN fails above the
	// burst) plus a batch, and wait until the last piece is due.
	var d time.Duration
	for left := need + b.batch; left > 0; {
		c := min(left, burst)
		left -= c
		d = max(d, b.lim.ReserveN(t, int(c)).DelayFrom(t))
	}
	b.credit += need + b.batch - n
	return d
}

// spendLocal charges one whole message of n payload bytes if the locally held credit covers
// it in both buckets, and reports whether it did; otherwise it charges nothing, and the caller
// takes reserve's slow path. It never reads the clock or calls into a rate.Limiter.
func (l *Limiter) spendLocal(n int64) bool {
	if !l.msgs.covers(1) || !l.bytes.covers(n) {
		return false
	}
	l.msgs.spend(1)
	l.bytes.spend(n)
	return true
}

// covers reports whether n tokens need nothing from the rate.Limiter: the bucket is unlimited,
// n is not positive, or the local credit holds them.
func (b *bucket) covers(n int64) bool { return b.lim == nil || n <= 0 || b.credit >= n }

// spend takes n tokens that covers said the local credit holds.
func (b *bucket) spend(n int64) {
	if b.lim != nil && n > 0 {
		b.credit -= n
	}
}
