package proxy

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// ChunkSize is the largest payload piece the relay moves at once. A frame longer than this is
// forwarded as several fragments of at most ChunkSize bytes, so memory per direction is
// bounded by one pooled buffer however large the frame, and control frames can go between
// the pieces.
const ChunkSize = 64 << 10

// readerSize is the size of a handshake's bufio.Reader, which NewPair takes over.
const readerSize = 4 << 10

// bufSize is a pooled output buffer: one maximal header plus one chunk, or a batch of small
// frames that were already buffered.
const bufSize = wsframe.MaxHeaderSize + ChunkSize

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// ctrlFrameSize fits any control frame.
const ctrlFrameSize = wsframe.MaxHeaderSize + wsframe.MaxControlPayload

var ctrlPool = sync.Pool{New: func() any { return new([ctrlFrameSize]byte) }}

// testPanicHook, when set, is called by a pump with every valid frame header it reads. Only
// this package's tests set it (before any pair runs), to inject a panic into one connection
// and check that the pump's recover contains it. Nil in production: one untaken branch per
// frame.
var testPanicHook func(src Side, h wsframe.Header)

// testNoSplice, set by tests, makes every payload take the buffered path.
var testNoSplice bool

// Side names a connection of a pair.
type Side uint8

// The two sides of a pair.
const (
	SideClient Side = iota
	SideBackend
)

func (s Side) String() string {
	if s == SideClient {
		return "client"
	}
	return "backend"
}

// Options configure relayed pairs. Zero durations and sizes mean "off". One Options may be
// shared by any number of pairs (the gateway keeps one per route) and must not change once a
// pair uses it.
type Options struct {
	MaxFrameSize   int64
	MaxMessageSize int64
	ValidateUTF8   bool
	IdleTimeout    time.Duration
	PingInterval   time.Duration
	PongTimeout    time.Duration
	CloseTimeout   time.Duration
	WriteTimeout   time.Duration
	// ClientRate and BackendRate, when set, meter data read from that side; each pair gets
	// buckets of its own.
	ClientRate, BackendRate Rate
	// OnLimit, if set, is called (from a pump or timer goroutine) when a limit fires, with
	// the client's address, the side that hit it and the limit's name.
	OnLimit func(client net.Addr, side Side, limit string)
	Logger  *slog.Logger // nil: slog.Default()
}

// Rate is a per-connection rate limit: MessagesPerSecond and BytesPerSecond (zero: none),
// Burst messages above the rate at once, and Throttle to delay reading (backpressure) instead
// of closing with 1008.
type Rate struct {
	MessagesPerSecond float64
	BytesPerSecond    int64
	Burst             int
	Throttle          bool
}

// DirStats counts what one pump read from its side and forwarded.
type DirStats struct {
	DataFrames    uint64 // data frames read
	ControlFrames uint64 // control frames read
	Bytes         uint64 // payload bytes of data frames read
	Messages      uint64 // complete data messages read
}

// CloseInfo says how one side's closing went.
type CloseInfo struct {
	// Received is the code the side sent in its close frame (1005 if it sent none; 0 if it
	// sent no close frame at all); ReceivedReason its reason.
	Received       wsframe.CloseCode
	ReceivedReason string
	// Sent is the code the gateway wrote to the side (0 if it wrote none).
	Sent       wsframe.CloseCode
	SentReason string
}

// Result summarises a finished pair, for the access log and metrics.
type Result struct {
	Client, Backend   DirStats  // frames read from each side
	ClientClose       CloseInfo // the client side's close
	BackendClose      CloseInfo // the backend side's close
	ClosedBy          string    // "client", "backend" or "gateway": who started the close
	Cause             string    // short reason when the gateway started it
	Start, End        time.Time
	ProtocolErrorCode wsframe.CloseCode // the code sent for a protocol/limit error, if any
}

// side is one connection of a pair.
type side struct {
	pair  *Pair
	conn  net.Conn
	br    *bufio.Reader // owned by the pump reading this side; pooled, nil while idle
	lim   *Limiter
	w     waiter   // owned by the pump reading this side
	stats DirStats // owned by the pump reading this side
	msg   msgState // owned by the pump reading this side

	// Guarded by wmu: a frame's header and payload are written as one unit. The side's write
	// state (closing, closed, stalled) is in pair.wflags, readable without wmu.
	wmu       sync.Mutex
	wdeadline time.Duration // the write deadline set last, on the monotonic clock (monoNow); 0: none

	who  Side
	role wsframe.Role // how frames read from this side are checked
	mask bool         // frames written to this side are masked (the backend)
	hot  bool         // owned by the pump: the lot's sweep watches it (see armPark)

	// Guarded by pair.mu.
	recvClose bool
	gone      bool

	registered bool        // the socket is in the parking lot's epoll set; guarded by lot.mu
	awaitPong  atomic.Bool // a keepalive ping is unanswered
	parked     atomic.Bool // no pump runs: the parking lot or finish resumes it (CAS)

	// The park sweep (park_linux.go): seen is set by the pump when it reads data and cleared
	// by each sweep; parkReq is the sweep's request to park, after parkSweeps sweeps in a row
	// found no data.
	seen       atomic.Bool
	parkReq    atomic.Bool
	idleSweeps uint8 // guarded by lot.mu
	hotSlot    int32 // guarded by lot.mu: 1 + the index in lot.hot; 0 when not there
}

// markSeen records that the pump read data (for the park sweep); a store only once per sweep.
func (s *side) markSeen() {
	if !s.seen.Load() {
		s.seen.Store(true)
	}
}

// Pair relays frames between a client and a backend connection. It is kept small: an idle
// pair is this struct, its sockets and its timers, nothing else (bench/README.md).
type Pair struct {
	opts    *Options
	client  side
	backend side

	mu         sync.Mutex
	c          *closing      // nil until a close begins
	done       chan struct{} // made by the first throttled sleep, closed by finish; guarded by mu
	idleTimer  *time.Timer
	pingTimer  *time.Timer
	onDone     func(Result)
	start      int64 // Unix nanoseconds
	timerWG    sync.WaitGroup
	timerMu    sync.Mutex
	idleCount  int32        // owned by the idle timer
	running    atomic.Int32 // pumps still running
	active     atomic.Bool  // a data frame moved since the last idle check
	ended      atomic.Bool  // finished, readable without mu
	finished   bool
	pingPhase  bool // owned by the ping timer: true while waiting for pongs
	timersDone bool // guarded by timerMu
	// wflags holds both sides' write state bits (wClosing, wClosed, wStalled; see side.flag),
	// so that closing does not wait for a side's wmu while a write to it is blocked.
	wflags atomic.Uint32
}

// A side's write state, in Pair.wflags. wClosing is set under the side's wmu, so that no frame
// is written after a close; the others without it.
const (
	// wClosing: a close frame is written or being written to the side, or it takes no more
	// frames.
	wClosing uint32 = 1 << iota
	// wClosed: that close frame's write has ended, or the side takes no more frames.
	wClosed
	// wStalled: a raw write to the side is waiting for room in its socket buffer.
	wStalled
)

// flag reports whether s's write state has bit f.
func (s *side) flag(f uint32) bool {
	return s.pair.wflags.Load()&(f<<(4*s.who)) != 0
}

// setFlag sets bit f of s's write state.
func (s *side) setFlag(f uint32) { s.pair.wflags.Or(f << (4 * s.who)) }

// clearFlag clears bit f of s's write state.
func (s *side) clearFlag(f uint32) { s.pair.wflags.And(^(f << (4 * s.who))) }

func (p *Pair) logger() *slog.Logger {
	if l := p.opts.Logger; l != nil {
		return l
	}
	return slog.Default()
}

// closing is a pair's close state, allocated when its close begins, so that an idle pair
// does not carry it. Guarded by Pair.mu.
type closing struct {
	client, backend CloseInfo
	closedBy        string
	cause           string
	protoCode       wsframe.CloseCode
	lingerAt        time.Time // the read deadline finish set
	timer           *time.Timer
}

// cl returns the close state, allocating it on first use. Called with mu held.
func (p *Pair) cl() *closing {
	if p.c == nil {
		p.c = new(closing)
	}
	return p.c
}

// info returns s's close record. Called with mu held.
func (p *Pair) info(s *side) *CloseInfo {
	if s == &p.client {
		return &p.cl().client
	}
	return &p.cl().backend
}

// NewPair prepares a relay between an upgraded client connection (read through cr, which may
// hold bytes that arrived with the handshake) and an upgraded backend connection. The pair
// takes ownership of both readers, which must come from GetReader, and returns them to the
// pool.
func NewPair(client net.Conn, cr *bufio.Reader, backend net.Conn, br *bufio.Reader, opts *Options) *Pair {
	p := &Pair{opts: opts}
	cl, bl := opts.ClientRate, opts.BackendRate
	p.client = side{who: SideClient, pair: p, conn: client, br: cr, role: wsframe.RoleServer,
		lim: NewLimiter(cl.MessagesPerSecond, cl.BytesPerSecond, cl.Burst, cl.Throttle)}
	p.backend = side{who: SideBackend, pair: p, conn: backend, br: br, role: wsframe.RoleClient, mask: true,
		lim: NewLimiter(bl.MessagesPerSecond, bl.BytesPerSecond, bl.Burst, bl.Throttle)}
	p.client.initWaiter(client)
	p.backend.initWaiter(backend)
	return p
}

// Run relays until both sides are closed and returns what happened.
func (p *Pair) Run() Result {
	ch := make(chan Result, 1)
	p.Start(func(r Result) { ch <- r })
	return <-ch
}

// Start relays in the background: one goroutine per direction while data flows, none while
// a direction is idle (it is parked, see park_linux.go). When both directions have ended, the
// sockets are closed, the timers stopped, and done is called with the result on the last
// pump's goroutine.
func (p *Pair) Start(done func(Result)) {
	p.start = time.Now().UnixNano()
	p.onDone = done
	p.startTimers()
	p.running.Store(2)
	for _, s := range []*side{&p.backend, &p.client} {
		if !p.startParked(s) {
			go p.pumpTask(s)
		}
	}
}

// startParked parks a new plain side with nothing buffered without starting its pump: most
// new connections are idle first, and a pump started only to find no data and park again
// cost a goroutine, a read(2) and a stack growth per side. A socket that is already readable
// is reported at once by the lot, which starts the pump as for any wake. It reports false
// (start the pump) for a TLS side, whose tls.Conn may hold bytes the socket does not show,
// for a side with bytes that arrived with the handshake, and if the socket cannot be watched.
func (p *Pair) startParked(s *side) bool {
	if s.w.raw == nil || s.w.fd < 0 || !parkingSupported || s.br != nil && s.br.Buffered() > 0 {
		return false
	}
	if s.br != nil {
		// The handshake's reader reads the connection; a pump reads through s (see pump).
		PutReader(s.br)
		s.br = nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.parkLocked(s)
}

// parkLocked hands s to the parking lot unless the pair has finished (finish resumes parked
// sides) or the socket cannot be watched; it reports whether s is parked. Called with p.mu
// held, so finish sees s either parked or not, never half way.
func (p *Pair) parkLocked(s *side) bool {
	if p.finished {
		return false
	}
	s.parked.Store(true)
	if lot.park(s) {
		return true
	}
	s.parked.Store(false)
	return false
}

// resume runs a parked side's pump again (its socket became readable, or the pair is ending).
// A plain side is not hot yet: its first read decides (side.readable), so that a wake for a
// pong parks again at once. A TLS side is hot from the wake, since only a hot side's wait
// reads the socket (waitData); it probes too, and the pump cools it if the wake brought
// control frames only.
func (p *Pair) resume(s *side) {
	if !p.ended.Load() && s.w.raw == nil {
		p.armPark(s)
		if s.w.isTLS {
			s.w.probe, s.w.wakeData = true, uint32(s.stats.DataFrames)
		}
	}
	p.pumpTask(s)
}

// pumpTask runs src's pump; the last pump to end for good ends the pair.
func (p *Pair) pumpTask(src *side) {
	if p.pump(src, p.other(src)) {
		return // parked: a later resume carries on
	}
	lot.forget(src)
	if p.running.Add(-1) != 0 {
		return
	}
	p.client.conn.Close()
	p.backend.conn.Close()
	p.stopTimers()
	p.mu.Lock()
	c := p.cl()
	res := Result{
		Client: p.client.stats, Backend: p.backend.stats,
		ClientClose: c.client, BackendClose: c.backend,
		ClosedBy: c.closedBy, Cause: c.cause, ProtocolErrorCode: c.protoCode,
		Start: time.Unix(0, p.start), End: time.Now(),
	}
	p.mu.Unlock()
	p.onDone(res)
}

// Shutdown starts a gateway close of both sides with code and reason (drain: 1001 "going
// away"), waits for their replies up to CloseTimeout, then ends the pair. It does not block.
func (p *Pair) Shutdown(code wsframe.CloseCode, reason string) {
	p.spawn(func() { p.fail(nil, code, reason, code, reason, "shutdown") })
}

// Close ends the pair at once, without close frames or lingering (drain timeout).
func (p *Pair) Close() {
	p.finish()
	p.client.conn.Close()
	p.backend.conn.Close()
}

func (p *Pair) other(s *side) *side {
	if s == &p.client {
		return &p.backend
	}
	return &p.client
}

// pump reads frames from src and forwards data to dst until src's read side ends (it returns
// false) or src has been idle long enough to be parked (true: the goroutine ends and a later
// resume carries on). While src is idle no read buffer is held.
func (p *Pair) pump(src, dst *side) (parked bool) {
	defer func() {
		if parked {
			return
		}
		if src.br == nil {
			src.br = getPumpReader(src)
		}
		p.drainReads(src)
		PutReader(src.br)
		src.br = nil
	}()
	defer func() {
		if r := recover(); r != nil {
			parked = false
			p.logger().Error("relay panic", "side", src.who.String(), "panic", r, "stack", string(debug.Stack()))
			p.fail(nil, wsframe.CloseInternalError, "internal error", wsframe.CloseInternalError, "internal error", "panic")
		}
	}()
	for {
		switch {
		case src.w.raw != nil && (src.br == nil || src.br.Buffered() == 0):
			if src.br != nil {
				// The reader NewPair was given reads the connection, not src.
				PutReader(src.br)
				src.br = nil
			}
			switch err := p.relayReadable(src); err {
			case errParked:
				return true
			case errStop:
				return false
			case errSlow:
				// A frame larger than the buffer, or an error after buffered frames: the
				// blocking relay below takes it.
			default:
				p.readFailed(src, err)
				return false
			}
		case src.w.isTLS && (src.br == nil || src.br.Buffered() == 0):
			// Idle: give the read buffer back while waiting for the next frame.
			if src.br != nil {
				PutReader(src.br)
				src.br = nil
			}
			err := p.waitData(src)
			if err == errParked {
				return true
			}
			src.br = getPumpReader(src) // serves what the wait read, then the socket
			if err != nil {
				p.readFailed(src, err)
				return false
			}
		}
		if p.relayFrames(src, dst, false) == relayStop {
			return false
		}
		if src.w.isTLS && src.controlOnly() && src.hot {
			// A TLS side woken for control frames only waits again as a new side does: one
			// try, then the parking lot (waitData).
			src.hot = false
			lot.dropHot(src)
		}
	}
}

// parkAfter is how long a side waits for data in the runtime's poller (a goroutine and its
// stack) before it is parked (nothing but its structs): the lot's sweep, every parkAfter/2,
// asks a side to park once parkSweeps sweeps in a row found no data, 1 to 1.5 parkAfter after
// its last data. Data arriving for a parked side costs one epoll re-arm and a goroutine start.
//
// A side with data flowing has no timer of its own. A read deadline per side, re-armed when
// it fired, woke every busy side once a second for nothing: 20% of the CPU with 8,000
// connections at one message a second each (bench/README.md).
const parkAfter = time.Second

// errParked is what relayReadable and waitData report when the side was parked.
var errParked = errors.New("parked")

// relayReadable relays a plain TCP side from inside the socket's read callback until it must
// leave it (see relayRaw). A side that has just started or been woken tries one read and
// parks at once if there is nothing (most new connections are idle first); once data has
// come, it waits in the runtime's poller, hot, until the sweep asks it to park.
func (p *Pair) relayReadable(src *side) error {
	if p.ended.Load() || src.w.fd < 0 || !parkingSupported {
		return src.relayRaw(false)
	}
	wait := func() error { return src.relayRaw(false) }
	for {
		err := src.relayRaw(!src.hot)
		if err == errNoData {
			return p.disarmAndPark(src, wait)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || p.ended.Load() {
			return err
		}
		// A read deadline in the past: the sweep's park request, or the lot's notice of the
		// peer's shutdown (the read goes on to EOF).
		if p.parkRequested(src) {
			return p.disarmAndPark(src, wait)
		}
		p.clearDeadline(src)
	}
}

// waitData waits for a TLS side's next bytes without a read buffer, with the same parking
// rules as relayReadable.
func (p *Pair) waitData(src *side) error {
	if p.ended.Load() || src.w.fd < 0 || !parkingSupported {
		return src.wait()
	}
	if !src.hot {
		err := src.try()
		p.restoreLinger(src) // a TLS try clears the read deadline
		if err != errNoData {
			p.armPark(src)
			return err
		}
		return p.disarmAndPark(src, src.wait)
	}
	for {
		err := src.wait()
		if err == nil {
			src.markSeen()
			return nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || p.ended.Load() {
			return err
		}
		if p.parkRequested(src) {
			return p.disarmAndPark(src, src.wait)
		}
		p.clearDeadline(src)
	}
}

// armPark makes src hot: data is flowing, and the lot's sweep watches it for idleness (a
// plain side is also watched for its peer's shutdown, see shutdownSeen).
func (p *Pair) armPark(src *side) {
	src.hot = true
	lot.addHot(src)
}

// parkRequested reports whether the sweep asked src to park and it still may: no data came
// since, and no frame is half read.
func (p *Pair) parkRequested(src *side) bool {
	return src.parkReq.Swap(false) && !src.seen.Load() && src.br == nil
}

// clearDeadline clears a park request's or shutdown notice's read deadline (finish's linger
// deadline stays).
func (p *Pair) clearDeadline(src *side) {
	src.conn.SetReadDeadline(time.Time{})
	p.restoreLinger(src)
}

// restoreLinger puts back finish's read deadline if the pair ended while the pump was
// changing its read deadline (finish sets ended before its deadlines, so one of the two
// writes comes last with the linger deadline).
func (p *Pair) restoreLinger(src *side) {
	if p.ended.Load() {
		p.mu.Lock()
		at := p.cl().lingerAt
		p.mu.Unlock()
		src.conn.SetReadDeadline(at)
	}
}

// disarmAndPark takes src off the sweep and hands it to the parking lot: the pump's
// goroutine ends (errParked) and the lot starts a new one when the socket is readable. If
// the pair has ended, or the socket cannot be watched, it waits in the runtime's poller
// instead, with wait.
func (p *Pair) disarmAndPark(src *side, wait func() error) error {
	if src.hot {
		src.hot = false
		lot.dropHot(src)
	}
	p.clearDeadline(src)
	p.mu.Lock()
	parked := p.parkLocked(src)
	p.mu.Unlock()
	if parked {
		return errParked
	}
	return wait()
}

// msgState is a pump's message state, kept across its idle periods.
type msgState struct {
	frames wsframe.MessageState
	utf8   wsframe.UTF8Validator
	size   int64 // bytes of the current message so far
}

// relayResult is how relayFrames stopped.
type relayResult uint8

const (
	relayMore relayResult = iota // nothing complete is left buffered: wait for more bytes
	relayBig                     // nb: the next frame does not fit the buffer; relay it blocking
	relayStop                    // src's read side has ended
)

// relayFrames relays frames from src to dst until src has nothing buffered (relayMore: the
// caller waits for more) or src's read side ends (relayStop). With nb (inside the socket's
// read callback, where a read must not block) it relays only frames that are complete in
// src.br, and reports relayBig for one that cannot fit it.
func (p *Pair) relayFrames(src, dst *side, nb bool) relayResult {
	var (
		state   = &src.msg.frames
		utf8v   = &src.msg.utf8
		msgSize = &src.msg.size
		out     *[bufSize]byte
		w       int // bytes pending in out
	)
	flush := func() bool {
		if w == 0 {
			return true
		}
		ok := p.writeData(dst, out[:w])
		w = 0
		return ok
	}
	release := func() {
		if out != nil {
			bufPool.Put(out)
			out = nil
		}
	}
	defer release()

	for first := true; ; first = false {
		if p.relayRun(src, dst, &out, &w) > 0 {
			first = false
			// As after a frame below: without nb, flush before a read that may block.
			if !nb && !p.moreBuffered(src.br, bufSize-w) {
				flush()
				release()
			}
		}
		var (
			h   wsframe.Header
			err error
		)
		if nb {
			var (
				r     relayResult
				ready bool
			)
			if h, ready, r, err = nextBuffered(src.br); !ready {
				flush()
				return r
			}
		} else {
			if !first && src.w.fd >= 0 && src.br.Buffered() == 0 {
				return relayMore
			}
			h, err = readHeader(src.br)
		}
		if err == nil {
			err = h.Check(src.role, 0)
		}
		if err == nil {
			err = state.Next(h)
		}
		if err != nil {
			flush()
			release()
			p.readFailed(src, err)
			return relayStop
		}
		if testPanicHook != nil {
			testPanicHook(src.who, h)
		}
		if h.Opcode.IsControl() {
			flush()
			release()
			if !p.control(src, h) {
				return relayStop
			}
			continue
		}

		// Data frame: size limits (DESIGN.md: 1009 to the sender).
		src.stats.DataFrames++
		src.stats.Bytes += uint64(h.Length)
		if h.Opcode != wsframe.OpContinuation {
			*msgSize = 0
			utf8v.Reset()
		}
		*msgSize += h.Length
		if lim := p.opts.MaxFrameSize; lim > 0 && h.Length > lim {
			flush()
			release()
			p.limitFired(src, "max_frame_size")
			p.failBy(src, wsframe.CloseTooBig, "frame too big")
			return relayStop
		}
		if lim := p.opts.MaxMessageSize; lim > 0 && *msgSize > lim {
			flush()
			release()
			p.limitFired(src, "max_message_size")
			p.failBy(src, wsframe.CloseTooBig, "message too big")
			return relayStop
		}
		if src.lim != nil {
			if d := src.lim.reserve(time.Now, h.Opcode != wsframe.OpContinuation, h.Length); d > 0 {
				flush()
				release()
				if !src.lim.throttle {
					p.limitFired(src, "rate")
					p.failBy(src, wsframe.ClosePolicyViolation, "rate limit exceeded")
					return relayStop
				}
				p.limitFired(src, "rate_throttle")
				if !p.sleep(d) {
					return relayStop
				}
			}
		}
		if !p.active.Load() {
			p.active.Store(true) // a load first: no shared-cache-line write per frame
		}
		validate := p.opts.ValidateUTF8 && state.Opcode() == wsframe.OpText
		// Payloads masked on neither side, unchecked, between plain sockets may go through a
		// pipe (splice_linux.go) when a piece is large and mostly still in the socket.
		canSplice := spliceSupported && !testNoSplice && !nb && !validate && !h.Masked && !dst.mask &&
			src.w.raw != nil && dst.w.raw != nil && src.w.err == nil
		// Move the payload in pieces of at most ChunkSize.
		rem := h.Length
		pos := 0
		for first := true; first || rem > 0; first = false {
			n := int(min(rem, ChunkSize))
			oh := wsframe.Header{Fin: h.Fin && int64(n) == rem, Opcode: h.Opcode, Length: int64(n), Masked: dst.mask}
			if !first {
				oh.Opcode = wsframe.OpContinuation
			}
			if dst.mask {
				putKey(&oh.Mask)
			}
			outBuf(&out)
			if canSplice && n-src.br.Buffered() >= spliceMin {
				if sp := getSplicer(); sp != nil {
					flush()
					if !p.spliceChunk(src, dst, sp, out, oh) {
						release()
						return relayStop
					}
					pos += n
					rem -= int64(n)
					continue
				}
			}
			if w+wsframe.MaxHeaderSize+n > bufSize {
				flush()
			}
			hs := oh.Size()
			payload := out[w+hs : w+hs+n]
			if _, err := io.ReadFull(src.br, payload); err != nil {
				flush()
				release()
				p.readFailed(src, err)
				return relayStop
			}
			if validate {
				// Validate the plain text before it is forwarded: a piece that fails is
				// dropped, so the other side only ever sees whole frames.
				if h.Masked {
					wsframe.Mask(h.Mask, pos, payload)
				}
				verr := utf8v.Write(payload)
				if verr == nil && oh.Fin {
					verr = utf8v.Finish()
				}
				if verr != nil {
					flush()
					release()
					p.limitFired(src, "invalid_utf8")
					p.failBy(src, wsframe.CloseInvalidPayload, "invalid UTF-8")
					return relayStop
				}
				if dst.mask {
					wsframe.Mask(oh.Mask, 0, payload)
				}
			} else if h.Masked && dst.mask {
				// Unmask and re-mask in one pass (payload ^ k1 ^ k2).
				wsframe.Remask(rotate(h.Mask, pos), oh.Mask, 0, payload)
			} else if h.Masked {
				wsframe.Mask(h.Mask, pos, payload)
			} else if dst.mask {
				wsframe.Mask(oh.Mask, 0, payload)
			}
			oh.Encode(out[w:])
			w += hs + n
			pos += n
			rem -= int64(n)
			if rem > 0 {
				flush()
			}
		}
		if h.Fin {
			src.stats.Messages++
		}
		// Batch the next frame into the same write if it is already here. With nb, the next
		// turn's nextBuffered finds that out (and flushes if not); without, check now, before
		// a read that may block.
		if !nb && !p.moreBuffered(src.br, bufSize-w) {
			flush()
			release()
		}
	}
}

// moreBuffered reports whether the next frame is already complete in br and fits in room, so
// it can join the current write.
func (p *Pair) moreBuffered(br *bufio.Reader, room int) bool {
	h, hs, buffered, err := peekHeader(br)
	if hs == 0 || err != nil || h.Opcode.IsControl() {
		return false
	}
	return h.Length <= int64(buffered-hs) && h.Length <= int64(room-hs-wsframe.MaxHeaderSize)
}

// peekHeader decodes the header at the front of br's buffer without reading or consuming
// anything. hs is 0 when the header is not all buffered yet.
func peekHeader(br *bufio.Reader) (h wsframe.Header, hs, buffered int, err error) {
	buffered = br.Buffered()
	if buffered < 2 {
		return h, 0, buffered, nil
	}
	b, _ := br.Peek(buffered)
	if hs = wsframe.HeaderSize(b[0], b[1]); buffered < hs {
		return h, 0, buffered, nil
	}
	h, _, err = wsframe.DecodeHeader(b)
	return h, hs, buffered, err
}

// nextBuffered takes the next frame's header from br if the whole frame is buffered (ready),
// without reading. Otherwise it says what to do: wait for more bytes (relayMore), or relay
// it with blocking reads (relayBig) because it cannot fit the buffer. A header that does not
// decode is ready, with its error.
func nextBuffered(br *bufio.Reader) (h wsframe.Header, ready bool, r relayResult, err error) {
	h, hs, buffered, err := peekHeader(br)
	switch {
	case hs == 0:
		return h, false, relayMore, nil
	case err != nil:
		return h, true, relayStop, err
	}
	switch {
	case h.Length <= int64(buffered-hs):
		br.Discard(hs)
		return h, true, relayStop, nil
	case h.Length > int64(br.Size()-hs):
		return h, false, relayBig, nil
	}
	return h, false, relayMore, nil
}

// readHeader decodes the next frame header from br without allocating.
func readHeader(br *bufio.Reader) (wsframe.Header, error) {
	b, err := br.Peek(2)
	if err != nil {
		return wsframe.Header{}, err
	}
	hs := wsframe.HeaderSize(b[0], b[1])
	if b, err = br.Peek(hs); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return wsframe.Header{}, err
	}
	h, n, err := wsframe.DecodeHeader(b)
	if err != nil {
		return h, err
	}
	br.Discard(n)
	return h, nil
}

// rotate returns key as seen from offset pos of a payload, so that masking from offset 0 with
// the result equals masking from pos with key.
func rotate(key [4]byte, pos int) [4]byte {
	s := pos & 3
	return [4]byte{key[s], key[(s+1)&3], key[(s+2)&3], key[(s+3)&3]}
}

// putKey fills a fresh masking key (RFC 6455 section 5.3: unpredictable per frame). The
// runtime's per-thread ChaCha8 generator behind math/rand/v2 is seeded from the OS and costs
// a few nanoseconds.
func putKey(k *[4]byte) {
	v := rand.Uint32()
	k[0], k[1], k[2], k[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// writeData writes a run of whole frames to dst. It reports false if dst no longer takes
// data (closing or gone).
func (p *Pair) writeData(dst *side, b []byte) bool {
	dst.wmu.Lock()
	if dst.flag(wClosing) {
		dst.wmu.Unlock()
		return false
	}
	p.armWriteDeadline(dst)
	if testDataWrites != nil {
		testDataWrites[dst.who].Add(1)
	}
	err := dst.write(b)
	dst.wmu.Unlock()
	if err != nil {
		p.writeFailed(dst, err)
		return false
	}
	return true
}

// write writes all of b to s (its write deadline applies). Called with s.wmu held.
func (s *side) write(b []byte) error {
	if s.w.raw != nil {
		return rawWriteAll(s, b)
	}
	if !s.w.tlsSock {
		_, err := s.conn.Write(b)
		return err
	}
	t := s.socket()
	t.setOwner(s)
	_, err := s.conn.Write(b)
	t.setOwner(nil)
	return err
}

// Write deadlines. A write that cannot finish within WriteTimeout cuts the peer. A side
// written with raw syscalls (a plain side, or a TLS side over TLSSocket) sets none while its
// writes go straight into the socket buffer, which is nearly always: each deadline set is a
// timer moved in the runtime's heap, one per few writes at a message a second per connection.
// Its deadline is armed only when a write finds the buffer full (writeBlocked), and cleared
// before a later write once it is no longer far enough ahead (an old deadline passing between
// writes would fail the next write at once). Such a write therefore fails 3/4 to 1
// WriteTimeout after it first blocked. Other sides keep their deadline between 3/4 and 1
// WriteTimeout ahead of every write without resetting it each time.

// armWriteDeadline prepares s's write deadline for a write. Called with s.wmu held.
func (p *Pair) armWriteDeadline(s *side) {
	wt := p.opts.WriteTimeout
	if wt <= 0 {
		return
	}
	if s.w.raw != nil || s.w.tlsSock {
		if s.wdeadline != 0 && monoNow()+wt-wt/4 > s.wdeadline && !p.ended.Load() {
			s.wdeadline = 0
			s.conn.SetWriteDeadline(time.Time{})
			if testDeadlineSets != nil {
				testDeadlineSets.Add(1)
			}
		}
		return
	}
	p.setWriteDeadline(s, wt)
}

// writeBlocked arms a raw-written side's write deadline when its socket buffer is full.
// Called from inside the raw write callback, with s.wmu held, once per write. Once the pair
// has ended it arms nothing (and armWriteDeadline clears nothing): finish sets ended before
// the deadline that abandons writes in flight, and that deadline must stay.
func (p *Pair) writeBlocked(s *side) {
	if wt := p.opts.WriteTimeout; wt > 0 && !p.ended.Load() {
		p.setWriteDeadline(s, wt)
	}
}

// setWriteDeadline moves s's write deadline to WriteTimeout ahead unless it is still at least
// 3/4 of that ahead.
func (p *Pair) setWriteDeadline(s *side, wt time.Duration) {
	if now := monoNow(); s.wdeadline == 0 || now+wt-wt/4 > s.wdeadline {
		s.wdeadline = now + wt
		s.conn.SetWriteDeadline(time.Now().Add(wt))
		if testDeadlineSets != nil {
			testDeadlineSets.Add(1)
		}
	}
}

// testDataWrites, when set (by tests, before any pair runs), counts writeData's writes to
// each side, each before it is made.
var testDataWrites *[2]atomic.Int64

// testDeadlineSets, when set (by tests, before any pair runs), counts write deadlines set or
// cleared by the relay.
var testDeadlineSets *atomic.Int64

// blockedWrite is a raw write callback's link to its side: the first time the socket buffer
// is full during one write, the side's write deadline is armed.
type blockedWrite struct {
	s    *side
	done bool
}

// blocked is called by the callback on EAGAIN, before it reports false to wait: it arms the
// side's write deadline and marks the side stalled.
func (b *blockedWrite) blocked() {
	if !b.done && b.s != nil {
		b.done = true
		b.s.setFlag(wStalled)
		b.s.pair.writeBlocked(b.s)
	}
}

// end is called when the write has returned: the side is no longer stalled.
func (b *blockedWrite) end() {
	if b.done {
		b.s.clearFlag(wStalled)
	}
}

// monoStart is the origin of monoNow.
var monoStart = time.Now()

// monoNow reads the monotonic clock only (time.Since of a time with a monotonic reading): one
// clock read per call where time.Now makes two (wall and monotonic). For the per-write deadline
// check.
func monoNow() time.Duration { return time.Since(monoStart) }

// writeControl writes one control frame to s. A close frame marks s closed for data; nothing
// is written to s after a close. It reports whether the frame was written.
func (p *Pair) writeControl(s *side, op wsframe.Opcode, payload []byte) bool {
	s.wmu.Lock()
	if s.flag(wClosing) {
		s.wmu.Unlock()
		return false
	}
	if op == wsframe.OpClose {
		s.setFlag(wClosing)
	}
	h := wsframe.Header{Fin: true, Opcode: op, Length: int64(len(payload))}
	if s.mask {
		h.Masked = true
		putKey(&h.Mask)
	}
	// Control frames are rare: borrow a scratch buffer rather than keep one per side.
	buf := ctrlPool.Get().(*[ctrlFrameSize]byte)
	n := h.Encode(buf[:])
	n += copy(buf[n:], payload)
	if h.Masked {
		wsframe.Mask(h.Mask, 0, buf[n-len(payload):n])
	}
	p.armWriteDeadline(s)
	err := s.write(buf[:n])
	if op == wsframe.OpClose {
		s.setFlag(wClosed)
	}
	s.wmu.Unlock()
	ctrlPool.Put(buf)
	if err != nil {
		p.writeFailed(s, err)
		return false
	}
	return true
}

// control handles a control frame read from src. It reports whether the pump goes on.
func (p *Pair) control(src *side, h wsframe.Header) bool {
	src.stats.ControlFrames++
	buf := ctrlPool.Get().(*[ctrlFrameSize]byte)
	defer ctrlPool.Put(buf)
	payload := buf[:h.Length]
	if _, err := io.ReadFull(src.br, payload); err != nil {
		p.readFailed(src, err)
		return false
	}
	if h.Masked {
		wsframe.Mask(h.Mask, 0, payload)
	}
	switch h.Opcode {
	case wsframe.OpPing:
		// Answered locally, on the side it came from (DESIGN.md, control frames).
		p.writeControl(src, wsframe.OpPong, payload)
	case wsframe.OpPong:
		src.awaitPong.Store(false)
	case wsframe.OpClose:
		return p.closeReceived(src, payload)
	}
	return true
}

// closeReceived handles a close frame from src (RFC 6455 section 5.5.1, DESIGN.md close
// translation). It reports whether the pump should keep reading src (never: nothing valid
// follows a close).
func (p *Pair) closeReceived(src *side, payload []byte) bool {
	code, reason, err := wsframe.ParseClosePayload(payload)
	if err != nil {
		p.readFailed(src, err)
		return false
	}
	dst := p.other(src)
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		return false
	}
	src.recvClose = true
	p.info(src).Received = code
	p.info(src).ReceivedReason = string(reason)
	if c := p.cl(); c.closedBy == "" {
		c.closedBy = src.who.String()
	}
	var replyTo, forwardTo *side
	srcSent := src.wroteClose()
	switch {
	case !srcSent && (dst.gone || dst.wroteClose()):
		// The other side is already closing: answer src ourselves.
		replyTo = src
	case !srcSent:
		// src starts the close: forward it; dst's reply becomes src's reply.
		forwardTo = dst
	case dst.recvClose && !dst.wroteClose():
		// src's close is the reply to the close dst started: return it to dst.
		forwardTo = dst
	}
	p.mu.Unlock()

	fwd := payload
	if code == wsframe.CloseNoStatus {
		fwd = nil // forwarded without a code, never as 1005
	}
	if forwardTo != nil {
		p.sendClose(forwardTo, code, string(reason), fwd)
		p.armCloseTimer()
	}
	if replyTo != nil {
		p.sendClose(replyTo, code, string(reason), fwd)
	}
	p.checkDone()
	return false
}

// wroteClose reports whether a close frame is written or being written to s (or s takes no
// more frames). It does not wait for s's wmu: a data write blocked on a peer that stopped
// reading must not hold up the close that peer sends.
func (s *side) wroteClose() bool { return s.flag(wClosing) }

// sendClose writes a close frame with payload (already encoded, or nil for none) to s and
// records it.
func (p *Pair) sendClose(s *side, code wsframe.CloseCode, reason string, payload []byte) {
	if payload == nil && code != 0 && code != wsframe.CloseNoStatus {
		var buf [wsframe.MaxControlPayload]byte
		payload = wsframe.AppendClosePayload(buf[:0], code, reason)
	}
	if p.writeControl(s, wsframe.OpClose, payload) {
		p.mu.Lock()
		info := p.info(s)
		if payload == nil {
			info.Sent = wsframe.CloseNoStatus
		} else {
			info.Sent = code
		}
		info.SentReason = reason
		p.mu.Unlock()
	}
}

// sendCloseCode writes a gateway-made close frame.
func (p *Pair) sendCloseCode(s *side, code wsframe.CloseCode, reason string) {
	var buf [wsframe.MaxControlPayload]byte
	p.sendClose(s, code, reason, wsframe.AppendClosePayload(buf[:0], code, reason))
}

// failBy closes the pair because src broke a rule: src gets code, the other side gets the
// code DESIGN.md's table gives for a fault of src (1001 to the backend, 1014 to the client).
func (p *Pair) failBy(src *side, code wsframe.CloseCode, reason string) {
	p.mu.Lock()
	if c := p.cl(); c.protoCode == 0 {
		c.protoCode = code
	}
	p.mu.Unlock()
	if src.who == SideClient {
		p.fail(src, code, reason, wsframe.CloseGoingAway, "client error", "client "+reason)
	} else {
		p.fail(src, code, reason, wsframe.CloseBadGateway, "backend error", "backend "+reason)
	}
}

// fail is a gateway-started close: code1 to culprit (or the client when culprit is nil) and
// code2 to the other side. The culprit's connection is failed (RFC 6455 section 7.1.7): it gets
// its close and its write half is shut, without waiting for a reply.
func (p *Pair) fail(culprit *side, code1 wsframe.CloseCode, reason1 string, code2 wsframe.CloseCode, reason2, cause string) {
	first, second := culprit, (*side)(nil)
	if culprit == nil {
		first, second = &p.client, &p.backend
	} else {
		second = p.other(culprit)
	}
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		return
	}
	if c := p.cl(); c.closedBy == "" {
		c.closedBy = "gateway"
		c.cause = cause
	}
	p.mu.Unlock()
	// The close timer starts first, and a side whose write is stalled gets its close last:
	// a peer that stopped reading must not hold up the other side's close, and finish
	// abandons the write blocked on it at close_timeout.
	p.armCloseTimer()
	closeFirst := func() {
		p.sendCloseCode(first, code1, reason1)
		if culprit != nil {
			p.markGone(culprit)
			CloseWrite(culprit.conn)
		}
	}
	if first.flag(wStalled) {
		p.sendCloseCode(second, code2, reason2)
		closeFirst()
	} else {
		closeFirst()
		p.sendCloseCode(second, code2, reason2)
	}
	p.checkDone()
}

// CloseWrite shuts c's write half (TCP FIN, or a TLS close_notify) so the last bytes written
// are delivered before the socket is closed for good; connections without a write half are
// left alone.
func CloseWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// readFailed handles a read error or a protocol violation on src.
func (p *Pair) readFailed(src *side, err error) {
	if code := wsframe.CloseCodeOf(err); code != 0 {
		// src broke the protocol (DESIGN.md: client 1002 / backend 1002 to the culprit).
		p.limitFired(src, "protocol_error")
		p.logf(src, "protocol error", err)
		p.failBy(src, code, protocolReason(err))
		return
	}
	p.sideGone(src, err)
}

// writeFailed handles a failed write to s: s is presumed gone (write_timeout or reset).
func (p *Pair) writeFailed(s *side, err error) {
	p.sideGone(s, err)
}

// sideGone handles the loss of s's TCP connection without a close handshake.
func (p *Pair) sideGone(s *side, err error) {
	p.mu.Lock()
	if p.finished || s.gone {
		p.mu.Unlock()
		p.checkDone()
		return
	}
	s.gone = true
	clean := s.recvClose
	o := p.other(s)
	p.mu.Unlock()
	s.setFlag(wClosing | wClosed) // a write still blocked on s fails or is abandoned by finish
	if clean {
		p.checkDone()
		return
	}
	p.mu.Lock()
	if c := p.cl(); c.closedBy == "" {
		c.closedBy = s.who.String()
		c.cause = s.who.String() + " connection lost"
	}
	oWaiting := o.recvClose
	p.mu.Unlock()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		p.logf(s, "connection lost", err)
	}
	if oWaiting {
		// o started a close that s never answered: answer it ourselves with o's code.
		p.mu.Lock()
		code, reason := p.info(o).Received, p.info(o).ReceivedReason
		p.mu.Unlock()
		if code == wsframe.CloseNoStatus {
			p.sendClose(o, code, reason, nil)
		} else {
			p.sendCloseCode(o, code, reason)
		}
	} else if s.who == SideClient {
		p.sendCloseCode(o, wsframe.CloseGoingAway, "client gone")
	} else {
		p.sendCloseCode(o, wsframe.CloseBadGateway, "backend closed")
	}
	p.armCloseTimer()
	p.checkDone()
}

func (p *Pair) markGone(s *side) {
	p.mu.Lock()
	s.gone = true
	p.mu.Unlock()
}

// checkDone ends the pair when each side is gone or has completed its close handshake.
func (p *Pair) checkDone() {
	p.mu.Lock()
	done := p.sideDone(&p.client) && p.sideDone(&p.backend)
	p.mu.Unlock()
	if done {
		p.finish()
	}
}

// sideDone: s is gone, or it sent a close and the write of ours has ended.
func (p *Pair) sideDone(s *side) bool {
	return s.gone || (s.recvClose && s.flag(wClosed))
}

// armCloseTimer starts close_timeout once: when it fires, every side still waiting for a
// reply gets one from the gateway with its own code, and the pair ends.
func (p *Pair) armCloseTimer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.cl(); c.timer == nil && !p.finished {
		// close_timeout 0 means no wait: answer pending closes at once.
		c.timer = time.AfterFunc(max(p.opts.CloseTimeout, 0), p.closeTimedOut)
	}
}

func (p *Pair) closeTimedOut() {
	if !p.enter() {
		return
	}
	defer p.timerWG.Done()
	defer p.recoverTimer()
	for _, s := range []*side{&p.client, &p.backend} {
		p.mu.Lock()
		waiting := s.recvClose && !s.gone
		code, reason := p.info(s).Received, p.info(s).ReceivedReason
		p.mu.Unlock()
		if waiting && s.flag(wStalled) {
			// s has stopped reading, so our reply cannot reach it: finish abandons the
			// write it is blocked in, rather than wait for write_timeout.
			continue
		}
		if waiting {
			if code == wsframe.CloseNoStatus {
				p.sendClose(s, code, reason, nil)
			} else {
				p.sendCloseCode(s, code, reason)
			}
		}
	}
	p.finish()
}

// lingerTimeout bounds the lingering close: after the last frames, each socket's write half
// is shut and its reads are drained for at most this long, so unread input cannot make the
// kernel answer with a reset that destroys the close frame we just sent (the problem nginx's
// lingering_close solves).
const lingerTimeout = 2 * time.Second

// finish ends the pair once: write halves are shut and reads get a deadline; the pumps drain
// until the peers close or the deadline passes, then Run closes the sockets.
func (p *Pair) finish() {
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		return
	}
	p.finished = true
	p.ended.Store(true)
	deadline := time.Now().Add(lingerTimeout)
	c := p.cl()
	c.lingerAt = deadline
	if c.timer != nil {
		c.timer.Stop()
	}
	if p.done != nil {
		close(p.done)
	}
	var wake [2]*side
	for i, s := range []*side{&p.client, &p.backend} {
		if s.parked.CompareAndSwap(true, false) {
			lot.woken()
			wake[i] = s
		}
	}
	p.mu.Unlock()
	for _, s := range []*side{&p.client, &p.backend} {
		s.conn.SetWriteDeadline(time.Now()) // abandon a data write still in flight
		s.conn.SetReadDeadline(deadline)
		CloseWrite(s.conn)
	}
	for _, s := range wake {
		if s != nil {
			go p.resume(s) // drains until the peer closes or the deadline passes
		}
	}
}

// drainReads discards what src still sends until it closes, the read deadline set by finish
// passes, or the socket is closed.
func (p *Pair) drainReads(src *side) {
	for {
		if _, err := src.br.Discard(readerSize); err != nil {
			return
		}
	}
}

func (p *Pair) limitFired(s *side, name string) {
	if p.opts.OnLimit != nil {
		p.opts.OnLimit(p.client.conn.RemoteAddr(), s.who, name)
	}
}

func (p *Pair) logf(s *side, msg string, err error) {
	p.logger().Debug(msg, "side", s.who.String(), "remote", s.conn.RemoteAddr().String(), "err", err)
}

// protocolReason is the close reason for a protocol error: the error text without the
// package prefix, short enough for a close frame.
func protocolReason(err error) string {
	var pe wsframe.ProtocolError
	if errors.As(err, &pe) {
		s := string(pe)
		if len(s) > 9 && s[:9] == "wsframe: " {
			s = s[9:]
		}
		return s
	}
	return "protocol error"
}
