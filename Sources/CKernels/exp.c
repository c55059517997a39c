// e^x over a row of logits, for softmax and cross-entropy.
//
// The LM head's cross-entropy takes e^x of every logit (65 M per step at configuration S); the Swift version
// (`expLanes`) runs on SSE2 as two 4-lane halves without FMA, and took 7 % of an S step. This is the same
// algorithm in AVX2 + FMA.
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
#else
double lk_exp_shifted(float *x, size_t count, float shift, int store) {
    (void)x; (void)count; (void)shift; (void)store;
    return -1;
}
#endif
