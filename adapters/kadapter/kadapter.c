// K-Adapter (Wang et al. 2021, arXiv 2002.01808) as the official code builds it: a side network
// that reads hidden states of the frozen PLM at a few taps and never writes back into it. Each
// tap k runs x = hs[tap_k] + prev, then x + up(BERT_N(down(x))); the result feeds the next tap
// and the last one is the side output, fused with the last hidden state by the net (add or
// concat). Several instances ("fac", "lin") over the same taps share nothing. docs/adapters.md.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;

#define MAX_TAPS 64

typedef struct { // one post-LN BERT layer inside an adapter (PyTorch BertLayer)
    xa_tensor *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *ln1_w, *ln1_b;
    xa_tensor *w1, *b1, *w2, *b2, *ln2_w, *ln2_b;
} bert_layer;

typedef struct { // Adapter_k: down, N BERT layers, up
    xa_tensor *down_w, *down_b, *up_w, *up_b;
    bert_layer *layers;
} unit;

typedef struct {
    int ntaps, nlayers, heads, skip;
    float dropout, eps;
    bool mask;
    unit units[MAX_TAPS];
} kadapter;

static const char *const options[] = {"taps", "size", "layers", "heads", "intermediate", "skip",
                                      "init_range", "dropout", "mask", "eps", NULL};

// The official default taps are 0, 11, 22 of RoBERTa-large's 24 blocks: the embeddings, the end
// of the first half and the block before the last. For L blocks: {0, L/2 - 1, L - 2}, clamped to
// 0 and without repeats, so tiny models get fewer taps ({0} for L = 2, {0, 1, 2} for L = 4).
static int default_taps(int64_t L, int64_t *taps) {
    int64_t want[3] = {0, L / 2 - 1, L - 2};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        int64_t t = want[i] < 0 ? 0 : want[i];
        if (n == 0 || t > taps[n - 1])
            taps[n++] = t;
    }
    return n;
}

static xa_tensor *param(xa_adapter *a, int tap, const char *name, int ndim, const int64_t *shape,
                        int init, float scale) {
    char nm[96];
    snprintf(nm, sizeof nm, "a%d.%s", tap, name);
    return H->param(a, nm, ndim, shape, init, scale);
}

// PyTorch's default init, which the official code keeps for the inner BertEncoder: Linear weight
// and bias U(-1/sqrt(in), 1/sqrt(in)), LayerNorm weight 1 and bias 0.
static int build_layer(xa_adapter *a, int k, int l, bert_layer *b, int64_t d, int64_t inter) {
    float bd = 1.0f / sqrtf((float)d), bi = 1.0f / sqrtf((float)inter);
    char nm[64];
#define P(field, suffix, nd, shp, kind, sc)                                                        \
    snprintf(nm, sizeof nm, "l%d.%s", l, suffix);                                                  \
    if (!(b->field = param(a, k, nm, nd, shp, kind, sc)))                                          \
        return -1;
#define LIN(w, bias, name, out, in, bound)                                                         \
    P(w, name ".weight", 2, ((int64_t[]){out, in}), XA_INIT_KAIMING_, 0);                          \
    P(bias, name ".bias", 1, ((int64_t[]){out}), XA_INIT_UNIFORM_, bound);
    LIN(wq, bq, "attention.query", d, d, bd);
    LIN(wk, bk, "attention.key", d, d, bd);
    LIN(wv, bv, "attention.value", d, d, bd);
    LIN(wo, bo, "attention.output", d, d, bd);
    P(ln1_w, "attention.ln.weight", 1, ((int64_t[]){d}), XA_INIT_ONE_, 0);
    P(ln1_b, "attention.ln.bias", 1, ((int64_t[]){d}), XA_INIT_ZERO_, 0);
    LIN(w1, b1, "intermediate", inter, d, bd);
    LIN(w2, b2, "output", d, inter, bi);
    P(ln2_w, "output.ln.weight", 1, ((int64_t[]){d}), XA_INIT_ONE_, 0);
    P(ln2_b, "output.ln.bias", 1, ((int64_t[]){d}), XA_INIT_ZERO_, 0);
#undef LIN
#undef P
    return 0;
}

static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);
    const xa_dims *dm = H->dims(a);
    kadapter *ka = calloc(1, sizeof *ka);
    if (!ka)
        return H->errorf(ctx, -2, "out of memory");
    H->set_state(a, ka);
    int64_t taps[MAX_TAPS];
    int n = H->opt_ints(o, "taps", taps, MAX_TAPS);
    if (n < 0)
        n = default_taps(dm->layers, taps);
    if (n == 0 || n > MAX_TAPS)
        return H->errorf(ctx, -1, "taps: give 1 to %d hidden-state indices (0 = embeddings, "
                                  "i = output of block i), got %d", MAX_TAPS, n);
    int64_t size = H->opt_int(o, "size", 768);
    int64_t heads = H->opt_int(o, "heads", 12);
    int64_t nlayers = H->opt_int(o, "layers", 2);
    int64_t inter = H->opt_int(o, "intermediate", 4 * size);
    int64_t skip = H->opt_int(o, "skip", 0);
    if (size <= 0 || heads <= 0 || size % heads)
        return H->errorf(ctx, -1, "size %lld must be positive and divisible by heads %lld "
                                  "(the official adapter: size 768, heads 12)",
                         (long long)size, (long long)heads);
    if (nlayers < 0 || nlayers > 64 || inter <= 0)
        return H->errorf(ctx, -1, "layers must be 0..64 and intermediate positive (got %lld, %lld)",
                         (long long)nlayers, (long long)inter);
    // skip = 1 makes the code's rule read outs[k + 1], past the last output: PyTorch raises
    // IndexError there, so it is refused here rather than given a meaning of our own.
    if (skip < 0 || skip == 1)
        return H->errorf(ctx, -1, "skip = %lld: use 0 (off) or 2 and more (skip = 1 indexes an "
                                  "adapter output that does not exist yet)", (long long)skip);
    ka->ntaps = n, ka->nlayers = (int)nlayers, ka->heads = (int)heads, ka->skip = (int)skip;
    ka->dropout = (float)H->opt_num(o, "dropout", 0.1);
    ka->eps = (float)H->opt_num(o, "eps", 1e-5);
    ka->mask = H->opt_bool(o, "mask", false);
    float init = (float)H->opt_num(o, "init_range", 0.0002);
    if (!(ka->dropout >= 0 && ka->dropout < 1) || !(ka->eps > 0) || !(init >= 0))
        return H->errorf(ctx, -1, "dropout must be in [0, 1), eps positive, init_range >= 0");
    int64_t hid = dm->hidden;
    for (int k = 0; k < n; k++) {
        if (H->tap(a, (int)taps[k]) != 0)
            return -1;
        unit *u = &ka->units[k];
        if (!(u->down_w = param(a, k, "down.weight", 2, (int64_t[]){size, hid}, XA_INIT_NORMAL_,
                                init)) ||
            !(u->down_b = param(a, k, "down.bias", 1, (int64_t[]){size}, XA_INIT_ZERO_, 0)))
            return -1;
        if (nlayers && !(u->layers = calloc((size_t)nlayers, sizeof *u->layers)))
            return H->errorf(ctx, -2, "out of memory");
        for (int l = 0; l < nlayers; l++)
            if (build_layer(a, k, l, &u->layers[l], size, inter))
                return -1;
        if (!(u->up_w = param(a, k, "up.weight", 2, (int64_t[]){hid, size}, XA_INIT_NORMAL_,
                              init)) ||
            !(u->up_b = param(a, k, "up.bias", 1, (int64_t[]){hid}, XA_INIT_ZERO_, 0)))
            return -1;
    }
    return 0;
}

// BertLayer: LN(h + drop(o(attn(h)))), then LN(h + drop(fc2(gelu(fc1(h))))).
static xa_tensor *run_layer(xa_ctx *ctx, const kadapter *ka, const bert_layer *b, xa_tensor *h,
                            const float *mask) {
    xa_attn_args aa = {.struct_size = sizeof aa, .heads = ka->heads, .key_mask = mask,
                       .dropout = ka->dropout};
    xa_tensor *q = H->linear(ctx, h, b->wq, b->bq);
    xa_tensor *k = H->linear(ctx, h, b->wk, b->bk);
    xa_tensor *v = H->linear(ctx, h, b->wv, b->bv);
    xa_tensor *z = H->linear(ctx, H->attention(ctx, q, k, v, &aa), b->wo, b->bo);
    h = H->layernorm(ctx, H->add(ctx, h, H->dropout(ctx, z, ka->dropout)), b->ln1_w, b->ln1_b,
                     ka->eps);
    z = H->act(ctx, H->linear(ctx, h, b->w1, b->b1), XA_ACT_GELU_);
    z = H->linear(ctx, z, b->w2, b->b2);
    return H->layernorm(ctx, H->add(ctx, h, H->dropout(ctx, z, ka->dropout)), b->ln2_w, b->ln2_b,
                        ka->eps);
}

static xa_tensor *forward(xa_adapter *a, const xa_site_args *s) {
    kadapter *ka = H->state(a);
    xa_ctx *ctx = H->ctx_of(a);
    if (s->ntaps != ka->ntaps) {
        H->errorf(ctx, -1, "%s: the net gave %d taps, the adapter was built for %d", H->name_of(a),
                  s->ntaps, ka->ntaps);
        return NULL;
    }
    // The official adapter attends to every position, padding included (an all-ones mask).
    const float *mask = ka->mask ? s->mask : NULL;
    xa_tensor *outs[MAX_TAPS], *prev = NULL;
    for (int k = 0; k < ka->ntaps; k++) {
        const unit *u = &ka->units[k];
        // prev starts as zeros in the code; hs + 0 is hs, so the first tap skips the add
        xa_tensor *x = prev ? H->add(ctx, s->taps[k], prev) : s->taps[k];
        xa_tensor *e = H->linear(ctx, x, u->down_w, u->down_b);
        for (int l = 0; l < ka->nlayers; l++)
            e = run_layer(ctx, ka, &u->layers[l], e, mask);
        outs[k] = prev = H->add(ctx, x, H->linear(ctx, e, u->up_w, u->up_b));
        // Bug-compatible with the official AdapterModel: after adapter number c = k + 1, when c
        // is a multiple of skip, add outs[c / skip] (0-based). The stated intent looks like
        // outs[c - skip]; we keep what the released checkpoints were trained with.
        if (ka->skip > 0 && (k + 1) % ka->skip == 0)
            prev = H->add(ctx, prev, outs[(k + 1) / ka->skip]);
        if (!prev)
            return NULL;
    }
    return prev; // the code's hidden_states_last: the last output, skip term included
}

static void destroy(xa_adapter *a) {
    kadapter *ka = H->state(a);
    for (int k = 0; k < MAX_TAPS; k++)
        free(ka->units[k].layers);
    free(ka);
}

static const xa_adapter_class kadapter_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "kadapter",
    .description = "K-Adapter knowledge adapter: a side network of BERT layers over PLM taps",
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
};

static const xa_adapter_class *const classes[] = {&kadapter_class, NULL};

XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    XA_PLUGIN_INFO_INIT(info, "kadapter", "1.0.0", classes);
    if (host->abi_major != XA_ABI_MAJOR || host->struct_size < sizeof(xa_host_api)) {
        *errmsg = strdup("host ABI too old for this plugin");
        return 1;
    }
    H = host;
    return 0;
}
