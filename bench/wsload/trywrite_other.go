//go:build !unix

package main

import "net"

// tryWriter: writes that do not wait are not made on this platform.
type tryWriter struct{}

// newTryWriter returns nil here: connections keep blocking writes.
func newTryWriter(net.Conn) *tryWriter { return nil }

func (*tryWriter) write(b []byte) (int, error) { panic("tryWriter: not on this platform") }
