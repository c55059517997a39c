// Single-threaded matrix product with AVX2 and FMA, blocked for the caches (the BLIS scheme).
//
// OpenBLAS 0.3.21's Zen kernels reach 59-73 GFLOP/s on one core of this EPYC for the shapes of a LoRA step (the
// LM head's K = 288 and K = 32000, a block's 288 x 768) against 87 for the cores' FMA peak. The time goes to C
// passes (a separate beta pass clears C before the kernel accumulates into it), to packing both operands on every
// call, and to blocking tuned for square products. Here C is written once per block of K (the first block stores
// alpha*AB + beta*C, beta 0 never reads C), and the K block is long for products with a long K so that C is
// revisited rarely.
//
// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, row-major. Loops, outermost first: columns of C in blocks
// of NC, K in blocks of KC (op(B)'s block packed into 16-column panels, kept in L3), rows in blocks of MC (op(A)'s
// block packed into 6-row panels, kept in L2), then 16-column panels (one in L1) times 6-row panels: the 6x16
// micro-kernel holds its tile of C in twelve registers for all of KC. Each element of C is summed over K in the
// same order wherever it lies, so a caller may split C into parts on threads without changing any bit.
#include "CKernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

enum { MR = 6, NR = 16 };

// Sizes of the cache blocks: KC x NR floats of B (16 KB at KC 256) stay in L1 across a column panel, MC x KC of A
// (144 KB) in L2, KC x NC of B (4 MB) in L3.
#ifndef LK_KC
#define LK_KC 320
#endif
#ifndef LK_MC
#define LK_MC 144
#endif
// K in equal blocks of at most LK_KC
static size_t lk_kc(size_t k) { size_t blocks = (k + LK_KC - 1) / LK_KC; return (k + blocks - 1) / blocks; }
enum { MC = LK_MC, NC = 4096 };

// Per-thread packing buffers, grown on demand and kept for the thread's life.
static _Thread_local float *lk_pack_a = NULL, *lk_pack_b = NULL;
static _Thread_local size_t lk_pack_a_size = 0, lk_pack_b_size = 0;

static float *lk_buffer(float **buffer, size_t *size, size_t floats) {
    if (*size < floats) {
        free(*buffer);
        *buffer = NULL;
        *size = 0;
        void *p = NULL;
        // 8 floats of slack: the transposing packers store whole vectors past the last panel's end
        if (posix_memalign(&p, 64, (floats + 8) * sizeof(float)) != 0) return NULL;
        *buffer = p;
        *size = floats;
    }
    return *buffer;
}

// The packers and the micro-kernel stay out of line so that a profile shows them apart.

// r[0..7] <- the transpose of the 8x8 block r[0..7]
__attribute__((target("avx2,fma"))) static inline void lk_transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20); r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20); r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31); r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31); r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Packs `count` lines (rows of op(A) or columns of op(B)) from line i0 on, K range p0..<p0+kc, into panels of
// `width` lines (6 for A, 16 for B): panel q holds, for each p, the `width` values of its lines at dst[q*width*kc +
// width*p + line]; lines past count are zeros. With `sideBySide` the values of one p lie next to each other in
// memory, element (line i, p) at src[p*ld + i] (A transposed, B as is); otherwise each line is contiguous in p, at
// src[i*ld + p] (A as is, a weight [out, in] as B), and 8 x 8 blocks are transposed in registers.
__attribute__((target("avx2,fma"))) __attribute__((always_inline))
static inline void lk_pack_panels(float *dst, const float *src, size_t ld, int sideBySide, size_t i0, size_t count,
                                  size_t p0, size_t kc, size_t width) {
    for (size_t q = 0; q * width < count; q++) {
        float *d = dst + q * width * kc;
        size_t lines = count - q * width < width ? count - q * width : width;
        if (sideBySide) {
            const float *s = src + p0 * ld + i0 + q * width;
            if (lines == width) {
                for (size_t p = 0; p < kc; p++) memcpy(d + width * p, s + p * ld, width * sizeof(float));
            } else {
                for (size_t p = 0; p < kc; p++)
                    for (size_t i = 0; i < width; i++) d[width * p + i] = i < lines ? s[p * ld + i] : 0;
            }
            continue;
        }
        const float *s = src + (i0 + q * width) * ld + p0;
        size_t p = 0;
        if (lines == width) {
            for (; p + 8 <= kc; p += 8) {
                // 8 lines at a time (for width 6: six and two zeros), transposed to 8 values of p
                for (size_t h = 0; h * 8 < width; h++) {
                    __m256 v[8];
                    for (size_t i = 0; i < 8; i++)
                        v[i] = 8 * h + i < width ? _mm256_loadu_ps(s + (8 * h + i) * ld + p) : _mm256_setzero_ps();
                    lk_transpose8(v);
                    // for width 6 each store writes 8 floats where 6 belong; the next store overwrites the 2 extra
                    for (size_t j = 0; j < 8; j++) _mm256_storeu_ps(d + width * (p + j) + 8 * h, v[j]);
                }
            }
        }
        for (; p < kc; p++)
            for (size_t i = 0; i < width; i++) d[width * p + i] = i < lines ? s[i * ld + p] : 0;
    }
}

// op(A)'s rows i0..<i0+mc into 6-row panels, op(B)'s columns j0..<j0+nc into 16-column panels (the width a
// constant in each, so the copies compile to fixed moves).
__attribute__((target("avx2,fma"))) __attribute__((noinline))
static void lk_pack_a_panels(float *dst, const float *a, size_t lda, int trans, size_t i0, size_t mc, size_t p0,
                             size_t kc) {
    lk_pack_panels(dst, a, lda, trans, i0, mc, p0, kc, MR);
}

__attribute__((target("avx2,fma"))) __attribute__((noinline))
static void lk_pack_b_panels(float *dst, const float *b, size_t ldb, int trans, size_t j0, size_t nc, size_t p0,
                             size_t kc) {
    lk_pack_panels(dst, b, ldb, !trans, j0, nc, p0, kc, NR);
}

// C tile (rows x cols, at most 6 x 16) = alpha * Apanel * Bpanel + beta * C; beta 0 does not read C.
__attribute__((target("avx2,fma")))
__attribute__((noinline)) static void lk_kernel_6x16(size_t kc, const float *restrict ap, const float *restrict bp, float *c, size_t ldc,
                           size_t rows, size_t cols, float alpha, float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (size_t r = 0; r < rows; r++) _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
#define LK_STEP(P)                                                                                               \
    {                                                                                                            \
        __m256 b0 = _mm256_load_ps(bp + NR * (P)), b1 = _mm256_load_ps(bp + NR * (P) + 8);                       \
        __m256 a = _mm256_broadcast_ss(ap + MR * (P) + 0);                                                       \
        c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);                                    \
        a = _mm256_broadcast_ss(ap + MR * (P) + 1);                                                              \
        c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);                                    \
        a = _mm256_broadcast_ss(ap + MR * (P) + 2);                                                              \
        c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);                                    \
        a = _mm256_broadcast_ss(ap + MR * (P) + 3);                                                              \
        c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);                                    \
        a = _mm256_broadcast_ss(ap + MR * (P) + 4);                                                              \
        c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);                                    \
        a = _mm256_broadcast_ss(ap + MR * (P) + 5);                                                              \
        c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);                                    \
    }
    size_t p = 0;
    for (; p + 4 <= kc; p += 4) {
        _mm_prefetch((const char *)(ap + MR * p + 96), _MM_HINT_T0);
        LK_STEP(p) LK_STEP(p + 1) LK_STEP(p + 2) LK_STEP(p + 3)
    }
    for (; p < kc; p++) LK_STEP(p)
#undef LK_STEP
    __m256 acc[2 * MR] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (rows == MR && cols == NR) {
        for (size_t r = 0; r < MR; r++) {
            float *cr = c + r * ldc;
            __m256 x0 = _mm256_mul_ps(va, acc[2 * r]), x1 = _mm256_mul_ps(va, acc[2 * r + 1]);
            if (beta != 0) {
                x0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), x0);
                x1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), x1);
            }
            _mm256_storeu_ps(cr, x0);
            _mm256_storeu_ps(cr + 8, x1);
        }
        return;
    }
    // an edge tile: the same arithmetic per element, then only the part inside C is written
    float tile[MR * NR];
    for (size_t r = 0; r < MR; r++) {
        _mm256_storeu_ps(tile + NR * r, _mm256_mul_ps(va, acc[2 * r]));
        _mm256_storeu_ps(tile + NR * r + 8, _mm256_mul_ps(va, acc[2 * r + 1]));
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++) {
            float *e = c + r * ldc + j;
            *e = beta != 0 ? __builtin_fmaf(beta, *e, tile[NR * r + j]) : tile[NR * r + j];
        }
}

__attribute__((target("avx2,fma")))
static int lk_sgemm_avx2(int transA, int transB, size_t m, size_t n, size_t k, float alpha, const float *a,
                         size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    size_t kcMax = lk_kc(k);
    size_t ncMax = n < NC ? (n + NR - 1) / NR * NR : NC;
    size_t mcMax = m < MC ? (m + MR - 1) / MR * MR : MC;
    float *pa = lk_buffer(&lk_pack_a, &lk_pack_a_size, mcMax * kcMax);
    float *pb = lk_buffer(&lk_pack_b, &lk_pack_b_size, ncMax * kcMax);
    if (!pa || !pb) return 0;
    for (size_t jc = 0; jc < n; jc += NC) {
        size_t nc = n - jc < NC ? n - jc : NC;
        for (size_t pc = 0; pc < k; pc += kcMax) {
            size_t kc = k - pc < kcMax ? k - pc : kcMax;
            // the first K block stores alpha*AB + beta*C; the later ones add to it
            float blockBeta = pc == 0 ? beta : 1.0f;
            lk_pack_b_panels(pb, b, ldb, transB, jc, nc, pc, kc);
            for (size_t ic = 0; ic < m; ic += MC) {
                size_t mc = m - ic < MC ? m - ic : MC;
                lk_pack_a_panels(pa, a, lda, transA, ic, mc, pc, kc);
                for (size_t jr = 0; jr < nc; jr += NR) {
                    size_t cols = nc - jr < NR ? nc - jr : NR;
                    const float *bpanel = pb + jr * kc;
                    for (size_t ir = 0; ir < mc; ir += MR) {
                        size_t rows = mc - ir < MR ? mc - ir : MR;
                        lk_kernel_6x16(kc, pa + ir * kc, bpanel, c + (ic + ir) * ldc + jc + jr, ldc, rows, cols,
                                       alpha, blockBeta);
                    }
                }
            }
        }
    }
    return 1;
}
#endif

int lk_sgemm(int transA, int transB, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
             const float *b, size_t ldb, float beta, float *c, size_t ldc) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (m > 0 && n > 0 && k > 0 && lk_has_avx2_fma())
        return lk_sgemm_avx2(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
    (void)transA; (void)transB; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)b; (void)ldb;
    (void)beta; (void)c; (void)ldc;
    return 0;
}
