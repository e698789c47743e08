/* The counter-based dropout mask: whether element `index` of a dropout is kept, from (seed, index)
 * alone. C twin of minillm/kernels/dropout.py (read its docstring: the scheme, and why the fused
 * attention regenerates the mask in its backward instead of storing it); the CUDA kernel computes
 * the same bits. All arithmetic is on uint64_t, so it wraps mod 2^64 as the scheme requires.
 *
 * The hash is splitmix64's finalizer of seed + (index + 1) * golden: three multiplies and three
 * shift-xors, no state, no branch. It runs once per attention probability in the forward and once
 * in the backward, in loops GCC vectorizes (AVX-512 multiplies 64-bit lanes in one instruction).
 */
#ifndef MINILLM_DROPOUT_MASK_H
#define MINILLM_DROPOUT_MASK_H

#include <stdint.h>

/* The 32 random bits of element `index` under `seed`. */
static inline uint32_t mll_dropout_bits(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (uint32_t)(z >> 32);
}

/* Whether element `index` is kept: its bits reach `threshold` = floor(p * 2^32). A uint64_t
 * threshold lets p = 1 say 2^32, which no 32-bit value reaches: nothing is kept. */
static inline int mll_dropout_keep(uint64_t seed, uint64_t index, uint64_t threshold)
{
    return mll_dropout_bits(seed, index) >= threshold;
}

#endif
