package wsframe

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidOnWire(t *testing.T) {
	for c := 0; c < 1<<16; c++ {
		want := (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)
		if got := CloseCode(c).ValidOnWire(); got != want {
			t.Fatalf(
				"CloseCode(%d).ValidOnWire() = %v",
				c, got)
		}
	}
}

func TestCloseCodeString(t *testing.T) {
	tests := []struct {
		code CloseCode
		want string
	}{
		{
			code: CloseNormal,
			want: "normal closure",
		},
		{
			code: CloseNoStatus,
			want: "no status",
		},
		{
			code: CloseBadGateway,
			want: "bad gateway",
		},
		{
			code: 4000,
			want: "close code 4000",
		},
	}
	for _, tc := range tests {
		if got := tc.code.String(); got != tc.want {
			t.Errorf(
				"CloseCode(%d).String() = %q, want %q",
				uint16(tc.code), got, tc.want)
		}
	}
	for c := CloseNormal; c <= CloseTLSHandshake; c++ {
		if c != 1004 && strings.HasPrefix(c.String(), "close code") {
			t.Errorf(
				"CloseCode(%d) has no name",
				uint16(c))
		}
	}
}

func TestAppendClosePayload(t *testing.T) {
	long := strings.Repeat("a", 200)
	euro := strings.Repeat("€", 50) // 3 bytes each
	tests := []struct {
		name   string
		code   CloseCode
		reason string
		want   []byte
	}{
		{
			name: "no code",
			code: 0,
			want: []byte{},
		},
		{
			name:   "no status drops reason",
			code:   CloseNoStatus,
			reason: "x",
			want:   []byte{},
		},
		{
			name: "code only",
			code: CloseNormal,
			want: []byte{0x03, 0xE8},
		},
		{
			name:   "code and reason",
			code:   CloseBadGateway,
			reason: "backend closed",
			want:   append([]byte{0x03, 0xF6}, "backend closed"...),
		},
		{
			name:   "private code",
			code:   4999,
			reason: "é",
			want:   []byte{0x13, 0x87, 0xC3, 0xA9},
		},
		{
			name:   "ascii truncated to 123",
			code:   CloseGoingAway,
			reason: long,
			want:   append([]byte{0x03, 0xE9}, long[:123]...),
		},
		{
			name:   "exactly 123",
			code:   CloseGoingAway,
			reason: long[:123],
			want:   append([]byte{0x03, 0xE9}, long[:123]...),
		},
		{
			name:   "truncated on a rune boundary",
			code:   CloseGoingAway,
			reason: euro,
			want:   append([]byte{0x03, 0xE9}, euro[:123]...),
		},
		{
			name:   "rune straddling 123",
			code:   CloseGoingAway,
			reason: long[:122] + "€",
			want:   append([]byte{0x03, 0xE9}, long[:122]...),
		},
		{
			name:   "invalid UTF-8 replaced",
			code:   CloseInternalError,
			reason: "a\xffb\xc3",
			want:   append([]byte{0x03, 0xF3}, "a\uFFFDb\uFFFD"...),
		},
		{
			name:   "surrogate bytes replaced",
			code:   CloseInternalError,
			reason: "\xed\xa0\x80",
			want:   append([]byte{0x03, 0xF3}, "\uFFFD\uFFFD\uFFFD"...),
		},
		{
			name:   "replacement does not cross 123",
			code:   CloseInternalError,
			reason: long[:121] + "\xff",
			want:   append([]byte{0x03, 0xF3}, long[:121]...),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendClosePayload([]byte{}, tc.code, tc.reason)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf(
					"AppendClosePayload = %q\nwant                  %q",
					got, tc.want)
			}
			if len(got) > MaxControlPayload || !utf8.Valid(got[min(len(got), 2):]) {
				t.Fatalf(
					"invalid payload %q",
					got)
			}
			got = AppendClosePayload([]byte("pre"), tc.code, tc.reason)
			if string(got[:3]) != "pre" || !bytes.Equal(got[3:], tc.want) {
				t.Fatalf(
					"AppendClosePayload(pre) = %q",
					got)
			}
			if len(got) > 3 {
				code, reason, err := ParseClosePayload(got[3:])
				if err != nil || code != tc.code || !bytes.Equal(reason, tc.want[2:]) {
					t.Fatalf(
						"ParseClosePayload(AppendClosePayload) = %v, %q, %v",
						code, reason, err)
				}
			}
		})
	}
}

func TestParseClosePayload(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		code   CloseCode
		reason string
		err    error
	}{
		{
			name: "empty",
			in:   nil,
			code: CloseNoStatus,
		},
		{
			name: "one byte",
			in:   []byte{0x03},
			err:  ErrClosePayloadLength,
		},
		{
			name: "code only",
			in:   []byte{0x03, 0xE8},
			code: CloseNormal,
		},
		{
			name:   "code and reason",
			in:     []byte{0x0B, 0xB8, 'h', 'i'},
			code:   3000,
			reason: "hi",
		},
		{
			name:   "4999 and multibyte reason",
			in:     []byte{0x13, 0x87, 0xF0, 0x9F, 0x98, 0x80},
			code:   4999,
			reason: "😀",
		},
		{
			name: "1005 on the wire",
			in:   []byte{0x03, 0xED},
			code: CloseNoStatus,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "1006 on the wire",
			in:   []byte{0x03, 0xEE},
			code: CloseAbnormal,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "1004",
			in:   []byte{0x03, 0xEC},
			code: 1004,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "1015",
			in:   []byte{0x03, 0xF7},
			code: CloseTLSHandshake,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "999",
			in:   []byte{0x03, 0xE7, 'x'},
			code: 999,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "2999",
			in:   []byte{0x0B, 0xB7},
			code: 2999,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "5000",
			in:   []byte{0x13, 0x88},
			code: 5000,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "0",
			in:   []byte{0x00, 0x00},
			code: 0,
			err:  ErrInvalidCloseCode,
		},
		{
			name: "invalid UTF-8 reason",
			in:   []byte{0x03, 0xE8, 'a', 0xFF},
			code: CloseNormal,
			err:  ErrInvalidUTF8,
		},
		{
			name: "truncated rune in reason",
			in:   []byte{0x03, 0xE8, 0xCE},
			code: CloseNormal,
			err:  ErrInvalidUTF8,
		},
		{
			name:   "125 bytes",
			in:     append([]byte{0x03, 0xE8}, strings.Repeat("r", 123)...),
			code:   CloseNormal,
			reason: strings.Repeat("r", 123),
		},
		{
			name: "126 bytes",
			in:   append([]byte{0x03, 0xE8}, strings.Repeat("r", 124)...),
			err:  ErrControlTooLong,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, err := ParseClosePayload(tc.in)
			if code != tc.code || string(reason) != tc.reason || err != tc.err {
				t.Fatalf(
					"ParseClosePayload(% x) = %d, %q, %v; want %d, %q, %v",
					tc.in, code, reason, err, tc.code, tc.reason, tc.err)
			}
			if len(reason) > 0 && &reason[0] != &tc.in[2] {
				t.Fatal("reason does not alias the payload")
			}
		})
	}
}
