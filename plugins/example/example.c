// An out-of-tree adapter plugin, built by its own Makefile against the installed headers
// (pkg-config xadapt). It implements (IA)^3 (Liu et al. 2022, "Few-Shot Parameter-Efficient
// Fine-Tuning is Better and Cheaper than In-Context Learning"): learned vectors l_k and l_v
// rescale the key and value projections, k * l_k and v * l_v, and l_ff the feed-forward
// activation after its nonlinearity, a * l_ff. All start at one, so the untrained adapter leaves
// the model as it was.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;

enum { NSITE = 3 }; // per block: keys, values, the feed-forward activation
static const int sites[NSITE] = {XA_AT_K, XA_AT_V, XA_AT_ACT};
static const char *const names[NSITE] = {"l_k", "l_v", "l_ff"};

typedef struct {
    xa_tensor **l; // [layer * NSITE + site index]: (hidden,) or (intermediate,), NULL if unused
} ia3;

static int site_index(int at) {
    return at == XA_AT_K ? 0 : at == XA_AT_V ? 1 : 2;
}

static const char *const options[] = {"layers", NULL};

static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);
    const xa_dims *d = H->dims(a);
    ia3 *s = calloc(1, sizeof *s);
    if (!s)
        return H->errorf(ctx, -2, "out of memory");
    H->set_state(a, s);
    s->l = calloc((size_t)d->layers * NSITE, sizeof *s->l);
    if (!s->l)
        return H->errorf(ctx, -2, "out of memory");
    int64_t layers[256];
    int n = H->opt_ints(o, "layers", layers, 256);
    if (n > 256)
        return H->errorf(ctx, -1, "at most 256 layers, got %d", n);
    if (n < 0)
        for (n = 0; n < d->layers && n < 256; n++)
            layers[n] = n;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < NSITE; k++) {
            if (H->attach(a, (int)layers[i], sites[k]) != 0)
                return -1; // out of range: the host said so
            xa_tensor **slot = &s->l[layers[i] * NSITE + k];
            if (*slot)
                return H->errorf(ctx, -1, "layer %lld is listed twice", (long long)layers[i]);
            char name[32];
            snprintf(name, sizeof name, "l%lld.%s", (long long)layers[i], names[k]);
            int64_t len = sites[k] == XA_AT_ACT ? d->intermediate : d->hidden;
            if (!(*slot = H->param(a, name, 1, &len, XA_INIT_ONE_, 0.0f)))
                return -1;
        }
    return 0;
}

// args->h is the key or value projection's output (B, T, hidden), before the heads split, or the
// feed-forward activation (B, T, intermediate).
static xa_tensor *forward(xa_adapter *a, const xa_site_args *args) {
    const ia3 *s = H->state(a);
    xa_tensor *l = s->l[args->layer * NSITE + site_index(args->at)];
    return H->mul_row(H->ctx_of(a), args->h, l);
}

static void destroy(xa_adapter *a) {
    ia3 *s = H->state(a);
    free(s->l);
    free(s);
}

static const xa_adapter_class ia3_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "ia3",
    .description = "(IA)^3: learned rescaling of keys, values and the feed-forward activation",
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
};

static const xa_adapter_class *const classes[] = {&ia3_class, NULL};

// *errmsg must come from malloc: the host frees it. (strdup is POSIX, not C11.)
static char *message(const char *s) {
    char *m = malloc(strlen(s) + 1);
    return m ? strcpy(m, s) : NULL;
}

XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    XA_PLUGIN_INFO_INIT(info, "example-ia3", "1.1.0", classes);
    if (host->abi_major != XA_ABI_MAJOR || host->abi_minor < 2) { // 1.2: XA_AT_ACT
        *errmsg = message("the host's plugin ABI is too old for example-ia3 (needs 1.2)");
        return 1;
    }
    H = host;
    return 0;
}
