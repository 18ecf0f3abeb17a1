// The CLIP vision tower: patch embedding as one GEMM over unfolded patches (the Conv2d with
// stride = kernel = patch), class token, positions, pre_layrnorm, pre-LN blocks, post_layernorm
// of the class token and the visual projection. The text tower is in encoder.c.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"

// pixels (B,C,S,S) -> patches (B*P, C*ps*ps) in the conv weight's (c, kh, kw) order.
static void unfold(float *out, const float *px, int64_t B, int64_t C, int64_t S, int64_t ps) {
    int64_t g = S / ps, K = C * ps * ps;
    for (int64_t b = 0; b < B; b++)
        for (int64_t gy = 0; gy < g; gy++)
            for (int64_t gx = 0; gx < g; gx++) {
                float *row = out + ((b * g + gy) * g + gx) * K;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t ky = 0; ky < ps; ky++)
                        memcpy(row + (c * ps + ky) * ps,
                               px + ((b * C + c) * S + gy * ps + ky) * S + gx * ps,
                               (size_t)ps * sizeof(float));
            }
}

xa_status xa_vision_forward(xa_ctx *ctx, xa_model *m, const float *pixels, int64_t B,
                            xa_vision_out *out) {
    memset(out, 0, sizeof *out);
    if (m->cfg.arch != XA_ARCH_CLIP)
        return xa_errorf(ctx, XA_EINVAL, "%s: a %s model has no vision tower", m->dir,
                         xa_arch_name(m->cfg.arch));
    xa_model_touch(m, true);
    const xa_tower_config *v = &m->cfg.vision;
    int64_t C = v->channels, S = v->image_size, ps = v->patch_size, H = v->hidden;
    int64_t g = S / ps, P = g * g, K = C * ps * ps;
    xa_tensor *patches = xa_tensor_arena(ctx, 2, (int64_t[]){B * P, K}, false);
    int64_t wshape[2] = {H, K};
    xa_tensor *w = xa_tensor_arena(ctx, 2, wshape, false); // a view of the conv weight
    if (!patches || !w)
        return XA_ENOMEM;
    w->data = m->patch_w->data; // (H, C, ps, ps) is already (H, K) row-major
    unfold(patches->data, pixels, B, C, S, ps);
    xa_tensor *pe = xa_linear(ctx, patches, w, NULL);
    xa_tensor *x = xa_tensor_arena(ctx, 3, (int64_t[]){B, P + 1, H}, false);
    if (!pe || !x)
        return xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM;
    for (int64_t b = 0; b < B; b++) {
        float *row = x->data + b * (P + 1) * H;
        memcpy(row, m->class_emb->data, (size_t)H * sizeof(float));
        memcpy(row + H, pe->data + b * P * H, (size_t)(P * H) * sizeof(float));
        for (int64_t i = 0; i < (P + 1) * H; i++)
            row[i] += m->vpos_emb->data[i];
    }
    out->hidden = xa_arena_alloc(ctx, (size_t)(v->layers + 1) * sizeof(xa_tensor *));
    if (!out->hidden)
        return XA_ENOMEM;
    x = out->hidden[0] = xa_layernorm(ctx, x, m->pre_ln_w, m->pre_ln_b, v->eps);
    xa_block_run r = {.cfg = v, .pre_ln = true};
    for (int i = 0; i < v->layers && x; i++)
        x = xa_block_run_keep(ctx, &m->vision_blocks[i], &r, i, x, out->hidden);
    out->last = x;
    out->pooled = xa_layernorm(ctx, xa_pool_first(ctx, x), m->post_ln_w, m->post_ln_b, v->eps);
    out->embeds = xa_linear(ctx, out->pooled, m->visual_proj, NULL);
    return out->embeds ? XA_OK : (xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM);
}

float xa_clip_logit_scale(const xa_model *m) {
    return m->logit_scale ? expf(m->logit_scale->data[0]) : expf(2.6592f);
}

int xa_named_outputs(const xa_model *m, const xa_text_out *text, xa_tensor *mlm_logits,
                     const xa_vision_out *vision, xa_named *out, int max) {
    int n = 0;
    bool clip = m->cfg.arch == XA_ARCH_CLIP;
#define PUT(tensor, ...)                                                                           \
    do {                                                                                           \
        if ((tensor) && n < max) {                                                                 \
            snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                                \
            out[n++].t = (tensor);                                                                 \
        }                                                                                          \
    } while (0)
    if (text) {
        const char *pre = clip ? "text_" : "";
        PUT(text->last, "%slast_hidden_state", pre);
        for (int i = 0; text->hidden && i <= m->cfg.text.layers; i++)
            PUT(text->hidden[i], "%shidden_states.%d", pre, i);
        PUT(text->pooled, "%spooler_output", pre);
        PUT(text->embeds, "text_embeds");
        PUT(mlm_logits, "logits");
    }
    if (vision) {
        PUT(vision->last, "vision_last_hidden_state");
        for (int i = 0; vision->hidden && i <= m->cfg.vision.layers; i++)
            PUT(vision->hidden[i], "vision_hidden_states.%d", i);
        PUT(vision->pooled, "vision_pooler_output");
        PUT(vision->embeds, "image_embeds");
    }
#undef PUT
    return n;
}
