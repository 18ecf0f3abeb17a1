// Text encoders: the generic transformer block (post-LN for BERT/RoBERTa, pre-LN for CLIP) with
// its adapter sites, the BERT/RoBERTa and CLIP text forward passes, the pooler and the MLM head.
// Frozen weights never record on the tape: only what an adapter makes trainable does.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "xadapt/tape.h"

const char *xa_site_name(xa_site s) {
    static const char *names[XA_SITE_COUNT] = {"attn", "ffn", "out", "q",   "k",
                                               "v",    "o",   "ff1", "ff2", "act"};
    return (unsigned)s < XA_SITE_COUNT ? names[s] : "?";
}

// An adapter hook may keep what it is given or makes for later (a cache, a side network), so
// all of it is pinned: xa_tape_drop_unread frees only the block's own intermediates.
static xa_tensor *call_hook(xa_ctx *ctx, const xa_hooks *hk, int layer, xa_site s, xa_tensor *h,
                            xa_tensor *x) {
    if (h)
        h->flags |= XA_TENSOR_PINNED;
    if (x)
        x->flags |= XA_TENSOR_PINNED;
    ctx->hook_depth++;
    xa_tensor *y = hk->fn(ctx, hk->user, layer, s, h, x);
    ctx->hook_depth--;
    return y;
}

// Give the hook at (layer, site) a chance to rewrite `h`; a site with nothing attached costs a
// bit test.
static xa_tensor *site(xa_ctx *ctx, const xa_block_run *r, int layer, xa_site s, xa_tensor *h,
                       xa_tensor *x) {
    const xa_hooks *hk = r->hooks;
    if (!h || !hk || !hk->enabled || !(hk->enabled[layer] & (1u << s)))
        return h;
    return call_hook(ctx, hk, layer, s, h, x);
}

static xa_tensor *proj(xa_ctx *ctx, const xa_block_run *r, int layer, xa_site s, xa_tensor *x,
                       xa_tensor *w, xa_tensor *b) {
    const xa_hooks *hk = r->hooks;
    if (x && hk && hk->replace && (hk->replace[layer] >> s) & 1u) // e.g. a merged LoRA weight
        return call_hook(ctx, hk, layer, s, NULL, x);
    return site(ctx, r, layer, s, xa_linear(ctx, x, w, b), x);
}

static xa_tensor *attention_sublayer(xa_ctx *ctx, const xa_block *w, const xa_block_run *r,
                                     int layer, xa_tensor *x) {
    xa_tensor *q = proj(ctx, r, layer, XA_SITE_Q, x, w->wq, w->bq);
    xa_tensor *k = proj(ctx, r, layer, XA_SITE_K, x, w->wk, w->bk);
    xa_tensor *v = proj(ctx, r, layer, XA_SITE_V, x, w->wv, w->bv);
    xa_attn_opts o = {.heads = (int)r->cfg->heads, .causal = r->causal, .key_mask = r->key_mask,
                      .dropout = r->attn_dropout};
    xa_tensor *a = xa_attention(ctx, q, k, v, &o);
    a = xa_dropout(ctx, proj(ctx, r, layer, XA_SITE_O, a, w->wo, w->bo), r->dropout);
    return site(ctx, r, layer, XA_SITE_ATTN, a, x);
}

static xa_tensor *ffn_sublayer(xa_ctx *ctx, const xa_block *w, const xa_block_run *r, int layer,
                               xa_tensor *x) {
    xa_tensor *u = proj(ctx, r, layer, XA_SITE_FF1, x, w->w1, w->b1);
    xa_tensor *f = site(ctx, r, layer, XA_SITE_ACT, xa_act_apply(ctx, u, r->cfg->act), u);
    f = xa_dropout(ctx, proj(ctx, r, layer, XA_SITE_FF2, f, w->w2, w->b2), r->dropout);
    return site(ctx, r, layer, XA_SITE_FFN, f, x);
}

xa_tensor *xa_block_forward(xa_ctx *ctx, const xa_block *w, const xa_block_run *r, int layer,
                            xa_tensor *x) {
    float eps = r->cfg->eps;
    if (r->pre_ln) { // CLIP: x + attn(LN1(x)), then + mlp(LN2(x))
        x = xa_add(ctx, x, attention_sublayer(ctx, w, r, layer, xa_layernorm(ctx, x, w->ln1_w, w->ln1_b, eps)));
        x = xa_add(ctx, x, ffn_sublayer(ctx, w, r, layer, xa_layernorm(ctx, x, w->ln2_w, w->ln2_b, eps)));
    } else { // BERT: LN1(x + attn(x)), then LN2(x + ffn(x))
        x = xa_layernorm(ctx, xa_add(ctx, x, attention_sublayer(ctx, w, r, layer, x)), w->ln1_w, w->ln1_b, eps);
        x = xa_layernorm(ctx, xa_add(ctx, x, ffn_sublayer(ctx, w, r, layer, x)), w->ln2_w, w->ln2_b, eps);
    }
    return site(ctx, r, layer, XA_SITE_OUT, x, x);
}

// --- embeddings --------------------------------------------------------------------------------

// ids for positions: BERT and CLIP count 0..T-1; RoBERTa counts non-padding tokens from
// padding_idx + 1 and gives padding the padding index (transformers'
// create_position_ids_from_input_ids).
static int32_t *position_ids(xa_ctx *ctx, const xa_model *m, const xa_text_batch *b) {
    int32_t *pos = xa_arena_alloc(ctx, (size_t)(b->B * b->T) * sizeof(int32_t));
    if (!pos)
        return NULL;
    int32_t pad = (int32_t)m->cfg.pad_id;
    for (int64_t i = 0; i < b->B; i++) {
        int32_t run = 0;
        for (int64_t t = 0; t < b->T; t++) {
            const int64_t at = i * b->T + t;
            if (m->cfg.arch != XA_ARCH_ROBERTA)
                pos[at] = (int32_t)t;
            else
                pos[at] = b->ids[at] != pad ? pad + ++run : pad;
        }
    }
    return pos;
}

static xa_tensor *text_embeddings(xa_ctx *ctx, xa_model *m, const xa_text_batch *b,
                                  const xa_forward_opts *o) {
    int32_t *pos = position_ids(ctx, m, b);
    if (!pos)
        return NULL;
    int64_t maxpos = m->cfg.text.max_positions;
    for (int64_t i = 0; i < b->B * b->T; i++)
        if (pos[i] >= maxpos) {
            if (m->cfg.arch == XA_ARCH_ROBERTA) // positions start after padding_idx
                xa_errorf(ctx, XA_ERANGE,
                          "sequence of %lld tokens is longer than the model's %lld (its %lld "
                          "positions less padding_idx + 1, as RoBERTa numbers them)",
                          (long long)b->T, (long long)(maxpos - m->cfg.pad_id - 1),
                          (long long)maxpos);
            else
                xa_errorf(ctx, XA_ERANGE,
                          "sequence of %lld tokens is longer than the model's %lld positions",
                          (long long)b->T, (long long)maxpos);
            return NULL;
        }
    xa_tensor *x = xa_add(ctx, xa_embedding(ctx, m->word_emb, b->ids, b->B, b->T),
                          xa_embedding(ctx, m->pos_emb, pos, b->B, b->T));
    if (m->cfg.arch == XA_ARCH_CLIP)
        return x;
    int32_t *types = (int32_t *)b->type_ids;
    if (!types) {
        types = xa_arena_alloc(ctx, (size_t)(b->B * b->T) * sizeof(int32_t));
        if (!types)
            return NULL;
        memset(types, 0, (size_t)(b->B * b->T) * sizeof(int32_t));
    }
    x = xa_add(ctx, x, xa_embedding(ctx, m->type_emb, types, b->B, b->T));
    x = xa_layernorm(ctx, x, m->emb_ln_w, m->emb_ln_b, m->cfg.text.eps);
    return xa_dropout(ctx, x, o->dropout);
}

// CLIP pools at the end-of-text token. Checkpoints older than transformers PR #24773 carry
// eos_token_id 2, and transformers then takes argmax(input_ids) (EOT is the largest id).
static int64_t *eot_index(xa_ctx *ctx, const xa_model *m, const xa_text_batch *b) {
    int64_t *idx = xa_arena_alloc(ctx, (size_t)b->B * sizeof(int64_t));
    if (!idx)
        return NULL;
    for (int64_t i = 0; i < b->B; i++) {
        const int32_t *row = b->ids + i * b->T;
        int64_t best = 0;
        for (int64_t t = 1; m->cfg.eos_id == 2 && t < b->T; t++)
            if (row[t] > row[best])
                best = t;
        if (m->cfg.eos_id != 2)
            for (int64_t t = b->T - 1; t >= 0; t--)
                if (row[t] == m->cfg.eos_id)
                    best = t; // first occurrence wins; none found leaves 0 as transformers does
        idx[i] = best;
    }
    return idx;
}

static bool block_has_sites(const xa_block_run *r, int layer) {
    const xa_hooks *hk = r->hooks;
    return hk && ((hk->enabled && hk->enabled[layer]) || (hk->replace && hk->replace[layer]));
}

// A block that records nothing (frozen weights, an input without gradient, no adapter sites)
// keeps only its output: its intermediates are freed at once, so a frozen prefix costs one
// block's worth of memory instead of all of them. A block that records keeps what backward
// reads (q, k, v and the probabilities, the inputs of the layer norms and the activation, what
// adapters see) and gives the rest back for the next block to reuse: the context vectors, the
// outputs of frozen linears, dropout and sums, the layer-norm outputs inside the block. A block
// with adapter sites in a forward without gradients (evaluation) records nothing either: it keeps
// its output and what the hooks saw or made, as they may hold on to it.
xa_tensor *xa_block_run_keep(xa_ctx *ctx, const xa_block *w, const xa_block_run *r, int i,
                             xa_tensor *x, xa_tensor **hidden) {
    if (!ctx->grad_enabled && block_has_sites(r, i)) {
        xa_made_mark mark = xa_made_begin(ctx);
        x = xa_block_forward(ctx, w, r, i, x);
        xa_made_end(ctx, mark, x);
        if (hidden)
            hidden[i + 1] = x;
        return x;
    }
    if (xa_tensor_needs_grad(x) || block_has_sites(r, i)) {
        size_t since = xa_tape_count(ctx, NULL);
        x = xa_block_forward(ctx, w, r, i, x);
        if (x)
            xa_tape_drop_unread(ctx, since, x);
        if (hidden)
            hidden[i + 1] = x;
        return x;
    }
    xa_tensor *keep = xa_tensor_arena(ctx, x->ndim, x->shape, false);
    if (!keep)
        return NULL;
    xa_arena_mark mark = xa_arena_mark_get(ctx);
    xa_tensor *y = xa_block_forward(ctx, w, r, i, x);
    if (!y || xa_tape_count(ctx, NULL) != mark.tape_count) // recorded after all: keep everything
        return y ? (hidden ? hidden[i + 1] = y : y) : NULL;
    memcpy(keep->data, y->data, (size_t)y->numel * sizeof(float));
    xa_arena_rewind(ctx, mark);
    if (hidden)
        hidden[i + 1] = keep;
    return keep;
}

xa_status xa_text_forward(xa_ctx *ctx, xa_model *m, const xa_text_batch *b,
                          const xa_forward_opts *opts, xa_text_out *out) {
    static const xa_forward_opts none = {0};
    const xa_forward_opts *o = opts ? opts : &none;
    memset(out, 0, sizeof *out);
    if (b->B <= 0 || b->T <= 0)
        return xa_errorf(ctx, XA_EINVAL, "text forward: empty batch (%lld x %lld)",
                         (long long)b->B, (long long)b->T);
    xa_model_touch(m, false);
    int L = (int)m->cfg.text.layers;
    if (o->all_hidden && !(out->hidden = xa_arena_alloc(ctx, (size_t)(L + 1) * sizeof(xa_tensor *))))
        return XA_ENOMEM;
    bool clip = m->cfg.arch == XA_ARCH_CLIP;
    xa_block_run r = {.cfg = &m->cfg.text, .pre_ln = clip, .causal = clip, .key_mask = b->mask,
                      .dropout = o->dropout, .attn_dropout = o->attn_dropout, .hooks = o->hooks};
    int first = 0;
    xa_tensor *x;
    if (o->start) { // a cached frozen prefix stands in for the embeddings and the blocks below
        if (o->start_layer < 0 || o->start_layer > L)
            return xa_errorf(ctx, XA_EINVAL, "text forward: start layer %d outside 0..%d",
                             o->start_layer, L);
        first = o->start_layer;
        x = o->start;
        for (int i = 0; out->hidden && i < first; i++)
            out->hidden[i] = o->start_hidden ? o->start_hidden[i] : NULL;
    } else {
        x = text_embeddings(ctx, m, b, o);
    }
    if (out->hidden)
        out->hidden[first] = x;
    for (int i = first; i < L && x; i++)
        x = xa_block_run_keep(ctx, &m->text_blocks[i], &r, i, x, out->hidden);
    if (clip && x) {
        x = xa_layernorm(ctx, x, m->final_ln_w, m->final_ln_b, m->cfg.text.eps);
        int64_t *idx = eot_index(ctx, m, b);
        out->pooled = idx ? xa_pool_gather(ctx, x, idx) : NULL;
        out->embeds = xa_linear(ctx, out->pooled, m->text_proj, NULL);
        if (!out->embeds)
            return xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM;
    } else if (x && m->has_pooler) {
        out->pooled = xa_tanh(ctx, xa_linear(ctx, xa_pool_first(ctx, x), m->pool_w, m->pool_b));
        if (!out->pooled)
            return xa_errcode(ctx);
    }
    out->last = x;
    return x ? XA_OK : (xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM);
}

xa_tensor *xa_mlm_logits(xa_ctx *ctx, xa_model *m, xa_tensor *last) {
    if (!last)
        return NULL;
    if (!m->has_mlm) {
        xa_errorf(ctx, XA_ENOTFOUND,
                  "%s: the checkpoint has no masked-LM head (%s); load a *ForMaskedLM checkpoint",
                  m->dir, m->cfg.arch == XA_ARCH_BERT ? "cls.predictions.*" : "lm_head.*");
        return NULL;
    }
    // BERT's head transform uses config.hidden_act; RoBERTa's lm_head always uses gelu.
    xa_act act = m->cfg.arch == XA_ARCH_BERT ? m->cfg.text.act : XA_ACT_GELU;
    xa_tensor *h = xa_act_apply(ctx, xa_linear(ctx, last, m->mlm_dense_w, m->mlm_dense_b), act);
    h = xa_layernorm(ctx, h, m->mlm_ln_w, m->mlm_ln_b, m->cfg.text.eps);
    return xa_linear(ctx, h, m->mlm_decoder, m->mlm_bias);
}
