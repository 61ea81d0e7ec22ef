package proxy

import (
	"bufio"
	"io"
	"sync"
	"syscall"
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

// idleWaiter parks a pump until its socket has data without holding a read buffer, so an idle
// connection costs no pooled memory. It waits through syscall.RawConn.Read: the callback
// borrows a pooled buffer, tries one non-blocking read, and gives the buffer back if there is
// nothing to read, so a parked pump holds nothing and the syscalls are the ones a blocking
// Read would make (one read that finds data, one that finds none before parking). The bytes
// read are then served first by Read, in front of the connection. Only plain TCP sockets
// qualify: a TLS connection may hold decrypted bytes of its own that the socket does not show.
type idleWaiter struct {
	raw  syscall.RawConn
	conn io.Reader
	fn   func(fd uintptr) bool // allocated once per connection, not per wait

	buf    *[readerSize]byte // bytes read by the last wait, not yet served; nil when none
	off, n int
	err    error // error or EOF met by the last wait, served after buf
}

var prefetchPool = sync.Pool{New: func() any { return new([readerSize]byte) }}

func newIdleWaiter(c io.Reader) *idleWaiter {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &idleWaiter{raw: raw, conn: c}
	w.fn = w.tryRead
	return w
}

// tryRead is the RawConn.Read callback: it reports false (wait for readability) when the
// socket has nothing to read.
func (w *idleWaiter) tryRead(fd uintptr) bool {
	if w.buf == nil {
		w.buf = prefetchPool.Get().(*[readerSize]byte)
	}
	n, err := syscall.Read(int(fd), w.buf[:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		prefetchPool.Put(w.buf)
		w.buf = nil
		return false
	}
	switch {
	case err != nil:
		w.err, n = err, 0
	case n == 0:
		w.err = io.EOF
	}
	w.off, w.n = 0, n
	return true
}

// wait blocks until the socket has data (now held by w), an error or EOF, the read deadline
// passes, or the socket is closed.
func (w *idleWaiter) wait() error {
	return w.raw.Read(w.fn)
}

// Read serves the bytes the last wait read, then reads the connection.
func (w *idleWaiter) Read(p []byte) (int, error) {
	if w.buf != nil {
		k := copy(p, w.buf[w.off:w.n])
		w.off += k
		if w.off < w.n {
			return k, nil
		}
		prefetchPool.Put(w.buf)
		w.buf = nil
		if k > 0 {
			return k, nil
		}
	}
	if err := w.err; err != nil {
		w.err = nil
		return 0, err
	}
	return w.conn.Read(p)
}

// release returns a buffer still held (the pair ended between a wait and its reads).
func (w *idleWaiter) release() {
	if w.buf != nil {
		prefetchPool.Put(w.buf)
		w.buf = nil
	}
}
