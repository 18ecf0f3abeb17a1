// Element-wise graph ops: add, sub, mul, scale, row-broadcast bias and gate, activations and
// dropout. Each is one pass forward and one pass backward.
#include <stdio.h>

#include "ops_common.h"

enum { BIN_ADD, BIN_SUB, BIN_MUL };

static void binary_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *a = n->in[0], *b = n->in[1];
    const float *g = n->out->grad;
    int64_t N = n->out->numel;
    if (n->i[0] == BIN_MUL) {
        float *da = grad_of(ctx, a), *db = grad_of(ctx, b);
        for (int64_t i = 0; da && i < N; i++)
            da[i] += g[i] * b->data[i];
        for (int64_t i = 0; db && i < N; i++)
            db[i] += g[i] * a->data[i];
        return;
    }
    // Sums: a's gradient is g itself, so a takes g's buffer when it has none (g stays readable:
    // it is a's now); b's is written into a fresh buffer, or added.
    float sb = n->i[0] == BIN_SUB ? -1.0f : 1.0f;
    bool passed = a != b && xa_grad_pass(ctx, n, a), fresh;
    float *da = passed ? NULL : grad_of(ctx, a), *db = grad_for_write(ctx, b, a == b, &fresh);
    for (int64_t i = 0; da && i < N; i++)
        da[i] += g[i];
    for (int64_t i = 0; db && i < N; i++)
        db[i] = (fresh ? 0.0f : db[i]) + sb * g[i];
}

static xa_tensor *binary(xa_ctx *ctx, const char *op, int kind, xa_tensor *a, xa_tensor *b) {
    if (!a || !b)
        return NULL;
    if (!xa_shape_equal(a, b))
        return xa_op_shape_error(ctx, op, "shapes must be equal", a, b);
    xa_tensor *out = out_like(ctx, a);
    if (!out)
        return NULL;
    float *y = out->data;
    const float *x1 = a->data, *x2 = b->data;
    int64_t N = a->numel;
    switch (kind) {
    case BIN_ADD:
        for (int64_t i = 0; i < N; i++)
            y[i] = x1[i] + x2[i];
        break;
    case BIN_SUB:
        for (int64_t i = 0; i < N; i++)
            y[i] = x1[i] - x2[i];
        break;
    case BIN_MUL:
        for (int64_t i = 0; i < N; i++)
            y[i] = x1[i] * x2[i];
        break;
    }
    xa_node *node;
    xa_tensor *in[2] = {a, b};
    out = record(ctx, op, binary_bw, out, 2, in, &node);
    if (node) {
        node->i[0] = kind;
        if (kind != BIN_MUL) // sums pass the gradient through; products read the other factor
            node->reads = 0;
    }
    return out;
}

xa_tensor *xa_add(xa_ctx *ctx, xa_tensor *a, xa_tensor *b) { return binary(ctx, "add", BIN_ADD, a, b); }
xa_tensor *xa_sub(xa_ctx *ctx, xa_tensor *a, xa_tensor *b) { return binary(ctx, "sub", BIN_SUB, a, b); }
xa_tensor *xa_mul(xa_ctx *ctx, xa_tensor *a, xa_tensor *b) { return binary(ctx, "mul", BIN_MUL, a, b); }

static void scale_bw(xa_ctx *ctx, xa_node *n) {
    float *own = xa_grad_pass(ctx, n, n->in[0]); // scaled in place
    for (int64_t i = 0; own && i < n->out->numel; i++)
        own[i] *= n->f[0];
    float *dx = own ? NULL : grad_of(ctx, n->in[0]);
    for (int64_t i = 0; dx && i < n->out->numel; i++)
        dx[i] += n->f[0] * n->out->grad[i];
}

xa_tensor *xa_scale(xa_ctx *ctx, xa_tensor *a, float s) {
    if (!a)
        return NULL;
    xa_tensor *out = out_like(ctx, a);
    if (!out)
        return NULL;
    for (int64_t i = 0; i < a->numel; i++)
        out->data[i] = a->data[i] * s;
    xa_node *node;
    out = record(ctx, "scale", scale_bw, out, 1, &a, &node);
    if (node)
        node->f[0] = s;
    return out;
}

// --- row broadcasts: x (R, C) op v (C) --------------------------------------------------------

static void row_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *x = n->in[0], *v = n->in[1];
    bool mul = n->i[0];
    int64_t R = xa_tensor_rows(x), C = xa_tensor_cols(x);
    const float *g = n->out->grad;
    float *dx = grad_of(ctx, x), *dv = grad_of(ctx, v);
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) {
            float gi = g[r * C + c];
            if (dx)
                dx[r * C + c] += mul ? gi * v->data[c] : gi;
            if (dv)
                dv[c] += mul ? gi * x->data[r * C + c] : gi;
        }
}

static xa_tensor *row_op(xa_ctx *ctx, const char *op, bool mul, xa_tensor *x, xa_tensor *v) {
    if (!x || !v)
        return NULL;
    int64_t R = xa_tensor_rows(x), C = xa_tensor_cols(x);
    if (v->numel != C)
        return xa_op_shape_error(ctx, op, "vector length must equal the last dim", x, v);
    xa_tensor *out = out_like(ctx, x);
    if (!out)
        return NULL;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++)
            out->data[r * C + c] = mul ? x->data[r * C + c] * v->data[c] : x->data[r * C + c] + v->data[c];
    xa_node *node;
    xa_tensor *in[2] = {x, v};
    out = record(ctx, op, row_bw, out, 2, in, &node);
    if (node)
        node->i[0] = mul;
    return out;
}

xa_tensor *xa_add_bias(xa_ctx *ctx, xa_tensor *x, xa_tensor *b) { return row_op(ctx, "add_bias", false, x, b); }
xa_tensor *xa_mul_row(xa_ctx *ctx, xa_tensor *x, xa_tensor *g) { return row_op(ctx, "mul_row", true, x, g); }

// --- activations ---------------------------------------------------------------------------

static void act_bw(xa_ctx *ctx, xa_node *n) {
    float *dx = grad_of(ctx, n->in[0]);
    if (dx)
        xa_act_backward(dx, n->out->grad, n->in[0]->data, n->out->data, (xa_act)n->i[0],
                        n->out->numel);
}

static xa_tensor *act(xa_ctx *ctx, xa_tensor *x, xa_act kind) {
    if (!x)
        return NULL;
    xa_tensor *out = out_like(ctx, x);
    if (!out)
        return NULL;
    xa_act_forward(out->data, x->data, kind, x->numel);
    xa_node *node;
    out = record(ctx, xa_act_name(kind), act_bw, out, 1, &x, &node);
    if (node) {
        node->i[0] = kind;
        bool from_out = kind == XA_ACT_TANH || kind == XA_ACT_SIGMOID; // derivative from y
        node->reads = XA_READS_IN(0) | (from_out ? XA_READS_OUT : 0);
    }
    return out;
}

xa_tensor *xa_gelu(xa_ctx *ctx, xa_tensor *x) { return act(ctx, x, XA_ACT_GELU); }
xa_tensor *xa_gelu_tanh(xa_ctx *ctx, xa_tensor *x) { return act(ctx, x, XA_ACT_GELU_TANH); }
xa_tensor *xa_quick_gelu(xa_ctx *ctx, xa_tensor *x) { return act(ctx, x, XA_ACT_QUICK_GELU); }
xa_tensor *xa_tanh(xa_ctx *ctx, xa_tensor *x) { return act(ctx, x, XA_ACT_TANH); }
xa_tensor *xa_sigmoid(xa_ctx *ctx, xa_tensor *x) { return act(ctx, x, XA_ACT_SIGMOID); }
xa_tensor *xa_relu(xa_ctx *ctx, xa_tensor *x) { return act(ctx, x, XA_ACT_RELU); }

static const struct {
    const char *name;
    xa_act act;
} act_names[] = {
    {"gelu", XA_ACT_GELU},
    {"gelu_new", XA_ACT_GELU_TANH},
    {"gelu_pytorch_tanh", XA_ACT_GELU_TANH},
    {"quick_gelu", XA_ACT_QUICK_GELU},
    {"relu", XA_ACT_RELU},
    {"tanh", XA_ACT_TANH},
    {"sigmoid", XA_ACT_SIGMOID},
};

bool xa_act_parse(const char *name, xa_act *out) {
    for (size_t i = 0; i < sizeof act_names / sizeof *act_names; i++)
        if (strcmp(name, act_names[i].name) == 0) {
            *out = act_names[i].act;
            return true;
        }
    return false;
}

xa_tensor *xa_act_apply(xa_ctx *ctx, xa_tensor *x, xa_act kind) { return act(ctx, x, kind); }

xa_tensor *xa_activation(xa_ctx *ctx, xa_tensor *x, const char *name) {
    xa_act kind;
    if (xa_act_parse(name, &kind))
        return act(ctx, x, kind);
    xa_errorf(ctx, XA_EINVAL,
              "unknown activation '%s' (valid: gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, "
              "relu, tanh, sigmoid)",
              name);
    return NULL;
}

// --- dropout -------------------------------------------------------------------------------

static void dropout_bw(xa_ctx *ctx, xa_node *n) {
    float *own = xa_grad_pass(ctx, n, n->in[0]); // the mask applied in place
    if (own) {
        xa_dropout_forward(own, own, n->f[0], (uint64_t)n->i[0], n->out->numel);
        return;
    }
    float *dx = grad_of(ctx, n->in[0]);
    if (dx)
        xa_dropout_backward(dx, n->out->grad, n->f[0], (uint64_t)n->i[0], n->out->numel);
}

xa_tensor *xa_dropout(xa_ctx *ctx, xa_tensor *x, float p) {
    if (!x)
        return NULL;
    if (p < 0.0f || p >= 1.0f) {
        xa_errorf(ctx, XA_EINVAL, "dropout: probability %g is outside [0, 1)", (double)p);
        return NULL;
    }
    if (p == 0.0f || !ctx->training)
        return x;
    uint64_t seed = xa_rng_next(ctx);
    xa_tensor *out = out_like(ctx, x);
    if (!out)
        return NULL;
    xa_dropout_forward(out->data, x->data, p, seed, x->numel);
    xa_node *node;
    out = record(ctx, "dropout", dropout_bw, out, 1, &x, &node);
    if (node) {
        node->f[0] = p;
        node->i[0] = (int64_t)seed;
        node->reads = 0; // the mask is regenerated from the seed
    }
    return out;
}
