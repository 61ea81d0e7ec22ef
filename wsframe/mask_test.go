package wsframe

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// maskBytes is the byte-at-a-time reference of RFC 6455 section 5.3.
func maskBytes(key [4]byte, pos int, b []byte) int {
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
	return pos + len(b)
}

// TestMaskReference compares Mask with the byte loop at every offset 0..7,
// every length 0..70 and longer ones, at every buffer alignment, and checks
// that bytes around the slice are untouched.
func TestMaskReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := [][4]byte{
		{0x37, 0xfa, 0x21, 0x3d},
		{0, 0, 0, 0},
		{0xFF, 0xFF, 0xFF, 0xFF},
		{1, 0, 0, 0},
		{0, 0, 0, 0x80},
	}
	for range 4 {
		var k [4]byte
		for i := range k {
			k[i] = byte(rng.Uint32())
		}
		keys = append(keys, k)
	}
	// Every length 0..70 (the word loops and tails), then lengths around
	// the aligned 64-byte path taken from 128 bytes on.
	var lengths []int
	for n := 0; n <= 70; n++ {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 127, 128, 129, 135, 136, 191, 192, 193, 200, 255, 256, 263, 1000, 4099)
	const guard = 8
	for _, key := range keys {
		for pos := 0; pos <= 7; pos++ {
			for _, n := range lengths {
				// Start at every alignment of the buffer too.
				for align := 0; align < 8; align++ {
					src := make([]byte, guard+align+n+guard)
					for i := range src {
						src[i] = byte(rng.Uint32())
					}
					got := bytes.Clone(src)
					want := bytes.Clone(src)
					gotNext := Mask(key, pos, got[guard+align:guard+align+n])
					wantNext := maskBytes(key, pos, want[guard+align:guard+align+n])
					if !bytes.Equal(got, want) || gotNext != wantNext || gotNext != pos+n {
						t.Fatalf(
							"Mask(%x, pos %d, len %d, align %d) = %d, % x\nwant %d, % x",
							key, pos, n, align, gotNext, got, wantNext, want)
					}
				}
			}
		}
	}
}

func TestMaskLargePos(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, pos := range []int{1 << 20, 1<<40 + 3, 1<<62 + 1} {
		got := seq(100)
		want := seq(100)
		Mask(key, pos, got)
		maskBytes(key, pos, want)
		if !bytes.Equal(got, want) {
			t.Fatalf(
				"Mask at pos %d differs",
				pos)
		}
	}
}

// TestMaskChunked masks a payload in chunks of every size, passing the
// returned position along, and compares with one call.
func TestMaskChunked(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	want := seq(300)
	Mask(key, 0, want)
	for chunk := 1; chunk <= 37; chunk++ {
		got := seq(300)
		pos := 0
		for i := 0; i < len(got); i += chunk {
			pos = Mask(key, pos, got[i:min(i+chunk, len(got))])
		}
		if pos != len(got) || !bytes.Equal(got, want) {
			t.Fatalf(
				"chunk %d: pos %d, payload differs",
				chunk, pos)
		}
	}
}

func TestRemask(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		var from, to [4]byte
		for i := range 4 {
			from[i] = byte(rng.Uint32())
			to[i] = byte(rng.Uint32())
		}
		for pos := 0; pos <= 7; pos++ {
			for _, n := range []int{0, 1, 3, 7, 8, 9, 31, 32, 33, 63, 64, 65, 70, 127, 128, 129, 300, 1025} {
				src := make([]byte, n)
				for i := range src {
					src[i] = byte(rng.Uint32())
				}
				got := bytes.Clone(src)
				want := bytes.Clone(src)
				next := Remask(from, to, pos, got)
				maskBytes(from, pos, want)
				maskBytes(to, pos, want)
				if next != pos+n || !bytes.Equal(got, want) {
					t.Fatalf(
						"Remask(%x, %x, %d, len %d) = %d, % x\nwant % x",
						from, to, pos, n, next, got, want)
				}
			}
		}
	}
	// Remask of a masked RFC example to another key, then Mask with the new
	// key gives the plain text back.
	b := []byte{0x7f, 0x9f, 0x4d, 0x51, 0x58}
	to := [4]byte{9, 8, 7, 6}
	Remask([4]byte{0x37, 0xfa, 0x21, 0x3d}, to, 0, b)
	Mask(to, 0, b)
	if string(b) != "Hello" {
		t.Fatalf(
			"Remask then Mask = %q",
			b)
	}
}
