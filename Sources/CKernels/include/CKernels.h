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

#ifdef __cplusplus
}
#endif

#endif
