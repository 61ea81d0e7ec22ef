package wsframe

// Role says which side of a connection reads a frame, for the masking rule
// of RFC 6455 section 5.1.
type Role uint8

const (
	// RoleServer reads frames sent by a client: they must be masked.
	RoleServer Role = iota
	// RoleClient reads frames sent by a server: they must not be masked.
	RoleClient
)

// String returns "server" or "client".
func (r Role) String() string {
	if r == RoleClient {
		return "client"
	}
	return "server"
}

// Check validates h on its own, as RFC 6455 sections 5.1, 5.2 and 5.5
// require of a received frame, and returns the first violation found:
//
//   - an RSV bit not in allowedRsv (a mask of [Rsv1], [Rsv2], [Rsv3] the
//     negotiated extensions define, section 5.2): [ErrReservedBits];
//   - a reserved opcode (section 5.2): [ErrReservedOpcode];
//   - a negative Length (section 5.2): [ErrLengthMSB];
//   - a control frame with Length over 125 (section 5.5): [ErrControlTooLong];
//   - a control frame with Fin clear (section 5.5): [ErrControlFragmented];
//   - an unmasked frame read by [RoleServer] (section 5.1): [ErrUnmasked];
//   - a masked frame read by [RoleClient] (section 5.1): [ErrMasked].
//
// Fragmentation across frames is checked by [MessageState].
func (h Header) Check(role Role, allowedRsv byte) error {
	if h.Rsv&^allowedRsv != 0 {
		return ErrReservedBits
	}
	if h.Opcode.IsReserved() {
		return ErrReservedOpcode
	}
	if h.Length < 0 {
		return ErrLengthMSB
	}
	if h.Opcode.IsControl() {
		if h.Length > MaxControlPayload {
			return ErrControlTooLong
		}
		if !h.Fin {
			return ErrControlFragmented
		}
	}
	if role == RoleServer {
		if !h.Masked {
			return ErrUnmasked
		}
	} else if h.Masked {
		return ErrMasked
	}
	return nil
}
