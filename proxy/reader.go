package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}

// GetReader returns a pooled 4 KiB bufio.Reader reading from r.
func GetReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// PutReader returns br to the pool; the caller must not use it afterwards.
func PutReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}

// waiter lets a pump wait for its socket's next bytes without holding a read buffer, so an
// idle connection costs no pooled memory, and tells the pump when the connection has been
// idle long enough to be parked (park_linux.go: no goroutine at all until data arrives).
//
// On a plain TCP socket it waits through syscall.RawConn.Read: the callback borrows a pooled
// buffer, tries one non-blocking read, and gives the buffer back if there is nothing to read,
// so the syscalls are the ones a blocking Read would make. On TLS it reads one byte through
// the tls.Conn (which may hold decrypted bytes the socket does not show). The bytes read are
// then served first by Read, in front of the connection.
type waiter struct {
	raw syscall.RawConn       // the TCP socket's raw access; nil for TLS or non-socket connections
	fn  func(fd uintptr) bool // raw read callback, allocated once per connection
	buf *[readerSize]byte     // bytes read by the last wait, not yet served; nil when none
	err error                 // error or EOF met by the last wait, served after the bytes
	fd  int32                 // the socket's descriptor, for parking; -1 when it cannot be parked

	off, n uint16 // unserved bytes: buf[off:n] (or one[off:n])
	// wakes counts the waits that found data since the park deadline was armed (see
	// Pair.waitData).
	wakes uint16
	one   [1]byte // TLS: the byte read by the last wait
	isTLS bool
	once  bool // fn's mode: try one read and return even if there was nothing (EAGAIN)
}

var prefetchPool = sync.Pool{New: func() any { return new([readerSize]byte) }}

// errNoData is what try reports when the socket had nothing to read.
var errNoData = errors.New("no data")

// init prepares w for c. Connections that are neither TCP nor TLS over TCP (net.Pipe in
// tests) are read directly and never parked.
func (w *waiter) init(c net.Conn) {
	w.fd = -1
	sock := c
	if tc, ok := c.(*tls.Conn); ok {
		w.isTLS = true
		sock = tc.NetConn()
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
	if !w.isTLS {
		w.raw = raw
		w.fn = w.tryRead
	}
}

// canWait reports whether w can wait without a read buffer.
func (w *waiter) canWait() bool { return w.raw != nil || w.isTLS }

// tryRead is the RawConn.Read callback: it reports false (wait for readability) when the
// socket has nothing to read, unless w.once asks for one attempt only.
func (w *waiter) tryRead(fd uintptr) bool {
	if w.buf == nil {
		w.buf = prefetchPool.Get().(*[readerSize]byte)
	}
	n, err := syscall.Read(int(fd), w.buf[:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		prefetchPool.Put(w.buf)
		w.buf = nil
		if w.once {
			w.err = errNoData
			return true
		}
		return false
	}
	switch {
	case err != nil:
		w.err, n = err, 0
	case n == 0:
		w.err = io.EOF
	}
	w.off, w.n = 0, uint16(n)
	return true
}

// wait blocks until the socket has data (now held by s.w), an error or EOF, the read
// deadline passes, or the socket is closed.
func (s *side) wait() error {
	w := &s.w
	if w.raw != nil {
		w.once = false
		return w.raw.Read(w.fn)
	}
	n, err := s.conn.Read(w.one[:])
	w.off, w.n = 0, uint16(n)
	if n > 0 {
		w.err = err
		return nil
	}
	return err
}

// try reads what is there without waiting; errNoData when there is nothing.
func (s *side) try() error {
	w := &s.w
	if w.raw != nil {
		w.once = true
		err := w.raw.Read(w.fn)
		if err == nil && w.err == errNoData {
			w.err = nil
			return errNoData
		}
		return err
	}
	// TLS: a read with a past deadline returns a record already buffered by crypto/tls, or
	// times out without touching the socket (a timeout leaves the tls.Conn usable).
	s.conn.SetReadDeadline(time.Unix(1, 0))
	err := s.wait()
	s.conn.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errNoData
	}
	return err
}

// Read serves the bytes the last wait read, then reads the connection. A read that times out
// on the park deadline (not a real deadline) is retried. The pump's bufio.Reader reads here.
func (s *side) Read(p []byte) (int, error) {
	w := &s.w
	if w.n > w.off {
		var k int
		if w.buf != nil {
			k = copy(p, w.buf[w.off:w.n])
		} else {
			k = copy(p, w.one[w.off:w.n])
		}
		w.off += uint16(k)
		if w.off == w.n {
			w.release()
		}
		return k, nil
	}
	if err := w.err; err != nil {
		w.err = nil
		return 0, err
	}
	for {
		n, err := s.conn.Read(p)
		if n == 0 && s.hot && errors.Is(err, os.ErrDeadlineExceeded) && s.pair.rearmPark(s) {
			continue
		}
		return n, err
	}
}

// release returns a buffer still held (the pair ended between a wait and its reads).
func (w *waiter) release() {
	if w.buf != nil {
		prefetchPool.Put(w.buf)
		w.buf = nil
	}
	w.off, w.n = 0, 0
}
