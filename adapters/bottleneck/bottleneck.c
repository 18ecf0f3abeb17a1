// Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): h + up(act(down(h))) on a
// sub-layer's output before its residual. Houlsby places one after the attention and one after
// the feed-forward sub-layer of each chosen block, Pfeiffer only after the feed-forward one.
// `up` starts at zero, so an untrained adapter leaves the model exactly as it was.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;

typedef struct {
    xa_tensor *down_w, *down_b, *up_w, *up_b;
} unit;

typedef struct {
    int act;
    float dropout;
    int layers;
    unit *units; // [layer * 2 + (at == FFN)]
} bottleneck;

static const char *const options[] = {"layers", "placement", "reduction_factor", "dim",
                                      "non_linearity", "dropout", "init_scale", NULL};

static int parse_act(const char *s) {
    static const char *names[] = {"gelu", "gelu_new", "quick_gelu", "tanh", "sigmoid", "relu"};
    for (int i = 0; i < 6; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);
    const xa_dims *d = H->dims(a);
    bottleneck *b = calloc(1, sizeof *b);
    if (!b)
        return H->errorf(ctx, -2, "out of memory");
    H->set_state(a, b);
    b->layers = (int)d->layers;
    b->units = calloc((size_t)d->layers * 2, sizeof *b->units);
    if (!b->units)
        return H->errorf(ctx, -2, "out of memory");
    const char *placement = H->opt_str(o, "placement", "houlsby");
    bool houlsby = !strcmp(placement, "houlsby");
    if (!houlsby && strcmp(placement, "pfeiffer"))
        return H->errorf(ctx, -1, "placement '%s' is not houlsby or pfeiffer", placement);
    int64_t rf = H->opt_int(o, "reduction_factor", 16);
    int64_t dim = H->opt_int(o, "dim", rf > 0 ? d->hidden / rf : 0);
    if (dim <= 0)
        return H->errorf(ctx, -1, "dim must be positive (hidden %lld, reduction_factor %lld)",
                         (long long)d->hidden, (long long)rf);
    b->act = parse_act(H->opt_str(o, "non_linearity", "relu"));
    if (b->act < 0)
        return H->errorf(ctx, -1, "non_linearity must be gelu, gelu_new, quick_gelu, tanh, "
                                  "sigmoid or relu");
    b->dropout = (float)H->opt_num(o, "dropout", 0.0);
    if (!(b->dropout >= 0 && b->dropout < 1))
        return H->errorf(ctx, -1, "dropout %g is outside [0, 1)", (double)b->dropout);
    float init = (float)H->opt_num(o, "init_scale", 0.02);
    if (!(init >= 0 && init < 1e30f))
        return H->errorf(ctx, -1, "init_scale %g must be a finite number >= 0", (double)init);
    int64_t layers[256];
    int n = H->opt_ints(o, "layers", layers, 256);
    if (n < 0) // default: every block
        for (n = 0; n < d->layers && n < 256; n++)
            layers[n] = n;
    for (int i = 0; i < n; i++) {
        int at[2] = {XA_AT_ATTN, XA_AT_FFN};
        for (int k = houlsby ? 0 : 1; k < 2; k++) {
            if (H->attach(a, (int)layers[i], at[k]) != 0)
                return -1;
            unit *u = &b->units[layers[i] * 2 + k];
            char nm[64];
            const char *site = k ? "ffn" : "attn";
#define P(field, suffix, nd, shp, kind, sc)                                                        \
    snprintf(nm, sizeof nm, "l%lld.%s.%s", (long long)layers[i], site, suffix);                    \
    if (!(u->field = H->param(a, nm, nd, shp, kind, sc)))                                          \
        return -1;
            P(down_w, "down.weight", 2, ((int64_t[]){dim, d->hidden}), XA_INIT_NORMAL_, init);
            P(down_b, "down.bias", 1, ((int64_t[]){dim}), XA_INIT_ZERO_, 0);
            P(up_w, "up.weight", 2, ((int64_t[]){d->hidden, dim}), XA_INIT_ZERO_, 0);
            P(up_b, "up.bias", 1, ((int64_t[]){d->hidden}), XA_INIT_ZERO_, 0);
#undef P
        }
    }
    return 0;
}

static xa_tensor *forward(xa_adapter *a, const xa_site_args *s) {
    bottleneck *b = H->state(a);
    xa_ctx *ctx = H->ctx_of(a);
    unit *u = &b->units[s->layer * 2 + (s->at == XA_AT_FFN)];
    xa_tensor *z = H->act(ctx, H->linear(ctx, s->h, u->down_w, u->down_b), b->act);
    z = H->linear(ctx, H->dropout(ctx, z, b->dropout), u->up_w, u->up_b);
    return H->add(ctx, s->h, z);
}

static void destroy(xa_adapter *a) {
    bottleneck *b = H->state(a);
    free(b->units);
    free(b);
}

static const xa_adapter_class bottleneck_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "bottleneck",
    .description = "Houlsby / Pfeiffer bottleneck adapters on sub-layer outputs",
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
};

static const xa_adapter_class *const classes[] = {&bottleneck_class, NULL};

XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    XA_PLUGIN_INFO_INIT(info, "bottleneck", "1.0.0", classes);
    if (host->abi_major != XA_ABI_MAJOR || host->struct_size < sizeof(xa_host_api)) {
        *errmsg = strdup("host ABI too old for this plugin");
        return 1;
    }
    H = host;
    return 0;
}
