// A plugin whose class `test_mistakes` makes, on request, the forward mistakes a plugin author
// makes: tests/test_plugins.c checks that the host stops each one at the adapter with a message
// that names it, where it ran and what was wrong, before anything downstream reads the result.
// Option `mistake`: "shape" (one position short), "rank" (flattened to 2-D), "null" (NULL without
// a message), "op" (an op of the plugin's fails: a gate of the wrong length), "none". Option `at`:
// "v" (the value projection, default), "out" (block output), "act" (the feed-forward activation),
// "replace" (computes the value projection itself through H->replace), "side" (a side network on
// the embeddings), "nowhere" (a site number past the last one: create fails).
#include <stdlib.h>
#include <string.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;
static const char *const options[] = {"mistake", "at", NULL};

typedef struct {
    char mistake[8];
    xa_tensor *w, *b; // the frozen value projection, for "replace"
} mistakes;

static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);
    mistakes *s = calloc(1, sizeof *s);
    if (!s)
        return H->errorf(ctx, -2, "out of memory");
    strncpy(s->mistake, H->opt_str(o, "mistake", "none"), sizeof s->mistake - 1);
    H->set_state(a, s);
    const char *at = H->opt_str(o, "at", "v");
    if (!strcmp(at, "side"))
        return H->tap(a, 0);
    if (!strcmp(at, "replace"))
        return H->base_linear(a, 0, XA_AT_V, &s->w, &s->b) || H->replace(a, 0, XA_AT_V, true);
    return H->attach(a, 0,
                     !strcmp(at, "out")       ? XA_AT_OUT
                     : !strcmp(at, "act")     ? XA_AT_ACT
                     : !strcmp(at, "nowhere") ? XA_AT_ACT + 1 // past the last site
                                              : XA_AT_V);
}

static xa_tensor *forward(xa_adapter *a, const xa_site_args *args) {
    const mistakes *s = H->state(a);
    xa_ctx *ctx = H->ctx_of(a);
    xa_tensor *h = args->at == XA_AT_SIDE ? args->taps[0]
                   : args->h              ? args->h
                                          : H->linear(ctx, args->x, s->w, s->b);
    if (!strcmp(s->mistake, "shape"))
        return H->slice(ctx, h, 1, 0, H->dim(h, 1) - 1);
    if (!strcmp(s->mistake, "rank"))
        return H->reshape(ctx, h, 2, (int64_t[]){args->B * args->T, H->dim(h, -1)});
    if (!strcmp(s->mistake, "null"))
        return NULL;
    if (!strcmp(s->mistake, "op"))
        return H->mul_row(ctx, h, H->new_tensor(ctx, 1, (int64_t[]){3}));
    return h;
}

static void destroy(xa_adapter *a) {
    free(H->state(a));
}

static const xa_adapter_class mistakes_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "test_mistakes",
    .description = "forward mistakes for the host's checks",
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
};

static const xa_adapter_class *const classes[] = {&mistakes_class, NULL};

XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    (void)errmsg;
    XA_PLUGIN_INFO_INIT(info, "test_mistakes", "0.0.1", classes);
    H = host;
    return 0;
}
