// Raw kernels on float arrays, llm.c style: outputs first, then inputs, then parameters, then
// sizes; a shape comment on each. Backward kernels accumulate (+=) and skip any gradient pointer
// that is NULL ("not needed": how frozen weights cost nothing). Graph-level ops are in ops_*.c.
#ifndef XADAPT_KERNELS_H
#define XADAPT_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "xadapt/ops.h"

// --- dense (kern_dense.c) ---
// inp (BT,C), weight (OC,C), bias (OC) or NULL -> out (BT,OC)
void xa_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t BT, int64_t C, int64_t OC);
// dinp is assigned when `dinp_assign` (a fresh buffer), accumulated otherwise.
void xa_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int64_t BT, int64_t C, int64_t OC,
                        bool dinp_assign);
// a (NB, M,K) or (NB, K,M) when ta; b (NB, K,N) or (NB, N,K) when tb -> out (NB, M,N)
void xa_matmul_forward(float *out, const float *a, const float *b, bool ta, bool tb, int64_t NB,
                       int64_t M, int64_t K, int64_t N);
void xa_matmul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                        bool ta, bool tb, int64_t NB, int64_t M, int64_t K, int64_t N);

// --- normalisation and softmax (kern_norm.c) ---
// inp (N,C), weight (C), bias (C) -> out (N,C), mean (N), rstd (N)
void xa_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, float eps, int64_t N, int64_t C);
void xa_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int64_t N, int64_t C);
// inp (N,C) -> out (N,C), softmax over the last dim
void xa_softmax_forward(float *out, const float *inp, int64_t N, int64_t C);
void xa_softmax_backward(float *dinp, const float *dout, const float *out, int64_t N, int64_t C);

// --- element-wise (kern_act.c) ---
// inp (N) -> out (N)
void xa_act_forward(float *out, const float *inp, xa_act act, int64_t N);
void xa_act_backward(float *dinp, const float *dout, const float *inp, const float *out, xa_act act,
                     int64_t N);
// Dropout with a counter-based mask: element i is kept iff hash(seed, i) >= p. Nothing is stored;
// backward regenerates the mask from the seed.
void xa_dropout_forward(float *out, const float *inp, float p, uint64_t seed, int64_t N);
void xa_dropout_backward(float *dinp, const float *dout, float p, uint64_t seed, int64_t N);
// splitmix64 finaliser of (seed, index): independent of evaluation order, so forward and
// backward (and every thread) see the same mask. Inline: it runs once per element.
static inline bool xa_dropout_keep(uint64_t seed, int64_t i, float p) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * ((uint64_t)i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * 0x1.0p-24f >= p;
}

// --- attention (kern_attn.c) ---
typedef struct xa_attn_shape {
    int64_t B, Tq, Tk, H, Dk, Dv; // heads H; q,k rows have H*Dk values, v rows H*Dv
    float scale;                  // usually 1/sqrt(Dk)
    bool causal;                  // query t sees keys <= t + (Tk - Tq)
    float dropout;                // on attention probabilities, 0 = off
    uint64_t seed;
} xa_attn_shape;
// q (B,Tq,H*Dk), k (B,Tk,H*Dk), v (B,Tk,H*Dv), key_mask (B,Tk) 1 keep / 0 pad or NULL
// -> out (B,Tq,H*Dv), probs (B,H,Tq,Tk) saved for backward (before dropout), or NULL when
// nothing will run backward (each head's probabilities then stay in its thread's scratch).
// Heads run in parallel; scratch comes from each thread's own buffer.
void xa_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          const float *key_mask, const xa_attn_shape *s);
// `assign`: XA_ATTN_ASSIGN_* bits of the gradients that are fresh buffers, written instead of
// accumulated into (each head's slice is written by exactly one product).
enum { XA_ATTN_ASSIGN_DQ = 1, XA_ATTN_ASSIGN_DK = 2, XA_ATTN_ASSIGN_DV = 4 };
void xa_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *probs,
                           const xa_attn_shape *s, unsigned assign);

#endif
