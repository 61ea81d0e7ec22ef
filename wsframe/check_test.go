package wsframe

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestCheck(t *testing.T) {
	masked := func(h Header) Header {
		h.Masked = true
		return h
	}
	tests := []struct {
		name    string
		h       Header
		role    Role
		rsv     byte
		wantErr error
	}{
		{
			name: "masked text to server",
			h:    masked(Header{Fin: true, Opcode: OpText, Length: 1 << 40}),
			role: RoleServer,
		},
		{
			name: "unmasked binary to client",
			h:    Header{Opcode: OpBinary, Length: 10},
			role: RoleClient,
		},
		{
			name:    "unmasked text to server",
			h:       Header{Fin: true, Opcode: OpText},
			role:    RoleServer,
			wantErr: ErrUnmasked,
		},
		{
			name:    "masked text to client",
			h:       masked(Header{Fin: true, Opcode: OpText}),
			role:    RoleClient,
			wantErr: ErrMasked,
		},
		{
			name:    "RSV1 not negotiated",
			h:       Header{Fin: true, Rsv: Rsv1, Opcode: OpText},
			role:    RoleClient,
			wantErr: ErrReservedBits,
		},
		{
			name: "RSV1 negotiated",
			h:    Header{Fin: true, Rsv: Rsv1, Opcode: OpText},
			role: RoleClient,
			rsv:  Rsv1,
		},
		{
			name:    "RSV2 with only RSV1 negotiated",
			h:       Header{Fin: true, Rsv: Rsv2, Opcode: OpText},
			role:    RoleClient,
			rsv:     Rsv1,
			wantErr: ErrReservedBits,
		},
		{
			name:    "RSV3",
			h:       masked(Header{Fin: true, Rsv: Rsv3, Opcode: OpBinary}),
			role:    RoleServer,
			rsv:     Rsv1 | Rsv2,
			wantErr: ErrReservedBits,
		},
		{
			name:    "reserved data opcode 3",
			h:       Header{Fin: true, Opcode: 3},
			role:    RoleClient,
			wantErr: ErrReservedOpcode,
		},
		{
			name:    "reserved control opcode 0xB",
			h:       Header{Fin: true, Opcode: 0xB},
			role:    RoleClient,
			wantErr: ErrReservedOpcode,
		},
		{
			name:    "reserved opcode 0xF",
			h:       masked(Header{Fin: true, Opcode: 0xF}),
			role:    RoleServer,
			wantErr: ErrReservedOpcode,
		},
		{
			name:    "negative length",
			h:       Header{Fin: true, Opcode: OpBinary, Length: -1},
			role:    RoleClient,
			wantErr: ErrLengthMSB,
		},
		{
			name: "ping of 125 bytes",
			h:    Header{Fin: true, Opcode: OpPing, Length: 125},
			role: RoleClient,
		},
		{
			name:    "ping of 126 bytes",
			h:       Header{Fin: true, Opcode: OpPing, Length: 126},
			role:    RoleClient,
			wantErr: ErrControlTooLong,
		},
		{
			name:    "close of 65536 bytes",
			h:       masked(Header{Fin: true, Opcode: OpClose, Length: 65536}),
			role:    RoleServer,
			wantErr: ErrControlTooLong,
		},
		{
			name:    "fragmented pong",
			h:       Header{Opcode: OpPong},
			role:    RoleClient,
			wantErr: ErrControlFragmented,
		},
		{
			name: "fragmented continuation is data",
			h:    Header{Opcode: OpContinuation, Length: 200},
			role: RoleClient,
		},
		{
			name:    "RSV bits reported before opcode",
			h:       Header{Rsv: Rsv2, Opcode: 0x4},
			role:    RoleClient,
			wantErr: ErrReservedBits,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.h.Check(tc.role, tc.rsv); err != tc.wantErr {
				t.Fatalf(
					"Check(%+v, %v, %#x) = %v, want %v",
					tc.h, tc.role, tc.rsv, err, tc.wantErr)
			}
		})
	}
}

func TestMessageState(t *testing.T) {
	text := Header{Opcode: OpText}
	textFin := Header{Fin: true, Opcode: OpText}
	bin := Header{Opcode: OpBinary}
	cont := Header{Opcode: OpContinuation}
	contFin := Header{Fin: true, Opcode: OpContinuation}
	ping := Header{Fin: true, Opcode: OpPing}
	closeH := Header{Fin: true, Opcode: OpClose}

	type step struct {
		h   Header
		err error
		in  bool
		op  Opcode
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "single frames",
			steps: []step{
				{h: textFin, op: OpText},
				{h: Header{Fin: true, Opcode: OpBinary}, op: OpBinary},
			},
		},
		{
			name: "fragments with control frames between",
			steps: []step{
				{h: ping},
				{h: bin, in: true, op: OpBinary},
				{h: ping, in: true, op: OpBinary},
				{h: cont, in: true, op: OpBinary},
				{h: Header{Fin: true, Opcode: OpPong}, in: true, op: OpBinary},
				{h: closeH, in: true, op: OpBinary},
				{h: contFin, op: OpBinary},
				{h: textFin, op: OpText},
			},
		},
		{
			name: "continuation without start",
			steps: []step{
				{h: cont, err: ErrUnexpectedContinuation},
				{h: contFin, err: ErrUnexpectedContinuation},
			},
		},
		{
			name: "continuation after a finished message",
			steps: []step{
				{h: text, in: true, op: OpText},
				{h: contFin, op: OpText},
				{h: contFin, err: ErrUnexpectedContinuation, op: OpText},
			},
		},
		{
			name: "new message inside a fragmented one",
			steps: []step{
				{h: text, in: true, op: OpText},
				{h: bin, err: ErrExpectedContinuation, in: true, op: OpText},
				{h: textFin, err: ErrExpectedContinuation, in: true, op: OpText},
				{h: contFin, op: OpText},
			},
		},
		{
			name: "reserved opcode",
			steps: []step{
				{h: text, in: true, op: OpText},
				{h: Header{Fin: true, Opcode: 0xC}, err: ErrReservedOpcode, in: true, op: OpText},
				{h: Header{Opcode: 0x5}, err: ErrReservedOpcode, in: true, op: OpText},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s MessageState
			for i, st := range tc.steps {
				err := s.Next(st.h)
				if err != st.err || s.InMessage() != st.in || s.Opcode() != st.op {
					t.Fatalf(
						"step %d: Next(%+v) = %v, InMessage %v, Opcode %v; want %v, %v, %v",
						i, st.h, err, s.InMessage(), s.Opcode(), st.err, st.in, st.op)
				}
			}
			s.Reset()
			if s.InMessage() || s.Opcode() != OpContinuation {
				t.Fatal("Reset did not clear the state")
			}
		})
	}
}

func TestProtocolErrorCloseCode(t *testing.T) {
	all := []ProtocolError{
		ErrShortHeader, ErrReservedBits, ErrReservedOpcode, ErrControlTooLong,
		ErrControlFragmented, ErrLengthMSB, ErrNonMinimalLength, ErrUnmasked,
		ErrMasked, ErrUnexpectedContinuation, ErrExpectedContinuation,
		ErrInvalidUTF8, ErrInvalidCloseCode, ErrClosePayloadLength,
	}
	seen := map[string]bool{}
	for _, e := range all {
		want := CloseProtocolError
		if e == ErrInvalidUTF8 {
			want = CloseInvalidPayload
		}
		if got := e.CloseCode(); got != want {
			t.Errorf(
				"%v.CloseCode() = %d, want %d",
				e, got, want)
		}
		if got := CloseCodeOf(e); got != want {
			t.Errorf(
				"CloseCodeOf(%v) = %d, want %d",
				e, got, want)
		}
		wrapped := fmt.Errorf("reading frame: %w", e)
		if got := CloseCodeOf(wrapped); got != want {
			t.Errorf(
				"CloseCodeOf(wrapped %v) = %d, want %d",
				e, got, want)
		}
		if !errors.Is(wrapped, e) {
			t.Errorf(
				"errors.Is(wrapped, %v) = false",
				e)
		}
		msg := e.Error()
		if len(msg) < len("wsframe: ") || msg[:len("wsframe: ")] != "wsframe: " || seen[msg] {
			t.Errorf(
				"bad or duplicate message %q",
				msg)
		}
		seen[msg] = true
	}
	for _, err := range []error{nil, io.EOF, errors.New("x"), fmt.Errorf("y: %w", io.ErrUnexpectedEOF)} {
		if got := CloseCodeOf(err); got != 0 {
			t.Errorf(
				"CloseCodeOf(%v) = %d, want 0",
				err, got)
		}
	}
	if got := CloseCodeOf(errors.Join(io.EOF, ErrInvalidUTF8)); got != CloseInvalidPayload {
		t.Errorf(
			"CloseCodeOf(joined) = %d, want 1007",
			got)
	}
}
