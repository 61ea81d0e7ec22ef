//go:build unix

package main

import (
	"net"
	"os"
	"syscall"
)

// tryWriter makes writes to a plain TCP socket that do not wait for room in it. There is none
// for TLS: a TLS record cannot be left half-written.
type tryWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool // w.once, bound once so a write allocates nothing
	b   []byte
	n   int
	err error
}

// newTryWriter returns nc's tryWriter, or nil when nc is not plain TCP.
func newTryWriter(nc net.Conn) *tryWriter {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &tryWriter{rc: rc}
	w.fn = w.once
	return w
}

func (w *tryWriter) once(fd uintptr) bool {
	for {
		w.n, w.err = syscall.Write(int(fd), w.b)
		if w.err != syscall.EINTR {
			return true
		}
	}
}

// write makes one write of b that does not wait: it returns how much the socket took,
// possibly 0.
func (w *tryWriter) write(b []byte) (int, error) {
	w.b = b
	err := w.rc.Write(w.fn)
	n, werr := w.n, w.err
	w.b, w.err = nil, nil
	if err != nil {
		return 0, err
	}
	if werr == syscall.EAGAIN {
		return 0, nil
	}
	if werr != nil {
		return 0, os.NewSyscallError("write", werr)
	}
	return n, nil
}
