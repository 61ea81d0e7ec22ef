//go:build !unix

package proxy

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// socketPair returns two connected Unix stream sockets (AF_UNIX, which Windows has too),
// made through a listener on a temporary path, as there is no socketpair here.
func socketPair(t testing.TB) (a, b *net.UnixConn) {
	dir, err := os.MkdirTemp("", "sp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err = net.DialUnix("unix", nil, l.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	if b, err = l.AcceptUnix(); err != nil {
		t.Fatal(err)
	}
	return a, b
}
