// Parameter slabs and optimizers. Values of every parameter in a set are packed into one
// buffer, gradients into another, moments into two more, so an update is a few linear passes.
#include "xadapt/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pool.h"
#include "vec.h"

typedef struct {
    xa_tensor *t;
    char *name;
    bool decay;
    int64_t offset; // into the slabs, valid when packed
} param;

struct xa_params {
    xa_ctx *ctx;
    param *p;
    size_t n, cap;
    bool packed;
    int64_t numel;
    uint64_t generation; // bumped when parameters are removed (offsets move)
    xa_buffer *values; // slab of values
    float *grads;      // slab of gradients
};

xa_params *xa_params_new(xa_ctx *ctx) {
    xa_params *ps = xa_calloc(ctx, 1, sizeof *ps);
    if (ps)
        ps->ctx = ctx;
    return ps;
}

void xa_params_free(xa_params *ps) {
    if (!ps)
        return;
    for (size_t i = 0; i < ps->n; i++) {
        xa_tensor *t = ps->p[i].t;
        if (ps->grads && t->grad >= ps->grads && t->grad < ps->grads + ps->numel)
            t->grad = NULL; // the slab owns it
        xa_tensor_release(t);
        free(ps->p[i].name);
    }
    xa_buffer_release(ps->values);
    free(ps->grads);
    free(ps->p);
    free(ps);
}

static void init_values(xa_ctx *ctx, xa_tensor *t, xa_init init) {
    int64_t fan_out = t->ndim ? t->shape[0] : 1, fan_in = t->ndim > 1 ? t->numel / fan_out : 1;
    float a = init.a;
    switch (init.kind) {
    case XA_INIT_ZERO:
        memset(t->data, 0, (size_t)t->numel * sizeof(float));
        break;
    case XA_INIT_ONE:
        for (int64_t i = 0; i < t->numel; i++)
            t->data[i] = 1.0f;
        break;
    case XA_INIT_NORMAL:
        for (int64_t i = 0; i < t->numel; i++)
            t->data[i] = a * xa_rng_normal(ctx);
        break;
    case XA_INIT_XAVIER:
        a = (a > 0 ? a : 1.0f) * sqrtf(6.0f / (float)(fan_in + fan_out));
        /* fall through */
    case XA_INIT_UNIFORM:
        for (int64_t i = 0; i < t->numel; i++)
            t->data[i] = a * (2.0f * xa_rng_uniform(ctx) - 1.0f);
        break;
    case XA_INIT_KAIMING: {
        float b = 1.0f / sqrtf((float)fan_in);
        for (int64_t i = 0; i < t->numel; i++)
            t->data[i] = b * (2.0f * xa_rng_uniform(ctx) - 1.0f);
        break;
    }
    }
}

xa_tensor *xa_params_add(xa_params *ps, const char *name, int ndim, const int64_t *shape,
                         xa_init init) {
    xa_ctx *ctx = ps->ctx;
    if (xa_params_find(ps, name)) {
        xa_errorf(ctx, XA_EINVAL, "parameter '%s' already exists", name);
        return NULL;
    }
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 16;
        param *np = realloc(ps->p, cap * sizeof *np);
        if (!np) {
            xa_errorf(ctx, XA_ENOMEM, "out of memory adding parameter '%s'", name);
            return NULL;
        }
        ps->p = np, ps->cap = cap;
    }
    xa_tensor *t = xa_tensor_new(ctx, ndim, shape);
    char *nm = t ? xa_strdup(ctx, name) : NULL;
    if (!nm) {
        xa_tensor_release(t);
        return NULL;
    }
    init_values(ctx, t, init);
    t->flags |= XA_TENSOR_TRAINABLE;
    t->name = nm;
    ps->p[ps->n++] = (param){.t = t, .name = nm, .decay = ndim >= 2};
    ps->packed = false;
    return t;
}

size_t xa_params_count(const xa_params *ps) { return ps->n; }
xa_tensor *xa_params_at(const xa_params *ps, size_t i) { return i < ps->n ? ps->p[i].t : NULL; }
const char *xa_params_name(const xa_params *ps, size_t i) { return i < ps->n ? ps->p[i].name : NULL; }

xa_tensor *xa_params_find(const xa_params *ps, const char *name) {
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0)
            return ps->p[i].t;
    return NULL;
}

int64_t xa_params_numel(const xa_params *ps, bool trainable_only) {
    int64_t n = 0;
    for (size_t i = 0; i < ps->n; i++)
        if (!trainable_only || (ps->p[i].t->flags & XA_TENSOR_TRAINABLE))
            n += ps->p[i].t->numel;
    return n;
}

void xa_params_set_trainable(xa_params *ps, size_t i, bool on) {
    if (i >= ps->n)
        return;
    if (on)
        ps->p[i].t->flags |= XA_TENSOR_TRAINABLE;
    else
        ps->p[i].t->flags &= ~(uint32_t)XA_TENSOR_TRAINABLE; // the next step drops its gradient
}

void xa_params_set_decay(xa_params *ps, size_t i, bool on) {
    if (i < ps->n)
        ps->p[i].decay = on;
}

bool xa_params_decays(const xa_params *ps, size_t i) { return i < ps->n && ps->p[i].decay; }

void xa_params_zero_grad(xa_params *ps) {
    for (size_t i = 0; i < ps->n; i++)
        ps->p[i].t->flags &= ~(uint32_t)XA_TENSOR_GRADED;
    if (ps->packed) {
        memset(ps->grads, 0, (size_t)ps->numel * sizeof(float));
        return;
    }
    for (size_t i = 0; i < ps->n; i++)
        if (ps->p[i].t->grad)
            memset(ps->p[i].t->grad, 0, (size_t)ps->p[i].t->numel * sizeof(float));
}

void xa_params_remove_prefix(xa_params *ps, const char *prefix) {
    size_t len = strlen(prefix), kept = 0;
    for (size_t i = 0; i < ps->n; i++) {
        if (strncmp(ps->p[i].name, prefix, len) != 0) {
            ps->p[kept++] = ps->p[i];
            continue;
        }
        xa_tensor *t = ps->p[i].t;
        if (ps->grads && t->grad >= ps->grads && t->grad < ps->grads + ps->numel)
            t->grad = NULL; // owned by the slab
        xa_tensor_release(t);
        free(ps->p[i].name);
    }
    if (kept != ps->n) {
        ps->packed = false; // survivors still point into the old slab until the next pack
        ps->generation++;
    }
    ps->n = kept;
}

static void release_slab(xa_buffer *b) { free(b->data); }

xa_status xa_params_pack(xa_params *ps) {
    if (ps->packed)
        return XA_OK;
    xa_ctx *ctx = ps->ctx;
    int64_t total = xa_params_numel(ps, false);
    size_t bytes = (size_t)(total ? total : 1) * sizeof(float);
    xa_buffer *slab = xa_calloc(ctx, 1, sizeof *slab);
    float *vals = slab ? xa_aligned_alloc(ctx, bytes) : NULL;
    float *grads = vals ? xa_aligned_alloc(ctx, bytes) : NULL;
    if (!grads) {
        free(vals);
        free(slab);
        return XA_ENOMEM;
    }
    memset(grads, 0, bytes);
    *slab = (xa_buffer){.refcount = 1, .data = vals, .size = bytes, .release = release_slab};
    int64_t off = 0;
    for (size_t i = 0; i < ps->n; i++) {
        xa_tensor *t = ps->p[i].t;
        memcpy(vals + off, t->data, (size_t)t->numel * sizeof(float));
        if (t->grad)
            memcpy(grads + off, t->grad, (size_t)t->numel * sizeof(float));
        bool in_old_slab = ps->grads && t->grad >= ps->grads && t->grad < ps->grads + ps->numel;
        if (!in_old_slab) // a parameter created since the last pack owns its gradient
            free(t->grad);
        xa_buffer_release(t->buf);
        t->buf = xa_buffer_retain(slab);
        t->data = vals + off;
        t->grad = grads + off;
        ps->p[i].offset = off;
        off += t->numel;
    }
    xa_buffer_release(ps->values);
    free(ps->grads);
    ps->values = slab;
    ps->grads = grads;
    ps->numel = total;
    ps->packed = true;
    return XA_OK;
}

// --- optimizers ------------------------------------------------------------------------------

struct xa_optim {
    xa_ctx *ctx;
    xa_params *ps;
    xa_optim_opts o;
    float *m, *v;
    int64_t numel; // size the moments were made for
    uint64_t generation;
    int64_t steps;        // updates made
    int64_t *param_steps; // per parameter: the updates it took part in (Adam's bias correction)
    size_t n_param_steps;
    float last_norm;
};

xa_optim *xa_optim_new(xa_ctx *ctx, xa_params *ps, const xa_optim_opts *opts) {
    xa_optim *opt = xa_calloc(ctx, 1, sizeof *opt);
    if (!opt)
        return NULL;
    opt->ctx = ctx, opt->ps = ps, opt->o = *opts;
    if (opts->beta1 == 0.0f && opts->beta2 == 0.0f && opts->eps == 0.0f) { // left unset
        opt->o.beta1 = opts->kind == XA_OPTIM_ADAMW ? 0.9f : 0.0f;
        opt->o.beta2 = 0.999f;
        opt->o.eps = 1e-8f;
    }
    return opt;
}

void xa_optim_free(xa_optim *opt) {
    if (!opt)
        return;
    free(opt->m);
    free(opt->v);
    free(opt->param_steps);
    free(opt);
}

// (Re)allocate moments when the parameter set grew; existing moments keep their offsets
// because packing appends in creation order.
static xa_status ensure_state(xa_optim *opt) {
    xa_status st = xa_params_pack(opt->ps);
    if (st)
        return st;
    int64_t n = opt->ps->numel;
    if (opt->n_param_steps < opt->ps->n || !opt->param_steps) { // new ones took no step yet
        int64_t *ps = realloc(opt->param_steps, (opt->ps->n ? opt->ps->n : 1) * sizeof *ps);
        if (!ps)
            return xa_errorf(opt->ctx, XA_ENOMEM, "out of memory for the optimizer's state");
        memset(ps + opt->n_param_steps, 0, (opt->ps->n - opt->n_param_steps) * sizeof *ps);
        opt->param_steps = ps, opt->n_param_steps = opt->ps->n;
    }
    if (n == opt->numel && opt->m && opt->generation == opt->ps->generation)
        return XA_OK;
    if (opt->generation != opt->ps->generation) { // offsets moved: moments start over
        free(opt->m), free(opt->v);
        opt->m = opt->v = NULL, opt->numel = 0;
        memset(opt->param_steps, 0, opt->n_param_steps * sizeof *opt->param_steps);
        opt->generation = opt->ps->generation;
    }
    size_t bytes = (size_t)(n ? n : 1) * sizeof(float);
    float *m = xa_aligned_alloc(opt->ctx, bytes);
    float *v = m && opt->o.kind == XA_OPTIM_ADAMW ? xa_aligned_alloc(opt->ctx, bytes) : NULL;
    if (!m || (opt->o.kind == XA_OPTIM_ADAMW && !v)) {
        free(m);
        return XA_ENOMEM;
    }
    memset(m, 0, bytes);
    if (v)
        memset(v, 0, bytes);
    if (opt->m) {
        memcpy(m, opt->m, (size_t)opt->numel * sizeof(float));
        if (v && opt->v)
            memcpy(v, opt->v, (size_t)opt->numel * sizeof(float));
    }
    free(opt->m);
    free(opt->v);
    opt->m = m, opt->v = v, opt->numel = n;
    return XA_OK;
}

// The update runs over blocks of elements in parallel (vec.c's loops); the gradient norm sums
// one partial per block in block order, so it does not depend on the thread count.
#define OPT_BLOCK 16384

typedef struct {
    float *w, *g, *m, *v;
    const xa_adamw_k *k;
    double *part;
    int64_t n;
} opt_job;

static void sumsq_blocks(void *arg, int64_t b, int64_t e) {
    const opt_job *j = arg;
    for (int64_t blk = b; blk < e; blk++) {
        int64_t lo = blk * OPT_BLOCK, len = j->n - lo < OPT_BLOCK ? j->n - lo : OPT_BLOCK;
        j->part[blk] = xa_vec_sumsq(j->g + lo, len);
    }
}

static void adamw_blocks(void *arg, int64_t b, int64_t e) {
    const opt_job *j = arg;
    int64_t lo = b * OPT_BLOCK, hi = e * OPT_BLOCK < j->n ? e * OPT_BLOCK : j->n;
    xa_vec_adamw(j->w + lo, j->g + lo, j->m + lo, j->v + lo, j->k, hi - lo);
}

static int64_t blocks_of(int64_t n) { return (n + OPT_BLOCK - 1) / OPT_BLOCK; }

// Whether a step updates the parameter: trainable, and reached by a backward since the last
// step (PyTorch skips a gradient of None: a switched-off adapter, expert or head).
static bool updated(const xa_tensor *t) {
    return (t->flags & (XA_TENSOR_TRAINABLE | XA_TENSOR_GRADED)) ==
           (XA_TENSOR_TRAINABLE | XA_TENSOR_GRADED);
}

// Sum of the squared gradients of the parameters the step updates (NaN or Inf when a gradient
// is); false when out of memory.
static bool grad_sumsq(const xa_params *ps, double *out) {
    int64_t most = 0;
    for (size_t i = 0; i < ps->n; i++)
        if (updated(ps->p[i].t) && blocks_of(ps->p[i].t->numel) > most)
            most = blocks_of(ps->p[i].t->numel);
    double *part = malloc((size_t)(most ? most : 1) * sizeof *part), sq = 0;
    if (!part)
        return false;
    for (size_t i = 0; i < ps->n; i++) {
        xa_tensor *t = ps->p[i].t;
        if (!updated(t))
            continue;
        opt_job j = {.g = t->grad, .part = part, .n = t->numel};
        xa_parallel_for(blocks_of(t->numel), 4, sumsq_blocks, &j);
        for (int64_t b = 0; b < blocks_of(t->numel); b++)
            sq += part[b];
    }
    free(part);
    *out = sq;
    return true;
}

xa_status xa_optim_step(xa_optim *opt, float lr, float grad_scale) {
    xa_status st = ensure_state(opt);
    if (st)
        return st;
    xa_params *ps = opt->ps;
    const xa_optim_opts *o = &opt->o;
    if (lr < 0)
        lr = o->lr;
    double sq;
    if (!grad_sumsq(ps, &sq))
        return xa_errorf(opt->ctx, XA_ENOMEM, "optimizer step: out of memory");
    float norm = fabsf(grad_scale) * (float)sqrt(sq), clip = 1.0f;
    opt->last_norm = norm;
    if (!isfinite(norm)) // no update would leave the weights finite: change nothing
        return xa_errorf(opt->ctx, XA_ERANGE, "the gradient is not finite (norm %g)", (double)norm);
    if (o->clip_norm > 0.0f && norm > o->clip_norm)
        clip = o->clip_norm / (norm + 1e-6f);
    opt->steps++;
    for (size_t i = 0; i < ps->n; i++) {
        xa_tensor *t = ps->p[i].t;
        // Not updated: no decay, no momentum, no step counted. A gradient it holds (frozen
        // after its backward) is dropped, not carried into the next step.
        if (!updated(t)) {
            if ((t->flags & XA_TENSOR_GRADED) && t->grad)
                memset(t->grad, 0, (size_t)t->numel * sizeof(float));
            t->flags &= ~(uint32_t)XA_TENSOR_GRADED;
            continue;
        }
        t->flags &= ~(uint32_t)XA_TENSOR_GRADED;
        float *w = t->data, *g = t->grad, *m = opt->m + ps->p[i].offset;
        float wd = ps->p[i].decay ? o->weight_decay : 0.0f;
        float step = (float)++opt->param_steps[i];
        if (o->kind == XA_OPTIM_ADAMW) { // zeroes the gradient as it goes
            float bc1 = o->no_bias_correction ? 1.0f : 1.0f - powf(o->beta1, step);
            float bc2_sqrt = o->no_bias_correction ? 1.0f : sqrtf(1.0f - powf(o->beta2, step));
            xa_adamw_k k = {.beta1 = o->beta1, .beta2 = o->beta2, .lr = lr, .wd = wd,
                            .step = lr / bc1, .bc2_sqrt = bc2_sqrt, .eps = o->eps,
                            .gscale = grad_scale * clip};
            opt_job j = {.w = w, .g = g, .m = m, .v = opt->v + ps->p[i].offset, .k = &k,
                         .n = t->numel};
            xa_parallel_for(blocks_of(t->numel), 4, adamw_blocks, &j);
        } else {
            for (int64_t j = 0; j < t->numel; j++) {
                float gj = g[j] * grad_scale * clip + wd * w[j];
                if (o->momentum != 0.0f) {
                    m[j] = o->momentum * m[j] + gj; // PyTorch, dampening 0
                    gj = o->nesterov ? gj + o->momentum * m[j] : m[j];
                }
                w[j] -= lr * gj;
            }
        }
    }
    if (o->kind == XA_OPTIM_SGD) // AdamW zeroed its gradients as it went
        xa_params_zero_grad(ps);
    return XA_OK;
}

float xa_optim_grad_norm(const xa_optim *opt) { return opt->last_norm; }

void xa_optim_set_clip(xa_optim *opt, float clip_norm) {
    opt->o.clip_norm = clip_norm > 0.0f ? clip_norm : 0.0f;
}
int64_t xa_optim_steps(const xa_optim *opt) { return opt->steps; }
void xa_optim_set_steps(xa_optim *opt, int64_t steps) { opt->steps = steps; }

int64_t *xa_optim_param_steps(xa_optim *opt, size_t *n) {
    if (ensure_state(opt))
        return NULL;
    *n = opt->ps->n; // the array may be longer after parameters were removed
    return opt->param_steps;
}

int64_t xa_optim_state(xa_optim *opt, float **m, float **v) {
    if (ensure_state(opt))
        return -1;
    *m = opt->m;
    *v = opt->v;
    return opt->numel;
}
