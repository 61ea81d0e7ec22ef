//go:build unix

package proxy

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// socketPair returns two connected Unix stream sockets: in-memory, buffered by the kernel,
// with CloseWrite (half-close), and no port or address involved.
func socketPair(t testing.TB) (a, b *net.UnixConn) {
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int, name string) *net.UnixConn {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0], "a"), conn(fds[1], "b")
}
