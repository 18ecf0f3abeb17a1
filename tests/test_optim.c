// Parameter slabs and optimizers: AdamW and SGD against hand-computed values, clipping,
// accumulation, weight-decay exclusion, frozen parameters, and a small model that learns.
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "gradcheck.h"
#include "xadapt/optim.h"

static xa_ctx *ctx;
static xa_params *ps;
static void setup(void) { ctx = xa_ctx_new(); ps = xa_params_new(ctx); }
static void teardown(void) { xa_params_free(ps); xa_ctx_free(ctx); }
TestSuite(optim, .init = setup, .fini = teardown);

// A gradient written by hand, as backward would write it (which also marks the parameter).
static void grad(xa_tensor *t, float g) {
    t->grad[0] = g;
    t->flags |= XA_TENSOR_GRADED;
}

static xa_tensor *scalar_param(const char *name, int ndim, float value) {
    int64_t shape[2] = {1, 1};
    xa_tensor *t = xa_params_add(ps, name, ndim, shape, (xa_init){XA_INIT_ZERO, 0});
    t->data[0] = value;
    return t;
}

Test(optim, adamw_matches_hand_computed_steps) {
    xa_tensor *w = scalar_param("w", 2, 1.0f);   // 2-D: decays
    xa_tensor *b = scalar_param("b", 1, 2.0f);   // 1-D (bias): excluded from decay
    cr_assert(xa_params_decays(ps, 0) && !xa_params_decays(ps, 1));
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 0.1f,
                                                            .weight_decay = 0.01f});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(w, 0.5f), grad(b, -0.25f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(w->data[0], 0.899f, 1e-6);  // 1*(1-0.1*0.01) - 0.1*0.5/0.5
    cr_expect_float_eq(b->data[0], 2.1f, 1e-6);    // no decay, - 0.1*(-0.25)/0.25
    cr_expect_eq(w->grad[0], 0.0f, "step zeroes gradients");
    grad(w, 0.5f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(w->data[0], 0.798101f, 1e-6); // 0.899*0.999 - 0.1
    cr_expect_eq(xa_optim_steps(opt), 2);
    xa_optim_free(opt);
}

// BertAdam: the same update without bias correction. Step 1: m = 0.1 g, v = 0.001 g^2, so
// w -= lr * 0.1 g / (sqrt(0.001) |g| + eps) = lr * 0.1 / 0.0316228 = 0.316228 lr for g > 0.
Test(optim, adamw_without_bias_correction_is_bertadam) {
    xa_tensor *w = scalar_param("w", 2, 1.0f);
    xa_optim *opt = xa_optim_new(
        ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 0.1f, .no_bias_correction = true});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(w, 0.5f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(w->data[0], 1.0f - 0.1f * 0.1f / sqrtf(0.001f), 1e-5, "w = %.7f",
                       (double)w->data[0]);
    xa_optim_free(opt);
}

Test(optim, sgd_with_momentum_and_nesterov) {
    xa_tensor *w = scalar_param("w", 2, 1.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_SGD, .lr = 0.1f,
                                                            .momentum = 0.9f});
    xa_params_pack(ps);
    grad(w, 1.0f);
    xa_optim_step(opt, -1, 1.0f); // buf = 1, w = 1 - 0.1
    cr_expect_float_eq(w->data[0], 0.9f, 1e-6);
    grad(w, 1.0f);
    xa_optim_step(opt, -1, 1.0f); // buf = 1.9, w = 0.9 - 0.19
    cr_expect_float_eq(w->data[0], 0.71f, 1e-6);
    xa_optim_free(opt);
}

Test(optim, clipping_scales_to_the_global_norm) {
    xa_tensor *a = scalar_param("a", 2, 0.0f), *b = scalar_param("b", 2, 0.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_SGD, .lr = 1.0f,
                                                            .clip_norm = 1.0f});
    xa_params_pack(ps);
    grad(a, 3.0f), grad(b, 4.0f); // norm 5 -> scaled by 1/5
    xa_optim_step(opt, -1, 1.0f);
    cr_expect_float_eq(xa_optim_grad_norm(opt), 5.0f, 1e-6);
    cr_expect_float_eq(a->data[0], -0.6f, 1e-5);
    cr_expect_float_eq(b->data[0], -0.8f, 1e-5);
    xa_optim_free(opt);
}

Test(optim, a_gradient_that_is_not_finite_changes_nothing) {
    xa_tensor *a = scalar_param("a", 2, 1.0f), *b = scalar_param("b", 2, 2.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 0.1f});
    xa_params_pack(ps);
    grad(a, NAN), grad(b, 1.0f);
    cr_expect_eq(xa_optim_step(opt, -1, 1.0f), XA_ERANGE);
    cr_expect(strstr(xa_errmsg(ctx), "not finite") != NULL, "%s", xa_errmsg(ctx));
    cr_expect(isnan(xa_optim_grad_norm(opt)));
    cr_expect_eq(a->data[0], 1.0f);
    cr_expect_eq(b->data[0], 2.0f);
    cr_expect_eq(xa_optim_steps(opt), 0);
    xa_optim_free(opt);
}

// The clip set after creation (a trainer's per-run clip) acts as the option would.
Test(optim, set_clip_clips_from_the_next_step) {
    xa_tensor *a = scalar_param("a", 2, 0.0f), *b = scalar_param("b", 2, 0.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_SGD, .lr = 1.0f});
    xa_params_pack(ps);
    xa_optim_set_clip(opt, 1.0f);
    grad(a, 3.0f), grad(b, 4.0f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(a->data[0], -0.6f, 1e-5);
    cr_expect_float_eq(b->data[0], -0.8f, 1e-5);
    xa_optim_free(opt);
}

Test(optim, accumulation_with_grad_scale_equals_one_big_batch) {
    xa_tensor *a = scalar_param("a", 2, 1.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_SGD, .lr = 1.0f});
    xa_params_pack(ps);
    grad(a, 0.2f); // two micro-batches accumulate
    a->grad[0] += 0.4f;
    xa_optim_step(opt, -1, 0.5f); // mean of the two
    cr_expect_float_eq(a->data[0], 0.7f, 1e-6);
    xa_optim_free(opt);
}

Test(optim, frozen_parameters_keep_their_values) {
    xa_tensor *a = scalar_param("a", 2, 1.0f), *b = scalar_param("b", 2, 1.0f);
    xa_params_set_trainable(ps, 1, false);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 0.1f});
    xa_params_pack(ps);
    grad(a, 1.0f), grad(b, 1.0f);
    xa_optim_step(opt, -1, 1.0f);
    cr_expect_neq(a->data[0], 1.0f);
    cr_expect_eq(b->data[0], 1.0f);
    cr_expect_eq(xa_params_numel(ps, true), 1);
    xa_optim_free(opt);
}

// PyTorch skips a parameter whose gradient is None: a switched-off adapter or head keeps its
// values (no weight decay, no leftover momentum), and its first real step is its step 1.
Test(optim, parameters_without_a_gradient_are_not_touched) {
    xa_tensor *a = scalar_param("a", 2, 1.0f), *b = scalar_param("b", 2, 1.0f);
    xa_optim *opt = xa_optim_new(
        ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 0.1f, .weight_decay = 0.5f});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(a, 1.0f), grad(b, 1.0f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK); // both move; b has momentum now
    float b_after = b->data[0];
    cr_expect_neq(b_after, 1.0f);
    for (int i = 0; i < 3; i++) { // b switched off: backward never reaches it
        grad(a, 1.0f);
        cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    }
    cr_expect_eq(b->data[0], b_after, "b drifted to %.7f", (double)b->data[0]);
    cr_expect_eq(xa_optim_steps(opt), 4);
    size_t n;
    const int64_t *steps = xa_optim_param_steps(opt, &n);
    cr_assert(steps && n == 2);
    cr_expect(steps[0] == 4 && steps[1] == 1);

    // c joins at step 5: bias-corrected as a first step, w -= lr * (1 + wd): 1 - 0.1 - 0.05
    xa_tensor *c = scalar_param("c", 2, 1.0f);
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(a, 1.0f), grad(c, 2.0f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(c->data[0], 1.0f * (1.0f - 0.1f * 0.5f) - 0.1f, 1e-6, "c = %.7f",
                       (double)c->data[0]);
    xa_optim_free(opt);
}

// Frozen between its backward and the step, a parameter is not updated and its gradient is
// dropped: unfrozen again, it does not carry that gradient into a later step (nor into the
// clipping norm).
Test(optim, a_parameter_frozen_before_the_step_drops_its_gradient) {
    xa_tensor *a = scalar_param("a", 2, 1.0f), *b = scalar_param("b", 2, 1.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 0.1f});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(a, 1.0f), grad(b, 3.0f);
    xa_params_set_trainable(ps, 1, false);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(xa_optim_grad_norm(opt), 1.0f, 1e-6, "b's gradient is not in the norm");
    cr_expect_eq(b->data[0], 1.0f);
    cr_expect_eq(b->grad[0], 0.0f, "dropped");
    xa_params_set_trainable(ps, 1, true);
    grad(a, 1.0f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_eq(b->data[0], 1.0f, "no stale gradient moved it");
    xa_optim_free(opt);
}

Test(optim, backward_marks_the_parameters_it_reaches) {
    xa_tensor *w = scalar_param("w", 2, 2.0f), *unused = scalar_param("unused", 2, 3.0f);
    xa_optim *opt = xa_optim_new(
        ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_SGD, .lr = 0.5f, .weight_decay = 0.1f});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    int64_t shape[2] = {1, 1};
    xa_tensor *x = xa_tensor_arena(ctx, 2, shape, true);
    x->data[0] = 1.0f;
    xa_tensor *loss = xa_sum(ctx, xa_matmul(ctx, x, w, false, false));
    cr_assert_eq(xa_backward(ctx, loss), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect(w->flags & XA_TENSOR_GRADED);
    cr_expect(!(unused->flags & XA_TENSOR_GRADED));
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(w->data[0], 2.0f - 0.5f * (1.0f + 0.1f * 2.0f), 1e-6);
    cr_expect_eq(unused->data[0], 3.0f, "no decay without a gradient");
    cr_expect(!(w->flags & XA_TENSOR_GRADED), "the step clears the mark");
    xa_optim_free(opt);
}

// 0 is a real beta (beta1 = 0: RMSprop-like); only an all-zero struct means "defaults".
Test(optim, a_zero_beta_is_kept) {
    xa_tensor *w = scalar_param("w", 2, 1.0f);
    xa_optim *opt = xa_optim_new(
        ctx, ps,
        &(xa_optim_opts){
            .kind = XA_OPTIM_ADAMW, .lr = 0.1f, .beta1 = 0.0f, .beta2 = 0.5f, .eps = 1e-8f});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(w, 1.0f);
    xa_optim_step(opt, -1, 1.0f); // m = 1, v = 0.5 -> v_hat 1: w -= 0.1
    grad(w, -1.0f);
    xa_optim_step(opt, -1, 1.0f); // m = -1 (beta1 0), v = 1 -> v_hat 1/0.75*0.75 = 1: w += 0.1
    cr_expect_float_eq(w->data[0], 1.0f, 1e-6, "w = %.7f (beta1 0.9 would give %.7f)",
                       (double)w->data[0], 0.9 + 0.1 * 0.0526);
    xa_optim_free(opt);
}

Test(optim, packing_keeps_values_and_is_contiguous) {
    int64_t s1[2] = {3, 4}, s2[1] = {5};
    xa_tensor *a = xa_params_add(ps, "a", 2, s1, (xa_init){XA_INIT_NORMAL, 1.0f});
    xa_tensor *b = xa_params_add(ps, "b", 1, s2, (xa_init){XA_INIT_ONE, 0});
    float a0 = a->data[7];
    cr_expect_null(xa_params_add(ps, "a", 1, s2, (xa_init){XA_INIT_ZERO, 0}));
    cr_expect(strstr(xa_errmsg(ctx), "'a' already exists") != NULL);
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    cr_expect_eq(a->data[7], a0);
    cr_expect_eq(b->data, a->data + 12);
    cr_expect_eq(b->grad, a->grad + 12);
    cr_expect_eq(b->data[4], 1.0f);
}

Test(optim, a_two_layer_network_learns_xor) {
    int64_t s1[2] = {16, 2}, s2[1] = {16}, s3[2] = {2, 16}, s4[1] = {2};
    xa_ctx_seed(ctx, 1);
    xa_tensor *w1 = xa_params_add(ps, "w1", 2, s1, (xa_init){XA_INIT_XAVIER, 0});
    xa_tensor *b1 = xa_params_add(ps, "b1", 1, s2, (xa_init){XA_INIT_ZERO, 0});
    xa_tensor *w2 = xa_params_add(ps, "w2", 2, s3, (xa_init){XA_INIT_XAVIER, 0});
    xa_tensor *b2 = xa_params_add(ps, "b2", 1, s4, (xa_init){XA_INIT_ZERO, 0});
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 0.05f});
    int64_t xs[2] = {4, 2};
    xa_tensor *x = xa_tensor_new(ctx, 2, xs);
    float xv[8] = {0, 0, 0, 1, 1, 0, 1, 1};
    for (int i = 0; i < 8; i++)
        x->data[i] = xv[i];
    int32_t y[4] = {0, 1, 1, 0};
    float first = 0, last = 0;
    for (int step = 0; step < 300; step++) {
        xa_arena_reset(ctx);
        xa_tensor *h = xa_tanh(ctx, xa_linear(ctx, x, w1, b1));
        xa_tensor *loss = xa_cross_entropy(ctx, xa_linear(ctx, h, w2, b2), y, -100);
        cr_assert_eq(xa_backward(ctx, loss), XA_OK, "%s", xa_errmsg(ctx));
        cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
        if (step == 0)
            first = loss->data[0];
        last = loss->data[0];
    }
    cr_expect_gt(first, 0.5f);
    cr_expect_lt(last, 0.05f, "loss went from %g to %g", first, last);
    xa_tensor_release(x);
    xa_optim_free(opt);
}

// PyTorch's SGD with weight decay and Nesterov momentum (dampening 0), by hand:
//   g' = g + wd w;  buf = mu buf + g' (buf = g' at step 1);  w -= lr (g' + mu buf)
// w (2-D, decays): step 1 g' = 1.1, buf = 1.1, w = 1 - 0.1 (1.1 + 0.99) = 0.791;
//                  step 2 g' = 1.0791, buf = 2.0691, w = 0.791 - 0.1 (1.0791 + 1.86219) = 0.496871
// b (1-D, no decay): 1 - 0.1 (1 + 0.9) = 0.81, then buf = 1.9: 0.81 - 0.1 (1 + 1.71) = 0.539
Test(optim, sgd_weight_decay_and_nesterov_match_pytorch) {
    xa_tensor *w = scalar_param("w", 2, 1.0f), *b = scalar_param("b", 1, 1.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_SGD, .lr = 0.1f,
                                                            .momentum = 0.9f, .nesterov = true,
                                                            .weight_decay = 0.1f});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(w, 1.0f), grad(b, 1.0f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(w->data[0], 0.791f, 1e-6, "w = %.7f", (double)w->data[0]);
    cr_expect_float_eq(b->data[0], 0.81f, 1e-6, "b = %.7f", (double)b->data[0]);
    grad(w, 1.0f), grad(b, 1.0f);
    cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    cr_expect_float_eq(w->data[0], 0.496871f, 1e-6, "w = %.7f", (double)w->data[0]);
    cr_expect_float_eq(b->data[0], 0.539f, 1e-6, "b = %.7f", (double)b->data[0]);
    xa_optim_free(opt);
}

// Clipping sees the gradient the step applies: grad_scale times the accumulated sum (PyTorch
// clips after the loss was divided by the accumulation count). 6 and 8 summed over two
// micro-batches at scale 0.5 are 3 and 4: norm 5, scaled to norm 1.
Test(optim, clipping_uses_the_norm_of_the_scaled_gradient) {
    xa_tensor *a = scalar_param("a", 2, 0.0f), *b = scalar_param("b", 2, 0.0f);
    xa_optim *opt = xa_optim_new(ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_SGD, .lr = 1.0f,
                                                            .clip_norm = 1.0f});
    cr_assert_eq(xa_params_pack(ps), XA_OK);
    grad(a, 6.0f), grad(b, 8.0f);
    cr_assert_eq(xa_optim_step(opt, -1, 0.5f), XA_OK);
    cr_expect_float_eq(xa_optim_grad_norm(opt), 5.0f, 1e-6);
    cr_expect_float_eq(a->data[0], -0.6f, 1e-5, "a = %.7f", (double)a->data[0]);
    cr_expect_float_eq(b->data[0], -0.8f, 1e-5, "b = %.7f", (double)b->data[0]);
    xa_optim_free(opt);
}
