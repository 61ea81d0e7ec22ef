package main

import (
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSourceAddressPortChosenAtConnect: a connection dialed from a chosen source address
// (the idle mode's 127.0.0.2..) leaves its port to connect time (IP_BIND_ADDRESS_NO_PORT), so
// it does not reserve the port number against every other connect() on the machine, which
// starved the proxies' backend dials in the idle rows.
func TestSourceAddressPortChosenAtConnect(t *testing.T) {
	srv := echoServer(t, nil)
	u, _ := url.Parse("ws" + strings.TrimPrefix(srv.URL, "http") + "/")
	c, err := dial(&dialConfig{URL: u, Timeout: 5 * time.Second}, net.IPv4(127, 0, 0, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.nc.Close()
	if ip := c.nc.LocalAddr().(*net.TCPAddr).IP; !ip.Equal(net.IPv4(127, 0, 0, 2)) {
		t.Fatalf("dialed from %v, want 127.0.0.2", ip)
	}
	raw, err := c.nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	raw.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort) })
	if gerr != nil || v != 1 {
		t.Fatalf("IP_BIND_ADDRESS_NO_PORT = %d, %v; want 1", v, gerr)
	}
}
