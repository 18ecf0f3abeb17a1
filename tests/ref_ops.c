// Reference twins (see ref_ops.h): direct loops in double, no BLAS, no shared code with core.
#include "ref_ops.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

void ref_linear(float *out, const float *x, const float *w, const float *b, int64_t N, int64_t C,
                int64_t OC) {
    for (int64_t i = 0; i < N; i++)
        for (int64_t o = 0; o < OC; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t c = 0; c < C; c++)
                s += (double)x[i * C + c] * w[o * C + c];
            out[i * OC + o] = (float)s;
        }
}

void ref_matmul(float *out, const float *a, const float *b, bool ta, bool tb, int64_t NB, int64_t M,
                int64_t K, int64_t N) {
    for (int64_t n = 0; n < NB; n++)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    double av = ta ? a[n * M * K + k * M + i] : a[n * M * K + i * K + k];
                    double bv = tb ? b[n * K * N + j * K + k] : b[n * K * N + k * N + j];
                    s += av * bv;
                }
                out[n * M * N + i * N + j] = (float)s;
            }
}

void ref_layernorm(float *out, const float *x, const float *w, const float *b, double eps,
                   int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int64_t c = 0; c < C; c++)
            m += x[i * C + c];
        m /= (double)C;
        for (int64_t c = 0; c < C; c++)
            v += (x[i * C + c] - m) * (x[i * C + c] - m);
        v /= (double)C;
        for (int64_t c = 0; c < C; c++)
            out[i * C + c] = (float)((x[i * C + c] - m) / sqrt(v + eps) * w[c] + b[c]);
    }
}

void ref_softmax(float *out, const float *x, int64_t N, int64_t C) {
    for (int64_t i = 0; i < N; i++) {
        double mx = -INFINITY, z = 0;
        for (int64_t c = 0; c < C; c++)
            mx = fmax(mx, x[i * C + c]);
        for (int64_t c = 0; c < C; c++)
            z += exp(x[i * C + c] - mx);
        for (int64_t c = 0; c < C; c++)
            out[i * C + c] = (float)(exp(x[i * C + c] - mx) / z);
    }
}

void ref_attention(float *out, const float *q, const float *k, const float *v, const float *mask,
                   bool causal, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dk,
                   int64_t Dv) {
    double *s = malloc((size_t)Tk * sizeof *s);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < Tq; t++) {
                double mx = -INFINITY, z = 0;
                for (int64_t j = 0; j < Tk; j++) {
                    double dot = 0;
                    for (int64_t d = 0; d < Dk; d++)
                        dot += (double)q[(b * Tq + t) * H * Dk + h * Dk + d] *
                               k[(b * Tk + j) * H * Dk + h * Dk + d];
                    dot /= sqrt((double)Dk);
                    // Hugging Face adds finfo(float32).min for each mask that excludes the key
                    if (mask && mask[b * Tk + j] == 0.0f)
                        dot += -FLT_MAX;
                    if (causal && j > t + (Tk - Tq))
                        dot += -FLT_MAX;
                    s[j] = dot;
                    mx = fmax(mx, dot);
                }
                for (int64_t j = 0; j < Tk; j++)
                    z += (s[j] = exp(s[j] - mx));
                for (int64_t d = 0; d < Dv; d++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Tk; j++)
                        acc += s[j] / z * v[(b * Tk + j) * H * Dv + h * Dv + d];
                    out[(b * Tq + t) * H * Dv + h * Dv + d] = (float)acc;
                }
            }
    free(s);
}

double ref_gelu(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
double ref_gelu_tanh(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double ref_quick_gelu(double x) { return x / (1.0 + exp(-1.702 * x)); }
