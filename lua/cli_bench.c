// `xadapt bench`: time one workload (sgemm peak, frozen forward, CLIP vision, one adapter
// training step, load-to-first-forward) in this process and print per-iteration times, median
// and min, the FLOPs the workload computes and the peak RSS. bench/run.py runs it side by side
// with bench/peer_torch.py (the same workloads in plain PyTorch); docs/performance.md explains
// the FLOP counts. Nothing here is used by the library or the tests.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "xadapt/blas.h"
#include "xadapt/model.h"
#include "xadapt/net.h"
#include "xadapt/optim.h"
#include "xadapt/tape.h"
#include "xadapt/task.h"

typedef struct {
    const char *workload, *model, *vlm, *data;
    int repeat, warmup, batch, seq, batches;
    bool json;
    uint64_t seed;
} bench_args;

// Times of the measured iterations, and what the JSON line reports next to them.
typedef struct {
    double *t;
    int n;
    double gflop, gflop_dense; // per iteration: what xadapt computes / 3x forward (steps)
    char note[256];            // workload details for the JSON line (already JSON-escaped)
    double extra;              // sgemm: best GFLOP/s; steps: last loss
    double arena_mb;           // step arena capacity at the end
} result;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *t, int n) {
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return NAN;
    memcpy(s, t, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static double min_of(const double *t, int n) {
    double m = INFINITY;
    for (int i = 0; i < n; i++)
        m = t[i] < m ? t[i] : m;
    return m;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; // Linux reports kilobytes
}

// --- FLOP counts ---------------------------------------------------------------------------
// Multiply-adds count 2. Only matrix products count: element-wise work, softmax and norms are
// a few percent of the total and are left out on both sides (docs/performance.md).

static double lin(double n, double in, double out) {
    return 2.0 * n * in * out;
}
// QK^T and PV of multi-head attention over total width D (all heads together)
static double attn(double B, double Tq, double Tk, double D) {
    return 4.0 * B * Tq * Tk * D;
}

typedef struct {
    double B, T, N, H, I, L;
} fdims;

static fdims dims_of(const xa_tower_config *c, int64_t B, int64_t T) {
    return (fdims){
        (double)B,        (double)T, (double)(B * T), (double)c->hidden, (double)c->intermediate,
        (double)c->layers};
}

static double block_fwd(const fdims *d) {
    return 4 * lin(d->N, d->H, d->H) + 2 * lin(d->N, d->H, d->I) + attn(d->B, d->T, d->T, d->H);
}
// Backward of a frozen block whose input needs a gradient: input gradients of its six linears
// (no weight gradients) and all four attention products (dV, dP, dQ, dK).
static double block_bwd_dx(const fdims *d) {
    return 4 * lin(d->N, d->H, d->H) + 2 * lin(d->N, d->H, d->I) + 2 * attn(d->B, d->T, d->T, d->H);
}

static double plm_fwd(const fdims *d) {
    return d->L * block_fwd(d) + lin(d->B, d->H, d->H);
}

// One X-adapter expert (dim 128): q from h, k/v from Nf CLIP tokens of width Df, o back to H.
static double xexpert_fwd(const fdims *d, double Nf, double Df) {
    double dim = 128;
    return lin(d->N, d->H, dim) + 2 * lin(d->B * Nf, Df, dim) + attn(d->B, d->T, Nf, dim) +
           lin(d->N, dim, d->H);
}
// Every weight gets its gradient; q also passes one down even in the lowest adapter, since the
// LayerNorm before it has trainable weights. The CLIP features need none.
static double xexpert_bwd(const fdims *d, double Nf, double Df) {
    double dim = 128;
    return 2 * lin(d->N, dim, d->H) + 2 * attn(d->B, d->T, Nf, dim) + 2 * lin(d->B * Nf, Df, dim) +
           2 * lin(d->N, d->H, dim);
}

typedef enum { W_XADAPTER, W_KADAPTER, W_BOTTLENECK, W_LORA } step_kind;

// Forward and what xadapt computes for one training step: the frozen prefix below the lowest
// adapter has no backward; frozen weights get no weight gradient; the side network of K-Adapter
// needs none of the PLM's backward. The classification head (H -> 2) is included.
static void step_flops(step_kind k, const fdims *d, double *fwd, double *actual) {
    double N = d->N, H = d->H, f = plm_fwd(d) + lin(d->B, H, 2), b = 2 * lin(d->B, H, 2);
    double img = 50, img_d = 768, txt = 77, txt_d = 512; // CLIP ViT-B/32 feature shapes
    if (k == W_XADAPTER) { // layers L-2 and L-1 at the block output, V- and T-expert
        double e = xexpert_fwd(d, img, img_d) + xexpert_fwd(d, txt, txt_d);
        f += 2 * e;
        b += block_bwd_dx(d); // block L-1 between the two adapters
        b += 2 * (xexpert_bwd(d, img, img_d) + xexpert_bwd(d, txt, txt_d));
    } else if (k == W_KADAPTER) { // taps {0, L/2-1, L-1}, size H, 2 BERT layers, concat fusion
        fdims a = *d;
        double taps = 3, layers = 2;
        double inner = block_fwd(&a); // the adapter's BERT layers have the PLM's sizes
        f += taps * (lin(N, H, H) + layers * inner + lin(N, H, H)) + lin(N, 2 * H, H);
        b += 2 * lin(N, 2 * H, H);                           // fusion: dW and d(concat)
        b += taps * (2 * lin(N, H, H) + layers * 2 * inner); // up, BERT layers with weights
        b += (2 * taps - 1) * lin(N, H, H);                  // down: dW, and dx above the first tap
    } else if (k == W_BOTTLENECK) { // Houlsby: after attention and FFN in every block, H/16
        double m = floor(H / 16), unit = lin(N, H, m) + lin(N, m, H);
        f += d->L * 2 * unit;
        b += (d->L - 1) * (block_bwd_dx(d) + 2 * 2 * unit); // blocks above the first unit
        // block 0: attention sub-layer has no gradient below its adapter; FFN needs dx
        b += 2 * lin(N, H, d->I) + (lin(N, H, m) + 2 * lin(N, m, H)) + 2 * unit;
    } else { // LoRA rank 8 on q and v of every block
        double r = 8, unit = lin(N, H, r) + lin(N, r, H);
        f += d->L * 2 * unit;
        b += (d->L - 1) * (block_bwd_dx(d) + 2 * 2 * unit);
        // block 0: no dK (k has no gradient), no dx below q/v; o and the FFN need dx
        b += lin(N, H, H) + 2 * lin(N, H, d->I) + 1.5 * attn(d->B, d->T, d->T, H) +
             2 * (lin(N, H, r) + 2 * lin(N, r, H));
    }
    *fwd = f;
    *actual = f + b;
}

static double vision_flops(const xa_model_config *c, int64_t B) {
    const xa_tower_config *v = &c->vision;
    int64_t P = (v->image_size / v->patch_size) * (v->image_size / v->patch_size);
    fdims d = dims_of(v, B, 1 + P);
    return lin((double)(B * P), (double)(v->channels * v->patch_size * v->patch_size), d.H) +
           d.L * block_fwd(&d) + lin(d.B, d.H, (double)c->projection_dim);
}

// --- timing loop -----------------------------------------------------------------------------

typedef int (*iter_fn)(void *state);

static int time_loop(const bench_args *a, const char *label, iter_fn fn, void *state, result *r) {
    r->t = calloc((size_t)a->repeat, sizeof *r->t);
    if (!r->t)
        return -1;
    for (int i = 0; i < a->warmup + a->repeat; i++) {
        double t0 = now_s();
        if (fn(state) != 0)
            return -1;
        double dt = now_s() - t0;
        bool warm = i < a->warmup;
        if (!warm)
            r->t[r->n++] = dt;
        printf("%s %-7s %2d  %9.4f s\n", label, warm ? "warmup" : "iter",
               warm ? i + 1 : i - a->warmup + 1, dt);
        fflush(stdout);
    }
    return 0;
}

// --- sgemm -----------------------------------------------------------------------------------

typedef struct {
    int64_t M, N, K;
    float *A, *B, *C;
} gemm_state;

static int gemm_iter(void *p) {
    gemm_state *g = p;
    xa_sgemm(false, true, g->M, g->N, g->K, 1.0f, g->A, g->K, g->B, g->K, 0.0f, g->C, g->N);
    return 0;
}

// Peak: the best of a few large shapes, in the layout xa_linear uses (B transposed). The
// result reported is the shape with the highest GFLOP/s at its median time.
static int run_sgemm(const bench_args *a, xa_ctx *ctx, result *best) {
    static const int64_t shapes[][3] = {{1024, 3072, 768}, {1024, 768, 3072}, {2048, 2048, 2048}};
    double best_rate = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        gemm_state g = {shapes[s][0], shapes[s][1], shapes[s][2], NULL, NULL, NULL};
        g.A = xa_aligned_alloc(ctx, (size_t)(g.M * g.K) * sizeof(float));
        g.B = xa_aligned_alloc(ctx, (size_t)(g.N * g.K) * sizeof(float));
        g.C = xa_aligned_alloc(ctx, (size_t)(g.M * g.N) * sizeof(float));
        if (!g.A || !g.B || !g.C)
            return -1;
        for (int64_t i = 0; i < g.M * g.K; i++)
            g.A[i] = xa_rng_uniform(ctx) - 0.5f;
        for (int64_t i = 0; i < g.N * g.K; i++)
            g.B[i] = xa_rng_uniform(ctx) - 0.5f;
        char label[64];
        snprintf(label, sizeof label, "sgemm %lldx%lldx%lld", (long long)g.M, (long long)g.N,
                 (long long)g.K);
        result r = {0};
        int rc = time_loop(a, label, gemm_iter, &g, &r);
        free(g.A), free(g.B), free(g.C);
        if (rc)
            return -1;
        double gflop = 2.0 * (double)g.M * (double)g.N * (double)g.K * 1e-9;
        double rate = gflop / median(r.t, r.n);
        printf("%s: %.1f GFLOP/s at the median, %.1f at the best\n", label, rate,
               gflop / min_of(r.t, r.n));
        if (rate > best_rate) {
            free(best->t);
            *best = r;
            best->gflop = gflop;
            best_rate = best->extra = rate;
            snprintf(best->note, sizeof best->note, "\"shape\":\"%lldx%lldx%lld\"", (long long)g.M,
                     (long long)g.N, (long long)g.K);
        } else {
            free(r.t);
        }
    }
    return 0;
}

// --- frozen forward, CLIP vision, load -------------------------------------------------------

typedef struct {
    xa_ctx *ctx;
    xa_model *m;
    const char *dir;
    xa_text_batch batch;
    float *pixels;
    int64_t B;
} fwd_state;

static int text_iter(void *p) {
    fwd_state *s = p;
    xa_text_out out;
    xa_arena_reset(s->ctx);
    return xa_text_forward(s->ctx, s->m, &s->batch, NULL, &out) == XA_OK ? 0 : -1;
}

static int vision_iter(void *p) {
    fwd_state *s = p;
    xa_vision_out out;
    xa_arena_reset(s->ctx);
    return xa_vision_forward(s->ctx, s->m, s->pixels, s->B, &out) == XA_OK ? 0 : -1;
}

// Map the checkpoint, bind it and run one forward: what a script pays before its first batch.
static int load_iter(void *p) {
    fwd_state *s = p;
    xa_model_free(s->m);
    s->m = NULL;
    double t0 = now_s();
    if (xa_model_load(s->ctx, s->dir, &s->m) != XA_OK)
        return -1;
    double t1 = now_s();
    int rc = text_iter(s);
    printf("load: xa_model_load %.4f s, first forward %.4f s\n", t1 - t0, now_s() - t1);
    return rc;
}

static int32_t *random_ids(xa_ctx *ctx, int64_t n, int64_t vocab) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    int64_t lo = vocab > 2000 ? 1000 : 1; // clear of BERT's special ids
    for (int64_t i = 0; ids && i < n; i++)
        ids[i] = (int32_t)(lo + (int64_t)(xa_rng_uniform(ctx) * (float)(vocab - lo - 1)));
    return ids;
}

static int run_text(const bench_args *a, xa_ctx *ctx, bool load, result *r) {
    fwd_state s = {.ctx = ctx, .dir = a->model};
    int rc = -1;
    if (xa_model_load(ctx, a->model, &s.m) != XA_OK)
        return -1;
    const xa_model_config *c = xa_model_config_of(s.m);
    if (c->arch == XA_ARCH_CLIP) {
        xa_errorf(ctx, XA_EINVAL, "%s is CLIP: use the clip-vision workload", a->model);
        goto out;
    }
    fdims d = dims_of(&c->text, a->batch, a->seq);
    r->gflop = plm_fwd(&d) * 1e-9;
    int32_t *ids = random_ids(ctx, (int64_t)a->batch * a->seq, c->text.vocab);
    if (!ids)
        goto out;
    s.batch = (xa_text_batch){.ids = ids, .B = a->batch, .T = a->seq};
    xa_set_grad_enabled(ctx, false);
    if (load) { // the first iteration pays for the BLAS library load too: run.py asks for one
        xa_model_free(s.m);
        s.m = NULL;
    }
    snprintf(r->note, sizeof r->note, "\"batch\":%d,\"seq\":%d", a->batch, a->seq);
    rc = time_loop(a, load ? "load" : "forward", load ? load_iter : text_iter, &s, r);
    free(ids);
out:
    xa_model_free(s.m);
    return rc;
}

static int run_vision(const bench_args *a, xa_ctx *ctx, result *r) {
    fwd_state s = {.ctx = ctx, .B = a->batch};
    if (xa_model_load(ctx, a->vlm ? a->vlm : a->model, &s.m) != XA_OK)
        return -1;
    const xa_model_config *c = xa_model_config_of(s.m);
    int rc = -1;
    if (c->arch != XA_ARCH_CLIP) {
        xa_errorf(ctx, XA_EINVAL, "clip-vision needs a CLIP checkpoint (--vlm DIR)");
        goto out;
    }
    int64_t S = c->vision.image_size, n = s.B * c->vision.channels * S * S;
    if (!(s.pixels = malloc((size_t)n * sizeof(float))))
        goto out;
    for (int64_t i = 0; i < n; i++)
        s.pixels[i] = xa_rng_normal(ctx);
    r->gflop = vision_flops(c, s.B) * 1e-9;
    snprintf(r->note, sizeof r->note, "\"batch\":%lld,\"image\":%lld", (long long)s.B,
             (long long)S);
    xa_set_grad_enabled(ctx, false);
    rc = time_loop(a, "clip-vision", vision_iter, &s, r);
out:
    free(s.pixels);
    xa_model_free(s.m);
    return rc;
}

// --- training steps --------------------------------------------------------------------------

typedef struct {
    xa_ctx *ctx;
    xa_net *net;
    xa_optim *opt;
    xa_head *head;
    xa_net_batch batch;
    int32_t *labels;
    float loss;
} step_state;

// Arena reset, forward in training mode (dropout 0.1 on hidden states and attention
// probabilities of the frozen base), classification head (CLS -> dropout 0.1 -> linear(2)),
// cross-entropy, backward, AdamW. Exactly one optimizer step per iteration.
static int step_iter(void *p) {
    step_state *s = p;
    xa_ctx *ctx = s->ctx;
    xa_arena_reset(ctx);
    xa_forward_opts fo = {.dropout = 0.1f, .attn_dropout = 0.1f};
    xa_net_out out;
    if (xa_net_forward(ctx, s->net, &s->batch, &fo, &out) != XA_OK)
        return -1;
    const xa_text_batch *tb = &s->batch.text;
    xa_tensor *logits = xa_head_forward(ctx, s->head, &out, tb->mask, tb->B, tb->T);
    xa_tensor *loss = xa_cross_entropy(ctx, logits, s->labels, -100);
    if (!loss || xa_backward(ctx, loss) != XA_OK || xa_optim_step(s->opt, -1.0f, 1.0f) != XA_OK)
        return -1;
    s->loss = loss->data[0];
    return 0;
}

// Options of each adapter for a PLM of L layers: the shapes docs/performance.md lists.
static void adapter_opts(step_kind k, const xa_tower_config *c, char *buf, size_t n) {
    long long L = (long long)c->layers;
    switch (k) {
    case W_XADAPTER:
        snprintf(buf, n,
                 "{\"layers\":[%lld,%lld],\"dim\":128,\"heads\":4,\"experts\":[\"v\",\"t\"],"
                 "\"dropout\":0.1}",
                 L - 2, L - 1);
        break;
    case W_KADAPTER:
        snprintf(buf, n,
                 "{\"taps\":[0,%lld,%lld],\"size\":%lld,\"layers\":2,\"heads\":%lld,"
                 "\"intermediate\":%lld,\"dropout\":0.1}",
                 L / 2 - 1, L - 1, (long long)c->hidden, (long long)c->heads,
                 (long long)c->intermediate);
        break;
    case W_BOTTLENECK:
        snprintf(buf, n,
                 "{\"placement\":\"houlsby\",\"reduction_factor\":16,"
                 "\"non_linearity\":\"relu\"}");
        break;
    case W_LORA:
        snprintf(buf, n, "{\"rank\":8,\"alpha\":16,\"targets\":[\"q\",\"v\"]}");
        break;
    }
}

static xa_tensor *random_tensor(xa_ctx *ctx, int64_t d0, int64_t d1, int64_t d2) {
    xa_tensor *t = xa_tensor_new_nd(ctx, d0, d1, d2, 0);
    for (int64_t i = 0; t && i < t->numel; i++)
        t->data[i] = xa_rng_normal(ctx);
    return t;
}

static int run_step(const bench_args *a, xa_ctx *ctx, step_kind k, result *r) {
    static const char *const cls[] = {"xadapter", "kadapter", "bottleneck", "lora"};
    xa_model *plm = NULL, *vlm = NULL;
    xa_registry *reg = NULL;
    step_state s = {.ctx = ctx};
    xa_tensor *feat[4] = {NULL};
    int32_t *ids = NULL;
    int rc = -1;
    if (xa_model_load(ctx, a->model, &plm) != XA_OK)
        goto out;
    if (k == W_XADAPTER && !a->vlm) {
        xa_errorf(ctx, XA_EINVAL,
                  "step-xadapter needs --vlm DIR (a CLIP checkpoint: its sizes "
                  "give the expert shapes)");
        goto out;
    }
    if (k == W_XADAPTER && xa_model_load(ctx, a->vlm, &vlm) != XA_OK)
        goto out;
    if (!(reg = xa_registry_new(ctx)) || xa_registry_scan(reg) != XA_OK)
        goto out;
    if (!(s.net = xa_net_new(ctx, plm, vlm, reg)))
        goto out;
    const xa_tower_config *c = &xa_model_config_of(plm)->text;
    char opts[512];
    adapter_opts(k, c, opts, sizeof opts);
    if (xa_net_insert(s.net, cls[k], NULL, opts) != XA_OK)
        goto out;
    if (k == W_KADAPTER) // K-Adapter's own fine-tuning: linear(concat[h_L, adapter output])
        xa_net_set_fusion(s.net, XA_FUSION_CONCAT);
    xa_head_opts ho = {
        .kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_CLS, .classes = 2, .dropout = 0.1f};
    xa_optim_opts oo = {.kind = XA_OPTIM_ADAMW, .lr = 1e-4f, .weight_decay = 0.01f};
    if (xa_head_new(s.net, "cls", &ho, &s.head) != XA_OK ||
        !(s.opt = xa_optim_new(ctx, xa_net_params(s.net), &oo)))
        goto out;
    int64_t B = a->batch, T = a->seq;
    if (!(ids = random_ids(ctx, B * T, c->vocab)) ||
        !(s.labels = malloc((size_t)B * sizeof *s.labels)))
        goto out;
    for (int64_t i = 0; i < B; i++)
        s.labels[i] = xa_rng_uniform(ctx) < 0.5f ? 0 : 1;
    s.batch.text = (xa_text_batch){.ids = ids, .B = B, .T = T};
    xa_vlm_feats vf = {0};
    if (k == W_XADAPTER) {
        // In the real pipeline these come from the frozen CLIP, computed once and cached across
        // epochs; the bench uses random tensors of CLIP ViT-B/32's shapes.
        const xa_model_config *vc = xa_model_config_of(vlm);
        feat[0] = random_tensor(ctx, B, 50, vc->vision.hidden);
        feat[1] = random_tensor(ctx, B, 77, vc->text.hidden);
        feat[2] = random_tensor(ctx, B, 1, vc->projection_dim);
        feat[3] = random_tensor(ctx, B, 1, vc->projection_dim);
        if (!feat[0] || !feat[1] || !feat[2] || !feat[3])
            goto out;
        vf = (xa_vlm_feats){.image_tokens = feat[0],
                            .text_tokens = feat[1],
                            .image_pooled = feat[2],
                            .text_pooled = feat[3]};
        s.batch.feats = &vf;
    }
    fdims d = dims_of(c, B, T);
    double fwd, actual;
    step_flops(k, &d, &fwd, &actual);
    r->gflop = actual * 1e-9;
    r->gflop_dense = 3 * fwd * 1e-9;
    xa_set_grad_enabled(ctx, true);
    xa_set_training(ctx, true);
    char label[32];
    snprintf(label, sizeof label, "step-%s", cls[k]);
    rc = time_loop(a, label, step_iter, &s, r);
    r->extra = s.loss;
    r->arena_mb = (double)xa_arena_capacity(ctx) / (1 << 20);
    // after the loop: concat fusion creates its parameters on the first forward
    snprintf(r->note, sizeof r->note,
             "\"batch\":%lld,\"seq\":%lld,\"trainable\":%lld,\"lowest_site\":%d,"
             "\"features\":\"%s\"",
             (long long)B, (long long)T, (long long)xa_params_numel(xa_net_params(s.net), true),
             xa_net_lowest_site(s.net), k == W_XADAPTER ? "random, CLIP ViT-B/32 shapes" : "none");
    if (rc == 0)
        printf("%s: loss %.4f after %d steps; arena %.1f MB\n", label, (double)s.loss,
               a->warmup + a->repeat, (double)xa_arena_capacity(ctx) / (1 << 20));
out:
    for (int i = 0; i < 4; i++)
        xa_tensor_release(feat[i]);
    free(ids);
    free(s.labels);
    xa_optim_free(s.opt);
    xa_head_free(s.head);
    xa_net_free(s.net);
    xa_registry_free(reg);
    xa_model_free(vlm);
    xa_model_free(plm);
    return rc;
}

// --- the frozen-encoder caches: epoch 1 vs epoch 2 --------------------------------------------

// First caption of each distinct image in DIR/captions.txt (Flickr8k's "image,caption" CSV):
// paths[i] = DIR/images/<image>, texts[i] = the caption. Returns how many (up to n).
static int distinct_captions(const char *dir, int n, char **paths, char **texts) {
    char fname[4096];
    snprintf(fname, sizeof fname, "%s/captions.txt", dir);
    FILE *f = fopen(fname, "r");
    if (!f)
        return -1;
    char line[2048], last[2048] = "";
    int got = 0;
    bool header = true;
    while (got < n && fgets(line, sizeof line, f)) {
        char *comma = strchr(line, ',');
        if (header || !comma) {
            header = false;
            continue;
        }
        *comma = '\0';
        if (!strcmp(line, last))
            continue;
        snprintf(last, sizeof last, "%s", line);
        char *text = comma + 1;
        text[strcspn(text, "\r\n")] = '\0';
        if (*text == '"') // a quoted caption: the quotes are not part of it
            text++, text[strcspn(text, "\"")] = '\0';
        size_t plen = strlen(dir) + strlen(line) + 9;
        if (!(paths[got] = malloc(plen)) || !(texts[got] = strdup(text)))
            break;
        snprintf(paths[got], plen, "%s/images/%s", dir, line);
        got++;
    }
    fclose(f);
    return got;
}

// X-adapter (top two layers, both experts) trained for two epochs over `batches` batches of
// B x T random ids, the V-expert fed the CLIP features of real Flickr8k images and the T-expert
// those of their captions, through the library's caches: CLIP features computed once per image
// and caption (xa_vlm_cache), and the frozen prefix (layers below the lowest adapter) kept per
// example. No dropout in the frozen base, so the prefix is exact to reuse. Epoch 1 pays what a
// framework without these caches pays every epoch (CLIP vision and text towers, JPEG decoding,
// the whole PLM); epoch 2 reads both caches. One untimed step on extra examples warms up first.
static int run_epochs(const bench_args *a, xa_ctx *ctx, result *r, double *e1, int *n1,
                      int64_t *stats) {
    int64_t B = a->batch, T = a->seq, nb = a->batches, n = nb * B + B; // + the warm-up batch
    char **paths = calloc((size_t)n, sizeof *paths), **texts = calloc((size_t)n, sizeof *texts);
    xa_model *plm = NULL, *vlm = NULL;
    xa_registry *reg = NULL;
    xa_vlm_cache *vc = NULL;
    step_state s = {.ctx = ctx};
    int32_t *ids = NULL;
    int rc = -1, got = -1;
    if (!paths || !texts)
        goto out;
    if ((got = distinct_captions(a->data, (int)n, paths, texts)) < n) {
        xa_errorf(ctx, XA_EIO, "%s/captions.txt: need %lld captions of distinct images, found %d",
                  a->data, (long long)n, got < 0 ? 0 : got);
        goto out;
    }
    if (xa_model_load(ctx, a->model, &plm) != XA_OK || xa_model_load(ctx, a->vlm, &vlm) != XA_OK ||
        !(reg = xa_registry_new(ctx)) || xa_registry_scan(reg) != XA_OK ||
        !(s.net = xa_net_new(ctx, plm, vlm, reg)) ||
        xa_vlm_cache_new(ctx, vlm, NULL, &vc) != XA_OK)
        goto out;
    const xa_tower_config *c = &xa_model_config_of(plm)->text;
    char opts[512];
    adapter_opts(W_XADAPTER, c, opts, sizeof opts);
    xa_head_opts ho = {.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_CLS, .classes = 2, .dropout = 0.1f};
    xa_optim_opts oo = {.kind = XA_OPTIM_ADAMW, .lr = 1e-4f, .weight_decay = 0.01f};
    if (xa_net_insert(s.net, "xadapter", NULL, opts) != XA_OK ||
        xa_head_new(s.net, "cls", &ho, &s.head) != XA_OK ||
        !(s.opt = xa_optim_new(ctx, xa_net_params(s.net), &oo)))
        goto out;
    xa_net_set_prefix_cache(s.net, (size_t)1 << 30);
    if (!(ids = random_ids(ctx, n * T, c->vocab)) || !(s.labels = malloc((size_t)n * sizeof *s.labels)))
        goto out;
    for (int64_t i = 0; i < n; i++)
        s.labels[i] = xa_rng_uniform(ctx) < 0.5f ? 0 : 1;
    if (!(r->t = malloc((size_t)nb * sizeof *r->t)))
        goto out;
    xa_set_grad_enabled(ctx, true);
    xa_set_training(ctx, true);
    const int64_t warm = nb; // the batch after the data set's
    for (int64_t it = -1; it < 2 * nb; it++) {
        int64_t b = it < 0 ? warm : it % nb;
        double t0 = now_s();
        xa_arena_reset(ctx);
        xa_vlm_feats vf = {0};
        if (xa_vlm_images(ctx, vc, (const char *const *)paths + b * B, B, 1, &vf) != XA_OK ||
            xa_vlm_texts(ctx, vc, (const char *const *)texts + b * B, B, &vf) != XA_OK)
            goto out;
        xa_net_batch nbt = {.text = {.ids = ids + b * B * T, .B = B, .T = T}, .feats = &vf};
        xa_forward_opts fo = {.dropout = 0.0f, .attn_dropout = 0.0f}; // base: no dropout
        xa_net_out out;
        if (xa_net_forward(ctx, s.net, &nbt, &fo, &out) != XA_OK)
            goto out;
        xa_tensor *logits = xa_head_forward(ctx, s.head, &out, NULL, B, T);
        xa_tensor *loss = xa_cross_entropy(ctx, logits, s.labels + b * B, -100);
        if (!loss || xa_backward(ctx, loss) != XA_OK || xa_optim_step(s.opt, -1.0f, 1.0f) != XA_OK)
            goto out;
        double dt = now_s() - t0;
        if (it >= 0 && it < nb)
            e1[(*n1)++] = dt;
        else if (it >= nb)
            r->t[r->n++] = dt;
        if (it >= 0)
            printf("epochs: epoch %lld step %lld %.4f s, loss %.4f\n", (long long)(it / nb + 1),
                   (long long)(it % nb + 1), dt, (double)loss->data[0]);
    }
    xa_vlm_cache_stats(vc, &stats[0], &stats[1], &stats[2]);
    xa_net_prefix_stats(s.net, &stats[3], &stats[4], NULL);
    // no FLOP count: epoch 2 computes less than epoch 1, which is the point
    snprintf(r->note, sizeof r->note,
             "\"batch\":%lld,\"seq\":%lld,\"batches\":%lld,\"features\":\"CLIP ViT-B/32 of "
             "Flickr8k images and captions, cached\"",
             (long long)B, (long long)T, (long long)nb);
    rc = 0;
out:
    for (int64_t i = 0; i < n && paths && texts; i++)
        free(paths[i]), free(texts[i]);
    free(paths);
    free(texts);
    free(ids);
    free(s.labels);
    xa_optim_free(s.opt);
    xa_head_free(s.head);
    xa_net_free(s.net);
    xa_vlm_cache_free(vc);
    xa_registry_free(reg);
    xa_model_free(vlm);
    xa_model_free(plm);
    return rc;
}

// --- command ---------------------------------------------------------------------------------

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: xadapt [--threads N] bench WORKLOAD [--model DIR] [--vlm DIR] [--repeat N]\n"
            "                     [--warmup N] [--batch B] [--seq T] [--seed S] [--json]\n"
            "                     [--data DIR] [--batches N]\n\n"
            "Time one workload and print per-iteration times, median and min, the FLOPs it\n"
            "computes and the peak RSS; --json adds one machine-readable line. Workloads:\n"
            "  sgemm            peak GFLOP/s of xa_sgemm on large shapes (the best is reported)\n"
            "  forward          frozen PLM forward on B x T random ids (grad off), --model\n"
            "  clip-vision      CLIP vision tower on B random images (grad off), --vlm\n"
            "  step-xadapter    training step, X-adapter in the top two blocks, both experts\n"
            "                   (random CLIP ViT-B/32-shaped features; --vlm for the sizes)\n"
            "  step-kadapter    K-Adapter side network, taps 0, L/2-1, L-1, concat fusion\n"
            "  step-bottleneck  Houlsby bottleneck adapters in every block (reduction 16)\n"
            "  step-lora        LoRA rank 8, alpha 16 on q and v of every block\n"
            "  load             xa_model_load to the end of the first forward\n"
            "  epochs           the caches: X-adapter steps over --batches N (4) batches for two\n"
            "                   epochs, real CLIP features of the Flickr8k images and captions in\n"
            "                   --data DIR (captions.txt, images/), no base dropout; epoch 1 vs 2\n"
            "Training steps: dropout 0.1 in the frozen base, CLS -> dropout -> linear(2) head,\n"
            "cross-entropy, backward, AdamW (lr 1e-4, weight decay 0.01). Defaults: B 8, T 128,\n"
            "--repeat 5, --warmup 1. bench/run.py runs these next to PyTorch.\n");
}

static int parse_args(int argc, char **argv, bench_args *a) {
    *a = (bench_args){.repeat = 5, .warmup = 1, .batch = 8, .seq = 128, .seed = 1, .batches = 4};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(o, "--model") && v) {
            a->model = v, i++;
        } else if (!strcmp(o, "--vlm") && v) {
            a->vlm = v, i++;
        } else if (!strcmp(o, "--repeat") && v) {
            a->repeat = atoi(v), i++;
        } else if (!strcmp(o, "--warmup") && v) {
            a->warmup = atoi(v), i++;
        } else if (!strcmp(o, "--batch") && v) {
            a->batch = atoi(v), i++;
        } else if (!strcmp(o, "--seq") && v) {
            a->seq = atoi(v), i++;
        } else if (!strcmp(o, "--seed") && v) {
            a->seed = strtoull(v, NULL, 10), i++;
        } else if (!strcmp(o, "--data") && v) {
            a->data = v, i++;
        } else if (!strcmp(o, "--batches") && v) {
            a->batches = atoi(v), i++;
        } else if (!strcmp(o, "--json")) {
            a->json = true;
        } else if (o[0] != '-' && !a->workload) {
            a->workload = o;
        } else {
            fprintf(stderr, "xadapt bench: unknown or incomplete option '%s'\n\n", o);
            bench_usage(stderr);
            return 2;
        }
    }
    if (!a->workload || a->repeat < 1 || a->warmup < 0 || a->batch < 1 || a->seq < 1 ||
        a->batches < 1) {
        fprintf(stderr, "xadapt bench: a WORKLOAD is required; --repeat, --batch, --seq and "
                        "--batches must be positive, --warmup not negative\n\n");
        bench_usage(stderr);
        return 2;
    }
    return -1;
}

static void print_blas(const char *w) {
    const xa_blas_info *bi = xa_blas_info_get();
    printf("xadapt bench %s: %d thread%s, %s kernels, %s element-wise\n", w, bi->threads,
           bi->threads == 1 ? "" : "s", bi->coretype, bi->simd);
}

int cmd_bench(int argc, char **argv) {
    static const char *const steps[] = {"step-xadapter", "step-kadapter", "step-bottleneck",
                                        "step-lora"};
    bench_args a;
    int st = parse_args(argc, argv, &a);
    if (st >= 0)
        return st;
    const char *w = a.workload;
    int step = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(w, steps[i]))
            step = i;
    bool epochs = !strcmp(w, "epochs");
    bool known = step >= 0 || epochs || !strcmp(w, "sgemm") || !strcmp(w, "forward") ||
                 !strcmp(w, "clip-vision") || !strcmp(w, "load");
    if (!known) {
        fprintf(stderr,
                "xadapt bench: unknown workload '%s' (sgemm, forward, clip-vision, "
                "step-xadapter, step-kadapter, step-bottleneck, step-lora, load, epochs)\n",
                w);
        return 2;
    }
    if (epochs && (!a.model || !a.vlm || !a.data)) {
        fprintf(stderr, "xadapt bench: epochs needs --model DIR, --vlm DIR and --data DIR\n");
        return 2;
    }
    bool needs_model = strcmp(w, "sgemm") && strcmp(w, "clip-vision");
    if ((needs_model && !a.model) || (!strcmp(w, "clip-vision") && !a.vlm && !a.model)) {
        fprintf(stderr, "xadapt bench: %s needs --model DIR%s\n", w,
                strcmp(w, "clip-vision") ? "" : " or --vlm DIR");
        return 2;
    }
    xa_ctx *ctx = cli_ctx("bench");
    if (!ctx)
        return 1;
    xa_ctx_seed(ctx, a.seed);
    // load counts loading the BLAS library too (the first GEMM does it), so it asks later
    bool load = !strcmp(w, "load");
    if (!load)
        print_blas(w);
    result r = {0};
    double e1[256];
    int n1 = 0;
    int64_t cs[5] = {0}; // CLIP computed, memory hits, disk hits; prefix hits, misses
    if (a.batches > 256)
        a.batches = 256;
    int rc;
    if (epochs)
        rc = run_epochs(&a, ctx, &r, e1, &n1, cs);
    else if (!strcmp(w, "sgemm"))
        rc = run_sgemm(&a, ctx, &r);
    else if (!strcmp(w, "forward") || !strcmp(w, "load"))
        rc = run_text(&a, ctx, !strcmp(w, "load"), &r);
    else if (!strcmp(w, "clip-vision"))
        rc = run_vision(&a, ctx, &r);
    else
        rc = run_step(&a, ctx, (step_kind)step, &r);
    if (rc != 0) {
        if (xa_errcode(ctx) == XA_OK)
            xa_errorf(ctx, XA_ENOMEM, "%s: out of memory", w);
        rc = cli_fail("bench", ctx);
        goto out;
    }
    if (load)
        print_blas(w);
    const xa_blas_info *bi = xa_blas_info_get();
    double med = median(r.t, r.n), mn = min_of(r.t, r.n), rss = peak_rss_mb();
    printf("%s: median %.4f s, min %.4f s", w, med, mn);
    if (r.gflop > 0)
        printf(", %.2f GFLOP/iter (%.1f GFLOP/s at the median)", r.gflop, r.gflop / med);
    if (r.gflop_dense > 0)
        printf(", dense-equivalent %.2f GFLOP", r.gflop_dense);
    printf(", peak RSS %.1f MB\n", rss);
    double med1 = epochs ? median(e1, n1) : 0;
    if (epochs)
        printf("epochs: epoch 1 median %.4f s, epoch 2 median %.4f s (%.2fx); CLIP inputs "
               "computed %lld, served from memory %lld; prefix batches computed %lld, read %lld\n",
               med1, med, med1 / med, (long long)cs[0], (long long)cs[1], (long long)cs[4],
               (long long)cs[3]);
    if (a.json) {
        printf("{\"impl\":\"xadapt\",\"workload\":\"%s\",\"median_s\":%.6f,\"min_s\":%.6f,"
               "\"gflop\":%.4f,\"gflop_dense\":%.4f,\"rss_mb\":%.1f,\"threads\":%d,"
               "\"blas\":\"%s\",\"simd\":\"%s\",\"times_s\":[",
               w, med, mn, r.gflop, r.gflop_dense, rss, bi->threads, bi->coretype, bi->simd);
        for (int i = 0; i < r.n; i++)
            printf("%s%.6f", i ? "," : "", r.t[i]);
        printf("]%s%s", r.note[0] ? "," : "", r.note);
        if (!strcmp(w, "sgemm"))
            printf(",\"peak_gflops\":%.2f", r.extra);
        else if (step >= 0)
            printf(",\"loss\":%.5f,\"arena_mb\":%.1f", r.extra, r.arena_mb);
        if (epochs) {
            printf(",\"epoch1_median_s\":%.6f,\"epoch1_min_s\":%.6f,\"epoch1_times_s\":[", med1,
                   min_of(e1, n1));
            for (int i = 0; i < n1; i++)
                printf("%s%.6f", i ? "," : "", e1[i]);
            printf("],\"clip_computed\":%lld,\"clip_memory_hits\":%lld,\"prefix_misses\":%lld,"
                   "\"prefix_hits\":%lld",
                   (long long)cs[0], (long long)cs[1], (long long)cs[4], (long long)cs[3]);
        }
        printf("}\n");
    }
    rc = 0;
out:
    free(r.t);
    xa_ctx_free(ctx);
    return rc;
}
