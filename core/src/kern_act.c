// Element-wise kernels: activations (erf GELU, tanh GELU, quick GELU, tanh, sigmoid, ReLU) and
// dropout with a counter-based mask that backward regenerates instead of storing.
#include <math.h>

#include "kernels.h"
#include "pool.h"

static const char *act_names[XA_ACT_COUNT] = {
    [XA_ACT_GELU] = "gelu",       [XA_ACT_GELU_TANH] = "gelu_new", [XA_ACT_QUICK_GELU] = "quick_gelu",
    [XA_ACT_TANH] = "tanh",       [XA_ACT_SIGMOID] = "sigmoid",    [XA_ACT_RELU] = "relu",
};

const char *xa_act_name(xa_act a) { return (unsigned)a < XA_ACT_COUNT ? act_names[a] : "?"; }

#define SQRT_2_OVER_PI 0.7978845608028654f
#define INV_SQRT_2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void act_forward_serial(float *out, const float *inp, xa_act act, int64_t N) {
    switch (act) {
    case XA_ACT_GELU:
        for (int64_t i = 0; i < N; i++)
            out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * INV_SQRT_2));
        break;
    case XA_ACT_GELU_TANH:
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            out[i] = 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * (x + 0.044715f * x * x * x)));
        }
        break;
    case XA_ACT_QUICK_GELU:
        for (int64_t i = 0; i < N; i++)
            out[i] = inp[i] * sigmoidf(1.702f * inp[i]);
        break;
    case XA_ACT_TANH:
        for (int64_t i = 0; i < N; i++)
            out[i] = tanhf(inp[i]);
        break;
    case XA_ACT_SIGMOID:
        for (int64_t i = 0; i < N; i++)
            out[i] = sigmoidf(inp[i]);
        break;
    case XA_ACT_RELU:
        for (int64_t i = 0; i < N; i++)
            out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
        break;
    case XA_ACT_COUNT:
        break;
    }
}

static void act_backward_serial(float *dinp, const float *dout, const float *inp, const float *out,
                                xa_act act, int64_t N) {
    switch (act) {
    case XA_ACT_GELU:
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float cdf = 0.5f * (1.0f + erff(x * INV_SQRT_2));
            float pdf = INV_SQRT_2PI * expf(-0.5f * x * x);
            dinp[i] += dout[i] * (cdf + x * pdf);
        }
        break;
    case XA_ACT_GELU_TANH:
        for (int64_t i = 0; i < N; i++) {
            float x = inp[i];
            float u = SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
            float t = tanhf(u);
            float du = SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * x * x);
            dinp[i] += dout[i] * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
        }
        break;
    case XA_ACT_QUICK_GELU:
        for (int64_t i = 0; i < N; i++) {
            float s = sigmoidf(1.702f * inp[i]);
            dinp[i] += dout[i] * (s + 1.702f * inp[i] * s * (1.0f - s));
        }
        break;
    case XA_ACT_TANH:
        for (int64_t i = 0; i < N; i++)
            dinp[i] += dout[i] * (1.0f - out[i] * out[i]);
        break;
    case XA_ACT_SIGMOID:
        for (int64_t i = 0; i < N; i++)
            dinp[i] += dout[i] * out[i] * (1.0f - out[i]);
        break;
    case XA_ACT_RELU:
        for (int64_t i = 0; i < N; i++)
            dinp[i] += inp[i] > 0.0f ? dout[i] : 0.0f;
        break;
    case XA_ACT_COUNT:
        break;
    }
}

// Element ranges in parallel: every kernel here is independent per element.
typedef struct {
    float *out, *dinp;
    const float *inp, *dout, *fwd_out;
    xa_act act;
    float p;
    uint64_t seed;
} elem_job;

#define ELEM_GRAIN 16384

static void act_fwd_range(void *arg, int64_t b, int64_t e) {
    const elem_job *j = arg;
    act_forward_serial(j->out + b, j->inp + b, j->act, e - b);
}

static void act_bwd_range(void *arg, int64_t b, int64_t e) {
    const elem_job *j = arg;
    act_backward_serial(j->dinp + b, j->dout + b, j->inp + b, j->fwd_out ? j->fwd_out + b : NULL,
                        j->act, e - b);
}

void xa_act_forward(float *out, const float *inp, xa_act act, int64_t N) {
    elem_job j = {.out = out, .inp = inp, .act = act};
    xa_parallel_for(N, ELEM_GRAIN, act_fwd_range, &j);
}

void xa_act_backward(float *dinp, const float *dout, const float *inp, const float *out, xa_act act,
                     int64_t N) {
    elem_job j = {.dinp = dinp, .dout = dout, .inp = inp, .fwd_out = out, .act = act};
    xa_parallel_for(N, ELEM_GRAIN, act_bwd_range, &j);
}

static void drop_fwd_range(void *arg, int64_t b, int64_t e) {
    const elem_job *j = arg;
    float scale = 1.0f / (1.0f - j->p);
    for (int64_t i = b; i < e; i++)
        j->out[i] = xa_dropout_keep(j->seed, i, j->p) ? j->inp[i] * scale : 0.0f;
}

static void drop_bwd_range(void *arg, int64_t b, int64_t e) {
    const elem_job *j = arg;
    float scale = 1.0f / (1.0f - j->p);
    for (int64_t i = b; i < e; i++)
        if (xa_dropout_keep(j->seed, i, j->p))
            j->dinp[i] += j->dout[i] * scale;
}

void xa_dropout_forward(float *out, const float *inp, float p, uint64_t seed, int64_t N) {
    elem_job j = {.out = out, .inp = inp, .p = p, .seed = seed};
    xa_parallel_for(N, ELEM_GRAIN, drop_fwd_range, &j);
}

void xa_dropout_backward(float *dinp, const float *dout, float p, uint64_t seed, int64_t N) {
    elem_job j = {.dinp = dinp, .dout = dout, .p = p, .seed = seed};
    xa_parallel_for(N, ELEM_GRAIN, drop_bwd_range, &j);
}
