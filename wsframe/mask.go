package wsframe

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// Mask applies the masking algorithm of RFC 6455 section 5.3 to b in place:
// b[i] ^= key[(pos+i)%4]. The same call masks and unmasks. pos is the
// offset of b[0] within the frame payload, so a payload can be processed in
// chunks: Mask returns pos+len(b), to pass as pos for the next chunk. pos
// must be non-negative; only pos%4 matters.
//
// Mask works on 8-byte words: aligned and 64 bytes per loop iteration from
// 128 bytes on, 32 bytes per iteration below. It does not allocate.
func Mask(key [4]byte, pos int, b []byte) int {
	maskKey(key, pos, b)
	return pos + len(b)
}

// Remask converts b, masked with from, to masked with to (RFC 6455 section
// 5.3) in one pass: b[i] ^= from[(pos+i)%4] ^ to[(pos+i)%4]. pos and the
// result follow [Mask]. A relay uses it to move a client payload to a
// backend connection without unmasking and masking again.
func Remask(from, to [4]byte, pos int, b []byte) int {
	key := [4]byte{from[0] ^ to[0], from[1] ^ to[1], from[2] ^ to[2], from[3] ^ to[3]}
	maskKey(key, pos, b)
	return pos + len(b)
}

// maskKey XORs b with key starting at key[pos%4].
//
// Measured on amd64 (BenchmarkMask, 2 shared cores, so noisy): a byte loop
// does about 1 GB/s; 8-byte words through encoding/binary, one per
// iteration, 5 GB/s at 32 KiB, four per iteration 25 GB/s; unsafe word
// pointers without bounds checks, eight per iteration, about 30 GB/s, but
// that path first aligns b, which costs more than it saves below about 128
// bytes. So: short slices take encoding/binary words (unaligned loads are
// only merged into one instruction on platforms that allow them), long
// ones the aligned unsafe loop. The unsafe key word is built in native
// byte order, so both paths work on either endianness. SIMD assembly
// (gobwas/ws has SSE2/AVX2) goes further, but is not pure Go.
func maskKey(key [4]byte, pos int, b []byte) {
	k32 := bits.RotateLeft32(binary.LittleEndian.Uint32(key[:]), -8*(pos&3))
	if k32 == 0 {
		return
	}
	k := uint64(k32)<<32 | uint64(k32) // little-endian: byte i applies to b[i]
	if len(b) >= 128 {
		p := unsafe.Pointer(unsafe.SliceData(b))
		// Head: bytes up to the first 8-byte boundary.
		head := int(-uintptr(p) & 7)
		for i := range head {
			b[i] ^= byte(k >> (8 * i))
		}
		k = bits.RotateLeft64(k, -8*head)
		var kb [8]byte
		binary.LittleEndian.PutUint64(kb[:], k)
		kn := binary.NativeEndian.Uint64(kb[:])
		// Body: aligned words, 64 bytes per iteration.
		p = unsafe.Add(p, head)
		end := (len(b) - head) &^ 63
		for i := 0; i < end; i += 64 {
			q := unsafe.Add(p, i)
			*(*uint64)(q) ^= kn
			*(*uint64)(unsafe.Add(q, 8)) ^= kn
			*(*uint64)(unsafe.Add(q, 16)) ^= kn
			*(*uint64)(unsafe.Add(q, 24)) ^= kn
			*(*uint64)(unsafe.Add(q, 32)) ^= kn
			*(*uint64)(unsafe.Add(q, 40)) ^= kn
			*(*uint64)(unsafe.Add(q, 48)) ^= kn
			*(*uint64)(unsafe.Add(q, 56)) ^= kn
		}
		b = b[head+end:] // end is a multiple of 4: k keeps its phase
	}
	for len(b) >= 32 {
		v := b[:32:32]
		binary.LittleEndian.PutUint64(v[0:8], binary.LittleEndian.Uint64(v[0:8])^k)
		binary.LittleEndian.PutUint64(v[8:16], binary.LittleEndian.Uint64(v[8:16])^k)
		binary.LittleEndian.PutUint64(v[16:24], binary.LittleEndian.Uint64(v[16:24])^k)
		binary.LittleEndian.PutUint64(v[24:32], binary.LittleEndian.Uint64(v[24:32])^k)
		b = b[32:]
	}
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= byte(k >> (8 * i))
	}
}
