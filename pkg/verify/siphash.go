package verify

import (
	"encoding/binary"
	"math/bits"
)

// sipHash is SipHash-c-d (Aumasson and Bernstein, https://131002.net/siphash/)
// of data under the 128-bit key k0, k1, as Linux's lib/siphash.c computes it:
// c compression rounds per 8-byte word, d finalization rounds, the message
// length in the top byte of the last word. SipHash-2-4 is the kernel's
// siphash(); SipHash-1-3 is its hsiphash() on 64-bit kernels (see hsiphash).
func sipHash(c, d int, k0, k1 uint64, data []byte) uint64 {
	// The constants and the permutation: include/linux/siphash.h,
	// SIPHASH_CONST_0..3 and SIPHASH_PERMUTATION.
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	rounds := func(n int) {
		for range n {
			v0 += v1
			v1 = bits.RotateLeft64(v1, 13)
			v1 ^= v0
			v0 = bits.RotateLeft64(v0, 32)
			v2 += v3
			v3 = bits.RotateLeft64(v3, 16)
			v3 ^= v2
			v0 += v3
			v3 = bits.RotateLeft64(v3, 21)
			v3 ^= v0
			v2 += v1
			v1 = bits.RotateLeft64(v1, 17)
			v1 ^= v2
			v2 = bits.RotateLeft64(v2, 32)
		}
	}
	b := uint64(len(data)) << 56
	for ; len(data) >= 8; data = data[8:] {
		m := binary.LittleEndian.Uint64(data)
		v3 ^= m
		rounds(c)
		v0 ^= m
	}
	for i, x := range data {
		b |= uint64(x) << (8 * i)
	}
	v3 ^= b
	rounds(c)
	v0 ^= b
	v2 ^= 0xff
	rounds(d)
	return v0 ^ v1 ^ v2 ^ v3
}

// hsiphash is the kernel's hsiphash() on a 64-bit kernel (BITS_PER_LONG == 64,
// as on x86_64 and on the x86_64 user-mode-linux of the sandbox, whose config
// has CONFIG_64BIT=y): "on 64-bit, we make HalfSipHash1-3 actually be
// SipHash1-3" (lib/siphash.c, 6.1.192 lines 229-244, HPREAMBLE/HPOSTAMBLE),
// keyed by the two unsigned longs of hsiphash_key_t, truncated to its u32
// result. Every path the kernel may take (aligned, unaligned, word-at-a-time)
// computes the same value. 32-bit kernels run HalfSipHash-1-3 with 32-bit keys
// instead, which this does not model.
func hsiphash(k0, k1 uint64, data []byte) uint32 {
	return uint32(sipHash(1, 3, k0, k1, data))
}
