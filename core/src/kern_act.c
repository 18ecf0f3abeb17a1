// Element-wise kernels: activations (erf GELU, tanh GELU, quick GELU, tanh, sigmoid, ReLU) and
// dropout with a counter-based mask that backward regenerates instead of storing. The loops
// themselves are vec.c's; this file splits them over the pool.
#include "kernels.h"
#include "pool.h"
#include "vec.h"

static const char *act_names[XA_ACT_COUNT] = {
    [XA_ACT_GELU] = "gelu",       [XA_ACT_GELU_TANH] = "gelu_new", [XA_ACT_QUICK_GELU] = "quick_gelu",
    [XA_ACT_TANH] = "tanh",       [XA_ACT_SIGMOID] = "sigmoid",    [XA_ACT_RELU] = "relu",
};

const char *xa_act_name(xa_act a) { return (unsigned)a < XA_ACT_COUNT ? act_names[a] : "?"; }

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
    xa_vec_act(j->out + b, j->inp + b, j->act, e - b);
}

static void act_bwd_range(void *arg, int64_t b, int64_t e) {
    const elem_job *j = arg;
    xa_vec_act_bwd(j->dinp + b, j->dout + b, j->inp + b, j->fwd_out ? j->fwd_out + b : NULL, j->act,
                   e - b);
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
    xa_vec_dropout(j->out + b, j->inp + b, j->p, j->seed, b, e - b);
}

static void drop_bwd_range(void *arg, int64_t b, int64_t e) {
    const elem_job *j = arg;
    xa_vec_dropout_bwd(j->dinp + b, j->dout + b, j->p, j->seed, b, e - b);
}

void xa_dropout_forward(float *out, const float *inp, float p, uint64_t seed, int64_t N) {
    elem_job j = {.out = out, .inp = inp, .p = p, .seed = seed};
    xa_parallel_for(N, ELEM_GRAIN, drop_fwd_range, &j);
}

void xa_dropout_backward(float *dinp, const float *dout, float p, uint64_t seed, int64_t N) {
    elem_job j = {.dinp = dinp, .dout = dout, .p = p, .seed = seed};
    xa_parallel_for(N, ELEM_GRAIN, drop_bwd_range, &j);
}
