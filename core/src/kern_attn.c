// Fused multi-head attention (self and cross) over strided head slices: no head split/merge
// copies, one GEMM per (batch, head) and product. Masks: key padding (1 keep, 0 pad) and causal.
// A query row whose keys are all masked gets uniform weights, as Hugging Face's additive mask does.
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "pool.h"
#include "vec.h"
#include "xadapt/blas.h"

static void mask_and_softmax(float *P, const float *key_mask, const xa_attn_shape *s) {
    int64_t Tq = s->Tq, Tk = s->Tk, shift = Tk - Tq;
    for (int64_t t = 0; t < Tq; t++) {
        float *row = P + t * Tk;
        int64_t limit = s->causal ? t + shift + 1 : Tk; // keys at and after `limit` are masked
        limit = limit < 0 ? 0 : limit > Tk ? Tk : limit;
        if (key_mask)
            for (int64_t j = 0; j < limit; j++)
                row[j] = key_mask[j] == 0.0f ? -INFINITY : row[j];
        for (int64_t j = limit; j < Tk; j++)
            row[j] = -INFINITY;
        xa_vec_softmax_row(row, row, Tk);
    }
}

// Pd = dropout(P) for head block `blk` (its global element offset is blk*Tq*Tk).
static const float *dropped(float *scratch, const float *P, const xa_attn_shape *s, int64_t blk) {
    if (s->dropout <= 0.0f)
        return P;
    int64_t n = s->Tq * s->Tk;
    xa_vec_dropout(scratch, P, s->dropout, s->seed, blk * n, n);
    return scratch;
}

typedef struct {
    float *out, *probs, *dq, *dk, *dv;
    const float *q, *k, *v, *key_mask, *dout;
    const xa_attn_shape *s;
    float beta_q, beta_k, beta_v; // 0 where the gradient is a fresh buffer
} attn_job;

static void forward_heads(void *arg, int64_t begin, int64_t end) {
    const attn_job *j = arg;
    const xa_attn_shape *s = j->s;
    int64_t H = s->H, Tq = s->Tq, Tk = s->Tk, Dk = s->Dk, Dv = s->Dv;
    int64_t ldq = H * Dk, ldv = H * Dv;
    // scratch: the dropped probabilities, and the probabilities themselves when nobody keeps them
    int64_t need = (s->dropout > 0.0f) + (j->probs == NULL);
    float *scratch = need ? xa_thread_scratch((size_t)(need * Tq * Tk) * sizeof(float)) : NULL;
    float *own_p = j->probs ? NULL : scratch + (need - 1) * Tq * Tk;
    for (int64_t blk = begin; blk < end; blk++) {
        int64_t b = blk / H, h = blk % H;
        const float *Q = j->q + b * Tq * ldq + h * Dk, *K = j->k + b * Tk * ldq + h * Dk;
        const float *V = j->v + b * Tk * ldv + h * Dv;
        float *P = own_p ? own_p : j->probs + blk * Tq * Tk, *O = j->out + b * Tq * ldv + h * Dv;
        xa_sgemm(false, true, Tq, Tk, Dk, s->scale, Q, ldq, K, ldq, 0.0f, P, Tk);
        mask_and_softmax(P, j->key_mask ? j->key_mask + b * Tk : NULL, s);
        const float *Pd = dropped(scratch, P, s, blk);
        xa_sgemm(false, false, Tq, Dv, Tk, 1.0f, Pd, Tk, V, ldv, 0.0f, O, ldv);
    }
}

void xa_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          const float *key_mask, const xa_attn_shape *s) {
    attn_job j = {.out = out, .probs = probs, .q = q, .k = k, .v = v, .key_mask = key_mask, .s = s};
    xa_parallel_for(s->B * s->H, 1, forward_heads, &j);
}

static void backward_heads(void *arg, int64_t begin, int64_t end) {
    const attn_job *j = arg;
    const xa_attn_shape *s = j->s;
    int64_t H = s->H, Tq = s->Tq, Tk = s->Tk, Dk = s->Dk, Dv = s->Dv;
    int64_t ldq = H * Dk, ldv = H * Dv;
    float *scratch = xa_thread_scratch((size_t)(2 * Tq * Tk) * sizeof(float));
    float *dP = scratch, *pd_buf = scratch + Tq * Tk;
    for (int64_t blk = begin; blk < end; blk++) {
        int64_t b = blk / H, h = blk % H;
        const float *Q = j->q + b * Tq * ldq + h * Dk, *K = j->k + b * Tk * ldq + h * Dk;
        const float *V = j->v + b * Tk * ldv + h * Dv, *dO = j->dout + b * Tq * ldv + h * Dv;
        const float *P = j->probs + blk * Tq * Tk;
        if (j->dv) {
            const float *Pd = dropped(pd_buf, P, s, blk);
            xa_sgemm(true, false, Tk, Dv, Tq, 1.0f, Pd, Tk, dO, ldv, j->beta_v,
                     j->dv + b * Tk * ldv + h * Dv, ldv);
        }
        if (!j->dq && !j->dk)
            continue;
        xa_sgemm(false, true, Tq, Tk, Dv, 1.0f, dO, ldv, V, ldv, 0.0f, dP, Tk);
        for (int64_t t = 0; t < Tq; t++) { // dS = P * (dPd - <dPd, P>), dPd = dropout'(dP)
            float *g = dP + t * Tk;
            if (s->dropout > 0.0f)
                xa_vec_dropout(g, g, s->dropout, s->seed, blk * Tq * Tk + t * Tk, Tk);
            xa_vec_softmax_bwd_row(g, g, P + t * Tk, false, Tk);
        }
        if (j->dq)
            xa_sgemm(false, false, Tq, Dk, Tk, s->scale, dP, Tk, K, ldq, j->beta_q,
                     j->dq + b * Tq * ldq + h * Dk, ldq);
        if (j->dk)
            xa_sgemm(true, false, Tk, Dk, Tq, s->scale, dP, Tk, Q, ldq, j->beta_k,
                     j->dk + b * Tk * ldq + h * Dk, ldq);
    }
}

void xa_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                           const float *k, const float *v, const float *probs,
                           const xa_attn_shape *s, unsigned assign) {
    attn_job j = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .q = q, .k = k, .v = v,
                  .probs = (float *)probs, .s = s,
                  .beta_q = assign & XA_ATTN_ASSIGN_DQ ? 0.0f : 1.0f,
                  .beta_k = assign & XA_ATTN_ASSIGN_DK ? 0.0f : 1.0f,
                  .beta_v = assign & XA_ATTN_ASSIGN_DV ? 0.0f : 1.0f};
    xa_parallel_for(s->B * s->H, 1, backward_heads, &j);
}
