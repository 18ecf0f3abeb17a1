// The tape records only what needs a gradient: frozen inputs record nothing and get no
// gradient buffers; recording can be switched off; the arena is reused across steps.
#include <criterion/criterion.h>

#include "gradcheck.h"

static xa_ctx *ctx;
static void setup(void) { ctx = xa_ctx_new(); }
static void teardown(void) { xa_ctx_free(ctx); }
TestSuite(tape, .init = setup, .fini = teardown);

Test(tape, ops_on_frozen_inputs_record_nothing) {
    xa_tensor *x = rand_tensor(ctx, 4, 8, 0, 0), *w = rand_tensor(ctx, 8, 8, 0, 0);
    xa_tensor *y = xa_gelu(ctx, xa_linear(ctx, x, w, NULL));
    cr_assert(y);
    cr_expect_eq(xa_tape_count(ctx, NULL), 0);
    cr_expect_eq(xa_backward(ctx, xa_sum(ctx, y)), XA_ESTATE);
    cr_expect(strstr(xa_errmsg(ctx), "does not depend on any trainable parameter") != NULL);
    xa_tensor_release(x), xa_tensor_release(w);
}

Test(tape, frozen_weights_above_a_trainable_input_get_no_gradient) {
    xa_tensor *x = rand_tensor(ctx, 4, 8, 0, 0), *w = rand_tensor(ctx, 8, 8, 0, 0);
    x->flags |= XA_TENSOR_TRAINABLE;
    xa_tensor *loss = xa_sum(ctx, xa_linear(ctx, x, w, NULL));
    cr_expect_eq(xa_tape_count(ctx, "linear"), 1);
    cr_assert_eq(xa_backward(ctx, loss), XA_OK);
    cr_expect_not_null(x->grad);
    cr_expect_null(w->grad, "a frozen weight never gets a gradient buffer");
    xa_tensor_release(x), xa_tensor_release(w);
}

Test(tape, recording_can_be_switched_off) {
    xa_tensor *x = rand_tensor(ctx, 2, 3, 0, 0);
    x->flags |= XA_TENSOR_TRAINABLE;
    bool was = xa_set_grad_enabled(ctx, false);
    cr_expect(was);
    xa_gelu(ctx, x);
    cr_expect_eq(xa_tape_count(ctx, NULL), 0);
    xa_set_grad_enabled(ctx, true);
    xa_gelu(ctx, x);
    cr_expect_eq(xa_tape_count(ctx, NULL), 1);
    xa_tensor_release(x);
}

Test(tape, the_arena_is_reused_across_steps) {
    xa_tensor *x = rand_tensor(ctx, 64, 64, 0, 0);
    x->flags |= XA_TENSOR_TRAINABLE;
    size_t cap = 0;
    for (int step = 0; step < 5; step++) {
        xa_arena_reset(ctx);
        cr_expect_eq(xa_tape_count(ctx, NULL), 0);
        xa_tensor *loss = xa_sum(ctx, xa_gelu(ctx, xa_matmul(ctx, x, x, false, true)));
        cr_assert_eq(xa_backward(ctx, loss), XA_OK);
        if (step == 0)
            cap = xa_arena_capacity(ctx);
        cr_expect_eq(xa_arena_capacity(ctx), cap, "no new memory after the first step");
    }
    xa_tensor_release(x);
}

Test(tape, branches_that_need_no_gradient_are_skipped) {
    xa_tensor *p = rand_tensor(ctx, 3, 3, 0, 0), *c = rand_tensor(ctx, 3, 3, 0, 0);
    p->flags |= XA_TENSOR_TRAINABLE;
    xa_tensor *side = xa_gelu(ctx, c); // constant branch: not recorded
    xa_tensor *loss = xa_sum(ctx, xa_mul(ctx, p, side));
    cr_expect_eq(xa_tape_count(ctx, "gelu"), 0);
    cr_assert_eq(xa_backward(ctx, loss), XA_OK);
    for (int i = 0; i < 9; i++)
        cr_expect_float_eq(p->grad[i], side->data[i], 1e-6);
    xa_tensor_release(p), xa_tensor_release(c);
}
