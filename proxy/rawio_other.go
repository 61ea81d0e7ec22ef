//go:build !unix

package proxy

import (
	"errors"
	"net"
)

// rawIOSupported: without Unix syscalls, every side is read and written through its net.Conn
// (initWaiter leaves waiter.raw nil), so the functions below are never called.
const rawIOSupported = false

func rawRead(int, []byte) (int, error) { return 0, errors.ErrUnsupported }

func rawWriteAll(*side, []byte) error { return errors.ErrUnsupported }

// TLSSocket returns c: without raw syscalls crypto/tls runs over the connection itself.
func TLSSocket(c net.Conn) net.Conn { return c }

// tlsSocket is never made here.
type tlsSocket struct {
	*net.TCPConn
	nowait bool
}

func (*tlsSocket) setOwner(*side) {}
