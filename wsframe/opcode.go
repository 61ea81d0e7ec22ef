package wsframe

import "strconv"

// Opcode is the 4-bit frame opcode (RFC 6455 section 5.2).
type Opcode byte

// Opcodes defined by RFC 6455 section 5.2 (registry in section 11.8).
const (
	OpContinuation Opcode = 0x0 // continuation of a fragmented message (section 5.4)
	OpText         Opcode = 0x1 // UTF-8 text data (section 5.6)
	OpBinary       Opcode = 0x2 // binary data (section 5.6)
	OpClose        Opcode = 0x8 // close (section 5.5.1)
	OpPing         Opcode = 0x9 // ping (section 5.5.2)
	OpPong         Opcode = 0xA // pong (section 5.5.3)
)

// String returns "continuation", "text", "binary", "close", "ping", "pong",
// or "reserved(N)" for any other value.
func (o Opcode) String() string {
	switch o {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return "reserved(" + strconv.Itoa(int(o)) + ")"
}

// IsControl reports whether o is a control opcode: the most significant
// opcode bit is set (RFC 6455 section 5.5).
func (o Opcode) IsControl() bool { return o&0x8 != 0 }

// IsData reports whether o is a data opcode defined by RFC 6455:
// continuation, text or binary (section 5.6).
func (o Opcode) IsData() bool { return o <= OpBinary }

// IsReserved reports whether o is an opcode reserved for future use: 0x3-0x7
// (non-control) and 0xB-0xF (control), RFC 6455 section 5.2. Values that do
// not fit in 4 bits are reported as reserved too.
func (o Opcode) IsReserved() bool {
	switch o {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
		return false
	}
	return true
}
