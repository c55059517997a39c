// Hand-written CPU kernels that Swift cannot express at full speed.
//
// The Swift targets compile for baseline x86-64 (SSE2, no FMA, no per-function target attributes), so a Swift loop
// cannot use AVX2 and FMA. These functions are compiled with GCC/Clang's `target` attribute and chosen at run time
// by a CPU check; on other CPUs they report that they did nothing and the caller uses OpenBLAS.
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when this CPU runs the AVX2 + FMA kernels below, 0 when every call would return 0.
int lk_has_avx2_fma(void);

/// y[r] = alpha · Σ_i w[r·ldw + i] · x[i] + beta · y[r] for r in 0..<rows (beta 0 ignores what y held).
///
/// w is (rows, n) row-major with leading dimension ldw, x is (n), y is (rows): one matrix-vector product over the
/// rows of a linear layer's weight (`y = W x`). Each y[r] is summed in an order that depends only on n, so the
/// result does not depend on how the caller splits the rows. Returns 1, or 0 (nothing written) when the CPU lacks
/// AVX2 and FMA.
int lk_sgemv_rows(float *y, const float *w, size_t ldw, const float *x, size_t rows, size_t n, float alpha,
                  float beta);

/// C[m,n] = alpha · op(A)[m,k] · op(B)[k,n] + beta · C, row-major with leading dimensions (op(A)[i][p] is
/// a[p·lda + i] when transA is 1, a[i·lda + p] otherwise; the same for B). Single-threaded, blocked for the caches;
/// beta 0 never reads C. Each element of C is summed over k in an order that depends only on k, so the result does
/// not depend on how the caller splits C. Returns 1, or 0 (nothing written) when the CPU lacks AVX2 and FMA, a size
/// is 0, or the packing buffers cannot be allocated.
int lk_sgemm(int transA, int transB, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
             const float *b, size_t ldb, float beta, float *c, size_t ldc);

/// x[i] = e^(x[i] - shift) for i in 0..<count when `store` is 1 (x untouched when 0); returns the sum of those
/// values. The same algorithm as Swift's `expLanes` (Cody-Waite reduction, Cephes' degree-6 polynomial, 2^n in the
/// exponent bits; 0 below -87.33) with FMA, eight lanes at a time; lanes are summed per block of 256 values in
/// Float and the blocks in Double, in an order that depends only on count. Returns -1 (nothing done) when the CPU
/// lacks AVX2 and FMA.
double lk_exp_shifted(float *x, size_t count, float shift, int store);

/// *result = the largest of x[0..<count] (count ≥ 1); returns 1, or 0 (nothing written) when count is 0 or the CPU
/// lacks AVX2 and FMA.
int lk_maximum(const float *x, size_t count, float *result);

/// x[i] *= factor for i in 0..<count; returns 1, or 0 (nothing done) when the CPU lacks AVX2 and FMA.
int lk_scale(float *x, size_t count, float factor);

/// SwiGLU's forward, out[i] = gate[i] / (1 + e^-gate[i]) · up[i] (out may alias gate or up), with the exponential
/// of `lk_exp_shifted`, over the first count rounded down to a multiple of 8 elements; returns how many it did (0
/// when the CPU lacks AVX2 and FMA). The caller does the rest.
size_t lk_swiglu_forward(float *out, const float *gate, const float *up, size_t count);

/// SwiGLU's backward: dGate = dOut·up·σ(gate)·(1 + gate·(1 − σ(gate))), dUp = dOut·gate·σ(gate), over the first
/// count rounded down to a multiple of 8 elements; returns how many it did, like `lk_swiglu_forward`.
size_t lk_swiglu_backward(float *dGate, float *dUp, const float *dOut, const float *gate, const float *up,
                          size_t count);

#ifdef __cplusplus
}
#endif

#endif
