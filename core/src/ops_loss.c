// Reductions and losses: sum, mean, cross-entropy with ignore index, MSE, cosine, KL with
// temperature; and xa_custom, through which plugins add ops with their own backward.
// Losses return shape (1) and accumulate in double.
#include <math.h>
#include <stdio.h>

#include "ops_common.h"

// --- sum and mean ------------------------------------------------------------------------------

static void sum_bw(xa_ctx *ctx, xa_node *n) {
    float *dx = grad_of(ctx, n->in[0]);
    float g = n->out->grad[0] * n->f[0];
    for (int64_t i = 0; dx && i < n->in[0]->numel; i++)
        dx[i] += g;
}

static xa_tensor *reduce(xa_ctx *ctx, xa_tensor *x, bool mean) {
    if (!x)
        return NULL;
    xa_tensor *out = out_scalar(ctx);
    if (!out)
        return NULL;
    double s = 0;
    for (int64_t i = 0; i < x->numel; i++)
        s += x->data[i];
    float k = mean && x->numel ? 1.0f / (float)x->numel : 1.0f;
    out->data[0] = (float)(s * k);
    xa_node *node;
    out = record(ctx, mean ? "mean" : "sum", sum_bw, out, 1, &x, &node);
    if (node)
        node->f[0] = k;
    return out;
}

xa_tensor *xa_sum(xa_ctx *ctx, xa_tensor *x) { return reduce(ctx, x, false); }
xa_tensor *xa_mean(xa_ctx *ctx, xa_tensor *x) { return reduce(ctx, x, true); }

// --- cross-entropy -------------------------------------------------------------------------

typedef struct {
    int32_t *targets;
    float *probs; // softmax of logits, (N, C)
    int64_t kept;
    int32_t ignore;
} ce_saved;

static void ce_bw(xa_ctx *ctx, xa_node *n) {
    ce_saved *s = n->saved;
    float *dx = grad_of(ctx, n->in[0]);
    if (!dx || s->kept == 0)
        return;
    int64_t N = xa_tensor_rows(n->in[0]), C = xa_tensor_cols(n->in[0]);
    float g = n->out->grad[0] / (float)s->kept;
    for (int64_t i = 0; i < N; i++) {
        if (s->targets[i] == s->ignore)
            continue;
        for (int64_t c = 0; c < C; c++)
            dx[i * C + c] += g * (s->probs[i * C + c] - (c == s->targets[i] ? 1.0f : 0.0f));
    }
}

xa_tensor *xa_cross_entropy(xa_ctx *ctx, xa_tensor *logits, const int32_t *targets,
                            int32_t ignore_index) {
    if (!logits)
        return NULL;
    int64_t N = xa_tensor_rows(logits), C = xa_tensor_cols(logits);
    for (int64_t i = 0; i < N; i++)
        if (targets[i] != ignore_index && (targets[i] < 0 || targets[i] >= C)) {
            xa_errorf(ctx, XA_ERANGE,
                      "cross_entropy: target %d in row %lld is outside 0..%lld (ignore index %d)",
                      targets[i], (long long)i, (long long)C - 1, ignore_index);
            return NULL;
        }
    xa_tensor *out = out_scalar(ctx);
    float *probs = xa_arena_alloc(ctx, (size_t)(N * C) * sizeof(float));
    if (!out || !probs)
        return NULL;
    xa_softmax_forward(probs, logits->data, N, C);
    double loss = 0;
    int64_t kept = 0;
    for (int64_t i = 0; i < N; i++) {
        if (targets[i] == ignore_index)
            continue;
        // log-softmax from the logits directly for precision
        const float *x = logits->data + i * C;
        float mx = x[0];
        for (int64_t c = 1; c < C; c++)
            mx = x[c] > mx ? x[c] : mx;
        double z = 0;
        for (int64_t c = 0; c < C; c++)
            z += exp((double)x[c] - mx);
        loss += log(z) + mx - x[targets[i]];
        kept++;
    }
    out->data[0] = kept ? (float)(loss / (double)kept) : 0.0f;
    xa_node *node;
    out = record(ctx, "cross_entropy", ce_bw, out, 1, &logits, &node);
    if (node) {
        ce_saved *s = xa_arena_alloc(ctx, sizeof *s);
        int32_t *t = xa_op_copy(ctx, targets, (size_t)N * sizeof(int32_t));
        if (!s || !t)
            return NULL;
        *s = (ce_saved){.targets = t, .probs = probs, .kept = kept, .ignore = ignore_index};
        node->saved = s;
    }
    return out;
}

// --- MSE ---------------------------------------------------------------------------------

static void mse_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *a = n->in[0], *b = n->in[1];
    float *da = grad_of(ctx, a), *db = grad_of(ctx, b);
    float g = n->out->grad[0] * 2.0f / (float)a->numel;
    for (int64_t i = 0; i < a->numel; i++) {
        float d = g * (a->data[i] - b->data[i]);
        if (da)
            da[i] += d;
        if (db)
            db[i] -= d;
    }
}

xa_tensor *xa_mse(xa_ctx *ctx, xa_tensor *a, xa_tensor *b) {
    if (!a || !b)
        return NULL;
    if (!xa_shape_equal(a, b))
        return xa_op_shape_error(ctx, "mse", "shapes must be equal", a, b);
    xa_tensor *out = out_scalar(ctx);
    if (!out)
        return NULL;
    double s = 0;
    for (int64_t i = 0; i < a->numel; i++) {
        double d = (double)a->data[i] - b->data[i];
        s += d * d;
    }
    out->data[0] = a->numel ? (float)(s / (double)a->numel) : 0.0f;
    xa_tensor *in[2] = {a, b};
    return record(ctx, "mse", mse_bw, out, 2, in, NULL);
}

// --- cosine ------------------------------------------------------------------------------

#define COS_EPS 1e-8

static void cosine_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *a = n->in[0], *b = n->in[1];
    float *da = grad_of(ctx, a), *db = grad_of(ctx, b);
    int64_t N = xa_tensor_rows(a), C = xa_tensor_cols(a);
    float g = -n->out->grad[0] / (float)N; // d(1 - cos)
    for (int64_t i = 0; i < N; i++) {
        const float *x = a->data + i * C, *y = b->data + i * C;
        double xy = 0, xx = 0, yy = 0;
        for (int64_t c = 0; c < C; c++)
            xy += (double)x[c] * y[c], xx += (double)x[c] * x[c], yy += (double)y[c] * y[c];
        double nx = fmax(sqrt(xx), COS_EPS), ny = fmax(sqrt(yy), COS_EPS), cs = xy / (nx * ny);
        for (int64_t c = 0; c < C; c++) {
            if (da)
                da[i * C + c] += g * (float)(y[c] / (nx * ny) - cs * x[c] / (nx * nx));
            if (db)
                db[i * C + c] += g * (float)(x[c] / (nx * ny) - cs * y[c] / (ny * ny));
        }
    }
}

xa_tensor *xa_cosine_loss(xa_ctx *ctx, xa_tensor *a, xa_tensor *b) {
    if (!a || !b)
        return NULL;
    if (!xa_shape_equal(a, b))
        return xa_op_shape_error(ctx, "cosine_loss", "shapes must be equal", a, b);
    int64_t N = xa_tensor_rows(a), C = xa_tensor_cols(a);
    xa_tensor *out = out_scalar(ctx);
    if (!out)
        return NULL;
    double s = 0;
    for (int64_t i = 0; i < N; i++) {
        const float *x = a->data + i * C, *y = b->data + i * C;
        double xy = 0, xx = 0, yy = 0;
        for (int64_t c = 0; c < C; c++)
            xy += (double)x[c] * y[c], xx += (double)x[c] * x[c], yy += (double)y[c] * y[c];
        s += 1.0 - xy / (fmax(sqrt(xx), COS_EPS) * fmax(sqrt(yy), COS_EPS));
    }
    out->data[0] = N ? (float)(s / (double)N) : 0.0f;
    xa_tensor *in[2] = {a, b};
    return record(ctx, "cosine_loss", cosine_bw, out, 2, in, NULL);
}

// --- KL with temperature -------------------------------------------------------------------

static void log_softmax_row(double *out, const float *x, int64_t C, float T) {
    double mx = -INFINITY, z = 0;
    for (int64_t c = 0; c < C; c++)
        mx = fmax(mx, (double)x[c] / T);
    for (int64_t c = 0; c < C; c++)
        z += exp((double)x[c] / T - mx);
    double lz = log(z) + mx;
    for (int64_t c = 0; c < C; c++)
        out[c] = (double)x[c] / T - lz;
}

static void kl_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *s = n->in[0], *t = n->in[1];
    float *ds = grad_of(ctx, s), *dt = grad_of(ctx, t);
    int64_t N = xa_tensor_rows(s), C = xa_tensor_cols(s);
    float T = n->f[0];
    double *ls = xa_arena_alloc(ctx, (size_t)(2 * C) * sizeof(double)), *lt = ls + C;
    if (!ls)
        return;
    double g = n->out->grad[0] * (double)T * T / (double)N;
    for (int64_t i = 0; i < N; i++) {
        log_softmax_row(ls, s->data + i * C, C, T);
        log_softmax_row(lt, t->data + i * C, C, T);
        double kl = 0;
        for (int64_t c = 0; c < C; c++)
            kl += exp(lt[c]) * (lt[c] - ls[c]);
        for (int64_t c = 0; c < C; c++) {
            double pt = exp(lt[c]), ps = exp(ls[c]);
            if (ds)
                ds[i * C + c] += (float)(g * (ps - pt) / T);
            if (dt)
                dt[i * C + c] += (float)(g * pt * ((lt[c] - ls[c]) - kl) / T);
        }
    }
}

xa_tensor *xa_kl_div(xa_ctx *ctx, xa_tensor *student, xa_tensor *teacher, float T) {
    if (!student || !teacher)
        return NULL;
    if (!xa_shape_equal(student, teacher))
        return xa_op_shape_error(ctx, "kl_div", "shapes must be equal", student, teacher);
    if (!(T > 0.0f)) {
        xa_errorf(ctx, XA_EINVAL, "kl_div: temperature must be positive, got %g", (double)T);
        return NULL;
    }
    int64_t N = xa_tensor_rows(student), C = xa_tensor_cols(student);
    xa_tensor *out = out_scalar(ctx);
    double *ls = xa_arena_alloc(ctx, (size_t)(2 * C) * sizeof(double)), *lt = ls ? ls + C : NULL;
    if (!out || !ls)
        return NULL;
    double s = 0;
    for (int64_t i = 0; i < N; i++) {
        log_softmax_row(ls, student->data + i * C, C, T);
        log_softmax_row(lt, teacher->data + i * C, C, T);
        for (int64_t c = 0; c < C; c++)
            s += exp(lt[c]) * (lt[c] - ls[c]);
    }
    out->data[0] = N ? (float)(s * T * T / (double)N) : 0.0f;
    xa_node *node;
    xa_tensor *in[2] = {student, teacher};
    out = record(ctx, "kl_div", kl_bw, out, 2, in, &node);
    if (node)
        node->f[0] = T;
    return out;
}

// --- custom ops --------------------------------------------------------------------------

xa_tensor *xa_custom(xa_ctx *ctx, const char *name, xa_tensor *out, int nin, xa_tensor *const *in,
                     xa_backward_fn backward, void *saved) {
    if (!out)
        return NULL;
    for (int i = 0; i < nin; i++)
        if (!in[i])
            return NULL;
    if (nin > XA_NODE_MAX_IN) {
        xa_errorf(ctx, XA_EINVAL, "custom op '%s': %d inputs, at most %d", name, nin,
                  XA_NODE_MAX_IN);
        return NULL;
    }
    xa_node *node;
    out = record(ctx, name, backward, out, nin, in, &node);
    if (node)
        node->saved = saved;
    return out;
}
