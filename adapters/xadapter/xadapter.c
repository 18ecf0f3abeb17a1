// X-adapter (Zhang et al. 2023, arXiv 2305.07358): cross-modal adapters inserted into chosen
// PLM layers. Each insertion has a V-expert attending to CLIP image features and a T-expert
// attending to CLIP text features; scripts switch them per task. The paper's equations were not
// available to us, so every unknown is an option; the defaults are PROJECT CHOICES (docs/adapters.md):
// queries from LayerNorm(h), keys/values projected from CLIP patch or text tokens, a bottleneck
// width `dim`, and a zero-initialised output projection so that an untrained X-adapter (or one
// with every expert off) leaves the PLM's outputs bit for bit unchanged.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;

enum { V = 0, T = 1, NEXPERT = 2 };

typedef struct {
    xa_tensor *ln_w, *ln_b;                // on the query (pre-LN placement)
    xa_tensor *wq, *bq, *wk, *bk, *wv, *bv; // d-wide attention projections
    xa_tensor *wo, *bo;                     // back to H; zero at init
    xa_tensor *ff_ln_w, *ff_ln_b, *w1, *b1, *w2, *b2; // optional FFN inside the expert
    xa_tensor *post_w, *post_b;             // post-LN placement
    xa_tensor *gate;                        // learned tanh gate (combine = "gate")
} expert;

typedef struct {
    int nlayers, heads;
    int64_t dim;
    bool ffn, gate;
    bool parallel; // at = "parallel": the query is the FFN's input, the result joins its output
    int ln; // 0 pre, 1 post, 2 none
    float dropout;
    bool pooled[NEXPERT]; // use pooled (projected) features instead of tokens
    bool has[NEXPERT];    // experts this instance was built with
    int layer_of[256];    // layer -> slot, -1 when not inserted
    expert *experts;      // [slot * NEXPERT + e]
} xadapter;

static const char *const submodules[] = {"v", "t", NULL};
static const char *const options[] = {"layers", "at", "dim", "heads", "experts", "ffn", "ln",
                                      "dropout", "combine", "image_features", "text_features",
                                      "init_scale", NULL};

static int make_param(xa_adapter *a, xa_tensor **dst, const char *fmt, int slot_layer,
                      const char *e, int ndim, const int64_t *shape, int init, float scale) {
    char nm[96];
    snprintf(nm, sizeof nm, fmt, slot_layer, e);
    return (*dst = H->param(a, nm, ndim, shape, init, scale)) ? 0 : -1;
}

static int build_expert(xa_adapter *a, xadapter *x, expert *ex, int layer, int e, int64_t Hd,
                        int64_t Df, float init) {
    const char *en = e == V ? "v" : "t";
    int64_t d = x->dim;
#define P(field, name, nd, shp, kind, sc)                                                          \
    if (make_param(a, &ex->field, "l%d.%s." name, layer, en, nd, shp, kind, sc))                   \
        return -1;
    if (x->ln == 0) {
        P(ln_w, "ln.weight", 1, ((int64_t[]){Hd}), XA_INIT_ONE_, 0);
        P(ln_b, "ln.bias", 1, ((int64_t[]){Hd}), XA_INIT_ZERO_, 0);
    }
    P(wq, "q.weight", 2, ((int64_t[]){d, Hd}), XA_INIT_NORMAL_, init);
    P(bq, "q.bias", 1, ((int64_t[]){d}), XA_INIT_ZERO_, 0);
    P(wk, "k.weight", 2, ((int64_t[]){d, Df}), XA_INIT_NORMAL_, init);
    P(bk, "k.bias", 1, ((int64_t[]){d}), XA_INIT_ZERO_, 0);
    P(wv, "v.weight", 2, ((int64_t[]){d, Df}), XA_INIT_NORMAL_, init);
    P(bv, "v.bias", 1, ((int64_t[]){d}), XA_INIT_ZERO_, 0);
    if (x->ffn) {
        P(ff_ln_w, "ffn.ln.weight", 1, ((int64_t[]){d}), XA_INIT_ONE_, 0);
        P(ff_ln_b, "ffn.ln.bias", 1, ((int64_t[]){d}), XA_INIT_ZERO_, 0);
        P(w1, "ffn.fc1.weight", 2, ((int64_t[]){4 * d, d}), XA_INIT_NORMAL_, init);
        P(b1, "ffn.fc1.bias", 1, ((int64_t[]){4 * d}), XA_INIT_ZERO_, 0);
        P(w2, "ffn.fc2.weight", 2, ((int64_t[]){d, 4 * d}), XA_INIT_NORMAL_, init);
        P(b2, "ffn.fc2.bias", 1, ((int64_t[]){d}), XA_INIT_ZERO_, 0);
    }
    // Zero start: the output projection is zero, or, with a gate, the gate is (tanh(0) = 0) and
    // the projection is random, since two zero factors would never receive a gradient.
    P(wo, "o.weight", 2, ((int64_t[]){Hd, d}), x->gate ? XA_INIT_NORMAL_ : XA_INIT_ZERO_, init);
    P(bo, "o.bias", 1, ((int64_t[]){Hd}), XA_INIT_ZERO_, 0);
    if (x->ln == 1 && (e == V || !x->has[V])) { // one post-LN per layer, kept by the first expert
        P(post_w, "post_ln.weight", 1, ((int64_t[]){Hd}), XA_INIT_ONE_, 0);
        P(post_b, "post_ln.bias", 1, ((int64_t[]){Hd}), XA_INIT_ZERO_, 0);
    }
    if (x->gate)
        P(gate, "gate", 1, ((int64_t[]){Hd}), XA_INIT_ZERO_, 0);
#undef P
    return 0;
}

static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);
    const xa_dims *d = H->dims(a);
    if (d->vlm_projection == 0)
        return H->errorf(ctx, -1, "X-adapter needs a vision-language model (load one: "
                                  "xa.model{ plm = ..., vlm = xa.load_vlm(dir) })");
    xadapter *x = calloc(1, sizeof *x);
    if (!x)
        return H->errorf(ctx, -2, "out of memory");
    H->set_state(a, x);
    for (int i = 0; i < 256; i++)
        x->layer_of[i] = -1;
    int64_t layers[256];
    int n = H->opt_ints(o, "layers", layers, 256);
    if (n < 0) { // default: the top two blocks
        n = d->layers >= 2 ? 2 : 1;
        layers[0] = d->layers - n, layers[n - 1] = d->layers - 1;
    }
    const char *at = H->opt_str(o, "at", "out");
    x->parallel = !strcmp(at, "parallel");
    int site = !strcmp(at, "out")                  ? XA_AT_OUT
               : !strcmp(at, "ffn") || x->parallel ? XA_AT_FFN
               : !strcmp(at, "attn")               ? XA_AT_ATTN
                                                   : -1;
    if (site < 0)
        return H->errorf(ctx, -1,
                         "at = '%s': use out (after the block), ffn, attn or parallel (beside "
                         "the FFN)",
                         at);
    x->dim = H->opt_int(o, "dim", 128);
    x->heads = (int)H->opt_int(o, "heads", 4);
    if (x->dim <= 0 || x->heads <= 0 || x->dim % x->heads)
        return H->errorf(ctx, -1, "dim %lld must be positive and divisible by heads %d",
                         (long long)x->dim, x->heads);
    x->ffn = H->opt_bool(o, "ffn", false);
    const char *ln = H->opt_str(o, "ln", "pre");
    x->ln = !strcmp(ln, "pre") ? 0 : !strcmp(ln, "post") ? 1 : !strcmp(ln, "none") ? 2 : -1;
    if (x->ln < 0)
        return H->errorf(ctx, -1, "ln = '%s': use pre, post or none", ln);
    x->dropout = (float)H->opt_num(o, "dropout", 0.1);
    if (!(x->dropout >= 0 && x->dropout < 1))
        return H->errorf(ctx, -1, "dropout %g is outside [0, 1)", (double)x->dropout);
    const char *combine = H->opt_str(o, "combine", "sum");
    if (strcmp(combine, "sum") && strcmp(combine, "gate"))
        return H->errorf(ctx, -1, "combine = '%s': use sum or gate", combine);
    x->gate = !strcmp(combine, "gate");
    const char *img = H->opt_str(o, "image_features", "tokens");
    const char *txt = H->opt_str(o, "text_features", "tokens");
    if ((strcmp(img, "tokens") && strcmp(img, "pooled")) ||
        (strcmp(txt, "tokens") && strcmp(txt, "pooled")))
        return H->errorf(ctx, -1, "image_features and text_features are tokens or pooled");
    x->pooled[V] = !strcmp(img, "pooled");
    x->pooled[T] = !strcmp(txt, "pooled");
    const char *ex[NEXPERT];
    int ne = H->opt_strs(o, "experts", ex, NEXPERT + 1);
    if (ne < 0)
        x->has[V] = x->has[T] = true;
    for (int i = 0; i < ne && i <= NEXPERT; i++) {
        if (i == NEXPERT || (strcmp(ex[i], "v") && strcmp(ex[i], "t")))
            return H->errorf(ctx, -1, "experts: a list of \"v\" and \"t\"");
        x->has[ex[i][0] == 'v' ? V : T] = true;
    }
    for (int e = 0; e < NEXPERT; e++)
        if (!x->has[e] && H->without(a, e == V ? "v" : "t") != 0)
            return -1;
    float init = (float)H->opt_num(o, "init_scale", 0.02);
    if (!(init >= 0 && init < 1e30f))
        return H->errorf(ctx, -1, "init_scale %g must be a finite number >= 0", (double)init);
    x->experts = calloc((size_t)n * NEXPERT, sizeof *x->experts);
    if (!x->experts)
        return H->errorf(ctx, -2, "out of memory");
    int64_t feat[NEXPERT] = {x->pooled[V] ? d->vlm_projection : d->vlm_vision_hidden,
                             x->pooled[T] ? d->vlm_projection : d->vlm_text_hidden};
    for (int i = 0; i < n; i++) {
        if (H->attach(a, (int)layers[i], site) != 0)
            return -1;
        if (x->layer_of[layers[i]] >= 0)
            return H->errorf(ctx, -1, "layer %lld is listed twice", (long long)layers[i]);
        x->layer_of[layers[i]] = i;
        for (int e = 0; e < NEXPERT; e++)
            if (x->has[e] && build_expert(a, x, &x->experts[i * NEXPERT + e], (int)layers[i], e,
                                          d->hidden, feat[e], init))
                return -1;
    }
    x->nlayers = n;
    return 0;
}

static xa_tensor *run_expert(xa_ctx *ctx, const xadapter *x, const expert *ex, xa_tensor *h,
                             xa_tensor *feats, const float *fmask) {
    xa_tensor *q_in = x->ln == 0 ? H->layernorm(ctx, h, ex->ln_w, ex->ln_b, 1e-5f) : h;
    xa_tensor *q = H->linear(ctx, q_in, ex->wq, ex->bq);
    xa_tensor *k = H->linear(ctx, feats, ex->wk, ex->bk);
    xa_tensor *v = H->linear(ctx, feats, ex->wv, ex->bv);
    xa_attn_args aa = {.struct_size = sizeof aa, .heads = x->heads, .key_mask = fmask,
                       .dropout = x->dropout};
    xa_tensor *z = H->attention(ctx, q, k, v, &aa);
    if (x->ffn) {
        xa_tensor *f = H->layernorm(ctx, z, ex->ff_ln_w, ex->ff_ln_b, 1e-5f);
        f = H->linear(ctx, H->act(ctx, H->linear(ctx, f, ex->w1, ex->b1), XA_ACT_GELU_), ex->w2,
                      ex->b2);
        z = H->add(ctx, z, f);
    }
    z = H->linear(ctx, H->dropout(ctx, z, x->dropout), ex->wo, ex->bo);
    if (x->gate)
        z = H->mul_row(ctx, z, H->act(ctx, ex->gate, XA_ACT_TANH_));
    return z;
}

static xa_tensor *forward(xa_adapter *a, const xa_site_args *s) {
    xadapter *x = H->state(a);
    xa_ctx *ctx = H->ctx_of(a);
    int slot = s->layer >= 0 && s->layer < 256 ? x->layer_of[s->layer] : -1;
    if (slot < 0)
        return s->h;
    xa_tensor *sum = NULL;
    bool ran = false;
    for (int e = 0; e < NEXPERT; e++) {
        if (!x->has[e] || !H->active(a, e == V ? "v" : "t"))
            continue; // an expert that is off costs nothing and changes nothing
        xa_tensor *feats = e == V ? (x->pooled[V] ? s->image_pooled : s->image_tokens)
                                  : (x->pooled[T] ? s->text_pooled : s->text_tokens);
        const float *fmask = x->pooled[e] ? NULL : e == V ? s->image_token_mask : s->text_token_mask;
        if (!feats) {
            H->errorf(ctx, -1, "%s: the %s-expert is on but the batch has no CLIP %s features (%s)",
                      H->name_of(a), e == V ? "V" : "T", e == V ? "image" : "text",
                      e == V ? "give examples images, an image pool to retrieve from, or switch "
                               "it off with activate"
                             : "give the texts' CLIP features (xa.train's features = {texts "
                               "= true}; features = false turns them off), or switch it off "
                               "with activate");
            return NULL;
        }
        xa_tensor *q = x->parallel ? s->x : s->h; // beside the FFN it reads what the FFN reads
        xa_tensor *z = run_expert(ctx, x, &x->experts[slot * NEXPERT + e], q, feats, fmask);
        sum = ran ? H->add(ctx, sum, z) : z;
        ran = true;
    }
    if (!ran) // no expert on: the stream as it was
        return s->h;
    if (!sum) // an expert failed: its error stands
        return NULL;
    xa_tensor *out = H->add(ctx, s->h, sum);
    if (x->ln == 1) { // post-LN placement normalises the rewritten stream
        const expert *ex = &x->experts[slot * NEXPERT + (x->has[V] ? V : T)];
        out = H->layernorm(ctx, out, ex->post_w, ex->post_b, 1e-5f);
    }
    return out;
}

static void destroy(xa_adapter *a) {
    xadapter *x = H->state(a);
    free(x->experts);
    free(x);
}

static const xa_adapter_class xadapter_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "xadapter",
    .description = "cross-modal V/T experts attending to CLIP image and text features",
    .submodules = submodules,
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
};

static const xa_adapter_class *const classes[] = {&xadapter_class, NULL};

XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    XA_PLUGIN_INFO_INIT(info, "xadapter", "1.0.0", classes);
    if (host->abi_major != XA_ABI_MAJOR || host->struct_size < sizeof(xa_host_api)) {
        *errmsg = strdup("host ABI too old for this plugin");
        return 1;
    }
    H = host;
    return 0;
}
