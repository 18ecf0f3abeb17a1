// Shared by the ops_*.c files: input checks (sticky NULLs), output allocation, gradient
// pointers that are NULL when an input needs none, and uniform shape-error messages.
#ifndef XADAPT_OPS_COMMON_H
#define XADAPT_OPS_COMMON_H

#include <string.h>

#include "internal.h"
#include "kernels.h"
#include "xadapt/ops.h"

// Gradient buffer of an input, or NULL when it needs none (frozen weights, constant data).
static inline float *grad_of(xa_ctx *ctx, xa_tensor *t) {
    return xa_tensor_needs_grad(t) ? xa_tensor_grad(ctx, t) : NULL;
}

// A gradient an op writes whole: *fresh when newly made (assign, do not accumulate). Never
// fresh when `t` is also another input of the same op (its other gradient would be overwritten).
static inline float *grad_for_write(xa_ctx *ctx, xa_tensor *t, bool shared, bool *fresh) {
    *fresh = false;
    if (!xa_tensor_needs_grad(t))
        return NULL;
    return shared ? xa_tensor_grad(ctx, t) : xa_tensor_grad_fresh(ctx, t, fresh);
}

static inline xa_tensor *out_shaped(xa_ctx *ctx, int ndim, const int64_t *shape) {
    return xa_tensor_arena(ctx, ndim, shape, false);
}

static inline xa_tensor *out_like(xa_ctx *ctx, const xa_tensor *x) {
    return xa_tensor_arena(ctx, x->ndim, x->shape, false);
}

static inline xa_tensor *out_scalar(xa_ctx *ctx) {
    int64_t one = 1;
    return xa_tensor_arena(ctx, 1, &one, false);
}

// Record when needed; returns `out` (or NULL when the arena is exhausted).
static inline xa_tensor *record(xa_ctx *ctx, const char *op, xa_backward_fn bw, xa_tensor *out,
                                int nin, xa_tensor *const *in, xa_node **node) {
    if (node)
        *node = NULL;
    if (!out || !xa_tape_wants(ctx, nin, in))
        return out;
    xa_node *n = xa_tape_record(ctx, op, bw, out, nin, in);
    if (node)
        *node = n;
    return n ? out : NULL;
}

xa_tensor *xa_op_shape_error(xa_ctx *ctx, const char *op, const char *what, const xa_tensor *a,
                             const xa_tensor *b);
void *xa_op_copy(xa_ctx *ctx, const void *src, size_t bytes); // into the arena

#endif
