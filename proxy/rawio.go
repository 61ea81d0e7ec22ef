//go:build unix

package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Raw socket I/O for plain TCP sides. Reads and writes on these sockets never block (Go sets
// them non-blocking), so they are made with RawSyscall, without telling the scheduler a
// syscall began: a write on loopback carries the peer's receive path and can take tens of
// microseconds, long enough for the runtime's monitor to take the P from the writing thread,
// hand it to another and switch back afterwards (futex wake-ups and context switches per
// message that nginx does not pay). Waiting, deadlines and closing stay with Go's poller:
// the calls run inside syscall.RawConn callbacks. Like nginx, they are recvfrom and sendto,
// not read and write: the socket calls skip the file layer's work per call (the position
// lock, the permission and notification hooks), 1.7% of the proxy's CPU in the 64 B row.

// rawIOSupported: plain sockets are read and written with raw syscalls here.
const rawIOSupported = true

// rawRead reads once from fd without blocking: errBlocked when there is nothing yet.
func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
		switch e {
		case 0:
			if n == 0 {
				return 0, io.EOF
			}
			return int(n), nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, errBlocked
		default:
			return 0, os.NewSyscallError("read", e)
		}
	}
}

// rawWriter writes one buffer inside a RawConn.Write callback; pooled, so a side carries no
// write state of its own.
type rawWriter struct {
	fn  func(fd uintptr) bool // w.write, bound once
	b   []byte
	err error
	dl  blockedWrite // arms the side's write deadline when the socket buffer fills
}

var rawWriterPool = sync.Pool{New: func() any {
	w := new(rawWriter)
	w.fn = w.write
	return w
}}

// write is the callback: it writes until w.b is gone, and reports false (wait until the socket
// is writable, within the write deadline) when the socket buffer is full.
func (w *rawWriter) write(fd uintptr) bool {
	for len(w.b) > 0 {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&w.b[0])), uintptr(len(w.b)), 0, 0, 0)
		switch e {
		case 0:
			w.b = w.b[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			w.dl.blocked()
			return false
		default:
			w.err = os.NewSyscallError("write", e)
			return true
		}
	}
	return true
}

// rawWriteAll writes all of b to s's socket; if the socket buffer fills, s's write deadline
// applies from then on (see Pair.writeBlocked). Called with s.wmu held.
func rawWriteAll(s *side, b []byte) error {
	_, err := rawWrite(s.w.raw, b, s)
	return err
}

// rawWrite writes all of b through raw's write callback and returns how much it wrote; the
// first time the socket buffer is full it arms owner's write deadline (owner nil: none).
func rawWrite(raw syscall.RawConn, b []byte, owner *side) (int, error) {
	w := rawWriterPool.Get().(*rawWriter)
	w.b, w.err, w.dl = b, nil, blockedWrite{s: owner}
	err := raw.Write(w.fn)
	w.dl.end()
	n := len(b) - len(w.b)
	if err == nil {
		err = w.err
	}
	w.b, w.err, w.dl = nil, nil, blockedWrite{}
	rawWriterPool.Put(w)
	return n, err
}

// rawReader reads once inside a RawConn.Read callback, waiting in Go's poller while the
// socket has nothing; pooled like rawWriter.
type rawReader struct {
	fn  func(fd uintptr) bool // r.read, bound once
	b   []byte
	n   int
	err error
}

var rawReaderPool = sync.Pool{New: func() any {
	r := new(rawReader)
	r.fn = r.read
	return r
}}

// read is the callback: false (wait until readable, within the read deadline) while the
// socket has nothing.
func (r *rawReader) read(fd uintptr) bool {
	n, err := rawRead(int(fd), r.b)
	if err == errBlocked {
		return false
	}
	r.n, r.err = n, err
	return true
}

// tlsSocket is the TCP connection under a TLS side's crypto/tls.Conn (see TLSSocket): its
// reads and writes are raw syscalls inside RawConn callbacks, like a plain side's, and a write
// that finds the socket buffer full arms the side's write deadline (owner is set while the
// relay writes, under the side's wmu). Deadlines and closing are the TCP connection's.
type tlsSocket struct {
	*net.TCPConn
	raw   syscall.RawConn
	owner atomic.Pointer[side]
	// nowait: Read returns errNoRecord at once instead of reading the socket. Set by the
	// side's pump around readBuffered (the only reader, under crypto/tls's input lock).
	nowait bool
}

// TLSSocket returns what crypto/tls should run over for c: c itself unless it is a TCP
// connection, else a wrapper whose writes the relay can make without moving a timer on every
// write (see Pair.armWriteDeadline).
func TLSSocket(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &tlsSocket{TCPConn: tc, raw: raw}
}

// Read reads once into b, as the TCP connection's Read does (waiting in Go's poller within
// the read deadline), with a raw recvfrom: no scheduler hand-off around the call and no file
// layer work, as for plain sides.
func (t *tlsSocket) Read(b []byte) (int, error) {
	if t.nowait {
		return 0, errNoRecord
	}
	r := rawReaderPool.Get().(*rawReader)
	r.b, r.n, r.err = b, 0, nil
	err := t.raw.Read(r.fn)
	n := r.n
	if err == nil {
		err = r.err
	}
	r.b, r.err = nil, nil
	rawReaderPool.Put(r)
	if _, ok := err.(*os.SyscallError); ok { // the callback's own error, not the poller's
		err = &net.OpError{Op: "read", Net: "tcp", Source: t.LocalAddr(), Addr: t.RemoteAddr(), Err: err}
	}
	return n, err
}

// Write writes all of b (crypto/tls writes whole records).
func (t *tlsSocket) Write(b []byte) (int, error) {
	n, err := rawWrite(t.raw, b, t.owner.Load())
	if _, ok := err.(*os.SyscallError); ok { // the callback's own error, not the poller's
		err = &net.OpError{Op: "write", Net: "tcp", Source: t.LocalAddr(), Addr: t.RemoteAddr(), Err: err}
	}
	return n, err
}

// setOwner names the side whose write deadline a blocked write arms (nil: none).
func (t *tlsSocket) setOwner(s *side) { t.owner.Store(s) }
