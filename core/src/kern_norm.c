// Layer normalisation and softmax over the last dimension. Statistics are accumulated in double
// per row so long rows (3072) stay accurate; mean and rstd are saved for backward.
#include <math.h>

#include "kernels.h"

void xa_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, float eps, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
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

void xa_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * C, *dy = dout + i * C;
        float m = mean[i], r = rstd[i];
        double dnorm_mean = 0, dnorm_norm_mean = 0;
        for (int64_t c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            float dnorm = weight[c] * dy[c];
            dnorm_mean += dnorm;
            dnorm_norm_mean += (double)dnorm * norm;
            if (dbias)
                dbias[c] += dy[c];
            if (dweight)
                dweight[c] += norm * dy[c];
        }
        if (!dinp)
            continue;
        float a = (float)(dnorm_mean / (double)C), b = (float)(dnorm_norm_mean / (double)C);
        float *dx = dinp + i * C;
        for (int64_t c = 0; c < C; c++) {
            float norm = (x[c] - m) * r;
            dx[c] += (weight[c] * dy[c] - a - norm * b) * r;
        }
    }
}

void xa_softmax_forward(float *out, const float *inp, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * C;
        float *y = out + i * C;
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

void xa_softmax_backward(float *dinp, const float *dout, const float *out, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        const float *y = out + i * C, *dy = dout + i * C;
        double dot = 0;
        for (int64_t c = 0; c < C; c++)
            dot += (double)dy[c] * y[c];
        float d = (float)dot;
        float *dx = dinp + i * C;
        for (int64_t c = 0; c < C; c++)
            dx[c] += y[c] * (dy[c] - d);
    }
}
