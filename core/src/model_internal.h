// Private layout of xa_model, shared by model_load.c (config and binding), model_spec.c (the
// table of expected tensors), encoder.c (BERT/RoBERTa/CLIP text) and clip.c (vision).
#ifndef XADAPT_MODEL_INTERNAL_H
#define XADAPT_MODEL_INTERNAL_H

#include <cjson/cJSON.h>

#include "internal.h"
#include "xadapt/model.h"
#include "xadapt/safetensors.h"

typedef enum {
    XA_GROUP_REQUIRED,
    XA_GROUP_POOLER,      // pooler.dense.*
    XA_GROUP_MLM,         // cls.predictions.* / lm_head.*
    XA_GROUP_MLM_DECODER, // the decoder weight; tied to the word embeddings when absent
    XA_GROUP_CLIP_SCALE,  // logit_scale
    XA_GROUP_COUNT
} xa_group;

// One expected tensor: its canonical Hugging Face name (no "bert."/"roberta." prefix), shape,
// the model field it binds to, and its group.
typedef struct xa_tspec {
    char name[160];
    int ndim;
    int64_t shape[4];
    xa_tensor **dst;
    xa_group group;
} xa_tspec;

struct xa_model {
    char *dir;
    xa_model_config cfg;
    xa_st_file **files;
    size_t nfiles;
    xa_tspec *spec;
    size_t nspec;
    bool has_pooler, has_mlm;
    char fingerprint[17];

    // text tower (BERT/RoBERTa, or CLIP text)
    xa_tensor *word_emb, *pos_emb, *type_emb, *emb_ln_w, *emb_ln_b;
    xa_block *text_blocks;
    xa_tensor *pool_w, *pool_b;
    xa_tensor *mlm_dense_w, *mlm_dense_b, *mlm_ln_w, *mlm_ln_b, *mlm_decoder, *mlm_bias;
    xa_tensor *final_ln_w, *final_ln_b, *text_proj; // CLIP

    // CLIP vision tower
    xa_tensor *class_emb, *patch_w, *vpos_emb, *pre_ln_w, *pre_ln_b, *post_ln_w, *post_ln_b;
    xa_tensor *visual_proj, *logit_scale;
    xa_block *vision_blocks;
    bool text_touched, vision_touched; // block weights' page tables filled (xa_model_touch)
};

// Before a tower's first forward: fill the page tables of its mapped block weights in one
// madvise(MADV_POPULATE_READ) per tensor (~15 ms for bert-base from a warm page cache) instead of
// a fault per 64 KiB inside the GEMMs. Only towers that run pay, and only what they read.
void xa_model_touch(xa_model *m, bool vision);

cJSON *xa_json_load(xa_ctx *ctx, const char *path);
xa_status xa_config_parse(xa_ctx *ctx, const char *path, const cJSON *j, xa_model_config *c);
xa_status xa_model_alloc_blocks(xa_ctx *ctx, xa_model *m);
// The model's table of expected tensors (built once, owned by the model).
xa_status xa_model_spec(xa_ctx *ctx, xa_model *m, xa_tspec **spec, size_t *n);

// Generic transformer block: post-LN (BERT) or pre-LN (CLIP), with adapter sites.
typedef struct xa_block_run {
    const xa_tower_config *cfg;
    bool pre_ln, causal;
    const float *key_mask;
    float dropout, attn_dropout;
    const xa_hooks *hooks; // NULL for towers adapters never touch
} xa_block_run;
xa_tensor *xa_block_forward(xa_ctx *ctx, const xa_block *w, const xa_block_run *r, int layer,
                            xa_tensor *x);
// The same, keeping only the output (intermediates freed at once) when the block records nothing;
// sets hidden[layer + 1] when hidden is not NULL.
xa_tensor *xa_block_run_keep(xa_ctx *ctx, const xa_block *w, const xa_block_run *r, int layer,
                             xa_tensor *x, xa_tensor **hidden);

#endif
