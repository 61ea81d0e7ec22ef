package main

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h).
const ipBindAddressNoPort = 24

// bindNoPort is the dialer's Control when a source address is set: with
// IP_BIND_ADDRESS_NO_PORT the kernel picks the source port at connect time for the whole
// 4-tuple instead of reserving one at bind time. A bind-time port is exclusive: no other
// process's connect() from any address may use that port number while the socket or its
// TIME_WAIT lives, so 10,000 idle connections from 127.0.0.2.. took ports from the proxies'
// own backend dials from 127.0.0.1 (EADDRNOTAVAIL in nginx's log, 503/502 in the idle rows).
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
