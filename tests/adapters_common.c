// Implementation of adapters_common.h.
#include "adapters_common.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "gradcheck.h"
#include "support.h"

void fixture_open(fixture *f, bool with_vlm) {
    memset(f, 0, sizeof *f);
    f->ctx = xa_ctx_new();
    xa_ctx_seed(f->ctx, 99);
    cr_assert_eq(xa_model_load(f->ctx, src_path("tests/golden/fixtures/bert_tiny"), &f->plm), XA_OK,
                 "%s", xa_errmsg(f->ctx));
    if (with_vlm)
        cr_assert_eq(xa_model_load(f->ctx, src_path("tests/golden/fixtures/clip_tiny"), &f->vlm),
                     XA_OK, "%s", xa_errmsg(f->ctx));
    f->reg = xa_registry_new(f->ctx);
    cr_assert_eq(xa_registry_scan(f->reg), XA_OK);
    f->net = xa_net_new(f->ctx, f->plm, f->vlm, f->reg);
    cr_assert(f->net, "%s", xa_errmsg(f->ctx));
    for (int i = 0; i < 14; i++) {
        f->ids[i] = 2 + (i * 37) % 150;
        f->mask[i] = (i >= 7 && i % 7 >= 5) ? 0.0f : 1.0f; // row 1 pads its last two
    }
    f->batch.text = (xa_text_batch){.ids = f->ids, .mask = f->mask, .B = 2, .T = 7};
    if (with_vlm) {
        const xa_model_config *c = xa_model_config_of(f->vlm);
        // persistent (heap) features: 5 image tokens, 4 text tokens
        f->feats.image_tokens = rand_tensor(f->ctx, 2, 5, c->vision.hidden, 0);
        f->feats.text_tokens = rand_tensor(f->ctx, 2, 4, c->text.hidden, 0);
        f->feats.image_pooled = rand_tensor(f->ctx, 2, 1, c->projection_dim, 0);
        f->feats.text_pooled = rand_tensor(f->ctx, 2, 1, c->projection_dim, 0);
        f->batch.feats = &f->feats;
    }
}

void fixture_close(fixture *f) {
    xa_tensor_release(f->feats.image_tokens);
    xa_tensor_release(f->feats.text_tokens);
    xa_tensor_release(f->feats.image_pooled);
    xa_tensor_release(f->feats.text_pooled);
    xa_net_free(f->net);
    xa_model_free(f->plm);
    xa_model_free(f->vlm);
    xa_registry_free(f->reg);
    xa_ctx_free(f->ctx);
}

xa_tensor *fixture_forward(fixture *f) {
    xa_net_out out;
    if (xa_net_forward(f->ctx, f->net, &f->batch, NULL, &out) != XA_OK)
        return NULL;
    return out.fused;
}

void fixture_randomize(fixture *f, float scale) {
    xa_params *ps = xa_net_params(f->net);
    for (size_t i = 0; i < xa_params_count(ps); i++)
        fill_normal(f->ctx, xa_params_at(ps, i), scale);
}

static fixture *gc_fixture;
static xa_tensor *gc_forward(xa_ctx *ctx, xa_tensor **in, void *user) {
    (void)ctx, (void)in, (void)user;
    return fixture_forward(gc_fixture);
}

bool fixture_gradcheck(fixture *f, gc_report *rep) {
    xa_params *ps = xa_net_params(f->net);
    size_t n = xa_params_count(ps);
    xa_tensor *in[128];
    cr_assert_leq(n, 128, "%zu parameters: raise the cap so every one is checked", n);
    for (size_t i = 0; i < n; i++)
        in[i] = xa_params_at(ps, i);
    gc_fixture = f;
    return gradcheck(f->ctx, "adapter", gc_forward, in, (int)n, NULL, rep);
}

float max_abs_diff(const xa_tensor *a, const float *b) {
    float m = 0;
    for (int64_t i = 0; i < a->numel; i++)
        m = fmaxf(m, fabsf(a->data[i] - b[i]));
    return m;
}

float *copy_of(const xa_tensor *t) {
    float *c = malloc((size_t)t->numel * sizeof *c);
    memcpy(c, t->data, (size_t)t->numel * sizeof *c);
    return c;
}
