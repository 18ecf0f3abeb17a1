// The task layer between the network and a training script: task heads, objectives (MLM
// masking, distillation losses), CLIP features for a batch (computed once, cached in memory
// and on disk, and retrieved from an image pool for text-only data), and evaluation metrics.
// Implementations: core/src/heads.c, objectives.c, vlm_features.c, metrics.c.
#ifndef XADAPT_TASK_H
#define XADAPT_TASK_H

#include "xadapt/net.h"
#include "xadapt/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- task heads (parameters "head.<name>.*" in the network, saved with the adapters) -----------

typedef enum xa_head_kind {
    XA_HEAD_CLASSIFY, // pooled -> dropout -> linear(classes)          logits (B, classes)
    XA_HEAD_REGRESS,  // pooled -> dropout -> linear(1)                 (B, 1)
    XA_HEAD_CHOICE,   // rows are (example, choice) pairs: linear(1)    logits (B / choices, choices)
    XA_HEAD_MLM,      // the frozen PLM's own masked-LM head            logits (B, T, V)
} xa_head_kind;

typedef enum xa_pool {
    XA_POOL_CLS,    // hidden state of the first token
    XA_POOL_POOLER, // BERT's pooler (tanh(dense(CLS))), frozen; RoBERTa checkpoints often lack it
    XA_POOL_MEAN,   // mean over non-padding tokens
} xa_pool;

typedef struct xa_head_opts {
    xa_head_kind kind;
    xa_pool pool;
    int classes;   // XA_HEAD_CLASSIFY
    int choices;   // XA_HEAD_CHOICE
    float dropout; // before the linear layer, while training
} xa_head_opts;

typedef struct xa_head xa_head;

// Create head `name` on the network (its parameters are the network's). XA_EINVAL for bad
// options (e.g. classes < 2, MLM head on a checkpoint without one, pooler absent).
xa_status xa_head_new(xa_net *net, const char *name, const xa_head_opts *opts, xa_head **out);
void xa_head_free(xa_head *h);
const xa_head_opts *xa_head_options(const xa_head *h);
// Logits for the network's output (uses out->fused and the batch's mask).
xa_tensor *xa_head_forward(xa_ctx *ctx, xa_head *h, const xa_net_out *out, const float *mask,
                           int64_t B, int64_t T);

// --- objectives --------------------------------------------------------------------------------

// BERT's masking: each position with mask 1 and special 0 is chosen with probability `prob`;
// of those 80 % become mask_id, 10 % a random id in [0, vocab) that is not special, 10 % stay.
// labels[i] = the original id where chosen, ignore_index elsewhere. ids are rewritten in place.
// At least one position per row with a maskable token is chosen. Uses the context's RNG.
void xa_mlm_mask(xa_ctx *ctx, int32_t *ids, int32_t *labels, const float *mask,
                 const uint8_t *special, int64_t B, int64_t T, int32_t mask_id, int32_t vocab,
                 float prob, int32_t ignore_index);

// Neuron Selectivity Transfer (Huang & Wang 2017, as VidLanKD uses it): student (B, T, Cs) and
// teacher (B, T', Ct) -> squared MMD with the polynomial kernel (x.y)^2 between the L2-normalised
// per-channel activation vectors over positions; T must equal T' (pool or slice first).
xa_tensor *xa_nst_loss(xa_ctx *ctx, xa_tensor *student, xa_tensor *teacher);
// NT-Xent (SimCLR / VidLanKD contrastive): a (N, D), b (N, D); row i of a and b are positives,
// every other row of b a negative; cosine similarity / temperature, symmetric (a->b and b->a).
xa_tensor *xa_ntxent_loss(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, float temperature);

// --- CLIP features for a batch ---------------------------------------------------------------

typedef struct xa_vlm_cache xa_vlm_cache;

// Features of each distinct input are computed once by the frozen VLM and kept in memory,
// spilling to `disk_dir` (NULL: memory only) in files keyed by the VLM (weights fingerprint,
// config.json, tokenizer files) and the input (an image's content, or the text), with a
// checksum of the values (a damaged file is computed again). The cache owns the CLIP tokenizer
// it loads from the VLM's directory (needed for text features).
xa_status xa_vlm_cache_new(xa_ctx *ctx, xa_model *vlm, const char *disk_dir, xa_vlm_cache **out);
void xa_vlm_cache_free(xa_vlm_cache *c);
// Why writing the directory failed (a full disk, lost permissions), or NULL: after a failed
// write the cache goes on in memory only and this says so, once, for the caller to report.
const char *xa_vlm_cache_disk_error(const xa_vlm_cache *c);
// Statistics: inputs computed by the VLM, and served from memory or disk.
void xa_vlm_cache_stats(const xa_vlm_cache *c, int64_t *computed, int64_t *memory_hits,
                        int64_t *disk_hits);

// Image features of B examples with k images each (paths[b*k + j]); fills out->image_tokens
// (B, k*(1+P), Dv) with its mask (all ones) and out->image_pooled (B, k, proj). Arena tensors.
xa_status xa_vlm_images(xa_ctx *ctx, xa_vlm_cache *c, const char *const *paths, int64_t B,
                        int k, xa_vlm_feats *out);
// CLIP text features of B texts: out->text_tokens (B, Nt, Dt) with text_token_mask, and
// out->text_pooled (B, 1, proj). Texts are cut to CLIP's 77 tokens.
xa_status xa_vlm_texts(xa_ctx *ctx, xa_vlm_cache *c, const char *const *texts, int64_t B,
                       xa_vlm_feats *out);
// For text-only data: the k pool images whose CLIP embeddings are closest (cosine) to each
// text's, best first, as indices into `pool` (B*k). Pool embeddings are cached like any image.
// An image listed twice, or byte-identical files, count once (the first index); k must not
// exceed the distinct images.
xa_status xa_vlm_retrieve(xa_ctx *ctx, xa_vlm_cache *c, const char *const *pool, int64_t npool,
                          const char *const *texts, int64_t B, int k, int64_t *out_idx);

// --- metrics -----------------------------------------------------------------------------------

double xa_metric_accuracy(const int32_t *pred, const int32_t *gold, int64_t n);
double xa_metric_f1(const int32_t *pred, const int32_t *gold, int64_t n, int32_t positive);
double xa_metric_matthews(const int32_t *pred, const int32_t *gold, int64_t n);
double xa_metric_pearson(const double *x, const double *y, int64_t n);
double xa_metric_spearman(const double *x, const double *y, int64_t n); // average ranks for ties

#ifdef __cplusplus
}
#endif
#endif
