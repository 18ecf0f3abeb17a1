// A plugin whose class `test_act_scale` rescales the feed-forward activation at XA_AT_ACT (ABI
// 1.2) by a learned vector per block, a * l: (IA)^3's l_ff. tests/test_plugins.c checks it
// against the frozen FF2 with its columns scaled by l, its gradients, and that the untrained
// one (l = 1) leaves the model bit for bit as it was. Option `layers`: block indices (default
// every block).
#include <stdio.h>
#include <stdlib.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;
static const char *const options[] = {"layers", NULL};

typedef struct {
    xa_tensor *l[64]; // per layer: (intermediate,) or NULL where not attached
} act_scale;

static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);
    const xa_dims *d = H->dims(a);
    act_scale *s = calloc(1, sizeof *s);
    if (!s)
        return H->errorf(ctx, -2, "out of memory");
    H->set_state(a, s);
    int64_t layers[64];
    int n = H->opt_ints(o, "layers", layers, 64);
    if (n < 0)
        for (n = 0; n < d->layers && n < 64; n++)
            layers[n] = n;
    for (int i = 0; i < n && i < 64; i++) {
        if (H->attach(a, (int)layers[i], XA_AT_ACT) != 0)
            return -1; // out of range: the host said so
        if (layers[i] >= 64 || s->l[layers[i]])
            return H->errorf(ctx, -1, "layer %lld is listed twice or past 63",
                             (long long)layers[i]);
        char name[32];
        snprintf(name, sizeof name, "l%lld.l_ff", (long long)layers[i]);
        s->l[layers[i]] = H->param(a, name, 1, (int64_t[]){d->intermediate}, XA_INIT_ONE_, 0.0f);
        if (!s->l[layers[i]])
            return -1;
    }
    return 0;
}

// args->h is the activation after the nonlinearity (B, T, intermediate).
static xa_tensor *forward(xa_adapter *a, const xa_site_args *args) {
    const act_scale *s = H->state(a);
    return H->mul_row(H->ctx_of(a), args->h, s->l[args->layer]);
}

static void destroy(xa_adapter *a) {
    free(H->state(a));
}

static const xa_adapter_class act_scale_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "test_act_scale",
    .description = "rescales the feed-forward activation, a * l (the act site)",
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
};

static const xa_adapter_class *const classes[] = {&act_scale_class, NULL};

XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    (void)errmsg;
    XA_PLUGIN_INFO_INIT(info, "test_act_scale", "0.0.1", classes);
    H = host;
    return 0;
}
