// The two levels of vec.c side by side: the AVX-512 rows (own exp, erf and dropout hash) against
// the portable rows on libm, on inputs that reach the edges (tails of every length, -inf scores,
// huge and tiny arguments). Dropout masks must be bit-identical; values agree within the bounds
// below. On a CPU without AVX-512 both sides are the portable rows and the tests still run.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "vec.h"

static xa_vec_level initial;
static void setup(void) { initial = xa_vec_level_get(); }
static void teardown(void) { xa_vec_level_set(initial); }
TestSuite(vec, .init = setup, .fini = teardown);

// Runs `body` at the scalar level into `ref` and at the best level into `fast`.
#define BOTH_LEVELS(ref_stmt, fast_stmt)                                                           \
    do {                                                                                           \
        xa_vec_level_set(XA_VEC_SCALAR);                                                           \
        ref_stmt;                                                                                  \
        xa_vec_level_set(XA_VEC_AVX512);                                                           \
        fast_stmt;                                                                                 \
        xa_vec_level_set(initial);                                                                 \
    } while (0)

enum { NX = 4003 }; // not a multiple of 16: the masked tail runs too

// -30 .. 30 densely, plus values that stress the formulas
static void sweep(float *x) {
    for (int i = 0; i < NX; i++)
        x[i] = -30.0f + 60.0f * (float)i / (float)(NX - 1);
    const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-8f, -1e-8f, 88.0f, -88.0f, 100.0f,
                             -100.0f, 1e6f, -1e6f, 0.5f, -0.5f, 3.92f, -3.92f};
    memcpy(x, special, sizeof special);
}

static float rel_err(float a, float b) { return fabsf(a - b) / fmaxf(1.0f, fabsf(b)); }

Test(vec, level_name_and_override) {
    cr_expect_str_eq(xa_vec_level_name(XA_VEC_SCALAR), "scalar");
    cr_expect_str_eq(xa_vec_level_name(XA_VEC_AVX512), "avx512");
    cr_expect_eq(xa_vec_level_set(XA_VEC_SCALAR), XA_VEC_SCALAR);
    xa_vec_level l = xa_vec_level_set(XA_VEC_AVX512);
    cr_expect(l == XA_VEC_AVX512 || l == XA_VEC_SCALAR);
}

Test(vec, activations_agree_with_libm_forward_and_backward) {
    static float x[NX], ya[NX], yb[NX], dy[NX], da[NX], db[NX];
    sweep(x);
    for (int i = 0; i < NX; i++)
        dy[i] = 0.25f + (float)(i % 7) * 0.125f;
    // bounds: erf (A&S 7.1.26) is within 1.5e-7; exp within a few ulp
    const float fwd_tol[XA_ACT_COUNT] = {[XA_ACT_GELU] = 3e-7f, [XA_ACT_GELU_TANH] = 3e-7f,
                                         [XA_ACT_QUICK_GELU] = 3e-7f, [XA_ACT_TANH] = 3e-7f,
                                         [XA_ACT_SIGMOID] = 3e-7f, [XA_ACT_RELU] = 0.0f};
    const float bwd_tol[XA_ACT_COUNT] = {[XA_ACT_GELU] = 5e-7f, [XA_ACT_GELU_TANH] = 5e-7f,
                                         [XA_ACT_QUICK_GELU] = 5e-7f, [XA_ACT_TANH] = 5e-7f,
                                         [XA_ACT_SIGMOID] = 5e-7f, [XA_ACT_RELU] = 0.0f};
    for (int a = 0; a < XA_ACT_COUNT; a++) {
        BOTH_LEVELS(xa_vec_act(ya, x, (xa_act)a, NX), xa_vec_act(yb, x, (xa_act)a, NX));
        float worst = 0;
        for (int i = 0; i < NX; i++) {
            cr_assert(isfinite(yb[i]), "%s(%g) = %g", xa_act_name((xa_act)a), x[i], yb[i]);
            worst = fmaxf(worst, rel_err(yb[i], ya[i]));
        }
        cr_expect_leq(worst, fwd_tol[a], "%s forward: %g", xa_act_name((xa_act)a), worst);
        memset(da, 0, sizeof da);
        memcpy(db, da, sizeof da);
        BOTH_LEVELS(xa_vec_act_bwd(da, dy, x, ya, (xa_act)a, NX),
                    xa_vec_act_bwd(db, dy, x, ya, (xa_act)a, NX));
        worst = 0;
        for (int i = 0; i < NX; i++)
            worst = fmaxf(worst, rel_err(db[i], da[i]));
        cr_expect_leq(worst, bwd_tol[a], "%s backward: %g", xa_act_name((xa_act)a), worst);
    }
}

Test(vec, gelu_keeps_tiny_negative_tails_without_cancellation) {
    // GELU(-6) = -6 Phi(-6) = -5.92e-9: from erfc directly, not as 1 + erf (which is 0 or a
    // multiple of 6e-8 in float); erfc's approximation is good to 1 % relative out there
    float x[2] = {-6.0f, -9.0f}, y[2];
    xa_vec_act(y, x, XA_ACT_GELU, 2);
    cr_expect_lt(fabsf(y[0] / -5.9195e-9f - 1.0f), 1e-2f, "%g", y[0]);
    cr_expect_leq(fabsf(y[1]), 1e-17f);
    cr_expect_leq(y[1], 0.0f);
}

Test(vec, dropout_masks_are_bit_identical_at_both_levels) {
    enum { N = 1000 };
    static float x[N], ya[N], yb[N], da[N], db[N];
    for (int i = 0; i < N; i++)
        x[i] = 1.0f + (float)i;
    const float ps[] = {0.0f, 1e-7f, 0.1f, 1.0f / 3.0f, 0.5f, 0.9f, 0.999f};
    const int64_t starts[] = {0, 1, 15, 17, 123456789};
    for (size_t pi = 0; pi < sizeof ps / sizeof *ps; pi++)
        for (size_t si = 0; si < sizeof starts / sizeof *starts; si++)
            for (int64_t n = 1; n <= N; n += n < 40 ? 1 : 97) {
                BOTH_LEVELS(xa_vec_dropout(ya, x, ps[pi], 42, starts[si], n),
                            xa_vec_dropout(yb, x, ps[pi], 42, starts[si], n));
                cr_assert(memcmp(ya, yb, (size_t)n * sizeof(float)) == 0, "p=%g start=%lld n=%lld",
                          ps[pi], (long long)starts[si], (long long)n);
                for (int64_t i = 0; i < n; i++)
                    cr_assert_eq(ya[i] != 0.0f, xa_dropout_keep(42, starts[si] + i, ps[pi]));
                memset(da, 0, sizeof da), memset(db, 0, sizeof db);
                BOTH_LEVELS(xa_vec_dropout_bwd(da, x, ps[pi], 42, starts[si], n),
                            xa_vec_dropout_bwd(db, x, ps[pi], 42, starts[si], n));
                cr_assert(memcmp(da, db, sizeof da) == 0, "backward p=%g", ps[pi]);
            }
}

Test(vec, dropout_keeps_about_one_minus_p) {
    enum { N = 1 << 16 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = 1.0f;
    xa_vec_dropout(y, x, 0.25f, 7, 0, N);
    int kept = 0;
    for (int i = 0; i < N; i++)
        kept += y[i] != 0.0f;
    cr_expect_lt(fabs((double)kept / N - 0.75), 0.01, "kept %d of %d", kept, N);
}

Test(vec, softmax_rows_with_masks_tails_and_empty_rows) {
    float x[200], ya[200], yb[200];
    for (int64_t n = 1; n <= 200; n += n < 20 ? 1 : 13) {
        for (int64_t i = 0; i < n; i++)
            x[i] = (i % 5 == 3) ? -INFINITY : 7.0f * sinf((float)i * 0.37f) - 40.0f;
        BOTH_LEVELS(xa_vec_softmax_row(ya, x, n), xa_vec_softmax_row(yb, x, n));
        float sum = 0;
        for (int64_t i = 0; i < n; i++) {
            cr_assert_lt(fabsf(ya[i] - yb[i]), 2e-7f, "n=%lld i=%lld", (long long)n, (long long)i);
            if (x[i] == -INFINITY)
                cr_assert_eq(yb[i], 0.0f, "masked entry must be exactly 0");
            sum += yb[i];
        }
        cr_expect_lt(fabsf(sum - 1.0f), 1e-6f);
    }
    for (int i = 0; i < 37; i++)
        x[i] = -INFINITY;
    xa_vec_softmax_row(yb, x, 37);
    for (int i = 0; i < 37; i++)
        cr_expect_eq(yb[i], 1.0f / 37.0f);
    // in place, huge spread: the largest entry takes everything
    x[0] = 1000.0f, x[1] = 0.0f, x[2] = -1000.0f;
    xa_vec_softmax_row(x, x, 3);
    cr_expect_eq(x[0], 1.0f);
    cr_expect_eq(x[2], 0.0f);
}

Test(vec, softmax_backward_and_layernorm_rows_agree) {
    enum { N = 3072 + 5 };
    static float x[N], w[N], b[N], dy[N], ya[N], yb[N], da[N], db[N];
    for (int i = 0; i < N; i++) {
        x[i] = 3.0f + sinf((float)i * 0.1f), w[i] = 1.0f + 0.01f * (float)(i % 9);
        b[i] = 0.1f * cosf((float)i), dy[i] = cosf((float)i * 0.7f);
    }
    const int64_t lens[] = {1, 15, 16, 17, 128, 768, N};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        int64_t n = lens[li];
        float ma, ra, mb, rb;
        BOTH_LEVELS(xa_vec_layernorm_row(ya, &ma, &ra, x, w, b, 1e-12f, n),
                    xa_vec_layernorm_row(yb, &mb, &rb, x, w, b, 1e-12f, n));
        cr_expect_lt(fabsf(ma - mb), 1e-5f);
        cr_expect_lt(rel_err(ra, rb), 1e-4f, "rstd %g vs %g", ra, rb);
        for (int64_t i = 0; i < n; i++)
            cr_assert_lt(fabsf(ya[i] - yb[i]), 1e-4f, "layernorm n=%lld i=%lld", (long long)n, (long long)i);
        for (int64_t i = 0; i < n; i++)
            da[i] = db[i] = 0.5f;
        BOTH_LEVELS(xa_vec_layernorm_bwd_row(da, dy, x, w, ma, ra, n),
                    xa_vec_layernorm_bwd_row(db, dy, x, w, ma, ra, n));
        for (int64_t i = 0; i < n; i++)
            cr_assert_lt(fabsf(da[i] - db[i]), 1e-4f * fmaxf(1.0f, fabsf(da[i])), "layernorm bwd");
        xa_vec_softmax_row(ya, x, n);
        for (int64_t i = 0; i < n; i++)
            da[i] = db[i] = 0.5f;
        BOTH_LEVELS(xa_vec_softmax_bwd_row(da, dy, ya, true, n),
                    xa_vec_softmax_bwd_row(db, dy, ya, true, n));
        for (int64_t i = 0; i < n; i++)
            cr_assert_lt(fabsf(da[i] - db[i]), 1e-6f, "softmax bwd n=%lld", (long long)n);
        memcpy(yb, dy, sizeof(float) * (size_t)n); // assign mode, in place
        xa_vec_softmax_bwd_row(yb, yb, ya, false, n);
        for (int64_t i = 0; i < n; i++)
            cr_assert_lt(fabsf(yb[i] - (da[i] - 0.5f)), 1e-6f, "softmax bwd in place");
    }
}

Test(vec, adamw_is_bit_identical_at_both_levels_and_zeroes_the_gradient) {
    enum { N = 1000 + 7 };
    static float w[2][N], g[2][N], m[2][N], v[2][N];
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < N; i++) {
            w[s][i] = sinf((float)i), g[s][i] = cosf((float)i * 1.3f) * 0.01f;
            m[s][i] = 0.001f * (float)(i % 5), v[s][i] = 1e-6f * (float)(i % 3);
        }
    xa_adamw_k k = {.beta1 = 0.9f, .beta2 = 0.999f, .lr = 1e-3f, .wd = 0.01f, .step = 1e-3f / 0.1f,
                    .bc2_sqrt = sqrtf(0.001f), .eps = 1e-8f, .gscale = 0.5f};
    BOTH_LEVELS(xa_vec_adamw(w[0], g[0], m[0], v[0], &k, N), xa_vec_adamw(w[1], g[1], m[1], v[1], &k, N));
    cr_expect(memcmp(w[0], w[1], sizeof w[0]) == 0, "weights");
    cr_expect(memcmp(m[0], m[1], sizeof m[0]) == 0, "first moments");
    cr_expect(memcmp(v[0], v[1], sizeof v[0]) == 0, "second moments");
    for (int i = 0; i < N; i++)
        cr_assert_eq(g[1][i], 0.0f);
    double sa, sb;
    BOTH_LEVELS(sa = xa_vec_sumsq(w[0], N), sb = xa_vec_sumsq(w[0], N));
    cr_expect_lt(fabs(sa - sb), 1e-12 * sa);
}

Test(vec, nan_propagates_like_libm) {
    float x[5] = {0.5f, NAN, -1.0f, 2.0f, -INFINITY}, y[5];
    for (int a = 0; a < XA_ACT_COUNT; a++) {
        if (a == XA_ACT_RELU)
            continue; // max(x, 0) is 0 for NaN at either level: not a libm function
        xa_vec_act(y, x, (xa_act)a, 5);
        cr_expect(isnan(y[1]), "%s(NaN) = %g", xa_act_name((xa_act)a), y[1]);
        cr_expect(!isnan(y[0]) && !isnan(y[2]) && !isnan(y[3]));
    }
    xa_vec_softmax_row(y, x, 5);
    for (int i = 0; i < 5; i++)
        cr_expect(isnan(y[i]), "a NaN score makes the whole row NaN, as expf does: y[%d] = %g", i, y[i]);
}
