// Gradient checks (central differences) for every op in ops.h, on odd sizes.
#include <criterion/criterion.h>
#include <math.h>

#include "gradcheck.h"

static xa_ctx *ctx;
static void setup(void) { ctx = xa_ctx_new(); xa_ctx_seed(ctx, 7); }
static void teardown(void) { xa_ctx_free(ctx); }
TestSuite(grad, .init = setup, .fini = teardown);

#define CHECK(op, fn, user, ...)                                                                   \
    do {                                                                                           \
        xa_tensor *in_[] = {__VA_ARGS__};                                                          \
        int n_ = (int)(sizeof in_ / sizeof *in_);                                                  \
        gc_report rep_;                                                                            \
        bool ok_ = gradcheck(ctx, op, fn, in_, n_, user, &rep_);                                   \
        cr_expect(ok_, "%s: %d of %d elements off; %s (max abs err %.3g)", op, rep_.failed,       \
                  rep_.checked, rep_.first_failure, rep_.max_abs_err);                             \
        cr_expect(rep_.checked > 0);                                                               \
        for (int i_ = 0; i_ < n_; i_++)                                                            \
            xa_tensor_release(in_[i_]);                                                            \
    } while (0)

static xa_tensor *f_linear(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_linear(c, in[0], in[1], in[2]); }
static xa_tensor *f_linear_nobias(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_linear(c, in[0], in[1], NULL); }
Test(grad, linear) {
    CHECK("linear", f_linear, NULL, rand_tensor(ctx, 2, 7, 13, 0), rand_tensor(ctx, 5, 13, 0, 0),
          rand_tensor(ctx, 5, 0, 0, 0));
    CHECK("linear", f_linear_nobias, NULL, rand_tensor(ctx, 3, 4, 0, 0), rand_tensor(ctx, 6, 4, 0, 0));
}

typedef struct { bool ta, tb; } mm_opts;
static xa_tensor *f_matmul(xa_ctx *c, xa_tensor **in, void *u) {
    mm_opts *o = u;
    return xa_matmul(c, in[0], in[1], o->ta, o->tb);
}
Test(grad, matmul_every_transpose_combination) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            mm_opts o = {ta, tb};
            xa_tensor *a = ta ? rand_tensor(ctx, 2, 5, 7, 0) : rand_tensor(ctx, 2, 7, 5, 0);
            xa_tensor *b = tb ? rand_tensor(ctx, 2, 3, 5, 0) : rand_tensor(ctx, 2, 5, 3, 0);
            CHECK("matmul", f_matmul, &o, a, b);
        }
}
Test(grad, matmul_with_shared_right_operand) {
    mm_opts o = {false, true};
    CHECK("matmul", f_matmul, &o, rand_tensor(ctx, 3, 4, 6, 0), rand_tensor(ctx, 5, 6, 0, 0));
    // b's gradient sums over the batch for every transpose combination
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            mm_opts ot = {ta, tb};
            xa_tensor *a = ta ? rand_tensor(ctx, 3, 6, 4, 0) : rand_tensor(ctx, 3, 4, 6, 0);
            xa_tensor *b = tb ? rand_tensor(ctx, 5, 6, 0, 0) : rand_tensor(ctx, 6, 5, 0, 0);
            CHECK("matmul", f_matmul, &ot, a, b);
        }
}

static xa_tensor *f_add(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_add(c, in[0], in[1]); }
static xa_tensor *f_sub(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_sub(c, in[0], in[1]); }
static xa_tensor *f_mul(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_mul(c, in[0], in[1]); }
static xa_tensor *f_scale(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_scale(c, in[0], -1.7f); }
static xa_tensor *f_bias(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_add_bias(c, in[0], in[1]); }
static xa_tensor *f_mulrow(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_mul_row(c, in[0], in[1]); }
Test(grad, add_sub_mul_scale) {
    CHECK("default", f_add, NULL, rand_tensor(ctx, 3, 5, 0, 0), rand_tensor(ctx, 3, 5, 0, 0));
    CHECK("default", f_sub, NULL, rand_tensor(ctx, 3, 5, 0, 0), rand_tensor(ctx, 3, 5, 0, 0));
    CHECK("default", f_mul, NULL, rand_tensor(ctx, 3, 5, 0, 0), rand_tensor(ctx, 3, 5, 0, 0));
    CHECK("default", f_scale, NULL, rand_tensor(ctx, 2, 3, 5, 0));
}
Test(grad, row_broadcast_bias_and_gate) {
    CHECK("default", f_bias, NULL, rand_tensor(ctx, 2, 3, 7, 0), rand_tensor(ctx, 7, 0, 0, 0));
    CHECK("default", f_mulrow, NULL, rand_tensor(ctx, 2, 3, 7, 0), rand_tensor(ctx, 7, 0, 0, 0));
}

static xa_tensor *f_act(xa_ctx *c, xa_tensor **in, void *u) { return xa_activation(c, in[0], u); }
Test(grad, activations) {
    const char *names[] = {"gelu", "gelu_new", "quick_gelu", "tanh", "sigmoid", "relu"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        xa_tensor *x = rand_tensor(ctx, 4, 9, 0, 0);
        for (int64_t j = 0; j < x->numel; j++) // keep relu away from its kink
            if (fabsf(x->data[j]) < 0.05f)
                x->data[j] = 0.3f;
        CHECK("gelu", f_act, (void *)names[i], x);
    }
}

static xa_tensor *f_dropout(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_dropout(c, in[0], 0.3f); }
Test(grad, dropout_with_a_fixed_seed) {
    xa_set_training(ctx, true);
    CHECK("default", f_dropout, NULL, rand_tensor(ctx, 5, 11, 0, 0));
}

static xa_tensor *f_ln(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_layernorm(c, in[0], in[1], in[2], 1e-5f); }
Test(grad, layernorm) {
    CHECK("layernorm", f_ln, NULL, rand_tensor(ctx, 2, 3, 13, 0), rand_tensor(ctx, 13, 0, 0, 0),
          rand_tensor(ctx, 13, 0, 0, 0));
}

static xa_tensor *f_softmax(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_softmax(c, in[0]); }
Test(grad, softmax) { CHECK("softmax", f_softmax, NULL, rand_tensor(ctx, 3, 7, 0, 0)); }

typedef struct { xa_attn_opts o; } attn_user;
static xa_tensor *f_attn(xa_ctx *c, xa_tensor **in, void *u) {
    return xa_attention(c, in[0], in[1], in[2], &((attn_user *)u)->o);
}
Test(grad, self_attention_with_padding_mask) {
    float mask[2 * 5] = {1, 1, 1, 0, 0, 1, 1, 1, 1, 1};
    attn_user u = {{.heads = 2, .key_mask = mask}};
    CHECK("attention", f_attn, &u, rand_tensor(ctx, 2, 5, 6, 0), rand_tensor(ctx, 2, 5, 6, 0),
          rand_tensor(ctx, 2, 5, 6, 0));
}
Test(grad, causal_attention) {
    attn_user u = {{.heads = 3, .causal = true}};
    CHECK("attention", f_attn, &u, rand_tensor(ctx, 2, 4, 6, 0), rand_tensor(ctx, 2, 4, 6, 0),
          rand_tensor(ctx, 2, 4, 6, 0));
}
Test(grad, cross_attention_with_other_length_and_value_width) {
    float mask[2 * 7] = {1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0};
    attn_user u = {{.heads = 2, .key_mask = mask}};
    CHECK("attention", f_attn, &u, rand_tensor(ctx, 2, 3, 8, 0), rand_tensor(ctx, 2, 7, 8, 0),
          rand_tensor(ctx, 2, 7, 10, 0));
}
Test(grad, attention_with_dropout) {
    xa_set_training(ctx, true);
    attn_user u = {{.heads = 2, .dropout = 0.25f}};
    CHECK("attention", f_attn, &u, rand_tensor(ctx, 1, 4, 4, 0), rand_tensor(ctx, 1, 5, 4, 0),
          rand_tensor(ctx, 1, 5, 4, 0));
}

static int32_t emb_ids[6] = {3, 0, 3, 5, 1, 1};
static xa_tensor *f_emb(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_embedding(c, in[0], emb_ids, 2, 3); }
Test(grad, embedding_scatters_into_a_trainable_table) {
    CHECK("default", f_emb, NULL, rand_tensor(ctx, 6, 4, 0, 0));
}

static xa_tensor *f_reshape(xa_ctx *c, xa_tensor **in, void *u) {
    (void)u;
    int64_t s[2] = {6, 5};
    return xa_mul(c, xa_reshape(c, in[0], 2, s), xa_reshape(c, in[0], 2, s));
}
static xa_tensor *f_concat(xa_ctx *c, xa_tensor **in, void *u) { return xa_concat(c, in[0], in[1], *(int *)u); }
static xa_tensor *f_slice(xa_ctx *c, xa_tensor **in, void *u) { return xa_slice(c, in[0], *(int *)u, 1, 2); }
static xa_tensor *f_heads(xa_ctx *c, xa_tensor **in, void *u) {
    (void)u;
    xa_tensor *s = xa_heads_split(c, in[0], 3);
    return xa_heads_merge(c, xa_mul(c, s, s));
}
Test(grad, reshape_concat_slice_heads) {
    CHECK("default", f_reshape, NULL, rand_tensor(ctx, 2, 3, 5, 0));
    for (int dim = 0; dim < 3; dim++) {
        int d = dim;
        xa_tensor *a = rand_tensor(ctx, 2, 3, 4, 0);
        int64_t bs[3] = {2, 3, 4};
        bs[dim] = 2;
        xa_tensor *b = xa_tensor_new(ctx, 3, bs);
        fill_normal(ctx, b, 1.0f);
        CHECK("default", f_concat, &d, a, b);
        CHECK("default", f_slice, &d, rand_tensor(ctx, 3, 4, 5, 0));
    }
    CHECK("default", f_heads, NULL, rand_tensor(ctx, 2, 4, 6, 0));
}

static xa_tensor *f_first(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_pool_first(c, in[0]); }
static xa_tensor *f_mean(xa_ctx *c, xa_tensor **in, void *u) { return xa_pool_mean(c, in[0], u); }
static xa_tensor *f_gather(xa_ctx *c, xa_tensor **in, void *u) { return xa_pool_gather(c, in[0], u); }
Test(grad, pooling_first_mean_gather) {
    float mask[3 * 4] = {1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0};
    int64_t idx[3] = {3, 0, 2};
    CHECK("default", f_first, NULL, rand_tensor(ctx, 3, 4, 5, 0));
    CHECK("default", f_mean, mask, rand_tensor(ctx, 3, 4, 5, 0));
    CHECK("default", f_gather, idx, rand_tensor(ctx, 3, 4, 5, 0));
}

static xa_tensor *f_sum(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_scale(c, xa_sum(c, in[0]), 0.3f); }
static xa_tensor *f_meanr(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_mean(c, in[0]); }
static int32_t ce_t[5] = {2, -100, 0, 6, 3};
static xa_tensor *f_ce(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_cross_entropy(c, in[0], ce_t, -100); }
static xa_tensor *f_mse(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_mse(c, in[0], in[1]); }
static xa_tensor *f_cos(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_cosine_loss(c, in[0], in[1]); }
static xa_tensor *f_kl(xa_ctx *c, xa_tensor **in, void *u) { (void)u; return xa_kl_div(c, in[0], in[1], 2.0f); }
Test(grad, reductions_and_losses) {
    CHECK("default", f_sum, NULL, rand_tensor(ctx, 3, 4, 0, 0));
    CHECK("default", f_meanr, NULL, rand_tensor(ctx, 3, 4, 0, 0));
    CHECK("cross_entropy", f_ce, NULL, rand_tensor(ctx, 5, 7, 0, 0));
    CHECK("default", f_mse, NULL, rand_tensor(ctx, 4, 3, 0, 0), rand_tensor(ctx, 4, 3, 0, 0));
    CHECK("cosine_loss", f_cos, NULL, rand_tensor(ctx, 4, 6, 0, 0), rand_tensor(ctx, 4, 6, 0, 0));
    CHECK("kl_div", f_kl, NULL, rand_tensor(ctx, 3, 5, 0, 0), rand_tensor(ctx, 3, 5, 0, 0));
}

// A small transformer block composed from the ops: the gradient flows through everything.
static xa_tensor *f_block(xa_ctx *c, xa_tensor **in, void *u) {
    (void)u;
    xa_tensor *x = in[0];
    xa_attn_opts o = {.heads = 2};
    xa_tensor *q = xa_linear(c, x, in[1], NULL), *k = xa_linear(c, x, in[2], NULL);
    xa_tensor *a = xa_attention(c, q, k, k, &o);
    return xa_gelu(c, xa_layernorm(c, xa_add(c, x, a), in[3], in[3], 1e-5f));
}
Test(grad, composed_block) {
    CHECK("encoder", f_block, NULL, rand_tensor(ctx, 2, 3, 4, 0), rand_tensor(ctx, 4, 4, 0, 0),
          rand_tensor(ctx, 4, 4, 0, 0), rand_tensor(ctx, 4, 0, 0, 0));
}
