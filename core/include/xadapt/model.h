// Frozen encoders from Hugging Face checkpoint directories: BERT, RoBERTa and CLIP (text and
// vision towers). Weights stay mapped read-only; one generic transformer block (pre- or post-LN)
// serves every tower. Adapters attach at sites through xa_hooks; outputs follow Hugging Face's
// conventions (hidden state 0 = embedding output, i = output of block i).
#ifndef XADAPT_MODEL_H
#define XADAPT_MODEL_H

#include "xadapt/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum xa_arch { XA_ARCH_BERT, XA_ARCH_ROBERTA, XA_ARCH_CLIP } xa_arch;

typedef struct xa_tower_config {
    int64_t hidden, layers, heads, intermediate;
    int64_t vocab, max_positions, type_vocab; // text towers
    int64_t image_size, patch_size, channels; // vision tower
    float eps;
    xa_act act;
} xa_tower_config;

typedef struct xa_model_config {
    xa_arch arch;
    char model_type[32];
    xa_tower_config text;
    xa_tower_config vision; // CLIP only
    int64_t projection_dim; // CLIP only
    int64_t pad_id, bos_id, eos_id;
} xa_model_config;

// One transformer block's weights, Hugging Face layout (nn.Linear weights are (out, in)).
typedef struct xa_block {
    xa_tensor *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
    xa_tensor *ln1_w, *ln1_b; // BERT: attention.output.LayerNorm; CLIP: layer_norm1
    xa_tensor *w1, *b1, *w2, *b2;
    xa_tensor *ln2_w, *ln2_b; // BERT: output.LayerNorm; CLIP: layer_norm2
} xa_block;

typedef struct xa_model xa_model;

// Read config.json, map the weights (model.safetensors or a sharded set with its index) and
// bind every tensor. Missing tensors and shape mismatches are listed together in one error.
xa_status xa_model_load(xa_ctx *ctx, const char *dir, xa_model **out);
void xa_model_free(xa_model *m);

const xa_model_config *xa_model_config_of(const xa_model *m);
const char *xa_model_dir(const xa_model *m);
const char *xa_arch_name(xa_arch a);
bool xa_model_has_mlm_head(const xa_model *m);
bool xa_model_has_pooler(const xa_model *m);
int64_t xa_model_param_count(const xa_model *m);
// A 64-bit content hash of every weight byte, as 16 hex digits (computed once, then cached).
const char *xa_model_fingerprint(xa_model *m);
// Hash the weights again and compare with the cached fingerprint (taking it now if it never
// was): XA_ESTATE naming both when a frozen weight changed. This is how a run proves freezing.
xa_status xa_model_verify(xa_ctx *ctx, xa_model *m);
// Weights of the text tower's block `i`, for adapters that need them (LoRA merges).
xa_block *xa_model_block(xa_model *m, int i);

// --- random checkpoints ----------------------------------------------------------------------

typedef struct xa_random_opts {
    uint64_t seed;
    xa_dtype dtype;     // F32 (default), F16 or BF16 storage
    int shards;         // > 1: model-0000k-of-0000n.safetensors + model.safetensors.index.json
    bool prefix;        // "bert."/"roberta." prefixes as *ForMaskedLM checkpoints have
    bool no_heads;      // leave out the pooler and MLM head
} xa_random_opts;

// Config JSON text of a built-in preset (bert-base, bert-mini, bert-tiny, roberta-base,
// roberta-tiny, clip-vit-base-patch32, clip-tiny), NULL when unknown. `names` lists them.
const char *xa_model_preset(const char *name);
const char *xa_model_preset_names(void);
// Write a random-weight checkpoint in exact Hugging Face layout (config.json + weights) for
// `config_json`, initialised as transformers does (N(0, initializer_range) weights, LayerNorm
// 1/0). The directory is created if missing; files are written atomically.
xa_status xa_model_write_random(xa_ctx *ctx, const char *config_json, const char *dir,
                                const xa_random_opts *opts);

// --- sites: where adapters attach ------------------------------------------------------------

typedef enum xa_site {
    XA_SITE_ATTN, // attention sub-layer output, before its residual (and LayerNorm in post-LN)
    XA_SITE_FFN,  // feed-forward sub-layer output, before its residual
    XA_SITE_OUT,  // block output (the residual stream after the block)
    // projections: rewrite a linear's output
    XA_SITE_Q,
    XA_SITE_K,
    XA_SITE_V,
    XA_SITE_O,
    XA_SITE_FF1,
    XA_SITE_FF2,
    XA_SITE_ACT, // feed-forward activation after the nonlinearity (FF2's input); x = FF1's output
    XA_SITE_COUNT
} xa_site;

const char *xa_site_name(xa_site s); // "attn", "ffn", "out", "q", ..., "act"

// Called at each enabled (layer, site): returns the rewritten tensor (or `h` unchanged), NULL
// on error. `x` is the sub-layer's input (for projections: the linear's input).
typedef xa_tensor *(*xa_site_fn)(xa_ctx *ctx, void *user, int layer, xa_site site, xa_tensor *h,
                                 xa_tensor *x);

typedef struct xa_hooks {
    xa_site_fn fn;
    void *user;
    const uint32_t *enabled; // per layer: bit s set when site s has something attached
    // per layer: bit s (a projection site) set when the hook computes that projection itself;
    // fn is then called with h == NULL. NULL = none.
    const uint32_t *replace;
} xa_hooks;

// --- forward ---------------------------------------------------------------------------------

typedef struct xa_text_batch {
    const int32_t *ids;       // (B, T)
    const float *mask;        // (B, T) 1 token / 0 padding; NULL = all tokens
    const int32_t *type_ids;  // (B, T) or NULL (zeros)
    int64_t B, T;
} xa_text_batch;

typedef struct xa_text_out {
    xa_tensor *last;          // (B,T,H)
    xa_tensor **hidden;       // L+1 tensors (B,T,H) when requested, else NULL
    xa_tensor *pooled;        // BERT/RoBERTa pooler_output; CLIP: the EOT token after final LN
    xa_tensor *embeds;        // CLIP text_embeds (projected); NULL otherwise
} xa_text_out;

typedef struct xa_forward_opts {
    bool all_hidden;          // keep every hidden state
    float dropout;            // hidden dropout when the context is training (0 = none)
    float attn_dropout;       // attention-probability dropout when training
    const xa_hooks *hooks;    // NULL = plain frozen encoder
    // Resume from a cached frozen prefix: `start` is hidden state `start_layer` (B,T,H); the
    // embeddings and blocks below it are skipped. start_hidden[i] (i < start_layer, may be
    // NULL) fills out->hidden for taps below the start.
    int start_layer;
    xa_tensor *start;
    xa_tensor *const *start_hidden;
} xa_forward_opts;

// BERT / RoBERTa / CLIP text tower. Tensors live in the step arena.
xa_status xa_text_forward(xa_ctx *ctx, xa_model *m, const xa_text_batch *batch,
                          const xa_forward_opts *opts, xa_text_out *out);
// Masked-LM logits (B,T,V) from a last hidden state; XA_ENOTFOUND when the head is absent.
xa_tensor *xa_mlm_logits(xa_ctx *ctx, xa_model *m, xa_tensor *last);

typedef struct xa_vision_out {
    xa_tensor **hidden;       // L+1 tensors (B, 1+P, H): 0 = after pre_layrnorm
    xa_tensor *last;          // (B, 1+P, H) encoder output (before post_layernorm)
    xa_tensor *pooled;        // post_layernorm(last[:,0]) (B,H)
    xa_tensor *embeds;        // visual_projection(pooled) (B, projection_dim)
} xa_vision_out;

// CLIP vision tower on pixels (B, 3, S, S) already normalised.
xa_status xa_vision_forward(xa_ctx *ctx, xa_model *m, const float *pixels, int64_t B,
                            xa_vision_out *out);
// Outputs under the names Hugging Face gives them (last_hidden_state, hidden_states.<i>,
// pooler_output, logits; CLIP: text_*, vision_*, text_embeds, image_embeds). Either output
// may be NULL. Returns how many were written (at most `max`); names point to static or `buf`.
typedef struct xa_named {
    char name[48];
    xa_tensor *t;
} xa_named;
int xa_named_outputs(const xa_model *m, const xa_text_out *text, xa_tensor *mlm_logits,
                     const xa_vision_out *vision, xa_named *out, int max);

// exp(logit_scale): CLIP's similarity temperature.
float xa_clip_logit_scale(const xa_model *m);

#ifdef __cplusplus
}
#endif
#endif
