// Tensor construction, reference counting, gradient buffers and the step arena. Kernels that
// compute on tensors are in kernels_*.c; the graph-level ops that record on the tape in ops_*.c.
#include "internal.h"
#include "xadapt/tape.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[XA_DTYPE_COUNT] = {
    [XA_DTYPE_F32] = {"F32", 4}, [XA_DTYPE_F16] = {"F16", 2}, [XA_DTYPE_BF16] = {"BF16", 2},
    [XA_DTYPE_F64] = {"F64", 8}, [XA_DTYPE_I64] = {"I64", 8}, [XA_DTYPE_I32] = {"I32", 4},
    [XA_DTYPE_I16] = {"I16", 2}, [XA_DTYPE_I8] = {"I8", 1},   [XA_DTYPE_U8] = {"U8", 1},
    [XA_DTYPE_BOOL] = {"BOOL", 1},
};

const char *xa_dtype_name(xa_dtype t) { return (unsigned)t < XA_DTYPE_COUNT ? dtypes[t].name : "?"; }
size_t xa_dtype_size(xa_dtype t) { return (unsigned)t < XA_DTYPE_COUNT ? dtypes[t].size : 0; }

bool xa_dtype_parse(const char *s, xa_dtype *out) {
    for (int i = 0; i < XA_DTYPE_COUNT; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (xa_dtype)i;
            return true;
        }
    return false;
}

// --- buffers --------------------------------------------------------------------------------

xa_buffer *xa_buffer_retain(xa_buffer *b) {
    if (b)
        b->refcount++;
    return b;
}

void xa_buffer_release(xa_buffer *b) {
    if (!b || --b->refcount > 0)
        return;
    if (b->release)
        b->release(b);
    free(b);
}

static void release_heap(xa_buffer *b) { free(b->data); }

// --- shapes ---------------------------------------------------------------------------------

int64_t xa_shape_numel(int ndim, const int64_t *shape, bool *overflow) {
    int64_t n = 1;
    bool over = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && n > INT64_MAX / shape[i]))
            over = true;
        else
            n *= shape[i];
    }
    if (overflow)
        *overflow = over;
    return over ? -1 : n;
}

char *xa_shape_fmt(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t at = 0;
    at += (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (at < n)
        snprintf(buf + at, n - at, ")");
    return buf;
}

char *xa_shape_str(const xa_tensor *t, char *buf, size_t n) {
    return xa_shape_fmt(t->ndim, t->shape, buf, n);
}

bool xa_shape_equal(const xa_tensor *a, const xa_tensor *b) {
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

static bool set_shape(xa_ctx *ctx, xa_tensor *t, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > XA_MAX_DIMS) {
        xa_errorf(ctx, XA_EINVAL, "tensor rank %d is outside 0..%d", ndim, XA_MAX_DIMS);
        return false;
    }
    bool over;
    int64_t n = xa_shape_numel(ndim, shape, &over);
    if (over || (uint64_t)n > SIZE_MAX / sizeof(float)) {
        char s[96];
        xa_errorf(ctx, XA_ERANGE, "tensor shape %s is negative or too large",
                  xa_shape_fmt(ndim, shape, s, sizeof s));
        return false;
    }
    t->ndim = ndim;
    for (int i = 0; i < XA_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 0;
    t->numel = n;
    return true;
}

// --- heap and view tensors ------------------------------------------------------------------

xa_tensor *xa_tensor_view(xa_ctx *ctx, xa_buffer *buf, float *data, int ndim,
                          const int64_t *shape) {
    xa_tensor *t = xa_calloc(ctx, 1, sizeof *t);
    if (!t)
        return NULL;
    if (!set_shape(ctx, t, ndim, shape)) {
        free(t);
        return NULL;
    }
    t->data = data;
    t->buf = xa_buffer_retain(buf);
    t->refcount = 1;
    if (buf && buf->readonly)
        t->flags |= XA_TENSOR_READONLY;
    return t;
}

xa_tensor *xa_tensor_new(xa_ctx *ctx, int ndim, const int64_t *shape) {
    xa_tensor probe = {0};
    if (!set_shape(ctx, &probe, ndim, shape))
        return NULL;
    xa_buffer *b = xa_calloc(ctx, 1, sizeof *b);
    if (!b)
        return NULL;
    size_t bytes = (size_t)probe.numel * sizeof(float);
    b->data = xa_aligned_alloc(ctx, bytes);
    if (!b->data) {
        free(b);
        return NULL;
    }
    memset(b->data, 0, bytes);
    b->size = bytes;
    b->refcount = 1;
    b->release = release_heap;
    xa_tensor *t = xa_tensor_view(ctx, b, b->data, ndim, shape);
    xa_buffer_release(b); // the tensor holds the only reference now (or none on failure)
    return t;
}

static int dims_of(int64_t d0, int64_t d1, int64_t d2, int64_t d3, int64_t shape[4]) {
    int64_t d[4] = {d0, d1, d2, d3};
    int n = 0;
    while (n < 4 && d[n] > 0) {
        shape[n] = d[n];
        n++;
    }
    return n;
}

xa_tensor *xa_tensor_new_nd(xa_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t shape[4];
    int n = dims_of(d0, d1, d2, d3, shape);
    return xa_tensor_new(ctx, n, shape);
}

xa_tensor *xa_tensor_arena_nd(xa_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t shape[4];
    int n = dims_of(d0, d1, d2, d3, shape);
    return xa_tensor_arena(ctx, n, shape, false);
}

xa_tensor *xa_tensor_retain(xa_tensor *t) {
    if (t && !(t->flags & XA_TENSOR_ARENA))
        t->refcount++;
    return t;
}

void xa_tensor_release(xa_tensor *t) {
    if (!t || (t->flags & XA_TENSOR_ARENA) || --t->refcount > 0)
        return;
    xa_buffer_release(t->buf);
    free(t->grad);
    free(t);
}

// A float buffer of `bytes` for an arena tensor: a freed one of the same size (a finished
// gradient, a dropped activation) when there is one, else new arena memory.
static float *arena_floats(xa_ctx *ctx, size_t bytes) {
    xa_free_grad **at = &ctx->free_grads;
    while (*at && (*at)->bytes != bytes)
        at = &(*at)->next;
    if (!*at)
        return xa_arena_alloc(ctx, bytes);
    float *p = (float *)*at;
    *at = (*at)->next;
    return p;
}

static void arena_floats_free(xa_ctx *ctx, float *p, size_t bytes) {
    if (bytes < sizeof(xa_free_grad))
        return; // too small to hold the list entry: left to the arena reset
    xa_free_grad *f = (xa_free_grad *)p;
    f->bytes = bytes;
    f->next = ctx->free_grads;
    ctx->free_grads = f;
}

float *xa_tensor_grad_fresh(xa_ctx *ctx, xa_tensor *t, bool *fresh) {
    *fresh = false;
    if (t->flags & XA_TENSOR_TRAINABLE) // every op's backward asks here for its inputs' gradient
        t->flags |= XA_TENSOR_GRADED;
    if (t->grad)
        return t->grad;
    size_t bytes = (size_t)t->numel * sizeof(float);
    t->grad = t->flags & XA_TENSOR_ARENA ? arena_floats(ctx, bytes) : xa_aligned_alloc(ctx, bytes);
    *fresh = t->grad != NULL;
    return t->grad;
}

float *xa_tensor_grad(xa_ctx *ctx, xa_tensor *t) {
    bool fresh;
    float *g = xa_tensor_grad_fresh(ctx, t, &fresh);
    if (fresh)
        memset(g, 0, (size_t)t->numel * sizeof(float));
    return g;
}

// --- the step arena ------------------------------------------------------------------------

#define ARENA_MIN_CHUNK ((size_t)64 << 20)

void *xa_arena_alloc(xa_ctx *ctx, size_t size) {
    xa_arena *a = &ctx->arena;
    size_t need = (size + 63) & ~(size_t)63;
    if (need < size) {
        xa_errorf(ctx, XA_ENOMEM, "arena allocation of %zu bytes overflows", size);
        return NULL;
    }
    // Walk the kept chain first: after a reset every chunk is reused before anything new.
    while (a->head && a->head->used + need > a->head->size && a->head->next)
        a->head = a->head->next;
    if (!a->head || a->head->used + need > a->head->size) {
        size_t csize = need > ARENA_MIN_CHUNK ? need : ARENA_MIN_CHUNK;
        xa_arena_chunk *c = xa_calloc(ctx, 1, sizeof *c);
        if (!c)
            return NULL;
        c->mem = xa_aligned_alloc(ctx, csize);
        if (!c->mem) {
            free(c);
            return NULL;
        }
        c->size = csize;
        if (a->head) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            a->first = c;
        }
        a->head = c;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += need;
    a->used_total += need;
    return p;
}

xa_tensor *xa_tensor_arena(xa_ctx *ctx, int ndim, const int64_t *shape, bool zero) {
    xa_tensor *t = xa_arena_alloc(ctx, sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    if (!set_shape(ctx, t, ndim, shape))
        return NULL;
    t->flags = XA_TENSOR_ARENA | XA_TENSOR_OWNS_ARENA_DATA |
               (ctx->hook_depth > 0 ? XA_TENSOR_PINNED : 0);
    t->data = arena_floats(ctx, (size_t)t->numel * sizeof(float));
    if (!t->data)
        return NULL;
    xa_made_note(ctx, t);
    if (zero)
        memset(t->data, 0, (size_t)t->numel * sizeof(float));
    return t;
}

void xa_grad_recycle(xa_ctx *ctx, xa_tensor *t) {
    if (!t->grad || !(t->flags & XA_TENSOR_ARENA))
        return;
    arena_floats_free(ctx, t->grad, (size_t)t->numel * sizeof(float));
    t->grad = NULL;
}

void xa_tensor_drop_data(xa_ctx *ctx, xa_tensor *t) {
    if (!t->data || !(t->flags & XA_TENSOR_OWNS_ARENA_DATA))
        return;
    arena_floats_free(ctx, t->data, (size_t)t->numel * sizeof(float));
    t->data = NULL;
}

void xa_arena_reset(xa_ctx *ctx) {
    xa_tape_clear(ctx);
    ctx->made.n = 0, ctx->made.on = false, ctx->made.lost = false;
    ctx->free_grads = NULL;
    xa_arena *a = &ctx->arena;
    for (xa_arena_chunk *c = a->first; c; c = c->next)
        c->used = 0;
    a->head = a->first;
    a->used_total = 0;
}

size_t xa_arena_used(const xa_ctx *ctx) { return ctx->arena.used_total; }

xa_arena_mark xa_arena_mark_get(const xa_ctx *ctx) {
    const xa_arena *a = &ctx->arena;
    return (xa_arena_mark){.chunk = a->head, .used = a->head ? a->head->used : 0,
                           .total = a->used_total, .tape_count = xa_tape_count(ctx, NULL)};
}

void xa_arena_rewind(xa_ctx *ctx, xa_arena_mark mark) {
    XA_ASSERT(xa_tape_count(ctx, NULL) == mark.tape_count); // nodes would point into freed memory
    if (ctx->made.on)
        ctx->made.lost = true; // noted tensors may lie in the freed region
    xa_arena *a = &ctx->arena;
    if (!mark.chunk) { // nothing was allocated at the mark
        xa_arena_reset(ctx);
        return;
    }
    xa_arena_chunk *c = mark.chunk;
    for (xa_arena_chunk *n = c->next; n; n = n->next)
        n->used = 0; // chunks after the mark's were filled only since the mark
    c->used = mark.used;
    a->head = c;
    a->used_total = mark.total;
    ctx->free_grads = NULL; // some may lie in the freed region
}

size_t xa_arena_capacity(const xa_ctx *ctx) {
    size_t n = 0;
    for (const xa_arena_chunk *c = ctx->arena.first; c; c = c->next)
        n += c->size;
    return n;
}

// --- tensors made while nothing records -----------------------------------------------------

void xa_made_note(xa_ctx *ctx, xa_tensor *t) {
    xa_made *m = &ctx->made;
    if (!m->on || m->lost)
        return;
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 256;
        xa_tensor **v = realloc(m->v, cap * sizeof *v);
        if (!v) {
            m->lost = true; // giving back nothing is always safe
            return;
        }
        m->v = v, m->cap = cap;
    }
    m->v[m->n++] = t;
}

xa_made_mark xa_made_begin(xa_ctx *ctx) {
    xa_made_mark mark = {.since = ctx->made.n, .was_on = ctx->made.on};
    ctx->made.on = true;
    return mark;
}

// Is `p` the data of `keep` or of a tensor in v[0..n) that must stay: pinned, or a view (which
// shares its base's data)?
static bool made_kept(float *p, const xa_tensor *keep, xa_tensor *const *v, size_t n) {
    if (keep && keep->data == p)
        return true;
    for (size_t i = 0; i < n; i++) {
        uint32_t f = v[i]->flags;
        if (v[i]->data == p && ((f & XA_TENSOR_PINNED) || !(f & XA_TENSOR_OWNS_ARENA_DATA)))
            return true;
    }
    return false;
}

void xa_made_end(xa_ctx *ctx, xa_made_mark mark, const xa_tensor *keep) {
    xa_made *m = &ctx->made;
    XA_ASSERT(m->on && mark.since <= m->n);
    if (!m->lost) {
        xa_tensor *const *v = m->v + mark.since;
        size_t n = m->n - mark.since;
        for (size_t i = 0; i < n; i++) {
            xa_tensor *t = v[i];
            uint32_t f = t->flags;
            if (t == keep || !t->data || !(f & XA_TENSOR_OWNS_ARENA_DATA) ||
                (f & (XA_TENSOR_PINNED | XA_TENSOR_NEEDS_GRAD)) || made_kept(t->data, keep, v, n))
                continue;
            xa_tensor_drop_data(ctx, t);
        }
    }
    m->on = mark.was_on;
    if (!m->on) // the outermost end: entries of inner ones stay until here, for made_kept
        m->n = 0, m->lost = false;
}

void xa_arena_deinit(xa_arena *a) {
    xa_arena_chunk *c = a->first;
    while (c) {
        xa_arena_chunk *next = c->next;
        free(c->mem);
        free(c);
        c = next;
    }
    memset(a, 0, sizeof *a);
}
