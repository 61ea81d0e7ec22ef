package wsframe

import "io"

// The relay is written against exactly these signatures; this file stops
// the build if one changes.
var (
	_ func(Opcode) string                                   = Opcode.String
	_ func(Opcode) bool                                     = Opcode.IsControl
	_ func(Opcode) bool                                     = Opcode.IsData
	_ func(Opcode) bool                                     = Opcode.IsReserved
	_ func(Header) int                                      = Header.Size
	_ func(Header, []byte) int                              = Header.Encode
	_ func(Header, Role, byte) error                        = Header.Check
	_ func(byte, byte) int                                  = HeaderSize
	_ func([]byte) (Header, int, error)                     = DecodeHeader
	_ func(io.Reader, *[MaxHeaderSize]byte) (Header, error) = ReadHeader
	_ func(ProtocolError) string                            = ProtocolError.Error
	_ func(ProtocolError) CloseCode                         = ProtocolError.CloseCode
	_ func(error) CloseCode                                 = CloseCodeOf
	_ func(*MessageState, Header) error                     = (*MessageState).Next
	_ func(*MessageState) bool                              = (*MessageState).InMessage
	_ func(*MessageState) Opcode                            = (*MessageState).Opcode
	_ func(*MessageState)                                   = (*MessageState).Reset
	_ func([4]byte, int, []byte) int                        = Mask
	_ func([4]byte, [4]byte, int, []byte) int               = Remask
	_ func(CloseCode) string                                = CloseCode.String
	_ func(CloseCode) bool                                  = CloseCode.ValidOnWire
	_ func([]byte, CloseCode, string) []byte                = AppendClosePayload
	_ func([]byte) (CloseCode, []byte, error)               = ParseClosePayload
	_ func(*UTF8Validator, []byte) error                    = (*UTF8Validator).Write
	_ func(*UTF8Validator) error                            = (*UTF8Validator).Finish
	_ func(*UTF8Validator)                                  = (*UTF8Validator).Reset
	_ func([]byte, Header, []byte) []byte                   = AppendFrame

	_ = [...]Opcode{OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong}
	_ = [...]byte{Rsv1, Rsv2, Rsv3}
	_ = [...]int{MaxHeaderSize, MaxControlPayload, MaxCloseReason}
	_ = [...]Role{RoleServer, RoleClient}
	_ = [...]CloseCode{
		CloseNormal, CloseGoingAway, CloseProtocolError, CloseUnsupportedData,
		CloseNoStatus, CloseAbnormal, CloseInvalidPayload, ClosePolicyViolation,
		CloseTooBig, CloseMandatoryExtension, CloseInternalError, CloseServiceRestart,
		CloseTryAgainLater, CloseBadGateway, CloseTLSHandshake,
	}
	_ = [...]ProtocolError{
		ErrShortHeader, ErrReservedBits, ErrReservedOpcode, ErrControlTooLong,
		ErrControlFragmented, ErrLengthMSB, ErrNonMinimalLength, ErrUnmasked,
		ErrMasked, ErrUnexpectedContinuation, ErrExpectedContinuation,
		ErrInvalidUTF8, ErrInvalidCloseCode, ErrClosePayloadLength,
	}
	_ = Header{Fin: true, Rsv: Rsv1, Opcode: OpText, Masked: true, Length: int64(0), Mask: [4]byte{}}
)

// Compile-time checks of constant values that the RFC fixes.
var (
	_ = [1]struct{}{}[MaxHeaderSize-14]
	_ = [1]struct{}{}[MaxControlPayload-125]
	_ = [1]struct{}{}[MaxCloseReason-123]
	_ = [1]struct{}{}[OpPong-0xA]
	_ = [1]struct{}{}[CloseTLSHandshake-1015]
)
