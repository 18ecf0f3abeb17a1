// Graph ops built on GEMMs and row statistics: linear, matmul, layer norm, softmax and fused
// attention. Shape checks here; arithmetic in kern_*.c.
#include <math.h>
#include <stdio.h>

#include "ops_common.h"

xa_tensor *xa_op_shape_error(xa_ctx *ctx, const char *op, const char *what, const xa_tensor *a,
                             const xa_tensor *b) {
    char sa[96], sb[96];
    xa_shape_str(a, sa, sizeof sa);
    if (b)
        xa_shape_str(b, sb, sizeof sb);
    xa_errorf(ctx, XA_ESHAPE, "%s: %s (got %s%s%s)", op, what, sa, b ? " and " : "", b ? sb : "");
    return NULL;
}

void *xa_op_copy(xa_ctx *ctx, const void *src, size_t bytes) {
    void *p = xa_arena_alloc(ctx, bytes);
    if (p)
        memcpy(p, src, bytes);
    return p;
}

// --- linear -------------------------------------------------------------------------------

static void linear_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *x = n->in[0], *w = n->in[1], *b = n->nin > 2 ? n->in[2] : NULL;
    int64_t C = xa_tensor_cols(x), OC = w->shape[0];
    bool fresh;
    float *dx = grad_for_write(ctx, x, x == w || x == b, &fresh);
    xa_linear_backward(dx, grad_of(ctx, w), b ? grad_of(ctx, b) : NULL, n->out->grad, x->data,
                       w->data, xa_tensor_rows(x), C, OC, fresh);
}

xa_tensor *xa_linear(xa_ctx *ctx, xa_tensor *x, xa_tensor *w, xa_tensor *b) {
    if (!x || !w)
        return NULL;
    int64_t C = xa_tensor_cols(x);
    if (w->ndim != 2 || w->shape[1] != C || x->ndim < 1)
        return xa_op_shape_error(ctx, "linear", "weight must be (out, in) with in = last dim of x",
                                 x, w);
    int64_t OC = w->shape[0];
    if (b && (b->ndim != 1 || b->shape[0] != OC))
        return xa_op_shape_error(ctx, "linear", "bias must be (out)", w, b);
    int64_t shape[XA_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = OC;
    xa_tensor *out = out_shaped(ctx, x->ndim, shape);
    if (!out)
        return NULL;
    xa_linear_forward(out->data, x->data, w->data, b ? b->data : NULL, xa_tensor_rows(x), C, OC);
    xa_tensor *in[3] = {x, w, b};
    xa_node *node;
    out = record(ctx, "linear", linear_bw, out, b ? 3 : 2, in, &node);
    if (node) // x only for the weight's gradient; w for x's
        node->reads = XA_READS_IN(1) | (xa_tensor_needs_grad(w) ? XA_READS_IN(0) : 0);
    return out;
}

// --- matmul ------------------------------------------------------------------------------

static void matmul_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *a = n->in[0], *b = n->in[1];
    bool ta = n->i[0], tb = n->i[1], shared = n->i[5];
    int64_t NB = n->i[2], M = n->i[3], K = n->i[4], N = n->out->shape[n->out->ndim - 1];
    float *da = grad_of(ctx, a), *db = grad_of(ctx, b);
    if (!shared) {
        xa_matmul_backward(da, db, n->out->grad, a->data, b->data, ta, tb, NB, M, K, N);
        return;
    }
    // b shared by every batch: treat a as one tall (NB*M, K) matrix when it is not transposed
    for (int64_t i = 0; i < NB; i++)
        xa_matmul_backward(da ? da + i * M * K : NULL, db, n->out->grad + i * M * N,
                           a->data + i * M * K, b->data, ta, tb, 1, M, K, N);
}

xa_tensor *xa_matmul(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, bool ta, bool tb) {
    if (!a || !b)
        return NULL;
    if (a->ndim < 2 || b->ndim < 2)
        return xa_op_shape_error(ctx, "matmul", "both operands need at least 2 dims", a, b);
    int64_t M = a->shape[a->ndim - (ta ? 1 : 2)], K = a->shape[a->ndim - (ta ? 2 : 1)];
    int64_t Kb = b->shape[b->ndim - (tb ? 1 : 2)], N = b->shape[b->ndim - (tb ? 2 : 1)];
    bool shared = b->ndim == 2 && a->ndim > 2;
    if (K != Kb)
        return xa_op_shape_error(ctx, "matmul", "inner dimensions differ", a, b);
    if (!shared) {
        if (a->ndim != b->ndim)
            return xa_op_shape_error(ctx, "matmul", "batch dimensions differ", a, b);
        for (int i = 0; i < a->ndim - 2; i++)
            if (a->shape[i] != b->shape[i])
                return xa_op_shape_error(ctx, "matmul", "batch dimensions differ", a, b);
    }
    int64_t NB = a->numel / (M * K > 0 ? M * K : 1);
    int64_t shape[XA_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 2] = M;
    shape[a->ndim - 1] = N;
    xa_tensor *out = out_shaped(ctx, a->ndim, shape);
    if (!out)
        return NULL;
    if (shared)
        for (int64_t i = 0; i < NB; i++)
            xa_matmul_forward(out->data + i * M * N, a->data + i * M * K, b->data, ta, tb, 1, M, K,
                              N);
    else
        xa_matmul_forward(out->data, a->data, b->data, ta, tb, NB, M, K, N);
    xa_node *node;
    xa_tensor *in[2] = {a, b};
    out = record(ctx, "matmul", matmul_bw, out, 2, in, &node);
    if (node) {
        node->i[0] = ta, node->i[1] = tb, node->i[2] = NB, node->i[3] = M, node->i[4] = K;
        node->i[5] = shared;
    }
    return out;
}

// --- layer norm --------------------------------------------------------------------------

static void layernorm_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    int64_t N = xa_tensor_rows(x), C = xa_tensor_cols(x);
    const float *mean = n->saved, *rstd = mean + N;
    xa_layernorm_backward(grad_of(ctx, x), grad_of(ctx, w), grad_of(ctx, b), n->out->grad, x->data,
                          w->data, mean, rstd, N, C);
}

xa_tensor *xa_layernorm(xa_ctx *ctx, xa_tensor *x, xa_tensor *w, xa_tensor *b, float eps) {
    if (!x || !w || !b)
        return NULL;
    int64_t C = xa_tensor_cols(x), N = xa_tensor_rows(x);
    if (w->numel != C || b->numel != C)
        return xa_op_shape_error(ctx, "layernorm", "weight and bias must match the last dim", x, w);
    xa_tensor *out = out_like(ctx, x);
    xa_tensor *in[3] = {x, w, b};
    bool wants = xa_tape_wants(ctx, 3, in);
    float *stats = wants ? xa_arena_alloc(ctx, (size_t)(2 * N) * sizeof(float)) : NULL;
    if (!out || (wants && !stats))
        return NULL;
    xa_layernorm_forward(out->data, stats, stats ? stats + N : NULL, x->data, w->data, b->data, eps,
                         N, C);
    xa_node *node;
    out = record(ctx, "layernorm", layernorm_bw, out, 3, in, &node);
    if (node) {
        node->saved = stats;
        node->reads = XA_READS_IN(0) | XA_READS_IN(1); // x and w, with the saved statistics
    }
    return out;
}

// --- softmax -----------------------------------------------------------------------------

static void softmax_bw(xa_ctx *ctx, xa_node *n) {
    xa_softmax_backward(grad_of(ctx, n->in[0]), n->out->grad, n->out->data,
                        xa_tensor_rows(n->out), xa_tensor_cols(n->out));
}

xa_tensor *xa_softmax(xa_ctx *ctx, xa_tensor *x) {
    if (!x)
        return NULL;
    xa_tensor *out = out_like(ctx, x);
    if (!out)
        return NULL;
    xa_softmax_forward(out->data, x->data, xa_tensor_rows(x), xa_tensor_cols(x));
    return record(ctx, "softmax", softmax_bw, out, 1, &x, NULL);
}

// --- attention ---------------------------------------------------------------------------

typedef struct {
    xa_attn_shape shape;
    float *probs;
    float *key_mask;
} attn_saved;

static void attention_bw(xa_ctx *ctx, xa_node *n) {
    attn_saved *s = n->saved;
    xa_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    bool fq, fk, fv;
    float *dq = grad_for_write(ctx, q, q == k || q == v, &fq);
    float *dk = grad_for_write(ctx, k, k == q || k == v, &fk);
    float *dv = grad_for_write(ctx, v, v == q || v == k, &fv);
    unsigned assign = (fq ? XA_ATTN_ASSIGN_DQ : 0) | (fk ? XA_ATTN_ASSIGN_DK : 0) |
                      (fv ? XA_ATTN_ASSIGN_DV : 0);
    xa_attention_backward(dq, dk, dv, n->out->grad, q->data, k->data, v->data, s->probs, &s->shape,
                          assign);
}

// Attention's shape errors show all three operands: any of them can be the one at fault.
static xa_tensor *attn_shape_error(xa_ctx *ctx, const char *what, const xa_tensor *q,
                                   const xa_tensor *k, const xa_tensor *v) {
    char sq[96], sk[96], sv[96];
    xa_errorf(ctx, XA_ESHAPE, "attention: %s (got q %s, k %s, v %s)", what,
              xa_shape_str(q, sq, sizeof sq), xa_shape_str(k, sk, sizeof sk),
              xa_shape_str(v, sv, sizeof sv));
    return NULL;
}

xa_tensor *xa_attention(xa_ctx *ctx, xa_tensor *q, xa_tensor *k, xa_tensor *v,
                        const xa_attn_opts *o) {
    if (!q || !k || !v)
        return NULL;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3)
        return attn_shape_error(ctx, "q, k, v must be (B, T, H*D)", q, k, v);
    int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1], H = o->heads;
    if (H <= 0 || q->shape[2] % H || v->shape[2] % H)
        return xa_errorf(ctx, XA_ESHAPE, "attention: %d heads do not divide widths %lld and %lld",
                         o->heads, (long long)q->shape[2], (long long)v->shape[2]),
               NULL;
    if (k->shape[0] != B || v->shape[0] != B || k->shape[2] != q->shape[2] || v->shape[1] != Tk)
        return attn_shape_error(ctx, "k must be (B, Tk, width of q) and v (B, Tk, H*Dv)", q, k, v);
    xa_attn_shape s = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dk = q->shape[2] / H,
                       .Dv = v->shape[2] / H, .causal = o->causal};
    s.scale = o->scale > 0.0f ? o->scale : 1.0f / sqrtf((float)s.Dk);
    if (o->dropout > 0.0f && ctx->training) {
        s.dropout = o->dropout;
        s.seed = xa_rng_next(ctx);
    }
    int64_t shape[3] = {B, Tq, v->shape[2]};
    xa_tensor *out = out_shaped(ctx, 3, shape);
    xa_tensor *in3[3] = {q, k, v};
    bool keep = xa_tape_wants(ctx, 3, in3); // backward reads the probabilities and the mask
    float *probs = keep ? xa_arena_alloc(ctx, (size_t)(B * H * Tq * Tk) * sizeof(float)) : NULL;
    float *mask = o->key_mask && keep
                      ? xa_op_copy(ctx, o->key_mask, (size_t)(B * Tk) * sizeof(float))
                      : (float *)o->key_mask;
    if (!out || (keep && !probs) || (o->key_mask && !mask))
        return NULL;
    xa_attention_forward(out->data, probs, q->data, k->data, v->data, mask, &s);
    xa_node *node;
    xa_tensor *in[3] = {q, k, v};
    out = record(ctx, "attention", attention_bw, out, 3, in, &node);
    if (node) {
        attn_saved *sv = xa_arena_alloc(ctx, sizeof *sv);
        if (!sv)
            return NULL;
        *sv = (attn_saved){.shape = s, .probs = probs, .key_mask = mask};
        node->saved = sv;
        node->reads = XA_READS_IN(0) | XA_READS_IN(1) | XA_READS_IN(2); // not the output
    }
    return out;
}
