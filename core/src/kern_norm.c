// Layer normalisation and softmax over the last dimension. Statistics are accumulated in double
// per row so long rows (3072) stay accurate; mean and rstd are saved for backward.
#include <math.h>

#include "kernels.h"
#include "pool.h"

typedef struct {
    float *out, *mean, *rstd, *dinp, *dweight, *dbias;
    const float *inp, *weight, *bias, *dout, *cmean, *crstd;
    float eps;
    int64_t N, C;
} norm_job;

static void ln_forward_rows(void *arg, int64_t begin, int64_t end) {
    const norm_job *j = arg;
    float *out = j->out, *mean = j->mean, *rstd = j->rstd, eps = j->eps;
    const float *inp = j->inp, *weight = j->weight, *bias = j->bias;
    int64_t C = j->C;
    for (int64_t i = begin; i < end; i++) {
        const float *x = inp + i * C;
        double s = 0, ss = 0;
        for (int64_t c = 0; c < C; c++)
            s += x[c];
        double m = s / (double)C;
        for (int64_t c = 0; c < C; c++) {
            double d = x[c] - m;
            ss += d * d;
        }
        float r = (float)(1.0 / sqrt(ss / (double)C + eps));
        float mf = (float)m;
        float *y = out + i * C;
        for (int64_t c = 0; c < C; c++)
            y[c] = (x[c] - mf) * r * weight[c] + bias[c];
        if (mean)
            mean[i] = mf;
        if (rstd)
            rstd[i] = r;
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
    for (int64_t i = begin; i < end; i++) {
        const float *x = j->inp + i * C, *dy = j->dout + i * C;
        float m = j->cmean[i], r = j->crstd[i];
        double dnorm_mean = 0, dnorm_norm_mean = 0;
        for (int64_t c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            float dnorm = j->weight[c] * dy[c];
            dnorm_mean += dnorm;
            dnorm_norm_mean += (double)dnorm * norm;
        }
        float a = (float)(dnorm_mean / (double)C), b = (float)(dnorm_norm_mean / (double)C);
        float *dx = j->dinp + i * C;
        for (int64_t c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            dx[c] += (j->weight[c] * dy[c] - a - norm * b) * r;
        }
    }
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
    int64_t C = j->C;
    for (int64_t i = begin; i < end; i++) {
        const float *x = j->inp + i * C;
        float *y = j->out + i * C;
        float mx = -INFINITY;
        for (int64_t c = 0; c < C; c++)
            mx = x[c] > mx ? x[c] : mx;
        if (mx == -INFINITY) { // every entry masked: uniform, as an additive -max mask gives
            for (int64_t c = 0; c < C; c++)
                y[c] = 1.0f / (float)C;
            continue;
        }
        double sum = 0;
        for (int64_t c = 0; c < C; c++) {
            y[c] = expf(x[c] - mx);
            sum += y[c];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t c = 0; c < C; c++)
            y[c] *= inv;
    }
}

void xa_softmax_forward(float *out, const float *inp, int64_t N, int64_t C) {
    norm_job j = {.out = out, .inp = inp, .N = N, .C = C};
    xa_parallel_for(N, 32, softmax_rows, &j);
}

static void softmax_back_rows(void *arg, int64_t begin, int64_t end) {
    const norm_job *j = arg;
    int64_t C = j->C;
    for (int64_t i = begin; i < end; i++) {
        const float *y = j->out + i * C, *dy = j->dout + i * C;
        double dot = 0;
        for (int64_t c = 0; c < C; c++)
            dot += (double)dy[c] * y[c];
        float d = (float)dot;
        float *dx = j->dinp + i * C;
        for (int64_t c = 0; c < C; c++)
            dx[c] += y[c] * (dy[c] - d);
    }
}

void xa_softmax_backward(float *dinp, const float *dout, const float *out, int64_t N, int64_t C) {
    norm_job j = {.dinp = dinp, .dout = dout, .out = (float *)out, .N = N, .C = C};
    xa_parallel_for(N, 32, softmax_back_rows, &j);
}
