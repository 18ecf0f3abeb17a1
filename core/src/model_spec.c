// The table of tensors each architecture expects, in Hugging Face's names and shapes, built
// from the config. Loading binds through it and `make-random` writes through it, so the two
// can never disagree. Also: parameter counts, the weight fingerprint, freeing.
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

typedef struct {
    xa_tspec *v;
    size_t n, cap;
    bool oom;
} spec_list;

XA_PRINTF(6, 7)
static void add(spec_list *l, xa_tensor **dst, xa_group g, int ndim, const int64_t *shape,
                const char *fmt, ...) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        xa_tspec *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return;
        }
        l->v = v, l->cap = cap;
    }
    xa_tspec *s = &l->v[l->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    if (ndim) // a scalar (logit_scale) has no shape
        memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
    s->dst = dst;
    s->group = g;
}

#define V1(a) ((int64_t[]){a})
#define V2(a, b) ((int64_t[]){a, b})
#define FIELD(f) offsetof(xa_block, f)

// One block's tensors: the xa_block field, its shape (out, in) in units of H (hidden) or I
// (intermediate), and its Hugging Face name in BERT/RoBERTa and in CLIP.
enum { DIM_H, DIM_I };
static const struct {
    size_t field;
    int ndim, d0, d1;
    const char *bert, *clip;
} block_tensors[] = {
    {FIELD(wq), 2, DIM_H, DIM_H, "attention.self.query.weight", "self_attn.q_proj.weight"},
    {FIELD(bq), 1, DIM_H, 0, "attention.self.query.bias", "self_attn.q_proj.bias"},
    {FIELD(wk), 2, DIM_H, DIM_H, "attention.self.key.weight", "self_attn.k_proj.weight"},
    {FIELD(bk), 1, DIM_H, 0, "attention.self.key.bias", "self_attn.k_proj.bias"},
    {FIELD(wv), 2, DIM_H, DIM_H, "attention.self.value.weight", "self_attn.v_proj.weight"},
    {FIELD(bv), 1, DIM_H, 0, "attention.self.value.bias", "self_attn.v_proj.bias"},
    {FIELD(wo), 2, DIM_H, DIM_H, "attention.output.dense.weight", "self_attn.out_proj.weight"},
    {FIELD(bo), 1, DIM_H, 0, "attention.output.dense.bias", "self_attn.out_proj.bias"},
    {FIELD(ln1_w), 1, DIM_H, 0, "attention.output.LayerNorm.weight", "layer_norm1.weight"},
    {FIELD(ln1_b), 1, DIM_H, 0, "attention.output.LayerNorm.bias", "layer_norm1.bias"},
    {FIELD(w1), 2, DIM_I, DIM_H, "intermediate.dense.weight", "mlp.fc1.weight"},
    {FIELD(b1), 1, DIM_I, 0, "intermediate.dense.bias", "mlp.fc1.bias"},
    {FIELD(w2), 2, DIM_H, DIM_I, "output.dense.weight", "mlp.fc2.weight"},
    {FIELD(b2), 1, DIM_H, 0, "output.dense.bias", "mlp.fc2.bias"},
    {FIELD(ln2_w), 1, DIM_H, 0, "output.LayerNorm.weight", "layer_norm2.weight"},
    {FIELD(ln2_b), 1, DIM_H, 0, "output.LayerNorm.bias", "layer_norm2.bias"},
};

static void add_block(spec_list *l, xa_block *b, const xa_tower_config *t, const char *pre,
                      bool clip, int i) {
    const int64_t dims[2] = {[DIM_H] = t->hidden, [DIM_I] = t->intermediate};
    for (size_t k = 0; k < sizeof block_tensors / sizeof *block_tensors; k++) {
        int64_t shape[2] = {dims[block_tensors[k].d0], dims[block_tensors[k].d1]};
        xa_tensor **dst = (xa_tensor **)((char *)b + block_tensors[k].field);
        add(l, dst, XA_GROUP_REQUIRED, block_tensors[k].ndim, shape, "%s%d.%s", pre, i,
            clip ? block_tensors[k].clip : block_tensors[k].bert);
    }
}

static void bert_spec(spec_list *l, xa_model *m) {
    const xa_tower_config *t = &m->cfg.text;
    int64_t H = t->hidden, V = t->vocab;
    const xa_group R = XA_GROUP_REQUIRED, M = XA_GROUP_MLM;
    add(l, &m->word_emb, R, 2, V2(V, H), "embeddings.word_embeddings.weight");
    add(l, &m->pos_emb, R, 2, V2(t->max_positions, H), "embeddings.position_embeddings.weight");
    add(l, &m->type_emb, R, 2, V2(t->type_vocab, H), "embeddings.token_type_embeddings.weight");
    add(l, &m->emb_ln_w, R, 1, V1(H), "embeddings.LayerNorm.weight");
    add(l, &m->emb_ln_b, R, 1, V1(H), "embeddings.LayerNorm.bias");
    for (int i = 0; i < t->layers; i++)
        add_block(l, &m->text_blocks[i], t, "encoder.layer.", false, i);
    add(l, &m->pool_w, XA_GROUP_POOLER, 2, V2(H, H), "pooler.dense.weight");
    add(l, &m->pool_b, XA_GROUP_POOLER, 1, V1(H), "pooler.dense.bias");
    if (m->cfg.arch == XA_ARCH_BERT) {
        add(l, &m->mlm_dense_w, M, 2, V2(H, H), "cls.predictions.transform.dense.weight");
        add(l, &m->mlm_dense_b, M, 1, V1(H), "cls.predictions.transform.dense.bias");
        add(l, &m->mlm_ln_w, M, 1, V1(H), "cls.predictions.transform.LayerNorm.weight");
        add(l, &m->mlm_ln_b, M, 1, V1(H), "cls.predictions.transform.LayerNorm.bias");
        add(l, &m->mlm_bias, M, 1, V1(V), "cls.predictions.bias");
        add(l, &m->mlm_decoder, XA_GROUP_MLM_DECODER, 2, V2(V, H), "cls.predictions.decoder.weight");
    } else {
        add(l, &m->mlm_dense_w, M, 2, V2(H, H), "lm_head.dense.weight");
        add(l, &m->mlm_dense_b, M, 1, V1(H), "lm_head.dense.bias");
        add(l, &m->mlm_ln_w, M, 1, V1(H), "lm_head.layer_norm.weight");
        add(l, &m->mlm_ln_b, M, 1, V1(H), "lm_head.layer_norm.bias");
        add(l, &m->mlm_bias, M, 1, V1(V), "lm_head.bias");
        add(l, &m->mlm_decoder, XA_GROUP_MLM_DECODER, 2, V2(V, H), "lm_head.decoder.weight");
    }
}

static void clip_spec(spec_list *l, xa_model *m) {
    const xa_tower_config *t = &m->cfg.text, *v = &m->cfg.vision;
    const xa_group R = XA_GROUP_REQUIRED;
    int64_t P = m->cfg.projection_dim, g = v->image_size / v->patch_size;
    add(l, &m->word_emb, R, 2, V2(t->vocab, t->hidden), "text_model.embeddings.token_embedding.weight");
    add(l, &m->pos_emb, R, 2, V2(t->max_positions, t->hidden),
        "text_model.embeddings.position_embedding.weight");
    for (int i = 0; i < t->layers; i++)
        add_block(l, &m->text_blocks[i], t, "text_model.encoder.layers.", true, i);
    add(l, &m->final_ln_w, R, 1, V1(t->hidden), "text_model.final_layer_norm.weight");
    add(l, &m->final_ln_b, R, 1, V1(t->hidden), "text_model.final_layer_norm.bias");
    add(l, &m->class_emb, R, 1, V1(v->hidden), "vision_model.embeddings.class_embedding");
    add(l, &m->patch_w, R, 4, ((int64_t[]){v->hidden, v->channels, v->patch_size, v->patch_size}),
        "vision_model.embeddings.patch_embedding.weight");
    add(l, &m->vpos_emb, R, 2, V2(g * g + 1, v->hidden),
        "vision_model.embeddings.position_embedding.weight");
    add(l, &m->pre_ln_w, R, 1, V1(v->hidden), "vision_model.pre_layrnorm.weight");
    add(l, &m->pre_ln_b, R, 1, V1(v->hidden), "vision_model.pre_layrnorm.bias");
    for (int i = 0; i < v->layers; i++)
        add_block(l, &m->vision_blocks[i], v, "vision_model.encoder.layers.", true, i);
    add(l, &m->post_ln_w, R, 1, V1(v->hidden), "vision_model.post_layernorm.weight");
    add(l, &m->post_ln_b, R, 1, V1(v->hidden), "vision_model.post_layernorm.bias");
    add(l, &m->visual_proj, R, 2, V2(P, v->hidden), "visual_projection.weight");
    add(l, &m->text_proj, R, 2, V2(P, t->hidden), "text_projection.weight");
    add(l, &m->logit_scale, XA_GROUP_CLIP_SCALE, 0, NULL, "logit_scale");
}

xa_status xa_model_alloc_blocks(xa_ctx *ctx, xa_model *m) {
    m->text_blocks = xa_calloc(ctx, (size_t)m->cfg.text.layers, sizeof(xa_block));
    if (!m->text_blocks)
        return XA_ENOMEM;
    if (m->cfg.arch == XA_ARCH_CLIP) {
        m->vision_blocks = xa_calloc(ctx, (size_t)m->cfg.vision.layers, sizeof(xa_block));
        if (!m->vision_blocks)
            return XA_ENOMEM;
    }
    return XA_OK;
}

xa_status xa_model_spec(xa_ctx *ctx, xa_model *m, xa_tspec **spec, size_t *n) {
    if (!m->spec) {
        spec_list l = {0};
        if (m->cfg.arch == XA_ARCH_CLIP)
            clip_spec(&l, m);
        else
            bert_spec(&l, m);
        if (l.oom) {
            free(l.v);
            return xa_errorf(ctx, XA_ENOMEM, "out of memory building the tensor table");
        }
        m->spec = l.v;
        m->nspec = l.n;
    }
    *spec = m->spec;
    *n = m->nspec;
    return XA_OK;
}

void xa_model_free(xa_model *m) {
    if (!m)
        return;
    // Every bound tensor is reachable through the spec; the tied decoder holds one extra
    // reference of the word embeddings.
    for (size_t i = 0; i < m->nspec; i++)
        if (m->spec[i].dst) {
            xa_tensor_release(*m->spec[i].dst);
            *m->spec[i].dst = NULL;
        }
    xa_tensor_release(m->mlm_decoder);
    for (size_t i = 0; i < m->nfiles; i++)
        xa_st_close(m->files[i]);
    free(m->files);
    free(m->spec);
    free(m->text_blocks);
    free(m->vision_blocks);
    free(m->dir);
    free(m);
}

int64_t xa_model_param_count(const xa_model *m) {
    int64_t n = 0;
    for (size_t i = 0; i < m->nspec; i++)
        if (*m->spec[i].dst && !(m->spec[i].dst == &m->mlm_decoder && m->mlm_decoder == m->word_emb))
            n += (*m->spec[i].dst)->numel; // a tied decoder is the word embeddings again
    return n;
}

// 4-lane multiply-rotate hash over 8-byte words: a few GB/s, so bert-base takes ~0.1 s.
static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static uint64_t hash_bytes(uint64_t seed, const unsigned char *p, size_t n) {
    const uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full;
    uint64_t lane[4] = {seed + P1, seed ^ P2, seed - P1, seed * P2 + 1};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * k, 8);
            lane[k] = rotl64(lane[k] + w * P2, 31) * P1;
        }
    uint64_t h = rotl64(lane[0], 1) + rotl64(lane[1], 7) + rotl64(lane[2], 12) + rotl64(lane[3], 18);
    for (; i < n; i++)
        h = rotl64(h ^ (p[i] * P1), 11) * P2;
    h ^= n;
    h ^= h >> 33, h *= P2, h ^= h >> 29, h *= P1, h ^= h >> 32;
    return h;
}

static uint64_t weights_hash(const xa_model *m) {
    uint64_t h = 0x78616461707421ull; // "xadapt!"
    for (size_t i = 0; i < m->nspec; i++) {
        const xa_tensor *t = *m->spec[i].dst;
        if (!t)
            continue;
        h = hash_bytes(h, (const unsigned char *)m->spec[i].name, strlen(m->spec[i].name));
        h = hash_bytes(h, (const unsigned char *)t->data, (size_t)t->numel * sizeof(float));
    }
    return h;
}

const char *xa_model_fingerprint(xa_model *m) {
    if (!m->fingerprint[0])
        snprintf(m->fingerprint, sizeof m->fingerprint, "%016llx",
                 (unsigned long long)weights_hash(m));
    return m->fingerprint;
}

xa_status xa_model_verify(xa_ctx *ctx, xa_model *m) {
    char before[17], now[17];
    snprintf(before, sizeof before, "%s", xa_model_fingerprint(m));
    snprintf(now, sizeof now, "%016llx", (unsigned long long)weights_hash(m));
    if (strcmp(before, now))
        return xa_errorf(ctx, XA_ESTATE,
                         "%s: the frozen weights changed: fingerprint %s when first taken, %s now",
                         m->dir, before, now);
    return XA_OK;
}
