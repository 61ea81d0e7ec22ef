package wsframe

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

var benchHeaders = []struct {
	name string
	wire []byte
}{
	{
		name: "7bit",
		wire: []byte{0x81, 0x05},
	},
	{
		name: "16bit-masked",
		wire: []byte{0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4},
	},
	{
		name: "64bit-masked",
		wire: []byte{0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4},
	},
}

var sinkHeader Header

func BenchmarkDecodeHeader(b *testing.B) {
	for _, bh := range benchHeaders {
		b.Run(bh.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bh.wire)))
			for b.Loop() {
				h, _, err := DecodeHeader(bh.wire)
				if err != nil {
					b.Fatal(err)
				}
				sinkHeader = h
			}
		})
	}
}

func BenchmarkEncodeHeader(b *testing.B) {
	for _, bh := range benchHeaders {
		h, _, _ := DecodeHeader(bh.wire)
		b.Run(bh.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bh.wire)))
			var buf [MaxHeaderSize]byte
			for b.Loop() {
				h.Encode(buf[:])
			}
		})
	}
}

func BenchmarkReadHeader(b *testing.B) {
	for _, bh := range benchHeaders {
		b.Run(bh.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bh.wire)))
			var buf [MaxHeaderSize]byte
			r := bytes.NewReader(bh.wire)
			for b.Loop() {
				r.Reset(bh.wire)
				h, err := ReadHeader(r, &buf)
				if err != nil {
					b.Fatal(err)
				}
				sinkHeader = h
			}
		})
	}
}

var benchMaskSizes = []int{64, 1 << 10, 32 << 10}

// BenchmarkMask compares Mask with the byte-at-a-time loop of RFC 6455
// section 5.3 and with gobwas/ws Cipher (which has SSE2/AVX2 assembly).
func BenchmarkMask(b *testing.B) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	impls := []struct {
		name string
		f    func([]byte)
	}{
		{
			name: "wsframe",
			f:    func(p []byte) { Mask(key, 0, p) },
		},
		{
			name: "bytewise",
			f:    func(p []byte) { maskBytes(key, 0, p) },
		},
		{
			name: "gobwas",
			f:    func(p []byte) { ws.Cipher(p, key, 0) },
		},
	}
	for _, size := range benchMaskSizes {
		p := make([]byte, size)
		for _, impl := range impls {
			b.Run(strconv.Itoa(size)+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					impl.f(p)
				}
			})
		}
	}
}

// BenchmarkRemask compares the one-pass Remask with a byte loop and with
// gobwas/ws Cipher applied twice (unmask, then mask), what a relay without
// Remask does.
func BenchmarkRemask(b *testing.B) {
	from := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	to := [4]byte{1, 2, 3, 4}
	impls := []struct {
		name string
		f    func([]byte)
	}{
		{
			name: "wsframe",
			f:    func(p []byte) { Remask(from, to, 0, p) },
		},
		{
			name: "bytewise",
			f: func(p []byte) {
				for i := range p {
					p[i] ^= from[i&3] ^ to[i&3]
				}
			},
		},
		{
			name: "gobwas-twice",
			f: func(p []byte) {
				ws.Cipher(p, from, 0)
				ws.Cipher(p, to, 0)
			},
		},
	}
	for _, size := range benchMaskSizes {
		p := make([]byte, size)
		for _, impl := range impls {
			b.Run(strconv.Itoa(size)+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					impl.f(p)
				}
			})
		}
	}
}

var sinkBool bool

// BenchmarkUTF8 compares UTF8Validator (one Write and Finish per message)
// with utf8.Valid on 32 KiB of ASCII and of mixed text (mostly ASCII with
// 2-, 3- and 4-byte runes spread through it).
func BenchmarkUTF8(b *testing.B) {
	const size = 32 << 10
	ascii := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog. ", size/45+1)[:size])
	mixed := []byte(strings.Repeat("Grüße, κόσμε! Price: 5€ — ok 😀 plain ascii words here. ", size/60+1))
	mixed = mixed[:size]
	for !utf8.Valid(mixed) {
		mixed = mixed[:len(mixed)-1]
	}
	for _, in := range []struct {
		name string
		p    []byte
	}{
		{
			name: "ascii",
			p:    ascii,
		},
		{
			name: "mixed",
			p:    mixed,
		},
	} {
		b.Run(in.name+"/validator", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in.p)))
			var v UTF8Validator
			for b.Loop() {
				if v.Write(in.p) != nil || v.Finish() != nil {
					b.Fatal("invalid")
				}
			}
		})
		b.Run(in.name+"/validator-4KiB-chunks", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in.p)))
			var v UTF8Validator
			for b.Loop() {
				for i := 0; i < len(in.p); i += 4 << 10 {
					if v.Write(in.p[i:min(i+4<<10, len(in.p))]) != nil {
						b.Fatal("invalid")
					}
				}
				if v.Finish() != nil {
					b.Fatal("invalid")
				}
			}
		})
		b.Run(in.name+"/utf8.Valid", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in.p)))
			for b.Loop() {
				sinkBool = utf8.Valid(in.p)
			}
		})
	}
}
