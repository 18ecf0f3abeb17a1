// LoRA (Hu et al. 2021) with PEFT's semantics: at each target projection W (out, in) of the
// frozen PLM, h = W x + b becomes h + (alpha / rank) * B A dropout(x), with A (rank, in) drawn
// like nn.Linear's default and B (out, rank) zero, so an untrained LoRA changes nothing. The
// commands "merge" and "unmerge" fold B A into a private copy of W for inference and back; the
// mapped checkpoint W is only ever read. docs/adapters.md.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;

enum { NTARGET = 6 }; // q, k, v, o, ff1, ff2 = XA_AT_Q .. XA_AT_FF2
static const char *const target_names[NTARGET] = {"q", "k", "v", "o", "ff1", "ff2"};

typedef struct {
    xa_tensor *A, *B;  // NULL when this (layer, target) has no LoRA
    xa_tensor *merged; // W + scale * B A while merged, else NULL
} unit;

typedef struct {
    int layers;
    float scale, dropout;
    unit *units; // [layer * NTARGET + target]
} lora;

static const char *const options[] = {"rank", "alpha", "dropout", "targets", "layers", NULL};

static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);
    const xa_dims *d = H->dims(a);
    lora *lo = calloc(1, sizeof *lo);
    if (!lo)
        return H->errorf(ctx, -2, "out of memory");
    H->set_state(a, lo);
    lo->layers = (int)d->layers;
    if (!(lo->units = calloc((size_t)d->layers * NTARGET, sizeof *lo->units)))
        return H->errorf(ctx, -2, "out of memory");
    int64_t rank = H->opt_int(o, "rank", 8);
    double alpha = H->opt_num(o, "alpha", 16);
    if (rank <= 0)
        return H->errorf(ctx, -1, "rank must be positive, got %lld", (long long)rank);
    lo->scale = (float)(alpha / (double)rank);
    lo->dropout = (float)H->opt_num(o, "dropout", 0.0);
    if (!(lo->dropout >= 0 && lo->dropout < 1))
        return H->errorf(ctx, -1, "dropout %g is outside [0, 1)", (double)lo->dropout);
    bool want[NTARGET] = {false};
    const char *tg[NTARGET + 1];
    int nt = H->opt_strs(o, "targets", tg, NTARGET + 1);
    if (nt < 0) // PEFT's default for BERT-like models: query and value
        want[0] = want[2] = true, nt = 0;
    if (nt > NTARGET)
        return H->errorf(ctx, -1, "targets: at most %d of q, k, v, o, ff1, ff2", NTARGET);
    for (int i = 0; i < nt; i++) {
        int t = 0;
        while (t < NTARGET && strcmp(tg[i], target_names[t]))
            t++;
        if (t == NTARGET)
            return H->errorf(ctx, -1, "targets: '%s' is not one of q, k, v, o, ff1, ff2", tg[i]);
        want[t] = true;
    }
    int64_t layers[256];
    int n = H->opt_ints(o, "layers", layers, 256);
    if (n < 0) // default: every block
        for (n = 0; n < d->layers && n < 256; n++)
            layers[n] = n;
    if (n > 256)
        return H->errorf(ctx, -1, "layers: at most 256 entries");
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < NTARGET; t++) {
            if (!want[t])
                continue;
            if (H->attach(a, (int)layers[i], XA_AT_Q + t) != 0)
                return -1;
            unit *u = &lo->units[layers[i] * NTARGET + t];
            if (u->A)
                return H->errorf(ctx, -1, "layer %lld is listed twice", (long long)layers[i]);
            xa_tensor *w, *b;
            if (H->base_linear(a, (int)layers[i], XA_AT_Q + t, &w, &b) != 0)
                return -1;
            int64_t out = H->dim(w, 0), in = H->dim(w, 1);
            char nm[64];
            snprintf(nm, sizeof nm, "l%lld.%s.lora_A", (long long)layers[i], target_names[t]);
            if (!(u->A = H->param(a, nm, 2, (int64_t[]){rank, in}, XA_INIT_KAIMING_, 0)))
                return -1;
            snprintf(nm, sizeof nm, "l%lld.%s.lora_B", (long long)layers[i], target_names[t]);
            if (!(u->B = H->param(a, nm, 2, (int64_t[]){out, rank}, XA_INIT_ZERO_, 0)))
                return -1;
        }
    }
    return 0;
}

static xa_tensor *forward(xa_adapter *a, const xa_site_args *s) {
    lora *lo = H->state(a);
    xa_ctx *ctx = H->ctx_of(a);
    unit *u = s->layer >= 0 && s->layer < lo->layers && s->at >= XA_AT_Q && s->at <= XA_AT_FF2
                  ? &lo->units[s->layer * NTARGET + (s->at - XA_AT_Q)]
                  : NULL;
    if (!u || !u->A)
        return s->h;
    if (!s->h) { // merged: the host left this projection to us
        xa_tensor *w, *b;
        if (!u->merged || H->base_linear(a, s->layer, s->at, &w, &b) != 0) {
            H->errorf(ctx, -1, "%s: projection %s of layer %d has no merged weight",
                      H->name_of(a), target_names[s->at - XA_AT_Q], s->layer);
            return NULL;
        }
        if (H->training(ctx)) {
            H->errorf(ctx, -1, "%s: LoRA is merged into the weights; unmerge before training "
                               "(m:control(\"%s\", \"unmerge\"))", H->name_of(a), H->name_of(a));
            return NULL;
        }
        return H->linear(ctx, s->x, u->merged, b);
    }
    xa_tensor *z = H->linear(ctx, H->dropout(ctx, s->x, lo->dropout), u->A, NULL);
    z = H->scale(ctx, H->linear(ctx, z, u->B, NULL), lo->scale);
    return H->add(ctx, s->h, z);
}

// W' = W + scale * B A into a buffer of our own; W itself is the read-only mapped checkpoint.
static int merge_one(xa_adapter *a, lora *lo, unit *u, int layer, int t) {
    xa_tensor *w, *b;
    if (H->base_linear(a, layer, XA_AT_Q + t, &w, &b) != 0)
        return -1;
    int64_t out = H->dim(w, 0), in = H->dim(w, 1), r = H->dim(u->A, 0);
    if (!u->merged && !(u->merged = H->buffer(a, 2, (int64_t[]){out, in})))
        return -1;
    const float *W = H->data(w), *A = H->data(u->A), *B = H->data(u->B);
    float *M = H->data(u->merged);
    for (int64_t i = 0; i < out; i++)
        for (int64_t j = 0; j < in; j++) {
            float acc = 0;
            for (int64_t k = 0; k < r; k++)
                acc += B[i * r + k] * A[k * in + j];
            M[i * in + j] = W[i * in + j] + lo->scale * acc;
        }
    return H->replace(a, layer, XA_AT_Q + t, true);
}

static void unmerge_all(xa_adapter *a, lora *lo) {
    for (int i = 0; i < lo->layers * NTARGET; i++) {
        unit *u = &lo->units[i];
        if (!u->merged)
            continue;
        H->replace(a, i / NTARGET, XA_AT_Q + i % NTARGET, false);
        H->buffer_free(a, u->merged);
        u->merged = NULL;
    }
}

static int control(xa_adapter *a, const char *command) {
    lora *lo = H->state(a);
    xa_ctx *ctx = H->ctx_of(a);
    if (!strcmp(command, "unmerge")) {
        unmerge_all(a, lo); // unmerging an unmerged LoRA does nothing, as in PEFT
        return 0;
    }
    if (strcmp(command, "merge"))
        return H->errorf(ctx, -1, "%s: unknown command '%s' (LoRA knows merge and unmerge)",
                         H->name_of(a), command);
    // merging again recomputes from the current A and B (after loading or more training)
    for (int i = 0; i < lo->layers * NTARGET; i++)
        if (lo->units[i].A && merge_one(a, lo, &lo->units[i], i / NTARGET, i % NTARGET) != 0) {
            unmerge_all(a, lo); // all or nothing
            return -1;
        }
    return 0;
}

static void destroy(xa_adapter *a) {
    lora *lo = H->state(a);
    free(lo->units); // merged buffers belong to the host and die with the instance
    free(lo);
}

static const xa_adapter_class lora_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "lora",
    .description = "LoRA low-rank updates of the frozen q, k, v, o, ff1, ff2 projections",
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
    .control = control,
};

static const xa_adapter_class *const classes[] = {&lora_class, NULL};

XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    XA_PLUGIN_INFO_INIT(info, "lora", "1.0.0", classes);
    if (host->abi_major != XA_ABI_MAJOR || host->struct_size < sizeof(xa_host_api)) {
        *errmsg = strdup("host ABI too old for this plugin");
        return 1;
    }
    H = host;
    return 0;
}
