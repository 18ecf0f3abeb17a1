// Fast kernels against their plain reference twins (tests/ref_ops.c) on odd sizes, plus the
// exact semantics of masks, pooling and losses on hand-checked values.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "ref_ops.h"
#include "xadapt/blas.h"

static xa_ctx *ctx;
static void setup(void) { ctx = xa_ctx_new(); xa_ctx_seed(ctx, 11); }
static void teardown(void) { xa_ctx_free(ctx); }
TestSuite(ref, .init = setup, .fini = teardown);

static float max_diff(const float *a, const float *b, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

Test(ref, sgemm_matches_loops_for_every_transpose_on_odd_sizes) {
    int64_t M = 7, N = 13, K = 5;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            xa_tensor *a = rand_tensor(ctx, M * K, 0, 0, 0), *b = rand_tensor(ctx, K * N, 0, 0, 0);
            xa_tensor *c1 = rand_tensor(ctx, M * N, 0, 0, 0), *c2 = xa_tensor_new_nd(ctx, M * N, 0, 0, 0);
            for (int64_t i = 0; i < M * N; i++)
                c2->data[i] = c1->data[i];
            xa_sgemm(ta, tb, M, N, K, 0.7f, a->data, ta ? M : K, b->data, tb ? K : N, 0.3f, c1->data, N);
            xa_sgemm_ref(ta, tb, M, N, K, 0.7f, a->data, ta ? M : K, b->data, tb ? K : N, 0.3f, c2->data, N);
            cr_expect_lt(max_diff(c1->data, c2->data, M * N), 1e-5f, "ta=%d tb=%d", ta, tb);
            xa_tensor_release(a), xa_tensor_release(b), xa_tensor_release(c1), xa_tensor_release(c2);
        }
}

Test(ref, linear_and_matmul_match_their_twins) {
    xa_tensor *x = rand_tensor(ctx, 3, 7, 13, 0), *w = rand_tensor(ctx, 5, 13, 0, 0);
    xa_tensor *b = rand_tensor(ctx, 5, 0, 0, 0);
    xa_tensor *y = xa_linear(ctx, x, w, b);
    float *r = malloc(21 * 5 * sizeof(float));
    ref_linear(r, x->data, w->data, b->data, 21, 13, 5);
    cr_expect_lt(max_diff(y->data, r, 21 * 5), 1e-5f);
    free(r);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            xa_tensor *a = rand_tensor(ctx, 2, 7, 5, 0), *bb = rand_tensor(ctx, 2, 5, 13, 0);
            int64_t s1[3] = {2, ta ? 5 : 7, ta ? 7 : 5}, s2[3] = {2, tb ? 13 : 5, tb ? 5 : 13};
            xa_tensor *av = xa_reshape(ctx, a, 3, s1), *bv = xa_reshape(ctx, bb, 3, s2);
            xa_tensor *c = xa_matmul(ctx, av, bv, ta, tb);
            cr_assert(c, "%s", xa_errmsg(ctx));
            float *rr = malloc(2 * 7 * 13 * sizeof(float));
            ref_matmul(rr, a->data, bb->data, ta, tb, 2, 7, 5, 13);
            cr_expect_lt(max_diff(c->data, rr, 2 * 7 * 13), 1e-5f, "ta=%d tb=%d", ta, tb);
            free(rr);
            xa_tensor_release(a), xa_tensor_release(bb);
        }
    xa_tensor_release(x), xa_tensor_release(w), xa_tensor_release(b);
}

Test(ref, layernorm_softmax_and_activations_match_their_twins) {
    xa_tensor *x = rand_tensor(ctx, 7, 13, 0, 0), *w = rand_tensor(ctx, 13, 0, 0, 0);
    xa_tensor *b = rand_tensor(ctx, 13, 0, 0, 0);
    float r[7 * 13];
    ref_layernorm(r, x->data, w->data, b->data, 1e-12, 7, 13);
    cr_expect_lt(max_diff(xa_layernorm(ctx, x, w, b, 1e-12f)->data, r, 91), 1e-5f);
    ref_softmax(r, x->data, 7, 13);
    cr_expect_lt(max_diff(xa_softmax(ctx, x)->data, r, 91), 1e-6f);
    const float *g = xa_gelu(ctx, x)->data, *gt = xa_gelu_tanh(ctx, x)->data;
    const float *qg = xa_quick_gelu(ctx, x)->data;
    for (int i = 0; i < 91; i++) {
        cr_expect_float_eq(g[i], ref_gelu(x->data[i]), 1e-6);
        cr_expect_float_eq(gt[i], ref_gelu_tanh(x->data[i]), 1e-6);
        cr_expect_float_eq(qg[i], ref_quick_gelu(x->data[i]), 1e-6);
    }
    xa_tensor_release(x), xa_tensor_release(w), xa_tensor_release(b);
}

static void check_attention(int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dk, int64_t Dv,
                            bool causal, bool masked) {
    xa_tensor *q = rand_tensor(ctx, B, Tq, H * Dk, 0), *k = rand_tensor(ctx, B, Tk, H * Dk, 0);
    xa_tensor *v = rand_tensor(ctx, B, Tk, H * Dv, 0);
    float *mask = NULL;
    if (masked) {
        mask = malloc((size_t)(B * Tk) * sizeof(float));
        for (int64_t i = 0; i < B * Tk; i++)
            mask[i] = (i % Tk) < Tk - (i / Tk) - 1 ? 1.0f : 0.0f; // row b pads its last b+1 keys
    }
    xa_attn_opts o = {.heads = (int)H, .causal = causal, .key_mask = mask};
    xa_tensor *y = xa_attention(ctx, q, k, v, &o);
    cr_assert(y, "%s", xa_errmsg(ctx));
    float *r = malloc((size_t)(B * Tq * H * Dv) * sizeof(float));
    ref_attention(r, q->data, k->data, v->data, mask, causal, B, Tq, Tk, H, Dk, Dv);
    cr_expect_lt(max_diff(y->data, r, B * Tq * H * Dv), 2e-5f, "B%lld Tq%lld Tk%lld causal %d",
                 (long long)B, (long long)Tq, (long long)Tk, causal);
    free(r), free(mask);
    xa_tensor_release(q), xa_tensor_release(k), xa_tensor_release(v);
}

Test(ref, attention_matches_the_additive_mask_twin) {
    check_attention(2, 7, 7, 3, 5, 5, false, true);
    check_attention(3, 7, 7, 2, 4, 4, true, true);
    check_attention(2, 5, 13, 3, 4, 6, false, true); // cross: other length and value width
    check_attention(1, 1, 1, 1, 3, 3, true, false);
}

Test(ref, fully_masked_row_gets_uniform_weights_like_hugging_face) {
    float mask[3] = {0, 0, 0};
    xa_tensor *q = rand_tensor(ctx, 1, 2, 4, 0), *k = rand_tensor(ctx, 1, 3, 4, 0);
    xa_tensor *v = rand_tensor(ctx, 1, 3, 4, 0);
    xa_attn_opts o = {.heads = 1, .key_mask = mask};
    xa_tensor *y = xa_attention(ctx, q, k, v, &o);
    for (int d = 0; d < 4; d++) {
        float mean = (v->data[d] + v->data[4 + d] + v->data[8 + d]) / 3.0f;
        cr_expect_float_eq(y->data[d], mean, 1e-6);
    }
    xa_tensor_release(q), xa_tensor_release(k), xa_tensor_release(v);
}

Test(ref, losses_on_hand_computed_values) {
    int64_t s[2] = {2, 3};
    xa_tensor *l = xa_tensor_new(ctx, 2, s);
    float v[6] = {1, 2, 3, 0, 0, 0};
    for (int i = 0; i < 6; i++)
        l->data[i] = v[i];
    int32_t t[2] = {2, -100};
    // -log softmax([1,2,3])[2] = log(e^1+e^2+e^3) - 3
    cr_expect_float_eq(xa_cross_entropy(ctx, l, t, -100)->data[0],
                       log(exp(1) + exp(2) + exp(3)) - 3, 1e-6);
    int32_t none[2] = {-100, -100};
    cr_expect_eq(xa_cross_entropy(ctx, l, none, -100)->data[0], 0.0f);
    int32_t bad[2] = {3, 0};
    cr_expect_null(xa_cross_entropy(ctx, l, bad, -100));
    cr_expect(strstr(xa_errmsg(ctx), "target 3 in row 0") != NULL, "%s", xa_errmsg(ctx));
    xa_tensor *z = xa_tensor_new(ctx, 2, s);
    cr_expect_float_eq(xa_mse(ctx, l, z)->data[0], (1 + 4 + 9) / 6.0, 1e-6);
    // cos([1,2,3],[1,2,3]) = 1 -> 0; row 2 vs zeros -> 1 - 0
    cr_expect_float_eq(xa_cosine_loss(ctx, l, l)->data[0], 0.5 * (0 + 1), 1e-6);
    cr_expect_float_eq(xa_kl_div(ctx, l, l, 2.0f)->data[0], 0.0, 1e-7);
    xa_tensor_release(l), xa_tensor_release(z);
}

Test(ref, shape_errors_name_both_shapes) {
    xa_tensor *x = rand_tensor(ctx, 2, 3, 0, 0), *w = rand_tensor(ctx, 4, 5, 0, 0);
    cr_expect_null(xa_linear(ctx, x, w, NULL));
    cr_expect_eq(xa_errcode(ctx), XA_ESHAPE);
    cr_expect(strstr(xa_errmsg(ctx), "(2,3)") && strstr(xa_errmsg(ctx), "(4,5)"), "%s",
              xa_errmsg(ctx));
    // sticky: a NULL input propagates without a new message
    cr_expect_null(xa_gelu(ctx, xa_linear(ctx, x, w, NULL)));
    cr_expect_eq(xa_errcode(ctx), XA_ESHAPE);
    int32_t ids[2] = {0, 9};
    cr_expect_null(xa_embedding(ctx, w, ids, 1, 2));
    cr_expect(strstr(xa_errmsg(ctx), "id 9 at position 1") != NULL, "%s", xa_errmsg(ctx));
    xa_tensor_release(x), xa_tensor_release(w);
    // attention names all three: here v is the one at fault (4 keys, 3 values)
    xa_tensor *q = rand_tensor(ctx, 2, 4, 8, 0), *k = rand_tensor(ctx, 2, 4, 8, 0);
    xa_tensor *v = rand_tensor(ctx, 2, 3, 8, 0);
    cr_expect_null(xa_attention(ctx, q, k, v, &(xa_attn_opts){.heads = 2}));
    cr_expect(strstr(xa_errmsg(ctx), "v (2,3,8)") != NULL, "%s", xa_errmsg(ctx));
    xa_tensor_release(q), xa_tensor_release(k), xa_tensor_release(v);
}

Test(ref, dropout_is_seeded_and_identity_when_not_training) {
    xa_tensor *x = rand_tensor(ctx, 1000, 0, 0, 0);
    cr_expect_eq(xa_dropout(ctx, x, 0.5f), x);
    xa_set_training(ctx, true);
    xa_ctx_seed(ctx, 3);
    xa_tensor *a = xa_dropout(ctx, x, 0.5f);
    xa_ctx_seed(ctx, 3);
    xa_tensor *b = xa_dropout(ctx, x, 0.5f);
    int zeros = 0;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(a->data[i], b->data[i]);
        zeros += a->data[i] == 0.0f;
        if (a->data[i] != 0.0f)
            cr_assert_float_eq(a->data[i], 2.0f * x->data[i], 1e-6);
    }
    cr_expect(zeros > 430 && zeros < 570, "%d of 1000 dropped at p=0.5", zeros);
    xa_tensor_release(x);
}

// Hinton's distillation loss: T^2 * mean over rows of KL(softmax(t/T) || softmax(s/T)); the
// T^2 keeps gradients comparable across temperatures. Reference in double, written out here.
Test(ref, kl_div_matches_a_double_reference_with_the_t_squared_factor) {
    enum { N = 3, C = 5 };
    xa_tensor *s = rand_tensor(ctx, N, C, 0, 0), *t = rand_tensor(ctx, N, C, 0, 0);
    const float temps[3] = {1.0f, 2.0f, 4.0f};
    for (int k = 0; k < 3; k++) {
        double T = temps[k], want = 0;
        for (int i = 0; i < N; i++) {
            double zs = 0, zt = 0;
            for (int c = 0; c < C; c++)
                zs += exp(s->data[i * C + c] / T), zt += exp(t->data[i * C + c] / T);
            for (int c = 0; c < C; c++) {
                double pt = exp(t->data[i * C + c] / T) / zt, ps = exp(s->data[i * C + c] / T) / zs;
                want += pt * (log(pt) - log(ps));
            }
        }
        want *= T * T / N;
        float got = xa_kl_div(ctx, s, t, (float)T)->data[0];
        cr_expect_float_eq(got, want, 1e-5 * fmax(1.0, want), "T=%g: got %.7g want %.7g", T,
                           (double)got, want);
    }
    xa_tensor_release(s), xa_tensor_release(t);
}

// Masked mean pooling divides by the kept positions only, and sends no gradient to padding.
Test(ref, mean_pooling_averages_only_the_positions_the_mask_keeps) {
    xa_tensor *x = xa_tensor_new_nd(ctx, 2, 3, 2, 0);
    for (int i = 0; i < 12; i++)
        x->data[i] = (float)(i + 1); // row 0: (1,2) (3,4) (5,6); row 1: (7,8) (9,10) (11,12)
    float mask[6] = {1, 1, 0, 1, 0, 0};
    x->flags |= XA_TENSOR_TRAINABLE;
    xa_tensor *y = xa_pool_mean(ctx, x, mask);
    cr_assert(y, "%s", xa_errmsg(ctx));
    const float want[4] = {2, 3, 7, 8};
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(y->data[i], want[i], 1e-6, "out[%d] = %g", i, (double)y->data[i]);
    cr_assert_eq(xa_backward(ctx, xa_sum(ctx, y)), XA_OK, "%s", xa_errmsg(ctx));
    const float dwant[12] = {0.5f, 0.5f, 0.5f, 0.5f, 0, 0, 1, 1, 0, 0, 0, 0};
    for (int i = 0; i < 12; i++)
        cr_expect_float_eq(x->grad[i], dwant[i], 1e-6, "dx[%d] = %g", i, (double)x->grad[i]);
    xa_tensor_release(x);
}
