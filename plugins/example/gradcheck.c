// Gradient check for an adapter plugin built out of tree: the gradients its backward (or the
// host's ops) put on the tape against central differences of the same forward, for a sample of
// every parameter's elements. A test program, not a plugin: it links libxadapt
// (pkg-config --libs xadapt) and finds plugins as xadapt does (XADAPT_PLUGIN_PATH).
//
//   gradcheck MODEL_DIR CLASS [OPTIONS_JSON]      e.g. gradcheck /tmp/bert ia3 '{"layers": [0]}'
//
// The network is the frozen model from MODEL_DIR (any BERT-like checkpoint; `xadapt
// make-random --arch bert-tiny --out DIR` makes one) with one instance of CLASS. Parameters are
// set to small random values first (adapters often start at the identity, where some gradients
// vanish), and the loss is a fixed random projection of the output at unmasked positions, so
// every output element matters. A parameter passes when its sampled tape gradient and central
// differences, as vectors, differ by at most 2 % of the gradient's norm (plus float32 noise).
// Exits 0 when every parameter passes, 1 otherwise.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/net.h"
#include "xadapt/ops.h"

enum { B = 2, T = 5, SAMPLES = 16 };
static const int32_t ids[B * T] = {101, 2023, 2003, 1037, 102, 101, 7592, 102, 0, 0};
static const float mask[B * T] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};

static unsigned long long rng = 0x9e3779b97f4a7c15ull;
static float uniform(void) { // in [-0.5, 0.5)
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24)) - 0.5f;
}

static int die(xa_ctx *ctx, const char *what) {
    fprintf(stderr, "gradcheck: %s: %s\n", what, xa_errmsg(ctx));
    exit(1);
}

// sum over unmasked positions of output * R; with `grad`, also its backward.
static double loss(xa_ctx *ctx, xa_net *net, const float *R, bool grad) {
    xa_arena_reset(ctx);
    xa_set_grad_enabled(ctx, grad);
    xa_net_batch b = {.text = {.ids = ids, .mask = mask, .B = B, .T = T}};
    xa_net_out out;
    if (xa_net_forward(ctx, net, &b, NULL, &out) != XA_OK)
        die(ctx, "forward");
    xa_tensor *h = out.fused;
    int64_t H = h->shape[2];
    xa_tensor *r = xa_tensor_arena(ctx, 3, h->shape, true);
    if (!r)
        die(ctx, "arena");
    double sum = 0;
    for (int64_t i = 0; i < h->numel; i++) {
        r->data[i] = mask[i / H] ? R[i] : 0.0f;
        sum += (double)h->data[i] * r->data[i];
    }
    if (grad && xa_backward(ctx, xa_sum(ctx, xa_mul(ctx, h, r))) != XA_OK)
        die(ctx, "backward");
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: gradcheck MODEL_DIR CLASS [OPTIONS_JSON]\n");
        return 2;
    }
    xa_ctx *ctx = xa_ctx_new();
    xa_model *plm;
    xa_registry *reg = ctx ? xa_registry_new(ctx) : NULL;
    if (!reg)
        return 1;
    if (xa_model_load(ctx, argv[1], &plm) != XA_OK)
        die(ctx, "model");
    xa_registry_scan(reg); // refused files are listed by `xadapt plugins`
    xa_net *net = xa_net_new(ctx, plm, NULL, reg);
    if (!net || xa_net_insert(net, argv[2], NULL, argc > 3 ? argv[3] : "{}") != XA_OK)
        die(ctx, argv[2]);
    xa_set_training(ctx, false); // no dropout: the loss is a function of the parameters
    xa_params *ps = xa_net_params(net);
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        xa_tensor *p = xa_params_at(ps, i);
        for (int64_t j = 0; j < p->numel; j++)
            p->data[j] += 0.3f * uniform();
    }
    int64_t H = xa_model_config_of(plm)->text.hidden;
    float *R = malloc(sizeof *R * (size_t)(B * T * H));
    for (int64_t i = 0; R && i < B * T * H; i++)
        R[i] = uniform();
    xa_params_zero_grad(ps);
    loss(ctx, net, R, true);

    int checked = 0, bad = 0;
    double worst = 0;
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        xa_tensor *p = xa_params_at(ps, i);
        const char *name = xa_params_name(ps, i);
        float *tape = malloc(sizeof *tape * (size_t)p->numel);
        if (!tape || !p->grad) {
            printf("%s: no gradient\n", name);
            bad++;
            free(tape);
            continue;
        }
        memcpy(tape, p->grad, sizeof *tape * (size_t)p->numel);
        int64_t stride = p->numel > SAMPLES ? p->numel / SAMPLES : 1, k = 0;
        double diff2 = 0, norm2 = 0;
        for (int64_t j = 0; j < p->numel; j += stride, k++) {
            float keep = p->data[j], eps = 1e-2f;
            p->data[j] = keep + eps;
            double up = loss(ctx, net, R, false);
            p->data[j] = keep - eps;
            double down = loss(ctx, net, R, false);
            p->data[j] = keep;
            double numeric = (up - down) / (2.0 * eps);
            diff2 += (numeric - tape[j]) * (numeric - tape[j]);
            norm2 += numeric * numeric;
            checked++;
        }
        // Over the sampled elements as a vector: float32 forward noise over 2 eps is ~1e-4 per
        // element; beyond that the two may differ by 2 % of the gradient's size.
        double share = sqrt(diff2) / (1e-4 * sqrt((double)k) + 2e-2 * sqrt(norm2));
        worst = fmax(worst, share);
        if (share > 1) {
            bad++;
            printf("%s: tape and central differences differ by %.3g (|gradient| %.3g)\n", name,
                   sqrt(diff2), sqrt(norm2));
        }
        free(tape);
    }
    printf("gradcheck %s: %d elements of %zu parameters, %d off, largest error %.2g of the "
           "tolerance\n",
           argv[2], checked, xa_params_count(ps), bad, worst);
    free(R);
    xa_net_free(net);
    xa_registry_free(reg);
    xa_model_free(plm);
    xa_ctx_free(ctx);
    return bad || !checked;
}
