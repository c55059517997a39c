// e^x over a row of logits, for softmax and cross-entropy, and the sigmoid of SwiGLU.
//
// The LM head's cross-entropy takes e^x of every logit (65 M per step at configuration S); the Swift version
// (`expLanes`) runs on SSE2 as two 4-lane halves without FMA, and took 7 % of an S step. This is the same
// algorithm in AVX2 + FMA. SwiGLU takes one e^x per FFN activation, forward and backward (3 % of an S step in
// Swift).
#include "CKernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

int lk_has_avx2_fma(void);

// e^x per lane: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n built in the exponent bits
__attribute__((target("avx2,fma"))) static inline __m256 lk_exp8(__m256 x) {
    const __m256 low = _mm256_set1_ps(-87.33f), high = _mm256_set1_ps(88.0f);
    __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, low), high);
    // n = round(x / ln2): adding 1.5·2²³ rounds to an integer and leaves n in the low mantissa bits
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    __m256 shifted = _mm256_fmadd_ps(clamped, _mm256_set1_ps(1.44269504f), magic);
    __m256 n = _mm256_sub_ps(shifted, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), clamped);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.1219444e-4f), r);
    __m256 p = _mm256_set1_ps(1.98756915e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.39819995e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665796e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.66666555e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i exponent = _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x4B400000)),
                                        _mm256_set1_epi32(127));
    __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(exponent, 23));
    __m256 e = _mm256_mul_ps(p, scale);
    // below -87.33 the result is 0 (the clamp kept the exponent in range)
    return _mm256_andnot_ps(_mm256_cmp_ps(x, low, _CMP_LT_OQ), e);
}

__attribute__((target("avx2,fma"))) static inline float lk_lane_sum(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma")))
static double lk_exp_shifted_avx2(float *x, size_t count, float shift, int store) {
    const __m256 s = _mm256_set1_ps(shift);
    double total = 0;
    size_t i = 0;
    while (i + 8 <= count) {
        size_t end = i + 256 < count ? i + 256 : count;
        __m256 acc = _mm256_setzero_ps();
        for (; i + 8 <= end; i += 8) {
            __m256 e = lk_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
            if (store) _mm256_storeu_ps(x + i, e);
            acc = _mm256_add_ps(acc, e);
        }
        total += lk_lane_sum(acc);
    }
    if (i < count) {
        // the tail through the same lanes: pad with -inf (e^-inf = 0), store only the real values
        float tail[8];
        size_t left = count - i;
        for (size_t j = 0; j < 8; j++) tail[j] = j < left ? x[i + j] : -__builtin_inff();
        __m256 e = lk_exp8(_mm256_sub_ps(_mm256_loadu_ps(tail), s));
        _mm256_storeu_ps(tail, e);
        for (size_t j = 0; j < left; j++) {
            if (store) x[i + j] = tail[j];
            total += tail[j];
        }
    }
    return total;
}

double lk_exp_shifted(float *x, size_t count, float shift, int store) {
    if (lk_has_avx2_fma()) return lk_exp_shifted_avx2(x, count, shift, store);
    return -1;
}

// the largest of x[0..<count], count ≥ 1
__attribute__((target("avx2,fma")))
static float lk_maximum_avx2(const float *x, size_t count) {
    size_t i = 0;
    float best = x[0];
    if (count >= 8) {
        __m256 lanes = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= count; i += 8) lanes = _mm256_max_ps(lanes, _mm256_loadu_ps(x + i));
        float v[8];
        _mm256_storeu_ps(v, lanes);
        best = v[0];
        for (int j = 1; j < 8; j++) best = v[j] > best ? v[j] : best;
    }
    for (; i < count; i++) best = x[i] > best ? x[i] : best;
    return best;
}

__attribute__((target("avx2,fma")))
static void lk_scale_avx2(float *x, size_t count, float factor) {
    const __m256 f = _mm256_set1_ps(factor);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), f));
    for (; i < count; i++) x[i] *= factor;
}

int lk_maximum(const float *x, size_t count, float *result) {
    if (count == 0 || !lk_has_avx2_fma()) return 0;
    *result = lk_maximum_avx2(x, count);
    return 1;
}

int lk_scale(float *x, size_t count, float factor) {
    if (!lk_has_avx2_fma()) return 0;
    lk_scale_avx2(x, count, factor);
    return 1;
}

// out = silu(g)·u = g / (1 + e^-g) · u, as torch computes silu
__attribute__((target("avx2,fma")))
static size_t lk_swiglu_forward_avx2(float *out, const float *gate, const float *up, size_t count) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, lk_exp8(_mm256_sub_ps(zero, g))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    return i;
}

// dGate = dy·u·σ(g)·(1 + g·(1 − σ(g))), dUp = dy·g·σ(g)
__attribute__((target("avx2,fma")))
static size_t lk_swiglu_backward_avx2(float *dGate, float *dUp, const float *dOut, const float *gate,
                                      const float *up, size_t count) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i), u = _mm256_loadu_ps(up + i), dy = _mm256_loadu_ps(dOut + i);
        __m256 sigmoid = _mm256_div_ps(one, _mm256_add_ps(one, lk_exp8(_mm256_sub_ps(zero, g))));
        __m256 slope = _mm256_add_ps(one, _mm256_mul_ps(g, _mm256_sub_ps(one, sigmoid)));
        _mm256_storeu_ps(dGate + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dy, u), sigmoid), slope));
        _mm256_storeu_ps(dUp + i, _mm256_mul_ps(_mm256_mul_ps(dy, g), sigmoid));
    }
    return i;
}

size_t lk_swiglu_forward(float *out, const float *gate, const float *up, size_t count) {
    return lk_has_avx2_fma() ? lk_swiglu_forward_avx2(out, gate, up, count) : 0;
}

size_t lk_swiglu_backward(float *dGate, float *dUp, const float *dOut, const float *gate, const float *up,
                          size_t count) {
    return lk_has_avx2_fma() ? lk_swiglu_backward_avx2(dGate, dUp, dOut, gate, up, count) : 0;
}
#else
int lk_maximum(const float *x, size_t count, float *result) {
    (void)x; (void)count; (void)result;
    return 0;
}

int lk_scale(float *x, size_t count, float factor) {
    (void)x; (void)count; (void)factor;
    return 0;
}

size_t lk_swiglu_forward(float *out, const float *gate, const float *up, size_t count) {
    (void)out; (void)gate; (void)up; (void)count;
    return 0;
}

size_t lk_swiglu_backward(float *dGate, float *dUp, const float *dOut, const float *gate, const float *up,
                          size_t count) {
    (void)dGate; (void)dUp; (void)dOut; (void)gate; (void)up; (void)count;
    return 0;
}

double lk_exp_shifted(float *x, size_t count, float shift, int store) {
    (void)x; (void)count; (void)shift; (void)store;
    return -1;
}
#endif
