// Layer normalisation and softmax over the last dimension, rows in parallel (the row loops are
// vec.c's); mean and rstd are saved for backward.
#include "kernels.h"
#include "pool.h"
#include "vec.h"

typedef struct {
    float *out, *mean, *rstd, *dinp, *dweight, *dbias;
    const float *inp, *weight, *bias, *dout, *cmean, *crstd;
    float eps;
    int64_t N, C;
} norm_job;

static void ln_forward_rows(void *arg, int64_t begin, int64_t end) {
    const norm_job *j = arg;
    int64_t C = j->C;
    for (int64_t i = begin; i < end; i++) {
        float m, r;
        xa_vec_layernorm_row(j->out + i * C, &m, &r, j->inp + i * C, j->weight, j->bias, j->eps, C);
        if (j->mean)
            j->mean[i] = m;
        if (j->rstd)
            j->rstd[i] = r;
    }
}

void xa_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, float eps, int64_t N, int64_t C) {
    norm_job j = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .weight = weight,
                  .bias = bias, .eps = eps, .N = N, .C = C};
    xa_parallel_for(N, 16, ln_forward_rows, &j);
}

// dinp by rows; dweight/dbias by columns (each thread owns a column range: no races).
static void ln_backward_rows(void *arg, int64_t begin, int64_t end) {
    const norm_job *j = arg;
    int64_t C = j->C;
    for (int64_t i = begin; i < end; i++)
        xa_vec_layernorm_bwd_row(j->dinp + i * C, j->dout + i * C, j->inp + i * C, j->weight,
                                 j->cmean[i], j->crstd[i], C);
}

static void ln_backward_cols(void *arg, int64_t begin, int64_t end) {
    const norm_job *j = arg;
    int64_t C = j->C;
    for (int64_t i = 0; i < j->N; i++) {
        const float *x = j->inp + i * C, *dy = j->dout + i * C;
        float m = j->cmean[i], r = j->crstd[i];
        for (int64_t c = begin; c < end; c++) {
            if (j->dbias)
                j->dbias[c] += dy[c];
            if (j->dweight)
                j->dweight[c] += (x[c] - m) * r * dy[c];
        }
    }
}

void xa_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int64_t N, int64_t C) {
    norm_job j = {.dinp = dinp, .dweight = dweight, .dbias = dbias, .dout = dout, .inp = inp,
                  .weight = weight, .cmean = mean, .crstd = rstd, .N = N, .C = C};
    if (dinp)
        xa_parallel_for(N, 16, ln_backward_rows, &j);
    if (dweight || dbias)
        xa_parallel_for(C, 64, ln_backward_cols, &j);
}

static void softmax_rows(void *arg, int64_t begin, int64_t end) {
    const norm_job *j = arg;
    for (int64_t i = begin; i < end; i++)
        xa_vec_softmax_row(j->out + i * j->C, j->inp + i * j->C, j->C);
}

void xa_softmax_forward(float *out, const float *inp, int64_t N, int64_t C) {
    norm_job j = {.out = out, .inp = inp, .N = N, .C = C};
    xa_parallel_for(N, 32, softmax_rows, &j);
}

static void softmax_back_rows(void *arg, int64_t begin, int64_t end) {
    const norm_job *j = arg;
    int64_t C = j->C;
    for (int64_t i = begin; i < end; i++)
        xa_vec_softmax_bwd_row(j->dinp + i * C, j->dout + i * C, j->out + i * C, true, C);
}

void xa_softmax_backward(float *dinp, const float *dout, const float *out, int64_t N, int64_t C) {
    norm_job j = {.dinp = dinp, .dout = dout, .out = (float *)out, .N = N, .C = C};
    xa_parallel_for(N, 32, softmax_back_rows, &j);
}
