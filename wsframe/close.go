package wsframe

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"
)

// CloseCode is a close status code (RFC 6455 section 7.4).
type CloseCode uint16

// Close codes defined by RFC 6455 section 7.4.1 and the IANA "WebSocket
// Close Code Number Registry" (section 11.7).
const (
	CloseNormal             CloseCode = 1000 // normal closure
	CloseGoingAway          CloseCode = 1001 // endpoint going away
	CloseProtocolError      CloseCode = 1002 // protocol error
	CloseUnsupportedData    CloseCode = 1003 // data type not accepted
	CloseNoStatus           CloseCode = 1005 // no code received; never sent on the wire
	CloseAbnormal           CloseCode = 1006 // closed without a close frame; never sent on the wire
	CloseInvalidPayload     CloseCode = 1007 // data inconsistent with its type, e.g. invalid UTF-8
	ClosePolicyViolation    CloseCode = 1008 // policy violation
	CloseTooBig             CloseCode = 1009 // message too big
	CloseMandatoryExtension CloseCode = 1010 // client expected an extension the server did not negotiate
	CloseInternalError      CloseCode = 1011 // unexpected condition on the server
	CloseServiceRestart     CloseCode = 1012 // service restart (IANA registry)
	CloseTryAgainLater      CloseCode = 1013 // try again later (IANA registry)
	CloseBadGateway         CloseCode = 1014 // bad gateway (IANA registry)
	CloseTLSHandshake       CloseCode = 1015 // TLS handshake failure; never sent on the wire
)

// String returns the registered name of c, such as "normal closure", or
// "close code N" for an unnamed code.
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal closure"
	case CloseGoingAway:
		return "going away"
	case CloseProtocolError:
		return "protocol error"
	case CloseUnsupportedData:
		return "unsupported data"
	case CloseNoStatus:
		return "no status"
	case CloseAbnormal:
		return "abnormal closure"
	case CloseInvalidPayload:
		return "invalid payload data"
	case ClosePolicyViolation:
		return "policy violation"
	case CloseTooBig:
		return "message too big"
	case CloseMandatoryExtension:
		return "mandatory extension"
	case CloseInternalError:
		return "internal error"
	case CloseServiceRestart:
		return "service restart"
	case CloseTryAgainLater:
		return "try again later"
	case CloseBadGateway:
		return "bad gateway"
	case CloseTLSHandshake:
		return "TLS handshake"
	}
	return "close code " + strconv.Itoa(int(c))
}

// ValidOnWire reports whether c may appear in a close frame (RFC 6455
// sections 7.4.1 and 7.4.2): 1000-1003 and 1007-1014 (defined or registered),
// 3000-3999 (registered with IANA) and 4000-4999 (private use). 1004 is
// reserved, 1005, 1006 and 1015 must never be sent, and every other code
// below 3000 is reserved for the protocol.
func (c CloseCode) ValidOnWire() bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// AppendClosePayload appends a close frame body to dst (RFC 6455 section
// 5.5.1): code as two big-endian bytes, then reason. The reason is cut to at
// most [MaxCloseReason] (123) bytes on a rune boundary, and each byte of
// invalid UTF-8 in it is replaced by U+FFFD, so the result is always a valid
// body. Code 0 or [CloseNoStatus] appends nothing (an empty body means "no
// status", section 7.1.5). Other codes are written as given: check
// [CloseCode.ValidOnWire] first, 1006 and 1015 must not be sent.
//
// It allocates only if dst lacks capacity.
func AppendClosePayload(dst []byte, code CloseCode, reason string) []byte {
	if code == 0 || code == CloseNoStatus {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	if len(reason) <= MaxCloseReason && utf8.ValidString(reason) {
		return append(dst, reason...)
	}
	n := 0
	for i := 0; i < len(reason); {
		r, size := utf8.DecodeRuneInString(reason[i:])
		if r == utf8.RuneError && size == 1 {
			if n+3 > MaxCloseReason {
				break
			}
			dst = utf8.AppendRune(dst, utf8.RuneError)
			n += 3
		} else {
			if n+size > MaxCloseReason {
				break
			}
			dst = append(dst, reason[i:i+size]...)
			n += size
		}
		i += size
	}
	return dst
}

// ParseClosePayload parses a close frame body (RFC 6455 section 5.5.1).
//
//   - An empty body returns [CloseNoStatus] and no error (section 7.1.5).
//   - A body of length 1 returns [ErrClosePayloadLength].
//   - A body over 125 bytes returns [ErrControlTooLong] (section 5.5).
//   - A code not [CloseCode.ValidOnWire] returns the code and
//     [ErrInvalidCloseCode] (section 7.4).
//   - A reason that is not valid UTF-8 returns the code and [ErrInvalidUTF8]
//     (section 5.5.1).
//
// reason aliases p; ParseClosePayload does not allocate.
func ParseClosePayload(p []byte) (code CloseCode, reason []byte, err error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, nil, nil
	case len(p) == 1:
		return 0, nil, ErrClosePayloadLength
	case len(p) > MaxControlPayload:
		return 0, nil, ErrControlTooLong
	}
	code = CloseCode(binary.BigEndian.Uint16(p))
	if !code.ValidOnWire() {
		return code, nil, ErrInvalidCloseCode
	}
	reason = p[2:]
	if !utf8.Valid(reason) {
		return code, nil, ErrInvalidUTF8
	}
	return code, reason, nil
}
