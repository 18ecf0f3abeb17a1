// Row primitives under the element-wise kernels (activations, dropout, softmax, layer norm), each
// built twice: portable C on libm (expf, erff, tanhf), and 16 lanes of AVX-512 with xadapt's own
// exp and erf (vec.c). The level is chosen once, at load, from the CPU; XADAPT_SIMD=scalar forces
// the portable one. Dropout masks are bit-identical at both levels; values agree within a few
// units in the last place (erf within 2e-7): tests/test_vec.c runs both side by side.
#ifndef XADAPT_VEC_H
#define XADAPT_VEC_H

#include <stdbool.h>
#include <stdint.h>

#include "xadapt/ops.h"

typedef enum { XA_VEC_SCALAR, XA_VEC_AVX512 } xa_vec_level;

xa_vec_level xa_vec_level_get(void);
// Tests and benchmarks: switch level; AVX-512 is refused (scalar kept) on a CPU without it.
// Returns the level now in force. Not to be called while kernels run on other threads.
xa_vec_level xa_vec_level_set(xa_vec_level level);
const char *xa_vec_level_name(xa_vec_level level);

// y = act(x), n elements (y may be x)
void xa_vec_act(float *y, const float *x, xa_act act, int64_t n);
// dx += dy * act'(x); `out` = act(x) is read by tanh and sigmoid only
void xa_vec_act_bwd(float *dx, const float *dy, const float *x, const float *out, xa_act act,
                    int64_t n);

// Dropout over the elements start .. start+n-1 of a tensor (the mask is a function of the seed
// and the element's index in the whole tensor, see xa_dropout_keep):
// y[i] = keep ? x[i] / (1-p) : 0 (y may be x), and dx[i] += keep ? dy[i] / (1-p) : 0.
void xa_vec_dropout(float *y, const float *x, float p, uint64_t seed, int64_t start, int64_t n);
void xa_vec_dropout_bwd(float *dx, const float *dy, float p, uint64_t seed, int64_t start,
                        int64_t n);

// Softmax of one row (y may be x). -inf entries get exactly 0; a row with nothing but -inf gets
// uniform weights, as an additive mask of the most negative float gives in Hugging Face's code.
void xa_vec_softmax_row(float *y, const float *x, int64_t n);
// dx (+)= y * (dy - <dy, y>): accumulates when `accumulate`, else assigns (dx may be dy then)
void xa_vec_softmax_bwd_row(float *dx, const float *dy, const float *y, bool accumulate,
                            int64_t n);

// One row of layer norm: y = (x - mean) * rstd * w + b; mean and rstd returned for backward.
void xa_vec_layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, float eps, int64_t n);
// dx += (w*dy - <w*dy>/n - xhat * <w*dy, xhat>/n) * rstd, xhat = (x - mean) * rstd
void xa_vec_layernorm_bwd_row(float *dx, const float *dy, const float *x, const float *w,
                              float mean, float rstd, int64_t n);

// Sum of squares, accumulated in double.
double xa_vec_sumsq(const float *x, int64_t n);

// AdamW over n elements (PyTorch's: decoupled weight decay, bias corrections folded into `step`
// = lr / (1 - beta1^t) and `bc2_sqrt` = sqrt(1 - beta2^t)); the gradient is used as g * gscale and
// zeroed afterwards. Separate multiplies and adds, as the portable loop has them: both levels
// give the same bits.
typedef struct xa_adamw_k {
    float beta1, beta2, lr, wd, step, bc2_sqrt, eps, gscale;
} xa_adamw_k;
void xa_vec_adamw(float *w, float *g, float *m, float *v, const xa_adamw_k *k, int64_t n);

#endif
