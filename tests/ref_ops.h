// Plain reference twins of the fast kernels, written for clarity and computed in double. Used
// only by tests: a fast kernel must agree with its twin on odd sizes.
#ifndef XADAPT_TEST_REF_OPS_H
#define XADAPT_TEST_REF_OPS_H

#include <stdbool.h>
#include <stdint.h>

void ref_linear(float *out, const float *x, const float *w, const float *b, int64_t N, int64_t C,
                int64_t OC);
void ref_matmul(float *out, const float *a, const float *b, bool ta, bool tb, int64_t NB, int64_t M,
                int64_t K, int64_t N);
void ref_layernorm(float *out, const float *x, const float *w, const float *b, double eps,
                   int64_t N, int64_t C);
void ref_softmax(float *out, const float *x, int64_t N, int64_t C);
// q (B,Tq,H*Dk) k (B,Tk,H*Dk) v (B,Tk,H*Dv); additive mask as Hugging Face builds it
void ref_attention(float *out, const float *q, const float *k, const float *v, const float *mask,
                   bool causal, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dk,
                   int64_t Dv);
double ref_gelu(double x);
double ref_gelu_tanh(double x);
double ref_quick_gelu(double x);

#endif
