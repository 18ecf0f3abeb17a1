// Central-difference gradient checks and the tolerance table: the only place tolerances live.
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *op;
    float eps, atol, rtol;
} tolerances[] = {
    // op            eps    atol   rtol   (float32 forward; loss accumulated in double)
    {"default",      1e-2f, 2e-3f, 2e-2f},
    {"linear",       1e-2f, 2e-3f, 1e-2f},
    {"matmul",       1e-2f, 2e-3f, 1e-2f},
    {"layernorm",    1e-2f, 4e-3f, 3e-2f},
    {"softmax",      1e-2f, 2e-3f, 3e-2f},
    {"attention",    1e-2f, 3e-3f, 3e-2f},
    {"gelu",         1e-2f, 2e-3f, 2e-2f},
    {"cross_entropy", 1e-2f, 1e-3f, 2e-2f},
    {"kl_div",       1e-2f, 1e-3f, 3e-2f},
    {"cosine_loss",  1e-2f, 1e-3f, 3e-2f},
    {"nst",          1e-2f, 2e-3f, 3e-2f},
    {"ntxent",       1e-2f, 2e-3f, 3e-2f},
    {"adapter",      1e-2f, 4e-3f, 4e-2f},
    {"encoder",      1e-2f, 5e-3f, 5e-2f},
};

static void tol_for(const char *op, float *eps, float *atol, float *rtol) {
    size_t pick = 0;
    for (size_t i = 0; i < sizeof tolerances / sizeof *tolerances; i++)
        if (strcmp(tolerances[i].op, op) == 0)
            pick = i;
    *eps = tolerances[pick].eps, *atol = tolerances[pick].atol, *rtol = tolerances[pick].rtol;
}

void fill_normal(xa_ctx *ctx, xa_tensor *t, float scale) {
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = scale * xa_rng_normal(ctx);
}

void fill_uniform(xa_ctx *ctx, xa_tensor *t, float lo, float hi) {
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = lo + (hi - lo) * xa_rng_uniform(ctx);
}

xa_tensor *rand_tensor(xa_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    xa_tensor *t = xa_tensor_new_nd(ctx, d0, d1, d2, d3);
    if (t)
        fill_normal(ctx, t, 1.0f);
    return t;
}

// loss = sum(out * R); R is regenerated identically from `rseed` every time.
static double eval_loss(xa_ctx *ctx, gc_fn f, xa_tensor **in, void *user, const uint64_t rng[4],
                        bool backward, bool *ok) {
    xa_arena_reset(ctx);
    xa_rng_set_state(ctx, rng); // same dropout masks in every evaluation
    xa_tensor *out = f(ctx, in, user);
    if (!out) {
        *ok = false;
        return 0;
    }
    xa_tensor *r = xa_tensor_arena(ctx, out->ndim, out->shape, false);
    uint64_t saved[4];
    xa_rng_state(ctx, saved);
    xa_ctx_seed(ctx, 12345);
    for (int64_t i = 0; i < r->numel; i++)
        r->data[i] = xa_rng_uniform(ctx) - 0.5f;
    xa_rng_set_state(ctx, saved);
    xa_tensor *loss = xa_sum(ctx, xa_mul(ctx, out, r));
    if (!loss) {
        *ok = false;
        return 0;
    }
    if (backward && xa_backward(ctx, loss) != XA_OK)
        *ok = false;
    return loss->data[0];
}

bool gradcheck(xa_ctx *ctx, const char *op, gc_fn f, xa_tensor **in, int nin, void *user,
               gc_report *rep) {
    float eps, atol, rtol;
    tol_for(op, &eps, &atol, &rtol);
    memset(rep, 0, sizeof *rep);
    uint64_t rng[4];
    xa_rng_state(ctx, rng);
    for (int i = 0; i < nin; i++) {
        in[i]->flags |= XA_TENSOR_TRAINABLE;
        if (in[i]->grad)
            memset(in[i]->grad, 0, (size_t)in[i]->numel * sizeof(float));
    }
    bool ok = true;
    eval_loss(ctx, f, in, user, rng, true, &ok);
    if (!ok) {
        snprintf(rep->first_failure, sizeof rep->first_failure, "forward/backward failed: %s",
                 xa_errmsg(ctx));
        return false;
    }
    bool was = xa_set_grad_enabled(ctx, false);
    for (int i = 0; i < nin; i++) {
        xa_tensor *t = in[i];
        if (!t->grad) {
            snprintf(rep->first_failure, sizeof rep->first_failure,
                     "input %d received no gradient", i);
            rep->failed++;
            continue;
        }
        int64_t stride = t->numel > 96 ? t->numel / 96 + 1 : 1; // sample large inputs
        for (int64_t j = 0; j < t->numel; j += stride) {
            float keep = t->data[j];
            t->data[j] = keep + eps;
            double lp = eval_loss(ctx, f, in, user, rng, false, &ok);
            t->data[j] = keep - eps;
            double lm = eval_loss(ctx, f, in, user, rng, false, &ok);
            t->data[j] = keep;
            double num = (lp - lm) / (2.0 * eps), ana = t->grad[j];
            double err = fabs(num - ana);
            rep->checked++;
            if (err > rep->max_abs_err)
                rep->max_abs_err = err;
            double rel = err / fmax(fabs(num), 1e-6);
            if (rel > rep->max_rel_err && fabs(num) > atol)
                rep->max_rel_err = rel;
            if (err > atol + rtol * fabs(num)) {
                if (!rep->failed)
                    snprintf(rep->first_failure, sizeof rep->first_failure,
                             "%s: input %d element %lld: analytic %.6g numeric %.6g", op, i,
                             (long long)j, ana, num);
                rep->failed++;
            }
        }
    }
    xa_set_grad_enabled(ctx, was);
    xa_arena_reset(ctx);
    return ok && rep->failed == 0;
}
