package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}

// GetReader returns a pooled 4 KiB bufio.Reader reading from r, for a handshake.
func GetReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// PutReader returns br (from GetReader, or a pump's) to its pool; the caller must not use it
// afterwards.
func PutReader(br *bufio.Reader) {
	br.Reset(nil)
	switch br.Size() {
	case readerSize:
		readerPool.Put(br)
	case pumpReaderSize:
		pumpReaderPool.Put(br)
	}
}

// pumpReaderSize is a pump's read buffer, held only while its side has bytes flowing (an idle
// or parked side holds none). 16 KiB, like HAProxy's buffers: a read takes in many small
// frames, or a few medium ones, and they leave in one write; a frame too big for it is
// streamed with blocking reads instead.
const pumpReaderSize = 16 << 10

var pumpReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, pumpReaderSize) }}

func getPumpReader(r io.Reader) *bufio.Reader {
	br := pumpReaderPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// waiter is how a pump waits for its socket's next bytes without holding a read buffer, so
// an idle connection costs no pooled memory, and how it learns that the connection has been
// idle long enough to be parked (park_linux.go: no goroutine at all until data arrives).
//
// On a plain TCP socket the pump relays from inside one syscall.RawConn.Read call
// (relayRaw): the callback reads the socket without blocking, relays every frame that is
// complete in the buffer, and waits in the runtime's poller only once a read came back short,
// so a burst costs one read(2) and no read that finds nothing. On TLS it waits by reading one
// byte through the tls.Conn (which may hold decrypted bytes the socket does not show); that
// byte is then served first by Read, in front of the connection, with every record crypto/tls
// already holds behind it (readBuffered).
type waiter struct {
	raw syscall.RawConn       // the TCP socket's raw access; nil for TLS or non-socket connections
	fn  func(fd uintptr) bool // the RawConn.Read callback (side.readable), bound once
	out error                 // how the callback ended (see relayRaw)
	err error                 // read error met inside the callback, served by Read after the buffered bytes
	fd  int32                 // the socket's descriptor, for parking; -1 when it cannot be parked

	off, n uint16  // TLS: unserved bytes of one[off:n]
	one    [1]byte // TLS: the byte read by the last wait
	isTLS  bool
	// tlsSock: a TLS side over TLSSocket, whose writes arm the deadline only when they block
	// (a bool in the struct's padding rather than a pointer in side: see socket).
	tlsSock bool
	inCB    bool // Read is called from inside the callback: read the descriptor, never block
	short   bool // inCB: the last read did not fill what it was given (the socket is drained)
	once    bool // inCB: return errNoData instead of waiting if the first read finds nothing
	// probe: the side was woken (or started) with bytes, and a plain side is not hot yet: if
	// they turn out to be only control frames the gateway answers itself (the pong to its
	// keepalive ping, a ping), it parks again at once (see readable; a TLS side, hot from its
	// wake, is cooled by the pump). wakeData is its DataFrames count then.
	probe    bool
	wakeData uint32
	// hup: the parking lot saw the peer's shutdown (or a socket error): a short read no
	// longer means the socket is drained, read until EOF or EAGAIN.
	hup atomic.Bool
}

// Outcomes of relayRaw besides read errors.
var (
	errNoData  = errors.New("no data")              // once: nothing to read
	errSlow    = errors.New("frame needs blocking") // a frame larger than the buffer, or an error after buffered bytes
	errStop    = errors.New("pump ends")            // the relay ended src's read side
	errBlocked = errors.New("would block")          // inCB read found nothing (never leaves the callback)
)

// initWaiter prepares s.w for c. Connections that are neither TCP nor TLS over TCP (net.Pipe in
// tests) are read directly and never parked.
func (s *side) initWaiter(c net.Conn) {
	w := &s.w
	w.fd = -1
	sock := c
	if tc, ok := c.(*tls.Conn); ok {
		w.isTLS = true
		sock = tc.NetConn()
		_, w.tlsSock = sock.(*tlsSocket)
	}
	sc, ok := sock.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) { w.fd = int32(fd) })
	if !w.isTLS && rawIOSupported && isSocket(sock) {
		w.raw = raw
		w.fn = s.readable
	}
}

// isSocket reports whether c is a socket, which rawRead and rawWrite take.
func isSocket(c net.Conn) bool {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// socket returns the TLSSocket under a TLS side (w.tlsSock set).
func (s *side) socket() *tlsSocket { return s.conn.(*tls.Conn).NetConn().(*tlsSocket) }

// relayRaw relays src's frames from inside one RawConn.Read call until the pump must leave
// it. It returns errSlow (relay what src.br holds with blocking reads), errStop (src's read
// side has ended), errNoData (once, and the socket had nothing), or the error that ended the
// wait (a deadline, the socket closed).
func (s *side) relayRaw(once bool) error {
	w := &s.w
	w.inCB, w.once, w.out = true, once, nil
	defer func() { w.inCB = false }() // a panic in the relay leaves through here
	if err := w.raw.Read(w.fn); err != nil {
		return err
	}
	return w.out
}

// readable is the RawConn.Read callback: it reports false to wait for readability.
func (s *side) readable(uintptr) bool {
	w := &s.w
	p := s.pair
	for {
		if s.br == nil {
			s.br = getPumpReader(s)
		}
		br := s.br
		_, err := br.Peek(br.Buffered() + 1) // one read(2), into the buffer's free space
		if err == errBlocked {
			if br.Buffered() == 0 {
				PutReader(br) // idle: hold no buffer while waiting (or parked)
				s.br = nil
			}
			if w.once || s.controlOnly() {
				w.out = errNoData
				return true
			}
			s.endProbe()
			return false
		}
		if w.once {
			w.once = false
			if err == nil {
				// Bytes after a start or a wake: relay them, then see (controlOnly).
				w.probe, w.wakeData = true, uint32(s.stats.DataFrames)
			} else {
				p.armPark(s)
			}
		}
		if err == bufio.ErrBufferFull {
			// Cannot happen (relayFrames leaves only a frame that fits, partly read), but a
			// full buffer must not read as an error: the blocking relay takes it.
			s.endProbe()
			w.out = errSlow
			return true
		}
		if err != nil {
			// EOF or a read error: relay what is buffered first, then serve it.
			s.endProbe()
			w.err, w.out = err, errSlow
			return true
		}
		s.markSeen()
		switch p.relayFrames(s, p.other(s), true) {
		case relayStop:
			w.probe = false
			w.out = errStop
			return true
		case relayBig:
			s.endProbe()
			w.out = errSlow
			return true
		}
		if w.short && !w.hup.Load() {
			// Drained: the next read waits for the poller's next edge, not for EAGAIN.
			if br.Buffered() == 0 {
				PutReader(br)
				s.br = nil
				if s.controlOnly() {
					w.out = errNoData // park again
					return true
				}
			}
			s.endProbe()
			return false
		}
	}
}

// controlOnly reports whether the bytes a probe relayed were control frames only, so the side
// may park again at once: an idle connection woken every ping_interval by the pong to the
// gateway's keepalive ping would otherwise stay hot, with a goroutine and its stack, for the
// 1 to 1.5 s before the sweep parks it (9.3 KB per idle connection against 3.8 KB, with
// pings every 10 s; bench/README.md). It ends the probe either way.
func (s *side) controlOnly() bool {
	w := &s.w
	if !w.probe {
		return false
	}
	w.probe = false
	if uint32(s.stats.DataFrames) == w.wakeData && (s.br == nil || s.br.Buffered() == 0) {
		return true
	}
	s.pair.armPark(s)
	return false
}

// endProbe makes a probing side hot: data is flowing. The lot's sweep watches it for idleness,
// and the lot for a shutdown the runtime's poller will not report (see shutdownSeen).
func (s *side) endProbe() {
	if s.w.probe {
		s.w.probe = false
		s.pair.armPark(s)
	}
}

// shutdownSeen is called by the parking lot when relaying side s's peer has shut down (or its
// socket failed). The readiness that woke the pump may have carried the FIN along with data,
// and a short read does not show it: s's reads go on to EOF from now on, and a pump waiting
// in the runtime's poller is woken by a read deadline in the past (it reads again, as after
// a park request that finds data).
//
// Once the pair has ended, the read deadline is finish's linger deadline and stays so: the
// drain reads to EOF (or that deadline) and must not be cut short, or unread bytes would make
// the close a reset.
func (s *side) shutdownSeen() {
	s.w.hup.Store(true)
	if !s.pair.ended.Load() {
		s.conn.SetReadDeadline(time.Unix(1, 0))
		s.pair.restoreLinger(s) // finish may have set its deadline meanwhile
	}
}

// wait blocks until a TLS side has data (now held by s.w), an error or EOF, the read deadline
// passes, or the socket is closed.
func (s *side) wait() error {
	w := &s.w
	n, err := s.conn.Read(w.one[:])
	w.off, w.n = 0, uint16(n)
	if n > 0 {
		w.err = err
		return nil
	}
	return err
}

// try reads what a TLS side has without waiting; errNoData when there is nothing. A read with
// a past deadline returns a record already buffered by crypto/tls, or times out without
// touching the socket (a timeout leaves the tls.Conn usable).
func (s *side) try() error {
	s.conn.SetReadDeadline(time.Unix(1, 0))
	err := s.wait()
	s.conn.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errNoData
	}
	return err
}

// Read is what the pump's bufio.Reader reads. Inside the raw callback it makes one
// non-blocking read(2). Otherwise it serves the byte a TLS wait read and the error a callback
// met, then reads the connection; a read that times out on a park request or shutdown notice
// (not a real deadline) is retried: a side in the middle of a frame is not idle.
func (s *side) Read(p []byte) (int, error) {
	w := &s.w
	if w.inCB {
		n, err := rawRead(int(w.fd), p)
		w.short = n < len(p)
		return n, err
	}
	if w.n > w.off {
		k := copy(p, w.one[w.off:w.n])
		w.off += uint16(k)
		if w.tlsSock && w.err == nil {
			k += s.readBuffered(p[k:])
		}
		return k, nil
	}
	if err := w.err; err != nil {
		w.err = nil
		return 0, err
	}
	for {
		n, err := s.conn.Read(p)
		if n > 0 {
			s.markSeen()
			if w.tlsSock && err == nil {
				n += s.readBuffered(p[n:])
			}
		} else if s.notice(err) {
			continue
		}
		return n, err
	}
}

// readBuffered reads into p, without reading the socket, what a TLS side's tls.Conn holds:
// the rest of the record being served and the records already received whole. crypto/tls
// returns one record per Read, and a client that sends each message in a record of its own
// (browsers do) would otherwise have each relayed in a write of its own; this way the
// messages that came in one socket read leave in one write, as on a plain side. An error
// met after the bytes (the peer's close_notify, say) is kept in w.err for the next Read.
func (s *side) readBuffered(p []byte) (n int) {
	t := s.socket()
	t.nowait = true
	for n < len(p) {
		k, err := s.conn.Read(p[n:])
		n += k
		if err != nil {
			if err != errNoRecord {
				s.w.err = err
			}
			break
		}
	}
	t.nowait = false
	return n
}

// errNoRecord is what a TLS side's socket returns to crypto/tls in readBuffered once no whole
// record is left buffered. It is a temporary net.Error, so crypto/tls keeps the partial
// record, if any, and the connection stays usable.
var errNoRecord net.Error = noRecord{}

type noRecord struct{}

func (noRecord) Error() string   { return "no whole TLS record buffered" }
func (noRecord) Timeout() bool   { return true }
func (noRecord) Temporary() bool { return true }

// rawRead runs fn in the socket's RawConn.Read (waiting in the runtime's poller while fn
// reports false), retried like Read after a park request or shutdown notice.
func (s *side) rawRead(fn func(fd uintptr) bool) error {
	for {
		err := s.w.raw.Read(fn)
		if err == nil || !s.notice(err) {
			return err
		}
	}
}

// notice reports whether err is the past read deadline of a park request or shutdown notice
// (not a real deadline), meeting a pump that is in the middle of a frame: it clears the
// deadline, and the read is to be made again.
func (s *side) notice(err error) bool {
	if s.hot && errors.Is(err, os.ErrDeadlineExceeded) && !s.pair.ended.Load() {
		s.parkReq.Store(false)
		s.pair.clearDeadline(s)
		return true
	}
	return false
}
