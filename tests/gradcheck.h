// Gradient checking by central differences, with every op's tolerances in one table
// (gradcheck.c). A check builds loss = sum(f(inputs) * R) for a fixed random R, compares the
// tape's gradients with (L(x+eps) - L(x-eps)) / 2eps for every input element (or a sample).
#ifndef XADAPT_TEST_GRADCHECK_H
#define XADAPT_TEST_GRADCHECK_H

#include <stdbool.h>

#include "xadapt/ops.h"

typedef xa_tensor *(*gc_fn)(xa_ctx *ctx, xa_tensor **in, void *user);

typedef struct {
    double max_abs_err, max_rel_err;
    int checked, failed;
    char first_failure[256];
} gc_report;

// Inputs are heap tensors; each is made trainable for the check. Returns true when every
// compared element is within the op's tolerance. `op` names the tolerance row.
bool gradcheck(xa_ctx *ctx, const char *op, gc_fn f, xa_tensor **in, int nin, void *user,
               gc_report *rep);

// Fill with N(0, scale) from the context's RNG / with uniform [lo, hi).
void fill_normal(xa_ctx *ctx, xa_tensor *t, float scale);
void fill_uniform(xa_ctx *ctx, xa_tensor *t, float lo, float hi);
xa_tensor *rand_tensor(xa_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3);

#endif
