package proxy

import (
	"bufio"
	"io"
	"sync"
	"syscall"
	"unsafe"
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

// idleWaiter parks a pump until its socket is readable without holding a read buffer, so an
// idle connection costs no pooled memory (the "wait for readability through
// syscall.RawConn.Read" technique). Only plain TCP sockets qualify: a TLS connection may hold
// decrypted bytes of its own that the socket's readability does not show.
type idleWaiter struct {
	raw  syscall.RawConn
	peek [1]byte
	fn   func(fd uintptr) bool // allocated once per connection, not per wait
}

func newIdleWaiter(r io.Reader) *idleWaiter {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &idleWaiter{raw: raw}
	w.fn = w.ready
	return w
}

// ready reports whether the socket has data (or an error or EOF) without consuming it.
func (w *idleWaiter) ready(fd uintptr) bool {
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&w.peek[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN && errno != syscall.EINTR
}

// wait blocks until the socket is readable, the read deadline passes, or it is closed.
func (w *idleWaiter) wait() error {
	return w.raw.Read(w.fn)
}
