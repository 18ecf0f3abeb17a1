// The tape records only what needs a gradient: frozen inputs record nothing and get no
// gradient buffers; recording can be switched off; the arena is reused across steps.
#include <criterion/criterion.h>
#include <string.h>

#include "gradcheck.h"
#include "internal.h" // xa_made_begin / xa_made_end

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

// A post-LN block in miniature: x (trainable) -> frozen linear -> dropout -> + x -> layer norm
// -> gelu. Backward reads the sum (layer norm's input) and the norm's output (gelu's input),
// never the linear's or the dropout's output: dropping those changes no gradient, and their
// buffers serve the next allocation of the same size. A pinned tensor is never dropped.
static void mini_block(bool drop, float *grad_out, bool pin_linear) {
    xa_arena_reset(ctx);
    xa_ctx_seed(ctx, 5);
    xa_set_training(ctx, true);
    xa_tensor *x = rand_tensor(ctx, 6, 16, 0, 0), *w = rand_tensor(ctx, 16, 16, 0, 0);
    xa_tensor *g = xa_tensor_new_nd(ctx, 16, 0, 0, 0), *b = xa_tensor_new_nd(ctx, 16, 0, 0, 0);
    for (int i = 0; i < 16; i++)
        g->data[i] = 1.0f, b->data[i] = 0.0f;
    x->flags |= XA_TENSOR_TRAINABLE;
    size_t since = xa_tape_count(ctx, NULL);
    xa_tensor *lin = xa_linear(ctx, x, w, NULL);
    if (pin_linear)
        lin->flags |= XA_TENSOR_PINNED;
    xa_tensor *dr = xa_dropout(ctx, lin, 0.25f);
    xa_tensor *sum = xa_add(ctx, dr, x);
    xa_tensor *ln = xa_layernorm(ctx, sum, g, b, 1e-5f);
    xa_tensor *y = xa_gelu(ctx, ln);
    cr_assert(y);
    float *lin_buf = lin->data, *dr_buf = dr->data;
    if (drop) {
        xa_tape_drop_unread(ctx, since, y);
        cr_expect_eq(lin->data == NULL, !pin_linear, "the frozen linear's output is dropped unless pinned");
        cr_expect_null(dr->data, "the dropout's output is dropped");
        cr_expect_not_null(sum->data, "layer norm reads its input");
        cr_expect_not_null(ln->data, "gelu reads its input");
        cr_expect_not_null(y->data, "the kept output stays");
        xa_tensor *again = xa_tensor_arena(ctx, 2, (int64_t[]){6, 16}, false);
        cr_assert(again);
        cr_expect(again->data == dr_buf || (!pin_linear && again->data == lin_buf),
                  "a dropped buffer is reused");
    }
    cr_assert_eq(xa_backward(ctx, xa_sum(ctx, y)), XA_OK);
    memcpy(grad_out, x->grad, 6 * 16 * sizeof(float));
    xa_tensor_release(x), xa_tensor_release(w), xa_tensor_release(g), xa_tensor_release(b);
}

Test(tape, dropping_what_backward_never_reads_changes_no_gradient) {
    float kept[96], dropped[96], pinned[96];
    mini_block(false, kept, false);
    mini_block(true, dropped, false);
    mini_block(true, pinned, true);
    for (int i = 0; i < 96; i++) {
        cr_expect_eq(dropped[i], kept[i], "element %d", i);
        cr_expect_eq(pinned[i], kept[i], "element %d", i);
    }
}

// Without gradients nothing records, so a block's intermediates are found by noting the arena
// tensors made while it runs: at its end those nobody keeps give their buffers back. Kept: the
// output, what an adapter hook saw or made (pinned), and the base of a view (the view reads it).
Test(tape, a_forward_without_gradients_gives_back_what_nobody_keeps) {
    xa_arena_reset(ctx);
    xa_set_grad_enabled(ctx, false);
    xa_tensor *x = rand_tensor(ctx, 6, 16, 0, 0), *w = rand_tensor(ctx, 16, 16, 0, 0);
    xa_made_mark mark = xa_made_begin(ctx);
    xa_tensor *lin = xa_linear(ctx, x, w, NULL);
    xa_tensor *seen = xa_gelu(ctx, lin);
    seen->flags |= XA_TENSOR_PINNED; // as call_hook marks what it hands a hook
    xa_tensor *base = xa_tanh(ctx, lin);
    xa_tensor *view = xa_reshape(ctx, base, 1, (int64_t[]){96});
    xa_tensor *sum = xa_add(ctx, seen, base);
    xa_tensor *y = xa_gelu(ctx, sum);
    cr_assert(y && view);
    float expect[96], *lin_buf = lin->data, *sum_buf = sum->data;
    memcpy(expect, y->data, sizeof expect);
    xa_made_end(ctx, mark, y);
    cr_expect_null(lin->data, "an intermediate nobody keeps is given back");
    cr_expect_null(sum->data, "an intermediate nobody keeps is given back");
    cr_expect_not_null(seen->data, "what a hook saw stays");
    cr_expect_not_null(base->data, "the base of a view stays");
    cr_expect_eq(view->data, base->data);
    cr_expect_eq(memcmp(y->data, expect, sizeof expect), 0, "the output stays as it was");
    xa_tensor *again = xa_tensor_arena(ctx, 2, (int64_t[]){6, 16}, false);
    cr_assert(again);
    cr_expect(again->data == lin_buf || again->data == sum_buf, "a given-back buffer is reused");
    xa_set_grad_enabled(ctx, true);
    xa_tensor_release(x), xa_tensor_release(w);
}

// A rewind inside an open mark frees noted tensors' memory wholesale: nothing is given back then
// (their structs may be gone), and an inner mark leaves the outer one its entries.
Test(tape, given_back_buffers_survive_nesting_and_rewinds) {
    xa_arena_reset(ctx);
    xa_set_grad_enabled(ctx, false);
    xa_tensor *x = rand_tensor(ctx, 4, 8, 0, 0);
    xa_made_mark outer = xa_made_begin(ctx);
    xa_tensor *a = xa_gelu(ctx, x);
    xa_made_mark inner = xa_made_begin(ctx);
    xa_tensor *b = xa_gelu(ctx, a), *c = xa_gelu(ctx, b);
    xa_made_end(ctx, inner, c);
    cr_expect_null(b->data);
    cr_expect_not_null(a->data, "made before the inner mark: not the inner one's to give back");
    xa_tensor *d = xa_gelu(ctx, c);
    xa_arena_mark m = xa_arena_mark_get(ctx);
    cr_assert(xa_gelu(ctx, d));
    xa_arena_rewind(ctx, m);
    xa_made_end(ctx, outer, d);
    cr_expect_not_null(a->data, "after a rewind nothing is given back");
    cr_expect_not_null(c->data);
    xa_tensor *e = xa_gelu(ctx, x); // noting is off again: nothing to give back, nothing noted
    cr_expect_not_null(e->data);
    xa_set_grad_enabled(ctx, true);
    xa_tensor_release(x);
}
