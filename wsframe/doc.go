// Package wsframe is an RFC 6455 frame codec: plain data and pure
// functions, no I/O policy and no goroutines.
//
// It covers:
//
//   - the base framing protocol (RFC 6455 section 5.2): [Header],
//     [Header.Encode], [DecodeHeader], [ReadHeader], [HeaderSize];
//   - header validation (sections 5.2, 5.1 and 5.5): [Header.Check];
//   - fragmentation (section 5.4): [MessageState];
//   - client-to-server masking (section 5.3): [Mask], [Remask];
//   - the Close frame body and status codes (sections 5.5.1 and 7.4):
//     [CloseCode], [AppendClosePayload], [ParseClosePayload];
//   - UTF-8 validation of text messages across chunks and fragments
//     (sections 5.6 and 8.1): [UTF8Validator].
//
// Every protocol violation is a [ProtocolError], a comparable string
// constant that maps to the close code to send (section 7.4.1) through
// [ProtocolError.CloseCode] or [CloseCodeOf].
//
// Hot paths (header encode/decode, ReadHeader with a caller buffer,
// masking, UTF-8 validation) do not allocate.
package wsframe
