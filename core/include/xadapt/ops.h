// Graph-level ops: each computes its forward now into a new arena tensor and, when an input
// needs a gradient, records a tape node whose backward accumulates into the inputs.
// Sticky errors: a NULL input returns NULL at once (the context already holds the first message),
// so a chain of ops needs one check at its end. Bad shapes give XA_ESHAPE naming both shapes.
#ifndef XADAPT_OPS_H
#define XADAPT_OPS_H

#include "xadapt/tape.h"

#ifdef __cplusplus
extern "C" {
#endif

// Activations by kind, for configs and plugins.
typedef enum xa_act {
    XA_ACT_GELU,       // erf GELU ("gelu")
    XA_ACT_GELU_TANH,  // "gelu_new", "gelu_pytorch_tanh"
    XA_ACT_QUICK_GELU, // x * sigmoid(1.702 x), CLIP
    XA_ACT_TANH,
    XA_ACT_SIGMOID,
    XA_ACT_RELU,
    XA_ACT_COUNT
} xa_act;
const char *xa_act_name(xa_act a);
// Hugging Face's hidden_act names; false for an unknown name.
bool xa_act_parse(const char *name, xa_act *out);
xa_tensor *xa_act_apply(xa_ctx *ctx, xa_tensor *x, xa_act act);

// --- dense ---
// x (..., C), w (OC, C), b (OC) or NULL -> (..., OC)
xa_tensor *xa_linear(xa_ctx *ctx, xa_tensor *x, xa_tensor *w, xa_tensor *b);
// a (..., M, K) [(..., K, M) when ta], b (..., K, N) [(..., N, K) when tb] -> (..., M, N);
// leading dims must match exactly (or b may be 2-D and is then shared by every batch).
xa_tensor *xa_matmul(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, bool ta, bool tb);

// --- element-wise ---
xa_tensor *xa_add(xa_ctx *ctx, xa_tensor *a, xa_tensor *b); // same shape
xa_tensor *xa_sub(xa_ctx *ctx, xa_tensor *a, xa_tensor *b);
xa_tensor *xa_mul(xa_ctx *ctx, xa_tensor *a, xa_tensor *b);
xa_tensor *xa_scale(xa_ctx *ctx, xa_tensor *a, float s);
// x (..., C) + bias (C), broadcast over rows
xa_tensor *xa_add_bias(xa_ctx *ctx, xa_tensor *x, xa_tensor *bias);
// x (..., C) * gate (C), broadcast over rows (learned gates, LayerScale)
xa_tensor *xa_mul_row(xa_ctx *ctx, xa_tensor *x, xa_tensor *gate);
xa_tensor *xa_gelu(xa_ctx *ctx, xa_tensor *x);      // erf GELU
xa_tensor *xa_gelu_tanh(xa_ctx *ctx, xa_tensor *x); // "gelu_new"
xa_tensor *xa_quick_gelu(xa_ctx *ctx, xa_tensor *x);
xa_tensor *xa_tanh(xa_ctx *ctx, xa_tensor *x);
xa_tensor *xa_sigmoid(xa_ctx *ctx, xa_tensor *x);
xa_tensor *xa_relu(xa_ctx *ctx, xa_tensor *x);
// Activation by Hugging Face name: gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, relu, tanh,
// sigmoid. XA_EINVAL listing the valid names otherwise.
xa_tensor *xa_activation(xa_ctx *ctx, xa_tensor *x, const char *name);
// Inverted dropout with the context's RNG; identity (no copy) when p == 0 or not training.
xa_tensor *xa_dropout(xa_ctx *ctx, xa_tensor *x, float p);

// --- normalisation ---
// x (..., C), w (C), b (C) -> (..., C)
xa_tensor *xa_layernorm(xa_ctx *ctx, xa_tensor *x, xa_tensor *w, xa_tensor *b, float eps);
xa_tensor *xa_softmax(xa_ctx *ctx, xa_tensor *x); // over the last dim

// --- attention ---
typedef struct xa_attn_opts {
    int heads;
    bool causal;
    const float *key_mask; // (B, Tk): 1 attend, 0 padding; NULL = all keys. Copied.
    float dropout;         // on attention probabilities when training
    float scale;           // 0 = 1/sqrt(head dim)
} xa_attn_opts;
// q (B,Tq,H*Dk), k (B,Tk,H*Dk), v (B,Tk,H*Dv) -> (B,Tq,H*Dv). Self-attention passes the same
// sequence length; cross-attention may use any Tk. Projections are the caller's linears.
xa_tensor *xa_attention(xa_ctx *ctx, xa_tensor *q, xa_tensor *k, xa_tensor *v,
                        const xa_attn_opts *opts);

// --- lookup, shape ---
// table (V, C), ids (B*T) int32 -> (B, T, C). XA_ERANGE names the first id outside 0..V-1.
// Backward scatters into the table only when it is trainable.
xa_tensor *xa_embedding(xa_ctx *ctx, xa_tensor *table, const int32_t *ids, int64_t B, int64_t T);
// Same data, new shape (numel must match). No copy unless a gradient must flow.
xa_tensor *xa_reshape(xa_ctx *ctx, xa_tensor *x, int ndim, const int64_t *shape);
// Concatenate along `dim` (negative counts from the end); other dims must match.
xa_tensor *xa_concat(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, int dim);
// x[..., start:start+len, ...] along `dim`.
xa_tensor *xa_slice(xa_ctx *ctx, xa_tensor *x, int dim, int64_t start, int64_t len);
// (B,T,H*D) -> (B,H,T,D) and back.
xa_tensor *xa_heads_split(xa_ctx *ctx, xa_tensor *x, int heads);
xa_tensor *xa_heads_merge(xa_ctx *ctx, xa_tensor *x);

// --- pooling (x (B,T,C) -> (B,C)) ---
xa_tensor *xa_pool_first(xa_ctx *ctx, xa_tensor *x);
// mask (B,T) 1/0; a row with no 1 gives zeros.
xa_tensor *xa_pool_mean(xa_ctx *ctx, xa_tensor *x, const float *mask);
// row b takes x[b, index[b]]; XA_ERANGE when an index is outside 0..T-1.
xa_tensor *xa_pool_gather(xa_ctx *ctx, xa_tensor *x, const int64_t *index);

// --- reductions and losses (scalar results, shape (1)) ---
xa_tensor *xa_sum(xa_ctx *ctx, xa_tensor *x);
xa_tensor *xa_mean(xa_ctx *ctx, xa_tensor *x);
// logits (N, C), targets (N) in 0..C-1 or == ignore_index; mean over the targets kept
// (0 when none is kept).
xa_tensor *xa_cross_entropy(xa_ctx *ctx, xa_tensor *logits, const int32_t *targets,
                            int32_t ignore_index);
xa_tensor *xa_mse(xa_ctx *ctx, xa_tensor *a, xa_tensor *b); // mean squared difference
// mean over rows of 1 - cos(a_r, b_r); a, b (N, C)
xa_tensor *xa_cosine_loss(xa_ctx *ctx, xa_tensor *a, xa_tensor *b);
// T^2 * mean over rows of KL(softmax(teacher/T) || softmax(student/T)); both (N, C)
xa_tensor *xa_kl_div(xa_ctx *ctx, xa_tensor *student, xa_tensor *teacher, float temperature);

// A custom op from outside core (plugins): `out` was computed by the caller; `backward` reads
// node->out->grad and accumulates into the inputs that need it. Records only when needed.
xa_tensor *xa_custom(xa_ctx *ctx, const char *name, xa_tensor *out, int nin, xa_tensor *const *in,
                     xa_backward_fn backward, void *saved);

#ifdef __cplusplus
}
#endif
#endif
