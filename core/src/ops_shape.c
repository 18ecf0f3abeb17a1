// Graph ops that move data rather than compute on it: embedding lookup, reshape, concat, slice,
// head split/merge, and pooling over the sequence (first token, masked mean, gather at index).
#include <stdio.h>

#include "ops_common.h"

// --- embedding ---------------------------------------------------------------------------

static void embedding_bw(xa_ctx *ctx, xa_node *n) {
    xa_tensor *table = n->in[0];
    float *dt = grad_of(ctx, table);
    if (!dt)
        return;
    const int32_t *ids = n->saved;
    int64_t C = table->shape[1], BT = n->i[0];
    for (int64_t i = 0; i < BT; i++)
        for (int64_t c = 0; c < C; c++)
            dt[(int64_t)ids[i] * C + c] += n->out->grad[i * C + c];
}

xa_tensor *xa_embedding(xa_ctx *ctx, xa_tensor *table, const int32_t *ids, int64_t B, int64_t T) {
    if (!table)
        return NULL;
    if (table->ndim != 2)
        return xa_op_shape_error(ctx, "embedding", "table must be (vocab, dim)", table, NULL);
    int64_t V = table->shape[0], C = table->shape[1];
    for (int64_t i = 0; i < B * T; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            xa_errorf(ctx, XA_ERANGE,
                      "embedding: id %d at position %lld is outside the table (0..%lld)", ids[i],
                      (long long)i, (long long)V - 1);
            return NULL;
        }
    int64_t shape[3] = {B, T, C};
    xa_tensor *out = out_shaped(ctx, 3, shape);
    if (!out)
        return NULL;
    for (int64_t i = 0; i < B * T; i++)
        memcpy(out->data + i * C, table->data + (int64_t)ids[i] * C, (size_t)C * sizeof(float));
    xa_node *node;
    out = record(ctx, "embedding", embedding_bw, out, 1, &table, &node);
    if (node) {
        node->saved = xa_op_copy(ctx, ids, (size_t)(B * T) * sizeof(int32_t));
        node->i[0] = B * T;
        if (!node->saved)
            return NULL;
    }
    return out;
}

// --- reshape -----------------------------------------------------------------------------

static void copy_bw(xa_ctx *ctx, xa_node *n) {
    if (xa_grad_pass(ctx, n, n->in[0])) // a view: its gradient is x's, buffer and all
        return;
    float *dx = grad_of(ctx, n->in[0]);
    for (int64_t i = 0; dx && i < n->out->numel; i++)
        dx[i] += n->out->grad[i];
}

xa_tensor *xa_reshape(xa_ctx *ctx, xa_tensor *x, int ndim, const int64_t *shape) {
    if (!x)
        return NULL;
    bool over;
    int64_t n = xa_shape_numel(ndim, shape, &over);
    if (ndim < 1 || ndim > XA_MAX_DIMS || over || n != x->numel) {
        char s[96];
        xa_errorf(ctx, XA_ESHAPE, "reshape: cannot view %lld elements as %s", (long long)x->numel,
                  xa_shape_fmt(ndim < 0 ? 0 : ndim > 4 ? 4 : ndim, shape, s, sizeof s));
        return NULL;
    }
    xa_tensor *out = xa_arena_alloc(ctx, sizeof *out);
    if (!out)
        return NULL;
    *out = (xa_tensor){.data = x->data, .ndim = ndim, .numel = n, .flags = XA_TENSOR_ARENA};
    memcpy(out->shape, shape, (size_t)ndim * sizeof *shape);
    xa_made_note(ctx, out); // its base's data stays while the view may be read
    // The view shares data; its gradient is its own buffer, added back into x's.
    return record(ctx, "reshape", copy_bw, out, 1, &x, NULL);
}

// --- concat and slice along one dim: (outer, len, inner) blocks -----------------------------

static int norm_dim(const xa_tensor *x, int dim) { return dim < 0 ? dim + x->ndim : dim; }

static void blocks(const xa_tensor *x, int dim, int64_t *outer, int64_t *inner) {
    *outer = 1, *inner = 1;
    for (int i = 0; i < dim; i++)
        *outer *= x->shape[i];
    for (int i = dim + 1; i < x->ndim; i++)
        *inner *= x->shape[i];
}

static void concat_bw(xa_ctx *ctx, xa_node *n) {
    int64_t outer = n->i[0], ia = n->i[1], ib = n->i[2];
    float *da = grad_of(ctx, n->in[0]), *db = grad_of(ctx, n->in[1]);
    const float *g = n->out->grad;
    for (int64_t o = 0; o < outer; o++) {
        const float *row = g + o * (ia + ib);
        for (int64_t i = 0; da && i < ia; i++)
            da[o * ia + i] += row[i];
        for (int64_t i = 0; db && i < ib; i++)
            db[o * ib + i] += row[ia + i];
    }
}

xa_tensor *xa_concat(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, int dim) {
    if (!a || !b)
        return NULL;
    int d = norm_dim(a, dim);
    bool ok = a->ndim == b->ndim && d >= 0 && d < a->ndim;
    for (int i = 0; ok && i < a->ndim; i++)
        ok = i == d || a->shape[i] == b->shape[i];
    if (!ok)
        return xa_op_shape_error(ctx, "concat", "all dims but the joined one must match", a, b);
    int64_t outer, inner;
    blocks(a, d, &outer, &inner);
    int64_t ia = a->shape[d] * inner, ib = b->shape[d] * inner;
    int64_t shape[XA_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] += b->shape[d];
    xa_tensor *out = out_shaped(ctx, a->ndim, shape);
    if (!out)
        return NULL;
    for (int64_t o = 0; o < outer; o++) {
        memcpy(out->data + o * (ia + ib), a->data + o * ia, (size_t)ia * sizeof(float));
        memcpy(out->data + o * (ia + ib) + ia, b->data + o * ib, (size_t)ib * sizeof(float));
    }
    xa_node *node;
    xa_tensor *in[2] = {a, b};
    out = record(ctx, "concat", concat_bw, out, 2, in, &node);
    if (node)
        node->i[0] = outer, node->i[1] = ia, node->i[2] = ib;
    return out;
}

static void slice_bw(xa_ctx *ctx, xa_node *n) {
    int64_t outer = n->i[0], full = n->i[1], off = n->i[2], len = n->i[3];
    float *dx = grad_of(ctx, n->in[0]);
    for (int64_t o = 0; dx && o < outer; o++)
        for (int64_t i = 0; i < len; i++)
            dx[o * full + off + i] += n->out->grad[o * len + i];
}

xa_tensor *xa_slice(xa_ctx *ctx, xa_tensor *x, int dim, int64_t start, int64_t len) {
    if (!x)
        return NULL;
    int d = norm_dim(x, dim);
    if (d < 0 || d >= x->ndim || start < 0 || len < 0 || start + len > x->shape[d]) {
        char s[96];
        xa_errorf(ctx, XA_ERANGE, "slice: [%lld, %lld) along dim %d is outside %s",
                  (long long)start, (long long)(start + len), dim, xa_shape_str(x, s, sizeof s));
        return NULL;
    }
    int64_t outer, inner;
    blocks(x, d, &outer, &inner);
    int64_t shape[XA_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = len;
    xa_tensor *out = out_shaped(ctx, x->ndim, shape);
    if (!out)
        return NULL;
    int64_t full = x->shape[d] * inner, off = start * inner, n = len * inner;
    for (int64_t o = 0; o < outer; o++)
        memcpy(out->data + o * n, x->data + o * full + off, (size_t)n * sizeof(float));
    xa_node *node;
    out = record(ctx, "slice", slice_bw, out, 1, &x, &node);
    if (node)
        node->i[0] = outer, node->i[1] = full, node->i[2] = off, node->i[3] = n;
    return out;
}

// --- heads: (B,T,H,D) <-> (B,H,T,D) --------------------------------------------------------

// dst[b,h,t,:] = src[b,t,h,:] when `split`, the inverse otherwise; accumulate when `acc`.
static void permute_heads(float *dst, const float *src, int64_t B, int64_t T, int64_t H,
                          int64_t D, bool split, bool acc) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t bthd = ((b * T + t) * H + h) * D, bhtd = ((b * H + h) * T + t) * D;
                float *o = dst + (split ? bhtd : bthd);
                const float *i = src + (split ? bthd : bhtd);
                for (int64_t d = 0; d < D; d++)
                    o[d] = acc ? o[d] + i[d] : i[d];
            }
}

static void heads_bw(xa_ctx *ctx, xa_node *n) {
    float *dx = grad_of(ctx, n->in[0]);
    if (dx) // the gradient goes through the inverse permutation
        permute_heads(dx, n->out->grad, n->i[0], n->i[1], n->i[2], n->i[3], !n->i[4], true);
}

static xa_tensor *heads(xa_ctx *ctx, xa_tensor *x, int64_t H, bool split) {
    int64_t B = x->shape[0], T = split ? x->shape[1] : x->shape[2];
    int64_t D = split ? x->shape[2] / H : x->shape[3];
    int64_t shape[4] = {B, H, T, D}, merged[3] = {B, T, H * D};
    xa_tensor *out = split ? out_shaped(ctx, 4, shape) : out_shaped(ctx, 3, merged);
    if (!out)
        return NULL;
    permute_heads(out->data, x->data, B, T, H, D, split, false);
    xa_node *node;
    out = record(ctx, split ? "heads_split" : "heads_merge", heads_bw, out, 1, &x, &node);
    if (node)
        node->i[0] = B, node->i[1] = T, node->i[2] = H, node->i[3] = D, node->i[4] = split;
    return out;
}

xa_tensor *xa_heads_split(xa_ctx *ctx, xa_tensor *x, int H) {
    if (!x)
        return NULL;
    if (x->ndim != 3 || H <= 0 || x->shape[2] % H)
        return xa_op_shape_error(ctx, "heads_split", "need (B, T, H*D) with H dividing the width",
                                 x, NULL);
    return heads(ctx, x, H, true);
}

xa_tensor *xa_heads_merge(xa_ctx *ctx, xa_tensor *x) {
    if (!x)
        return NULL;
    if (x->ndim != 4)
        return xa_op_shape_error(ctx, "heads_merge", "need (B, H, T, D)", x, NULL);
    return heads(ctx, x, x->shape[1], false);
}

// --- pooling over T: (B,T,C) -> (B,C) --------------------------------------------------------

static void gather_bw(xa_ctx *ctx, xa_node *n) {
    float *dx = grad_of(ctx, n->in[0]);
    const int64_t *idx = n->saved;
    int64_t B = n->in[0]->shape[0], T = n->in[0]->shape[1], C = n->in[0]->shape[2];
    for (int64_t b = 0; dx && b < B; b++)
        for (int64_t c = 0; c < C; c++)
            dx[(b * T + idx[b]) * C + c] += n->out->grad[b * C + c];
}

xa_tensor *xa_pool_gather(xa_ctx *ctx, xa_tensor *x, const int64_t *index) {
    if (!x)
        return NULL;
    if (x->ndim != 3)
        return xa_op_shape_error(ctx, "pool", "need (B, T, C)", x, NULL);
    int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2];
    for (int64_t b = 0; b < B; b++)
        if (index[b] < 0 || index[b] >= T) {
            xa_errorf(ctx, XA_ERANGE, "pool: index %lld for row %lld is outside 0..%lld",
                      (long long)index[b], (long long)b, (long long)T - 1);
            return NULL;
        }
    int64_t shape[2] = {B, C};
    xa_tensor *out = out_shaped(ctx, 2, shape);
    int64_t *saved = xa_op_copy(ctx, index, (size_t)B * sizeof(int64_t));
    if (!out || !saved)
        return NULL;
    for (int64_t b = 0; b < B; b++)
        memcpy(out->data + b * C, x->data + (b * T + index[b]) * C, (size_t)C * sizeof(float));
    xa_node *node;
    out = record(ctx, "pool_gather", gather_bw, out, 1, &x, &node);
    if (node)
        node->saved = saved;
    return out;
}

xa_tensor *xa_pool_first(xa_ctx *ctx, xa_tensor *x) {
    if (!x)
        return NULL;
    if (x->ndim != 3)
        return xa_op_shape_error(ctx, "pool_first", "need (B, T, C)", x, NULL);
    int64_t *zeros = xa_arena_alloc(ctx, (size_t)x->shape[0] * sizeof(int64_t));
    if (!zeros)
        return NULL;
    memset(zeros, 0, (size_t)x->shape[0] * sizeof(int64_t));
    return xa_pool_gather(ctx, x, zeros);
}

static void mean_pool_bw(xa_ctx *ctx, xa_node *n) {
    float *dx = grad_of(ctx, n->in[0]);
    const float *w = n->saved; // (B,T) weights mask/count
    int64_t B = n->in[0]->shape[0], T = n->in[0]->shape[1], C = n->in[0]->shape[2];
    for (int64_t b = 0; dx && b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; w[b * T + t] != 0.0f && c < C; c++)
                dx[(b * T + t) * C + c] += w[b * T + t] * n->out->grad[b * C + c];
}

xa_tensor *xa_pool_mean(xa_ctx *ctx, xa_tensor *x, const float *mask) {
    if (!x)
        return NULL;
    if (x->ndim != 3)
        return xa_op_shape_error(ctx, "pool_mean", "need (B, T, C)", x, NULL);
    int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2];
    int64_t shape[2] = {B, C};
    xa_tensor *out = xa_tensor_arena(ctx, 2, shape, true);
    float *w = xa_arena_alloc(ctx, (size_t)(B * T) * sizeof(float));
    if (!out || !w)
        return NULL;
    for (int64_t b = 0; b < B; b++) {
        double cnt = 0;
        for (int64_t t = 0; t < T; t++)
            cnt += mask ? mask[b * T + t] : 1.0f;
        for (int64_t t = 0; t < T; t++) {
            float m = mask ? mask[b * T + t] : 1.0f;
            w[b * T + t] = cnt > 0 ? (float)(m / cnt) : 0.0f;
            for (int64_t c = 0; w[b * T + t] != 0.0f && c < C; c++)
                out->data[b * C + c] += w[b * T + t] * x->data[(b * T + t) * C + c];
        }
    }
    xa_node *node;
    out = record(ctx, "pool_mean", mean_pool_bw, out, 1, &x, &node);
    if (node)
        node->saved = w;
    return out;
}
