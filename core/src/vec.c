// Row primitives of the element-wise kernels at two levels (see vec.h): portable C on libm, and
// AVX-512 with its own exp and erf, so that GELU, softmax and dropout stop costing more than the
// GEMMs around them. Formulas:
//   exp(x)  = 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 (two-part ln 2) in [-0.35, 0.35];
//             e^r by its Taylor series to r^7 (truncation < 6e-9 relative); 2^n by vscalefps,
//             which also gives inf above 88.7 and 0 below -103.9 (x is clamped to -150 first so
//             that -inf, a masked attention score, gives exactly 0).
//   erfc(a) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^(-a^2), t = 1 / (1 + p a), a >= 0:
//             Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7. GELU needs 1 + erf(z),
//             which is erfc(-z) for z < 0 and 2 - erfc(z) above: no cancellation either side.
//   dropout: the splitmix64 hash of xa_dropout_keep on 8 64-bit lanes at a time; "keep iff
//             (z >> 40) * 2^-24 >= p" is the integer test (z >> 40) >= ceil(p 2^24), exactly.
#include "vec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define XA_VEC_X86 1
#include <immintrin.h>
#else
#define XA_VEC_X86 0
#endif

#define SQRT_2_OVER_PI 0.7978845608028654f
#define INV_SQRT_2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

// ---------------------------------------------------------------- level

static xa_vec_level vec_level = XA_VEC_SCALAR;

static bool cpu_has_avx512(void) {
#if XA_VEC_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

// At load, before any thread of the pool exists: the level is only read afterwards.
__attribute__((constructor)) static void vec_level_init(void) {
    const char *env = getenv("XADAPT_SIMD");
    bool force_scalar = env && (strcmp(env, "scalar") == 0 || strcmp(env, "0") == 0);
    vec_level = !force_scalar && cpu_has_avx512() ? XA_VEC_AVX512 : XA_VEC_SCALAR;
}

xa_vec_level xa_vec_level_get(void) { return vec_level; }

xa_vec_level xa_vec_level_set(xa_vec_level level) {
    vec_level = level == XA_VEC_AVX512 && cpu_has_avx512() ? XA_VEC_AVX512 : XA_VEC_SCALAR;
    return vec_level;
}

const char *xa_vec_level_name(xa_vec_level level) {
    return level == XA_VEC_AVX512 ? "avx512" : "scalar";
}

// ---------------------------------------------------------------- portable C

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void act_scalar(float *y, const float *x, xa_act act, int64_t n) {
    switch (act) {
    case XA_ACT_GELU:
        for (int64_t i = 0; i < n; i++) // 1 + erf(z) = erfc(-z): no cancellation for z << 0
            y[i] = 0.5f * x[i] * erfcf(-x[i] * INV_SQRT_2);
        break;
    case XA_ACT_GELU_TANH:
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = 0.5f * v * (1.0f + tanhf(SQRT_2_OVER_PI * (v + 0.044715f * v * v * v)));
        }
        break;
    case XA_ACT_QUICK_GELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * sigmoidf(1.702f * x[i]);
        break;
    case XA_ACT_TANH:
        for (int64_t i = 0; i < n; i++)
            y[i] = tanhf(x[i]);
        break;
    case XA_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            y[i] = sigmoidf(x[i]);
        break;
    case XA_ACT_RELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case XA_ACT_COUNT:
        break;
    }
}

static void act_bwd_scalar(float *dx, const float *dy, const float *x, const float *out,
                           xa_act act, int64_t n) {
    switch (act) {
    case XA_ACT_GELU:
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float cdf = 0.5f * erfcf(-v * INV_SQRT_2);
            float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);
            dx[i] += dy[i] * (cdf + v * pdf);
        }
        break;
    case XA_ACT_GELU_TANH:
        for (int64_t i = 0; i < n; i++) { // (1 + tanh u) / 2 = s = sigmoid(2u): s + 2 x s (1-s) u'
            float v = x[i];
            float e = expf(-2.0f * SQRT_2_OVER_PI * (v + 0.044715f * v * v * v));
            float s = 1.0f / (1.0f + e), oms = e * s; // 1 - s without cancellation
            float du = SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * v * v);
            dx[i] += dy[i] * (s + 2.0f * v * s * oms * du);
        }
        break;
    case XA_ACT_QUICK_GELU:
        for (int64_t i = 0; i < n; i++) {
            float e = expf(-1.702f * x[i]), s = 1.0f / (1.0f + e);
            dx[i] += dy[i] * (s + 1.702f * x[i] * s * (e * s));
        }
        break;
    case XA_ACT_TANH:
        for (int64_t i = 0; i < n; i++)
            dx[i] += dy[i] * (1.0f - out[i] * out[i]);
        break;
    case XA_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            dx[i] += dy[i] * out[i] * (1.0f - out[i]);
        break;
    case XA_ACT_RELU:
        for (int64_t i = 0; i < n; i++)
            dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
        break;
    case XA_ACT_COUNT:
        break;
    }
}

static void dropout_scalar(float *y, const float *x, float p, uint64_t seed, int64_t start,
                           int64_t n) {
    float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++)
        y[i] = xa_dropout_keep(seed, start + i, p) ? x[i] * scale : 0.0f;
}

static void dropout_bwd_scalar(float *dx, const float *dy, float p, uint64_t seed, int64_t start,
                               int64_t n) {
    float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++)
        if (xa_dropout_keep(seed, start + i, p))
            dx[i] += dy[i] * scale;
}

static void softmax_row_scalar(float *y, const float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t c = 0; c < n; c++)
        mx = x[c] > mx ? x[c] : mx;
    if (mx == -INFINITY) {
        for (int64_t c = 0; c < n; c++)
            y[c] = 1.0f / (float)n;
        return;
    }
    double sum = 0;
    for (int64_t c = 0; c < n; c++) {
        y[c] = expf(x[c] - mx);
        sum += y[c];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t c = 0; c < n; c++)
        y[c] *= inv;
}

static void softmax_bwd_row_scalar(float *dx, const float *dy, const float *y, bool accumulate,
                                   int64_t n) {
    double dot = 0;
    for (int64_t c = 0; c < n; c++)
        dot += (double)dy[c] * y[c];
    float d = (float)dot;
    for (int64_t c = 0; c < n; c++)
        dx[c] = (accumulate ? dx[c] : 0.0f) + y[c] * (dy[c] - d);
}

// Statistics in double, so long rows (3072) stay accurate.
static void layernorm_row_scalar(float *y, float *mean, float *rstd, const float *x,
                                 const float *w, const float *b, float eps, int64_t n) {
    double s = 0, ss = 0;
    for (int64_t c = 0; c < n; c++)
        s += x[c];
    double m = s / (double)n;
    for (int64_t c = 0; c < n; c++) {
        double d = x[c] - m;
        ss += d * d;
    }
    float r = (float)(1.0 / sqrt(ss / (double)n + eps));
    float mf = (float)m;
    for (int64_t c = 0; c < n; c++)
        y[c] = (x[c] - mf) * r * w[c] + b[c];
    *mean = mf;
    *rstd = r;
}

static void layernorm_bwd_row_scalar(float *dx, const float *dy, const float *x, const float *w,
                                     float mean, float rstd, int64_t n) {
    double sum_g = 0, sum_gx = 0;
    for (int64_t c = 0; c < n; c++) {
        float xhat = (x[c] - mean) * rstd, g = w[c] * dy[c];
        sum_g += g;
        sum_gx += (double)g * xhat;
    }
    float a = (float)(sum_g / (double)n), bb = (float)(sum_gx / (double)n);
    for (int64_t c = 0; c < n; c++) {
        float xhat = (x[c] - mean) * rstd;
        dx[c] += (w[c] * dy[c] - a - xhat * bb) * rstd;
    }
}

static double sumsq_scalar(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

static void adamw_scalar(float *w, float *g, float *m, float *v, const xa_adamw_k *k, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        float gj = g[j] * k->gscale;
        m[j] = k->beta1 * m[j] + (1.0f - k->beta1) * gj;
        v[j] = k->beta2 * v[j] + (1.0f - k->beta2) * gj * gj;
        w[j] *= 1.0f - k->lr * k->wd;
        w[j] -= k->step * m[j] / (sqrtf(v[j]) / k->bc2_sqrt + k->eps);
        g[j] = 0.0f;
    }
}

// ---------------------------------------------------------------- AVX-512

#if XA_VEC_X86
#define AVX512 __attribute__((target("avx512f,avx512dq,fma")))

// Lanes of the 16-wide step starting `left` elements before the end.
static inline __mmask16 tail16(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

AVX512 static inline __m512 v_exp(__m512 x) {
    // the constant first: vmaxps/vminps return the second operand when one is NaN, so NaN stays
    x = _mm512_max_ps(_mm512_set1_ps(-150.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// sigmoid(v) and, in *oms, 1 - sigmoid(v) computed as e^-v sigmoid(v): no cancellation near 1.
AVX512 static inline __m512 v_sigmoid(__m512 v, __m512 *oms) {
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = v_exp(_mm512_sub_ps(_mm512_setzero_ps(), v));
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
    if (oms)
        *oms = _mm512_mul_ps(e, s);
    return s;
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2 and, in *e, exp(-x^2 / 2) for the density.
AVX512 static inline __m512 v_normal_cdf(__m512 x, __m512 *e) {
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(INV_SQRT_2));
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    *e = v_exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
    __m512 half_erfc = _mm512_mul_ps(_mm512_mul_ps(p, t), _mm512_mul_ps(*e, _mm512_set1_ps(0.5f)));
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(1.0f), half_erfc), half_erfc);
}

AVX512 static void act_avx512(float *y, const float *x, xa_act act, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i), r = zero, e;
        switch (act) {
        case XA_ACT_GELU:
            r = _mm512_mul_ps(v, v_normal_cdf(v, &e));
            break;
        case XA_ACT_GELU_TANH: { // x (1 + tanh u) / 2 = x sigmoid(2u)
            __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
            __m512 u = _mm512_mul_ps(_mm512_set1_ps(2.0f * SQRT_2_OVER_PI),
                                     _mm512_fmadd_ps(v3, _mm512_set1_ps(0.044715f), v));
            r = _mm512_mul_ps(v, v_sigmoid(u, NULL));
            break;
        }
        case XA_ACT_QUICK_GELU:
            r = _mm512_mul_ps(v, v_sigmoid(_mm512_mul_ps(v, _mm512_set1_ps(1.702f)), NULL));
            break;
        case XA_ACT_TANH: // 2 sigmoid(2x) - 1
            r = _mm512_fmsub_ps(_mm512_set1_ps(2.0f), v_sigmoid(_mm512_add_ps(v, v), NULL), one);
            break;
        case XA_ACT_SIGMOID:
            r = v_sigmoid(v, NULL);
            break;
        case XA_ACT_RELU:
            r = _mm512_max_ps(v, zero);
            break;
        case XA_ACT_COUNT:
            break;
        }
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

AVX512 static void act_bwd_avx512(float *dx, const float *dy, const float *x, const float *out,
                                  xa_act act, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 v = act == XA_ACT_TANH || act == XA_ACT_SIGMOID ? _mm512_maskz_loadu_ps(m, out + i)
                                                               : _mm512_maskz_loadu_ps(m, x + i);
        __m512 d = zero, e, s, oms;
        switch (act) {
        case XA_ACT_GELU: // Phi(x) + x phi(x)
            d = v_normal_cdf(v, &e);
            d = _mm512_fmadd_ps(_mm512_mul_ps(v, _mm512_set1_ps(INV_SQRT_2PI)), e, d);
            break;
        case XA_ACT_GELU_TANH: { // s + 2 x s (1-s) u', s = sigmoid(2u)
            __m512 v2 = _mm512_mul_ps(v, v);
            __m512 u = _mm512_mul_ps(_mm512_set1_ps(2.0f * SQRT_2_OVER_PI),
                                     _mm512_fmadd_ps(_mm512_mul_ps(v2, v), _mm512_set1_ps(0.044715f), v));
            __m512 du = _mm512_mul_ps(_mm512_set1_ps(SQRT_2_OVER_PI),
                                      _mm512_fmadd_ps(v2, _mm512_set1_ps(3.0f * 0.044715f), one));
            s = v_sigmoid(u, &oms);
            __m512 ss = _mm512_mul_ps(s, oms);
            d = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_add_ps(v, v), ss), du, s);
            break;
        }
        case XA_ACT_QUICK_GELU: // s + 1.702 x s (1-s)
            s = v_sigmoid(_mm512_mul_ps(v, _mm512_set1_ps(1.702f)), &oms);
            d = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.702f)), s), oms, s);
            break;
        case XA_ACT_TANH: // 1 - y^2
            d = _mm512_fnmadd_ps(v, v, one);
            break;
        case XA_ACT_SIGMOID: // y (1 - y)
            d = _mm512_mul_ps(v, _mm512_sub_ps(one, v));
            break;
        case XA_ACT_RELU:
            d = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), one);
            break;
        case XA_ACT_COUNT:
            break;
        }
        __m512 g = _mm512_maskz_loadu_ps(m, dy + i);
        _mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(g, d, _mm512_maskz_loadu_ps(m, dx + i)));
    }
}

// keep bits of elements idx .. idx+15
AVX512 static inline __mmask16 v_keep16(uint64_t seed, int64_t idx, __m512i thr) {
    const __m512i golden = _mm512_set1_epi64((long long)0x9e3779b97f4a7c15ull);
    const __m512i m1 = _mm512_set1_epi64((long long)0xbf58476d1ce4e5b9ull);
    const __m512i m2 = _mm512_set1_epi64((long long)0x94d049bb133111ebull);
    __m512i k = _mm512_add_epi64(_mm512_set1_epi64(idx + 1), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    __mmask8 half[2];
    for (int h = 0; h < 2; h++) {
        __m512i z = _mm512_add_epi64(_mm512_set1_epi64((long long)seed), _mm512_mullo_epi64(golden, k));
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), m1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), m2);
        z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
        half[h] = _mm512_cmpge_epu64_mask(_mm512_srli_epi64(z, 40), thr);
        k = _mm512_add_epi64(k, _mm512_set1_epi64(8));
    }
    return (__mmask16)(half[0] | ((unsigned)half[1] << 8));
}

static inline long long keep_threshold(float p) {
    return p <= 0.0f ? 0 : (long long)ceil((double)p * 16777216.0);
}

AVX512 static void dropout_avx512(float *y, const float *x, float p, uint64_t seed, int64_t start,
                                  int64_t n) {
    __m512i thr = _mm512_set1_epi64(keep_threshold(p));
    __m512 scale = _mm512_set1_ps(1.0f / (1.0f - p));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i), keep = v_keep16(seed, start + i, thr);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_maskz_mul_ps(keep, v, scale));
    }
}

AVX512 static void dropout_bwd_avx512(float *dx, const float *dy, float p, uint64_t seed,
                                      int64_t start, int64_t n) {
    __m512i thr = _mm512_set1_epi64(keep_threshold(p));
    __m512 scale = _mm512_set1_ps(1.0f / (1.0f - p));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i) & v_keep16(seed, start + i, thr);
        __m512 g = _mm512_maskz_loadu_ps(m, dy + i);
        __m512 acc = _mm512_maskz_loadu_ps(m, dx + i);
        _mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(g, scale, acc));
    }
}

AVX512 static void softmax_row_avx512(float *y, const float *x, int64_t n) {
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 vmax = ninf;
    for (int64_t c = 0; c < n; c += 16)
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(ninf, tail16(n - c), x + c));
    float mx = _mm512_reduce_max_ps(vmax);
    if (mx == -INFINITY) {
        for (int64_t c = 0; c < n; c++)
            y[c] = 1.0f / (float)n;
        return;
    }
    __m512 shift = _mm512_set1_ps(mx), sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 e = _mm512_maskz_mov_ps(m, v_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + c), shift)));
        sum = _mm512_add_ps(sum, e);
        _mm512_mask_storeu_ps(y + c, m, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        _mm512_mask_storeu_ps(y + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + c), inv));
    }
}

AVX512 static void softmax_bwd_row_avx512(float *dx, const float *dy, const float *y,
                                          bool accumulate, int64_t n) {
    __m512 dot = _mm512_setzero_ps();
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        dot = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dy + c), _mm512_maskz_loadu_ps(m, y + c), dot);
    }
    __m512 d = _mm512_set1_ps(_mm512_reduce_add_ps(dot));
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = tail16(n - c);
        __m512 acc = accumulate ? _mm512_maskz_loadu_ps(m, dx + c) : _mm512_setzero_ps();
        __m512 g = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, dy + c), d);
        _mm512_mask_storeu_ps(dx + c, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, y + c), g, acc));
    }
}

// Sums in 16 lanes (each lane adds n/16 values), then across: accurate for rows of thousands.
AVX512 static void layernorm_row_avx512(float *y, float *mean, float *rstd, const float *x,
                                        const float *w, const float *b, float eps, int64_t n) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t c = 0; c < n; c += 16)
        s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tail16(n - c), x + c));
    float m = _mm512_reduce_add_ps(s) / (float)n;
    __m512 vm = _mm512_set1_ps(m), ss = _mm512_setzero_ps();
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 k = tail16(n - c);
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + c), vm);
        ss = _mm512_fmadd_ps(d, d, ss);
    }
    float r = (float)(1.0 / sqrt((double)_mm512_reduce_add_ps(ss) / (double)n + eps));
    __m512 vr = _mm512_set1_ps(r);
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 k = tail16(n - c);
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vr);
        __m512 out = _mm512_fmadd_ps(xhat, _mm512_maskz_loadu_ps(k, w + c), _mm512_maskz_loadu_ps(k, b + c));
        _mm512_mask_storeu_ps(y + c, k, out);
    }
    *mean = m;
    *rstd = r;
}

AVX512 static void layernorm_bwd_row_avx512(float *dx, const float *dy, const float *x,
                                            const float *w, float mean, float rstd, int64_t n) {
    __m512 vm = _mm512_set1_ps(mean), vr = _mm512_set1_ps(rstd);
    __m512 sg = _mm512_setzero_ps(), sgx = _mm512_setzero_ps();
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 k = tail16(n - c);
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vr);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + c), _mm512_maskz_loadu_ps(k, dy + c));
        sg = _mm512_add_ps(sg, g);
        sgx = _mm512_fmadd_ps(g, xhat, sgx);
    }
    __m512 a = _mm512_set1_ps(_mm512_reduce_add_ps(sg) / (float)n);
    __m512 bb = _mm512_set1_ps(_mm512_reduce_add_ps(sgx) / (float)n);
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 k = tail16(n - c);
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vr);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + c), _mm512_maskz_loadu_ps(k, dy + c));
        __m512 t = _mm512_fnmadd_ps(xhat, bb, _mm512_sub_ps(g, a));
        _mm512_mask_storeu_ps(dx + c, k, _mm512_fmadd_ps(t, vr, _mm512_maskz_loadu_ps(k, dx + c)));
    }
}
AVX512 static double sumsq_avx512(const float *x, int64_t n) {
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail16(n - i), x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        acc0 = _mm512_fmadd_pd(lo, lo, acc0);
        acc1 = _mm512_fmadd_pd(hi, hi, acc1);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
}

AVX512 static void adamw_avx512(float *w, float *g, float *m, float *v, const xa_adamw_k *k,
                                int64_t n) {
    const __m512 b1 = _mm512_set1_ps(k->beta1), b1c = _mm512_set1_ps(1.0f - k->beta1);
    const __m512 b2 = _mm512_set1_ps(k->beta2), b2c = _mm512_set1_ps(1.0f - k->beta2);
    const __m512 decay = _mm512_set1_ps(1.0f - k->lr * k->wd), step = _mm512_set1_ps(k->step);
    const __m512 bc2 = _mm512_set1_ps(k->bc2_sqrt), eps = _mm512_set1_ps(k->eps);
    const __m512 gs = _mm512_set1_ps(k->gscale), zero = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 t = tail16(n - j);
        __m512 gj = _mm512_mul_ps(_mm512_maskz_loadu_ps(t, g + j), gs);
        __m512 mj = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(t, m + j)), _mm512_mul_ps(b1c, gj));
        __m512 vj = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(t, v + j)),
                                  _mm512_mul_ps(_mm512_mul_ps(b2c, gj), gj));
        __m512 wj = _mm512_mul_ps(_mm512_maskz_loadu_ps(t, w + j), decay);
        __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vj), bc2), eps);
        wj = _mm512_sub_ps(wj, _mm512_div_ps(_mm512_mul_ps(step, mj), den));
        _mm512_mask_storeu_ps(m + j, t, mj);
        _mm512_mask_storeu_ps(v + j, t, vj);
        _mm512_mask_storeu_ps(w + j, t, wj);
        _mm512_mask_storeu_ps(g + j, t, zero);
    }
}

#define VEC_DISPATCH(avx512_call, scalar_call)                                                      \
    do {                                                                                           \
        if (vec_level == XA_VEC_AVX512)                                                            \
            avx512_call;                                                                           \
        else                                                                                       \
            scalar_call;                                                                           \
    } while (0)
#else
#define VEC_DISPATCH(avx512_call, scalar_call) scalar_call
#endif

// ---------------------------------------------------------------- entry points

void xa_vec_act(float *y, const float *x, xa_act act, int64_t n) {
    VEC_DISPATCH(act_avx512(y, x, act, n), act_scalar(y, x, act, n));
}

void xa_vec_act_bwd(float *dx, const float *dy, const float *x, const float *out, xa_act act,
                    int64_t n) {
    VEC_DISPATCH(act_bwd_avx512(dx, dy, x, out, act, n), act_bwd_scalar(dx, dy, x, out, act, n));
}

void xa_vec_dropout(float *y, const float *x, float p, uint64_t seed, int64_t start, int64_t n) {
    VEC_DISPATCH(dropout_avx512(y, x, p, seed, start, n), dropout_scalar(y, x, p, seed, start, n));
}

void xa_vec_dropout_bwd(float *dx, const float *dy, float p, uint64_t seed, int64_t start,
                        int64_t n) {
    VEC_DISPATCH(dropout_bwd_avx512(dx, dy, p, seed, start, n),
                 dropout_bwd_scalar(dx, dy, p, seed, start, n));
}

void xa_vec_softmax_row(float *y, const float *x, int64_t n) {
    VEC_DISPATCH(softmax_row_avx512(y, x, n), softmax_row_scalar(y, x, n));
}

void xa_vec_softmax_bwd_row(float *dx, const float *dy, const float *y, bool accumulate,
                            int64_t n) {
    VEC_DISPATCH(softmax_bwd_row_avx512(dx, dy, y, accumulate, n),
                 softmax_bwd_row_scalar(dx, dy, y, accumulate, n));
}

void xa_vec_layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, float eps, int64_t n) {
    VEC_DISPATCH(layernorm_row_avx512(y, mean, rstd, x, w, b, eps, n),
                 layernorm_row_scalar(y, mean, rstd, x, w, b, eps, n));
}

void xa_vec_layernorm_bwd_row(float *dx, const float *dy, const float *x, const float *w,
                              float mean, float rstd, int64_t n) {
    VEC_DISPATCH(layernorm_bwd_row_avx512(dx, dy, x, w, mean, rstd, n),
                 layernorm_bwd_row_scalar(dx, dy, x, w, mean, rstd, n));
}

double xa_vec_sumsq(const float *x, int64_t n) {
    double s;
    VEC_DISPATCH(s = sumsq_avx512(x, n), s = sumsq_scalar(x, n));
    return s;
}

void xa_vec_adamw(float *w, float *g, float *m, float *v, const xa_adamw_k *k, int64_t n) {
    VEC_DISPATCH(adamw_avx512(w, g, m, v, k, n), adamw_scalar(w, g, m, v, k, n));
}
