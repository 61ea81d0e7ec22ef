package wsframe

import "errors"

// ProtocolError is a violation of RFC 6455 found while decoding or checking
// frames. It is a comparable string type: compare with == or errors.Is.
// Each value maps to the close code an endpoint sends in reply (RFC 6455
// section 7.4.1) through [ProtocolError.CloseCode].
type ProtocolError string

// Error implements error.
func (e ProtocolError) Error() string { return string(e) }

// CloseCode returns the close code to fail the connection with (RFC 6455
// section 7.1.7): [CloseInvalidPayload] (1007) for [ErrInvalidUTF8] (section
// 8.1), [CloseProtocolError] (1002) for every other value.
func (e ProtocolError) CloseCode() CloseCode {
	if e == ErrInvalidUTF8 {
		return CloseInvalidPayload
	}
	return CloseProtocolError
}

// Errors returned by this package.
const (
	// ErrShortHeader is not a protocol error: the buffer holds less than a
	// whole header, the caller must read more bytes.
	ErrShortHeader ProtocolError = "wsframe: short header"

	// ErrReservedBits: an RSV bit is set that no negotiated extension
	// defines (section 5.2).
	ErrReservedBits ProtocolError = "wsframe: reserved bits set"
	// ErrReservedOpcode: the opcode is reserved (section 5.2).
	ErrReservedOpcode ProtocolError = "wsframe: reserved opcode"
	// ErrControlTooLong: a control frame payload is over 125 bytes
	// (section 5.5).
	ErrControlTooLong ProtocolError = "wsframe: control frame payload over 125 bytes"
	// ErrControlFragmented: a control frame has FIN clear (section 5.5).
	ErrControlFragmented ProtocolError = "wsframe: fragmented control frame"
	// ErrLengthMSB: the 64-bit payload length has its most significant bit
	// set (section 5.2).
	ErrLengthMSB ProtocolError = "wsframe: payload length with most significant bit set"
	// ErrNonMinimalLength: the payload length is not encoded in the minimal
	// number of bytes (section 5.2). [DecodeHeader] returns it together with
	// a fully decoded header, so a caller may choose to tolerate it.
	ErrNonMinimalLength ProtocolError = "wsframe: payload length not in minimal form"
	// ErrUnmasked: a client-to-server frame is not masked (section 5.1).
	ErrUnmasked ProtocolError = "wsframe: unmasked client frame"
	// ErrMasked: a server-to-client frame is masked (section 5.1).
	ErrMasked ProtocolError = "wsframe: masked server frame"
	// ErrUnexpectedContinuation: a continuation frame with no fragmented
	// message in progress (section 5.4).
	ErrUnexpectedContinuation ProtocolError = "wsframe: continuation frame without a message in progress"
	// ErrExpectedContinuation: a text or binary frame while a fragmented
	// message is in progress (section 5.4).
	ErrExpectedContinuation ProtocolError = "wsframe: new data frame inside a fragmented message"
	// ErrInvalidUTF8: a text message or a close reason is not valid UTF-8
	// (sections 5.5.1, 5.6 and 8.1). Maps to close code 1007.
	ErrInvalidUTF8 ProtocolError = "wsframe: invalid UTF-8"
	// ErrInvalidCloseCode: a close frame carries a code that must not be
	// sent on the wire (section 7.4).
	ErrInvalidCloseCode ProtocolError = "wsframe: invalid close code"
	// ErrClosePayloadLength: a close frame payload of length 1; a body
	// must start with a 2-byte code (section 5.5.1).
	ErrClosePayloadLength ProtocolError = "wsframe: close payload of length 1"
)

// closeCoder is an error that knows the close code it maps to.
type closeCoder interface {
	error
	CloseCode() CloseCode
}

// CloseCodeOf returns the close code err maps to, found through a
// CloseCode() CloseCode method on err or on any error it wraps (errors.AsType).
// It returns 0 when err is nil or has no such mapping.
func CloseCodeOf(err error) CloseCode {
	if c, ok := errors.AsType[closeCoder](err); ok {
		return c.CloseCode()
	}
	return 0
}
