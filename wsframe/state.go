package wsframe

// MessageState tracks fragmentation across the frames of one direction of
// a connection (RFC 6455 section 5.4). The zero value is ready: no message
// in progress.
type MessageState struct {
	op Opcode // first frame opcode of the current or last message
	in bool   // a fragmented message is in progress
}

// Next checks the frame header h against the state and advances it (RFC
// 6455 section 5.4). Control frames are always legal, also between the
// fragments of a message, and leave the state unchanged. A continuation
// frame with no message in progress returns [ErrUnexpectedContinuation]; a
// text or binary frame while a fragmented message is in progress returns
// [ErrExpectedContinuation]; a reserved opcode returns [ErrReservedOpcode].
// On error the state is unchanged.
func (s *MessageState) Next(h Header) error {
	switch h.Opcode {
	case OpContinuation:
		if !s.in {
			return ErrUnexpectedContinuation
		}
		s.in = !h.Fin
		return nil
	case OpText, OpBinary:
		if s.in {
			return ErrExpectedContinuation
		}
		s.op = h.Opcode
		s.in = !h.Fin
		return nil
	case OpClose, OpPing, OpPong:
		return nil
	}
	return ErrReservedOpcode
}

// InMessage reports whether a fragmented message is in progress: the last
// data frame had Fin clear (RFC 6455 section 5.4).
func (s *MessageState) InMessage() bool { return s.in }

// Opcode returns the opcode ([OpText] or [OpBinary]) of the first frame of
// the current message, or of the last one when none is in progress. It is
// [OpContinuation] (0) before the first message.
func (s *MessageState) Opcode() Opcode { return s.op }

// Reset clears the state.
func (s *MessageState) Reset() { *s = MessageState{} }
