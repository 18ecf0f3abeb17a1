// The network: a frozen PLM (and optional frozen VLM) with adapter instances at their sites and
// taps. It owns the trainable parameters (one slab), runs in-stream adapters through the
// encoder's site hooks in declared order, runs side networks on tapped hidden states and fuses
// their outputs with the last hidden state. Saving and loading adapter files live in net_io.c.
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "net_cache.h"
#include "net_internal.h"

typedef struct site_list {
    xa_adapter **v;
    int n;
} site_list;

struct xa_net {
    xa_ctx *ctx;
    xa_model *plm, *vlm;
    xa_registry *reg;
    xa_adapter **adapters;
    size_t nadapters;
    xa_params *params;
    int layers;
    uint32_t *enabled;     // per layer: bit s when site s has adapters
    uint32_t *replace;     // per layer: bit s when an adapter computes projection s itself
    xa_adapter **replacer; // [layer * XA_SITE_COUNT + site]
    site_list *sites;      // [layer * XA_SITE_COUNT + site]
    xa_fusion fusion;
    xa_prefix_cache *prefix; // NULL when off
    // Concat fusion, created on first use for `fuse_n` side networks: with one, fuse_w/fuse_b
    // project [h_L; a] (2H -> H); with k >= 2, stage_w/stage_b[i] project [h_L; a_i] and
    // fuse_w/fuse_b the concatenation of those k results (kH -> H).
    xa_tensor *fuse_w, *fuse_b, **stage_w, **stage_b;
    int fuse_n;
    char active_buf[256];
};

xa_ctx *xa_net_ctx(xa_net *n) { return n->ctx; }
xa_model *xa_net_plm(xa_net *n) { return n->plm; }
xa_registry *xa_net_registry(xa_net *n) { return n->reg; }
xa_adapter *xa_net_adapter_at(xa_net *n, size_t i) { return i < n->nadapters ? n->adapters[i] : NULL; }

xa_net *xa_net_new(xa_ctx *ctx, xa_model *plm, xa_model *vlm, xa_registry *reg) {
    if (plm->cfg.arch == XA_ARCH_CLIP) {
        xa_errorf(ctx, XA_EINVAL, "%s: the language model must be BERT or RoBERTa, not CLIP",
                  plm->dir);
        return NULL;
    }
    if (vlm && vlm->cfg.arch != XA_ARCH_CLIP) {
        xa_errorf(ctx, XA_EINVAL, "%s: the vision-language model must be CLIP", vlm->dir);
        return NULL;
    }
    xa_net *n = xa_calloc(ctx, 1, sizeof *n);
    if (!n)
        return NULL;
    n->ctx = ctx, n->plm = plm, n->vlm = vlm, n->reg = reg;
    n->layers = (int)plm->cfg.text.layers;
    n->params = xa_params_new(ctx);
    n->enabled = xa_calloc(ctx, (size_t)n->layers, sizeof *n->enabled);
    n->sites = xa_calloc(ctx, (size_t)n->layers * XA_SITE_COUNT, sizeof *n->sites);
    n->replace = xa_calloc(ctx, (size_t)n->layers, sizeof *n->replace);
    n->replacer = xa_calloc(ctx, (size_t)n->layers * XA_SITE_COUNT, sizeof *n->replacer);
    if (!n->params || !n->enabled || !n->sites || !n->replace || !n->replacer) {
        xa_net_free(n);
        return NULL;
    }
    return n;
}

void xa_net_free(xa_net *n) {
    if (!n)
        return;
    for (size_t i = 0; i < n->nadapters; i++)
        xa_adapter_destroy(n->adapters[i]);
    free(n->adapters);
    for (int i = 0; n->sites && i < n->layers * XA_SITE_COUNT; i++)
        free(n->sites[i].v);
    free(n->sites);
    free(n->enabled);
    free(n->replace);
    free(n->replacer);
    xa_params_free(n->params);
    xa_prefix_cache_free(n->prefix);
    free(n->stage_w);
    free(n->stage_b);
    free(n);
}

void xa_net_set_prefix_cache(xa_net *n, size_t budget_bytes) {
    xa_prefix_cache_free(n->prefix);
    n->prefix = budget_bytes ? xa_prefix_cache_new(budget_bytes, n->plm->cfg.text.hidden) : NULL;
}

void xa_net_prefix_stats(const xa_net *n, int64_t *hits, int64_t *misses, size_t *bytes) {
    xa_prefix_cache_stats(n->prefix, hits, misses, bytes);
}

// The hidden states the net needs from the frozen prefix: every side-network tap at or below the
// lowest in-stream adapter K, and K itself (the stream the adapted blocks start from).
static int prefix_layout(const xa_net *n, int *layers) {
    int K = xa_net_lowest_site(n), count = 0;
    bool want[XA_PREFIX_MAX_LAYERS] = {0};
    if (K >= XA_PREFIX_MAX_LAYERS)
        return 0;
    want[K] = true;
    for (size_t i = 0; i < n->nadapters; i++)
        for (int t = 0; t < n->adapters[i]->ntaps; t++)
            if (n->adapters[i]->taps[t] <= K)
                want[n->adapters[i]->taps[t]] = true;
    for (int l = 0; l <= K; l++)
        if (want[l])
            layers[count++] = l;
    return count;
}

static xa_status unknown_adapter(xa_net *n, const char *name);

static xa_adapter *find_adapter(const xa_net *n, const char *name) {
    for (size_t i = 0; i < n->nadapters; i++)
        if (!strcmp(n->adapters[i]->name, name))
            return n->adapters[i];
    return NULL;
}

// --- called by plugins during create (through host_api.c) ---------------------------------------

xa_status xa_net_attach(xa_net *n, xa_adapter *a, int layer, int at) {
    if (layer < 0 || layer >= n->layers)
        return xa_errorf(n->ctx, XA_ERANGE, "%s: layer %d is outside the model's 0..%d", a->name,
                         layer, n->layers - 1);
    if (at < 0 || at >= XA_SITE_COUNT) {
        char list[128] = "";
        for (int s = 0; s < XA_SITE_COUNT; s++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d %s", s ? ", " : "", s,
                     xa_site_name((xa_site)s));
        return xa_errorf(n->ctx, XA_EINVAL, "%s: unknown insertion point %d (sites are %s)",
                         a->name, at, list);
    }
    site_list *s = &n->sites[layer * XA_SITE_COUNT + at];
    xa_adapter **v = realloc(s->v, (size_t)(s->n + 1) * sizeof *v);
    xa_attachment *sites = realloc(a->sites, (size_t)(a->nsites + 1) * sizeof *sites);
    if (v)
        s->v = v;
    if (sites)
        a->sites = sites;
    if (!v || !sites)
        return xa_errorf(n->ctx, XA_ENOMEM, "out of memory attaching %s", a->name);
    s->v[s->n++] = a;
    a->sites[a->nsites++] = (xa_attachment){layer, at};
    n->enabled[layer] |= 1u << at;
    return XA_OK;
}

xa_status xa_net_tap(xa_net *n, xa_adapter *a, int layer) {
    if (layer < 0 || layer > n->layers)
        return xa_errorf(n->ctx, XA_ERANGE,
                         "%s: tap %d is outside 0..%d (0 = embeddings, i = output of block i)",
                         a->name, layer, n->layers);
    int *taps = realloc(a->taps, (size_t)(a->ntaps + 1) * sizeof *taps);
    if (!taps)
        return xa_errorf(n->ctx, XA_ENOMEM, "out of memory");
    a->taps = taps;
    a->taps[a->ntaps++] = layer;
    return XA_OK;
}

xa_tensor *xa_net_new_param(xa_net *n, xa_adapter *a, const char *name, int ndim,
                            const int64_t *shape, int init, float scale) {
    char full[256];
    snprintf(full, sizeof full, "%s.%s", a->name, name);
    if (init < XA_INIT_ZERO || init > XA_INIT_KAIMING) {
        xa_errorf(n->ctx, XA_EINVAL, "%s: unknown init kind %d", full, init);
        return NULL;
    }
    return xa_params_add(n->params, full, ndim, shape, (xa_init){(xa_init_kind)init, scale});
}

static bool is_projection(int at) { return at >= XA_SITE_Q && at <= XA_SITE_FF2; }

const char *xa_net_merged(const xa_net *n) {
    for (int i = 0; i < n->layers * XA_SITE_COUNT; i++)
        if (n->replacer[i])
            return n->replacer[i]->name;
    return NULL;
}

xa_status xa_net_replace(xa_net *n, xa_adapter *a, int layer, int at, bool on) {
    if (layer < 0 || layer >= n->layers || !is_projection(at))
        return xa_errorf(n->ctx, XA_EINVAL, "%s: only projections (q, k, v, o, ff1, ff2) of layers "
                         "0..%d can be replaced", a->name, n->layers - 1);
    xa_adapter **r = &n->replacer[layer * XA_SITE_COUNT + at];
    if (on && *r && *r != a)
        return xa_errorf(n->ctx, XA_ESTATE, "%s: projection %s of layer %d is already replaced by %s",
                         a->name, xa_site_name((xa_site)at), layer, (*r)->name);
    if (!on && *r != a)
        return XA_OK;
    *r = on ? a : NULL;
    if (on)
        n->replace[layer] |= 1u << at;
    else
        n->replace[layer] &= ~(1u << at);
    return XA_OK;
}

xa_status xa_net_base_linear(xa_net *n, int layer, int at, xa_tensor **w, xa_tensor **b) {
    xa_block *blk = xa_model_block(n->plm, layer);
    if (!blk || !is_projection(at))
        return xa_errorf(n->ctx, XA_EINVAL, "no frozen projection %d in layer %d", at, layer);
    xa_tensor *ws[] = {blk->wq, blk->wk, blk->wv, blk->wo, blk->w1, blk->w2};
    xa_tensor *bs[] = {blk->bq, blk->bk, blk->bv, blk->bo, blk->b1, blk->b2};
    *w = ws[at - XA_SITE_Q];
    *b = bs[at - XA_SITE_Q];
    return XA_OK;
}

xa_status xa_net_control(xa_net *n, const char *name, const char *command) {
    xa_adapter *a = find_adapter(n, name);
    if (!a)
        return unknown_adapter(n, name);
    if (!XA_CLASS_HAS(a->cls, control))
        return xa_errorf(n->ctx, XA_EINVAL, "%s '%s' takes no commands (got '%s')", a->cls->name,
                         name, command);
    xa_error_clear(n->ctx);
    if (a->cls->control(a, command) != 0 || xa_errcode(n->ctx))
        return xa_errcode(n->ctx) ? xa_errcode(n->ctx)
                                  : xa_errorf(n->ctx, XA_EPLUGIN, "%s: '%s' failed", name, command);
    return XA_OK;
}

// --- building the network ----------------------------------------------------------------------

static void fill_dims(const xa_net *n, xa_dims *d) {
    const xa_model_config *p = &n->plm->cfg;
    *d = (xa_dims){.struct_size = sizeof *d, .hidden = p->text.hidden, .layers = p->text.layers,
                   .heads = p->text.heads, .intermediate = p->text.intermediate};
    if (n->vlm) {
        d->vlm_text_hidden = n->vlm->cfg.text.hidden;
        d->vlm_vision_hidden = n->vlm->cfg.vision.hidden;
        d->vlm_projection = n->vlm->cfg.projection_dim;
    }
}

// Remove every trace of a half-created adapter: its sites, and its parameters (the last ones).
static void unwind(xa_net *n, xa_adapter *a) {
    for (int i = 0; i < a->nsites; i++) {
        site_list *s = &n->sites[a->sites[i].layer * XA_SITE_COUNT + a->sites[i].at];
        s->n--; // attachments are appended, so this adapter's are last
        if (s->n == 0)
            n->enabled[a->sites[i].layer] &= ~(1u << a->sites[i].at);
    }
    for (int i = 0; i < n->layers * XA_SITE_COUNT; i++)
        if (n->replacer[i] == a)
            xa_net_replace(n, a, i / XA_SITE_COUNT, i % XA_SITE_COUNT, false);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s.", a->name);
    xa_params_remove_prefix(n->params, prefix);
}

// Whether a plugin's message already says which instance failed: "<class> '<name>'" anywhere or
// "<name>:" at the start (a bare strstr of a short name like "e" matched nearly every message).
static bool names_instance(const char *msg, const char *owner, const char *name) {
    size_t len = strlen(name);
    return strstr(msg, owner) || (!strncmp(msg, name, len) && msg[len] == ':');
}

xa_status xa_net_insert(xa_net *n, const char *cls_name, const char *name, const char *opts_json) {
    xa_ctx *ctx = n->ctx;
    const xa_plugin_record *rec = NULL;
    const xa_adapter_class *cls = n->reg ? xa_registry_find(n->reg, cls_name, &rec) : NULL;
    if (!cls)
        return xa_errorf(ctx, XA_ENOTFOUND,
                         "unknown adapter '%s' (loaded: %s; plugins are searched in %s)", cls_name,
                         n->reg ? xa_registry_class_names(n->reg) : "none",
                         n->reg ? xa_registry_path(n->reg) : "-");
    if (!name)
        name = cls_name;
    if (!*name || strchr(name, '.') || strchr(name, '*') || strlen(name) > XA_ADAPTER_NAME_MAX)
        return xa_errorf(ctx, XA_EINVAL,
                         "adapter name '%.40s%s' must be non-empty, without '.' or '*', and at "
                         "most %d characters",
                         name, strlen(name) > 40 ? "..." : "", XA_ADAPTER_NAME_MAX);
    if (!strcmp(name, "plm") || !strcmp(name, "vlm") || !strcmp(name, "head") ||
        !strcmp(name, "fusion"))
        return xa_errorf(ctx, XA_EINVAL,
                         "'%s' is reserved (plm, vlm, head and fusion name parameters of the "
                         "network): give the adapter another name",
                         name);
    if (find_adapter(n, name))
        return xa_errorf(ctx, XA_EINVAL,
                         "an adapter named '%s' already exists (give the new one another name)",
                         name);
    cJSON *opts = opts_json ? cJSON_Parse(opts_json) : cJSON_CreateObject();
    if (!opts || !cJSON_IsObject(opts)) {
        cJSON_Delete(opts);
        return xa_errorf(ctx, XA_EINVAL, "%s '%s': options must be a table of key = value", cls_name,
                         name);
    }
    xa_adapter *a = xa_adapter_create(ctx, n, cls, rec, name, opts);
    xa_adapter **v = a ? realloc(n->adapters, (n->nadapters + 1) * sizeof *v) : NULL;
    if (!v) {
        cJSON_Delete(opts);
        xa_adapter_destroy(a);
        return xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM;
    }
    n->adapters = v;
    fill_dims(n, &a->dims);
    char owner[256];
    snprintf(owner, sizeof owner, "%s '%s'", cls_name, name);
    xa_opts o = {.ctx = ctx, .json = opts, .owner = owner};
    xa_error_clear(ctx);
    a->creating = true;
    int rc = cls->create(a, &o);
    a->creating = false;
    cJSON_Delete(opts);
    if (rc != 0 || xa_errcode(ctx) != XA_OK) {
        if (!xa_errcode(ctx))
            xa_errorf(ctx, XA_EPLUGIN, "%s: create failed without a message", owner);
        else if (!names_instance(xa_errmsg(ctx), owner, name))
            xa_error_wrap(ctx, "%s", owner);
        unwind(n, a);
        xa_adapter_destroy(a);
        return xa_errcode(ctx);
    }
    n->adapters[n->nadapters++] = a;
    return XA_OK;
}

// --- taking back a failed load ------------------------------------------------------------------

xa_status xa_net_mark_take(xa_net *n, xa_net_mark *m) {
    *m = (xa_net_mark){.nadapters = n->nadapters, .fusion = n->fusion, .fused = n->fuse_w != NULL};
    xa_rng_state(n->ctx, m->rng);
    size_t k = n->nadapters ? n->nadapters : 1;
    m->active = malloc(k * sizeof *m->active);
    m->disabled = malloc(k * sizeof *m->disabled);
    if (!m->active || !m->disabled) {
        xa_net_mark_free(m);
        return xa_errorf(n->ctx, XA_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n->nadapters; i++)
        m->active[i] = n->adapters[i]->active, m->disabled[i] = n->adapters[i]->disabled;
    return XA_OK;
}

static void drop_fusion(xa_net *n) {
    xa_params_remove_prefix(n->params, "fusion.");
    free(n->stage_w);
    free(n->stage_b);
    n->fuse_w = n->fuse_b = NULL, n->stage_w = n->stage_b = NULL, n->fuse_n = 0;
}

void xa_net_mark_restore(xa_net *n, xa_net_mark *m) {
    if (!m->fused && n->fuse_w)
        drop_fusion(n);
    while (n->nadapters > m->nadapters) { // the last inserted first: their sites are last
        xa_adapter *a = n->adapters[--n->nadapters];
        unwind(n, a);
        xa_adapter_destroy(a);
    }
    for (size_t i = 0; i < n->nadapters; i++)
        n->adapters[i]->active = m->active[i], n->adapters[i]->disabled = m->disabled[i];
    n->fusion = m->fusion;
    xa_rng_set_state(n->ctx, m->rng);
    xa_net_mark_free(m);
}

void xa_net_mark_free(xa_net_mark *m) {
    free(m->active);
    free(m->disabled);
    m->active = NULL, m->disabled = NULL;
}

size_t xa_net_adapter_count(const xa_net *n) { return n->nadapters; }
const char *xa_net_adapter_name(const xa_net *n, size_t i) {
    return i < n->nadapters ? n->adapters[i]->name : NULL;
}
const char *xa_net_adapter_class(const xa_net *n, size_t i) {
    return i < n->nadapters ? n->adapters[i]->cls->name : NULL;
}
xa_params *xa_net_params(xa_net *n) { return n->params; }
xa_model *xa_net_plm_model(xa_net *n) { return n->plm; }
xa_model *xa_net_vlm_model(xa_net *n) { return n->vlm; }

xa_tensor *xa_net_param(xa_net *n, const char *name, int ndim, const int64_t *shape,
                        xa_init init) {
    return xa_params_add(n->params, name, ndim, shape, init);
}
void xa_net_set_fusion(xa_net *n, xa_fusion f) { n->fusion = f; }
xa_fusion xa_net_fusion(const xa_net *n) { return n->fusion; }

static xa_status unknown_adapter(xa_net *n, const char *name) {
    char list[512] = "";
    for (size_t i = 0; i < n->nadapters; i++) {
        if (i)
            strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, n->adapters[i]->name, sizeof list - strlen(list) - 1);
    }
    return xa_errorf(n->ctx, XA_ENOTFOUND, "no adapter named '%s' (inserted: %s)", name,
                     list[0] ? list : "none");
}

xa_status xa_net_activate(xa_net *n, const char *name, const char *const *names, int count) {
    xa_adapter *a = find_adapter(n, name);
    if (!a)
        return unknown_adapter(n, name);
    if (count < 0 || (a->nsub == 0 && count == 0)) { // all on / a class without sub-modules off
        a->active = a->built;
        a->disabled = count == 0;
        return XA_OK;
    }
    a->disabled = false;
    uint32_t mask = 0;
    for (int i = 0; i < count; i++) {
        int k = 0;
        while (k < a->nsub && strcmp(a->cls->submodules[k], names[i]))
            k++;
        if (k == a->nsub) {
            char list[256] = "";
            for (int j = 0; j < a->nsub; j++) {
                if (!((a->built >> j) & 1u))
                    continue;
                if (list[0])
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
                strncat(list, a->cls->submodules[j], sizeof list - strlen(list) - 1);
            }
            return xa_errorf(n->ctx, XA_EINVAL, "%s '%s' has no sub-module '%s' (it has: %s)",
                             a->cls->name, a->name, names[i], list[0] ? list : "none");
        }
        if (!((a->built >> k) & 1u))
            return xa_errorf(n->ctx, XA_EINVAL,
                             "%s '%s' was inserted without sub-module '%s' (its options: %s)",
                             a->cls->name, a->name, names[i], a->opts_json);
        mask |= 1u << k;
    }
    a->active = mask;
    return XA_OK;
}

const char *xa_net_active(xa_net *n, const char *name) {
    xa_adapter *a = find_adapter(n, name);
    if (!a)
        return NULL;
    if (a->nsub == 0) // a class without sub-modules is on or off as a whole
        return a->disabled ? "none" : "all";
    n->active_buf[0] = '\0';
    for (int i = 0; i < a->nsub; i++)
        if ((a->active >> i) & 1u) {
            if (n->active_buf[0])
                strncat(n->active_buf, ", ", sizeof n->active_buf - strlen(n->active_buf) - 1);
            strncat(n->active_buf, a->cls->submodules[i],
                    sizeof n->active_buf - strlen(n->active_buf) - 1);
        }
    return n->active_buf[0] ? n->active_buf : "none";
}

xa_status xa_net_freeze(xa_net *n, const char *pattern, bool frozen, int *matched) {
    int hits = 0;
    for (size_t i = 0; i < xa_params_count(n->params); i++)
        if (!fnmatch(pattern, xa_params_name(n->params, i), 0)) {
            xa_params_set_trainable(n->params, i, !frozen);
            hits++;
        }
    if (!fnmatch(pattern, "plm.x", 0) || !fnmatch(pattern, "vlm.x", 0)) {
        if (!frozen && hits == 0) // "*" unfreezes what can be; "plm.*" alone asks the impossible
            return xa_errorf(n->ctx, XA_EINVAL,
                             "'%s': the PLM and VLM are frozen bases and stay frozen (adapters, "
                             "LoRA and heads are how they adapt)",
                             pattern);
        hits++; // they are frozen already
    }
    if (matched)
        *matched = hits;
    return XA_OK;
}

int xa_net_lowest_site(const xa_net *n) {
    for (int l = 0; l < n->layers; l++)
        if (n->enabled[l])
            return l;
    return n->layers;
}

// --- forward -------------------------------------------------------------------------------------

typedef struct {
    xa_net *net;
    const xa_net_batch *batch;
} call;

static void base_args(const call *c, xa_site_args *a) {
    const xa_vlm_feats *f = c->batch->feats;
    *a = (xa_site_args){.struct_size = sizeof *a, .mask = c->batch->text.mask,
                        .B = c->batch->text.B, .T = c->batch->text.T};
    if (f) {
        a->image_tokens = f->image_tokens, a->image_token_mask = f->image_token_mask;
        a->image_pooled = f->image_pooled, a->text_tokens = f->text_tokens;
        a->text_token_mask = f->text_token_mask, a->text_pooled = f->text_pooled;
    }
}

// What an in-stream or side forward returned, checked before anything downstream reads it: nothing
// (with the plugin's message, or one saying so), or a tensor of another shape than the one it
// rewrites (the shape args->h has; for a replaced projection, the frozen one's output; for a side
// network, the last hidden state it is fused with). A message that does not name the adapter gets
// its name, layer and site in front, so a failing op inside a plugin ("mul_row: vector length
// must equal ...") says whose it was.
static xa_tensor *checked(xa_ctx *ctx, const xa_adapter *a, int layer, xa_site s, xa_tensor *y,
                          int ndim, const int64_t *shape) {
    bool same = y && y->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = y->shape[d] == shape[d];
    if (same) // the common case: no message to prepare
        return y;
    char owner[256], where[320];
    snprintf(owner, sizeof owner, "%s '%s'", a->cls->name, a->name);
    if (layer < 0)
        snprintf(where, sizeof where, "%s: side forward", owner);
    else
        snprintf(where, sizeof where, "%s: forward at layer %d (%s)", owner, layer,
                 xa_site_name(s));
    if (!y) {
        if (!xa_errcode(ctx))
            xa_errorf(ctx, XA_EPLUGIN, "%s returned nothing without a message", where);
        else if (!names_instance(xa_errmsg(ctx), owner, a->name))
            xa_error_wrap(ctx, "%s", where);
        return NULL;
    }
    char got[64], want[64];
    xa_errorf(ctx, XA_ESHAPE, "%s returned a %s tensor, expected %s (the shape of %s)", where,
              xa_shape_str(y, got, sizeof got), xa_shape_fmt(ndim, shape, want, sizeof want),
              layer < 0               ? "the last hidden state"
              : is_projection((int)s) ? "the projection's output"
                                      : "args->h");
    return NULL;
}

static xa_tensor *run_site(xa_ctx *ctx, void *user, int layer, xa_site s, xa_tensor *h,
                           xa_tensor *x) {
    call *c = user;
    site_list *list = &c->net->sites[layer * XA_SITE_COUNT + s];
    xa_adapter *replacer = c->net->replacer[layer * XA_SITE_COUNT + s];
    xa_site_args args;
    base_args(c, &args);
    args.layer = layer, args.at = (int)s, args.x = x;
    if (!h) { // the projection itself is the replacer's, or the frozen one when it is off
        xa_tensor *w, *b;
        if (xa_net_base_linear(c->net, layer, (int)s, &w, &b) != XA_OK)
            return NULL;
        if (replacer && !replacer->disabled) {
            int64_t shape[XA_MAX_DIMS];
            memcpy(shape, x->shape, sizeof shape);
            shape[x->ndim - 1] = w->shape[0];
            h = checked(ctx, replacer, layer, s, replacer->cls->forward(replacer, &args), x->ndim,
                        shape);
        } else {
            h = xa_linear(ctx, x, w, b);
        }
    }
    for (int i = 0; i < list->n && h; i++) {
        if (list->v[i]->disabled || list->v[i] == replacer)
            continue;
        args.h = h;
        h = checked(ctx, list->v[i], layer, s, list->v[i]->cls->forward(list->v[i], &args), h->ndim,
                    h->shape);
    }
    return h;
}

static int side_count(const xa_net *n) {
    int k = 0;
    for (size_t i = 0; i < n->nadapters; i++)
        k += n->adapters[i]->ntaps > 0;
    return k;
}

static xa_status add_projection(xa_net *n, const char *prefix, int64_t in, xa_tensor **w,
                                xa_tensor **b) {
    int64_t H = n->plm->cfg.text.hidden, ws[2] = {H, in}, bs[1] = {H};
    char name[XA_ADAPTER_NAME_MAX + 64];
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (!(*w = xa_params_add(n->params, name, 2, ws, (xa_init){XA_INIT_KAIMING, 0})))
        return xa_errcode(n->ctx);
    snprintf(name, sizeof name, "%s.bias", prefix);
    *b = xa_params_add(n->params, name, 1, bs, (xa_init){XA_INIT_ZERO, 0});
    return *b ? XA_OK : xa_errcode(n->ctx);
}

// K-Adapter's concat fusion as its code has it: one side network, task_dense_x([h_L; a]); k of
// them, task_dense([task_dense_1([h_L; a_1]); ...; task_dense_k([h_L; a_k])]).
xa_status xa_net_prepare(xa_net *n) {
    int nside = side_count(n);
    if (n->fusion != XA_FUSION_CONCAT || nside == 0 || n->fuse_w)
        return XA_OK;
    int64_t H = n->plm->cfg.text.hidden;
    if (nside > 1) {
        n->stage_w = xa_calloc(n->ctx, (size_t)nside, sizeof *n->stage_w);
        n->stage_b = xa_calloc(n->ctx, (size_t)nside, sizeof *n->stage_b);
        if (!n->stage_w || !n->stage_b)
            return XA_ENOMEM;
        int k = 0;
        for (size_t i = 0; i < n->nadapters; i++) {
            if (!n->adapters[i]->ntaps)
                continue;
            char prefix[XA_ADAPTER_NAME_MAX + 16];
            snprintf(prefix, sizeof prefix, "fusion.%s", n->adapters[i]->name);
            xa_status st = add_projection(n, prefix, 2 * H, &n->stage_w[k], &n->stage_b[k]);
            if (st)
                return st;
            k++;
        }
    }
    xa_status st = add_projection(n, "fusion", (nside > 1 ? nside : 2) * H, &n->fuse_w, &n->fuse_b);
    if (st == XA_OK)
        n->fuse_n = nside;
    return st;
}

// side[i] is NULL for a disabled side network: it adds nothing, or zeros under concat.
static xa_tensor *fuse(xa_ctx *ctx, xa_net *n, xa_tensor *last, xa_tensor **side, int nside) {
    if (nside == 0 || !last)
        return last;
    if (n->fusion == XA_FUSION_ADD) {
        for (int i = 0; i < nside; i++)
            if (side[i])
                last = xa_add(ctx, last, side[i]);
        return last;
    }
    if (xa_net_prepare(n) != XA_OK)
        return NULL;
    if (n->fuse_n != nside) {
        xa_errorf(ctx, XA_ESTATE,
                  "concat fusion was built for %d side network(s) at the first forward, the net "
                  "now has %d: insert every side network before the first forward",
                  n->fuse_n, nside);
        return NULL;
    }
    xa_tensor *cat = NULL;
    for (int i = 0; i < nside; i++) {
        xa_tensor *a = side[i] ? side[i] : xa_tensor_arena(ctx, 3, last->shape, true);
        xa_tensor *pair = xa_concat(ctx, last, a, -1);
        if (nside == 1)
            return xa_linear(ctx, pair, n->fuse_w, n->fuse_b);
        xa_tensor *f = xa_linear(ctx, pair, n->stage_w[i], n->stage_b[i]);
        cat = cat ? xa_concat(ctx, cat, f, -1) : f;
    }
    return xa_linear(ctx, cat, n->fuse_w, n->fuse_b);
}

xa_status xa_net_forward(xa_ctx *ctx, xa_net *n, const xa_net_batch *b,
                         const xa_forward_opts *opts, xa_net_out *out) {
    memset(out, 0, sizeof *out);
    int nside = side_count(n);
    call c = {.net = n, .batch = b};
    xa_hooks hooks = {.fn = run_site, .user = &c, .enabled = n->enabled, .replace = n->replace};
    xa_forward_opts o = opts ? *opts : (xa_forward_opts){0};
    o.hooks = &hooks;
    o.all_hidden = o.all_hidden || nside > 0;
    // The prefix is exact to reuse only while nothing random runs in it.
    bool random_base = xa_is_training(ctx) && (o.dropout > 0.0f || o.attn_dropout > 0.0f);
    int layers[XA_PREFIX_MAX_LAYERS], nl = 0;
    xa_tensor *cached[XA_PREFIX_MAX_LAYERS], *below[XA_PREFIX_MAX_LAYERS] = {0};
    bool hit = false;
    if (n->prefix && !random_base && !b->one_off && !o.start &&
        (nl = prefix_layout(n, layers)) > 0) {
        // Zero-filled padding beyond a row's stored length changes no position a mask keeps:
        // attention gives masked keys exactly zero weight, in-stream adapters act per
        // position or through that attention, and heads and losses read only masked-in positions
        // (CLS, masked mean, MLM labels). Side networks may attend without a mask (K-Adapter's
        // code does), so with one the cache serves only batches no longer than a stored row.
        xa_prefix_cache_layout(n->prefix, layers, nl, nside == 0);
        hit = xa_prefix_cache_lookup(ctx, n->prefix, &b->text, cached);
        if (hit) {
            for (int i = 0; i + 1 < nl; i++)
                below[layers[i]] = cached[i];
            o.start_layer = layers[nl - 1];
            o.start = cached[nl - 1];
            o.start_hidden = below;
        } else {
            o.all_hidden = true; // keep what the cache needs
        }
    }
    xa_status st = xa_text_forward(ctx, n->plm, &b->text, &o, &out->plm);
    if (st)
        return st;
    if (nl > 0 && !hit)
        xa_prefix_cache_store(n->prefix, &b->text, out->plm.hidden);
    xa_tensor **side = nside ? xa_arena_alloc(ctx, (size_t)nside * sizeof *side) : NULL;
    int k = 0;
    for (size_t i = 0; i < n->nadapters; i++) {
        xa_adapter *a = n->adapters[i];
        if (!a->ntaps)
            continue;
        if (a->disabled) {
            side[k++] = NULL;
            continue;
        }
        xa_tensor **taps = xa_arena_alloc(ctx, (size_t)a->ntaps * sizeof *taps);
        if (!taps || !side)
            return XA_ENOMEM;
        for (int t = 0; t < a->ntaps; t++)
            taps[t] = out->plm.hidden[a->taps[t]];
        xa_site_args args;
        base_args(&c, &args);
        args.layer = -1, args.at = XA_AT_SIDE, args.h = out->plm.last;
        args.taps = taps, args.tap_layers = a->taps, args.ntaps = a->ntaps;
        size_t since = xa_tape_count(ctx, NULL);
        bool records = ctx->grad_enabled;
        xa_made_mark mark = records ? (xa_made_mark){0} : xa_made_begin(ctx);
        xa_tensor *y = a->cls->forward(a, &args);
        if (!records) // evaluation: what the side network made but its output is read no more
            xa_made_end(ctx, mark, y);
        if (!(side[k] = checked(ctx, a, -1, XA_SITE_OUT, y, out->plm.last->ndim,
                                out->plm.last->shape)))
            return xa_errcode(ctx);
        // As after a recorded block: what backward will not read goes back to the arena now.
        xa_tape_drop_unread(ctx, since, side[k++]);
    }
    out->fused = fuse(ctx, n, out->plm.last, side, nside);
    return out->fused ? XA_OK : (xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM);
}
