// The real architectures at full size (bert-base, roberta-base, clip-vit-base-patch32) with
// random weights from make-random: they load, give the documented shapes, finite values, and
// the same output twice. Parity with PyTorch is in test_encoders.c on tiny checkpoints.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "xadapt/model.h"
#include "xadapt/tape.h"

static xa_ctx *ctx;
static void setup(void) { ctx = xa_ctx_new(); }
static void teardown(void) { xa_ctx_free(ctx); }
TestSuite(full_size, .init = setup, .fini = teardown, .timeout = 240);

static xa_model *make(const char *preset) {
    const char *dir = make_tmpdir();
    cr_assert_eq(xa_model_write_random(ctx, xa_model_preset(preset), dir,
                                       &(xa_random_opts){.seed = 1, .dtype = XA_DTYPE_F16}),
                 XA_OK, "%s", xa_errmsg(ctx));
    xa_model *m;
    cr_assert_eq(xa_model_load(ctx, dir, &m), XA_OK, "%s", xa_errmsg(ctx));
    return m;
}

static void expect_finite(const xa_tensor *t, const char *what) {
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(t->data[i]))
            cr_assert_fail("%s: non-finite value at %lld", what, (long long)i);
}

static void text_checks(const char *preset, int64_t H, int64_t L, int64_t V, bool pooler) {
    xa_model *m = make(preset);
    cr_expect_eq(xa_model_config_of(m)->text.hidden, H);
    int32_t ids[2 * 9];
    float mask[2 * 9];
    for (int i = 0; i < 18; i++) {
        ids[i] = (int32_t)((i * 7919) % (V - 10) + 5);
        mask[i] = i < 9 || i % 9 < 6;
    }
    xa_text_batch b = {.ids = ids, .mask = mask, .B = 2, .T = 9};
    xa_forward_opts o = {.all_hidden = true};
    xa_set_grad_enabled(ctx, false);
    xa_text_out out;
    cr_assert_eq(xa_text_forward(ctx, m, &b, &o, &out), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect(out.last->ndim == 3 && out.last->shape[0] == 2 && out.last->shape[1] == 9 &&
              out.last->shape[2] == H);
    for (int i = 0; i <= L; i++)
        expect_finite(out.hidden[i], preset);
    cr_expect_eq(out.pooled != NULL, pooler, "%s pooler", preset);
    xa_tensor *logits = xa_mlm_logits(ctx, m, out.last);
    cr_assert(logits, "%s", xa_errmsg(ctx));
    cr_expect_eq(logits->shape[2], V);
    expect_finite(logits, preset);
    float *first = malloc((size_t)out.last->numel * sizeof *first);
    memcpy(first, out.last->data, (size_t)out.last->numel * sizeof *first);
    xa_arena_reset(ctx);
    cr_assert_eq(xa_text_forward(ctx, m, &b, &o, &out), XA_OK);
    cr_expect_eq(memcmp(first, out.last->data, (size_t)out.last->numel * sizeof *first), 0,
                 "%s: two runs differ", preset);
    free(first);
    xa_model_free(m);
}

Test(full_size, bert_base) { text_checks("bert-base", 768, 12, 30522, true); }
Test(full_size, roberta_base) { text_checks("roberta-base", 768, 12, 50265, false); }

Test(full_size, clip_vit_base_patch32) {
    xa_model *m = make("clip-vit-base-patch32");
    const xa_model_config *c = xa_model_config_of(m);
    cr_expect_eq(xa_model_param_count(m), 151277313);
    int64_t S = c->vision.image_size;
    float *px = malloc((size_t)(2 * 3 * S * S) * sizeof *px);
    for (int64_t i = 0; i < 2 * 3 * S * S; i++)
        px[i] = (float)((i * 37) % 200) / 100.0f - 1.0f;
    xa_set_grad_enabled(ctx, false);
    xa_vision_out v;
    cr_assert_eq(xa_vision_forward(ctx, m, px, 2, &v), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect(v.last->shape[1] == 50 && v.last->shape[2] == 768);
    cr_expect(v.embeds->shape[0] == 2 && v.embeds->shape[1] == 512);
    expect_finite(v.embeds, "image_embeds");
    int32_t ids[5] = {49406, 320, 1929, 539, 49407};
    xa_text_batch b = {.ids = ids, .B = 1, .T = 5};
    xa_text_out t;
    cr_assert_eq(xa_text_forward(ctx, m, &b, NULL, &t), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect(t.embeds->shape[1] == 512);
    expect_finite(t.embeds, "text_embeds");
    free(px);
    xa_model_free(m);
}
