// Every adapter kind on a tiny frozen BERT: untrained adapters leave the base exactly as it was,
// gradients through the adapter and the frozen layers above it match central differences,
// a few steps lower a loss while the base fingerprint stays the same, and save/load round-trips
// bit for bit.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "adapters_common.h"
#include "gradcheck.h"
#include "support.h"

typedef struct {
    const char *cls, *opts;
    bool vlm;
} kind;

static const kind kinds[] = {
    {"bottleneck", "{\"layers\": [0, 1], \"reduction_factor\": 4, \"non_linearity\": \"tanh\"}", false},
    {"bottleneck", "{\"placement\": \"pfeiffer\", \"dim\": 5, \"non_linearity\": \"gelu\"}", false},
    {"xadapter", "{\"layers\": [0, 1], \"dim\": 8, \"heads\": 2, \"dropout\": 0}", true},
    {"xadapter", "{\"layers\": [1], \"at\": \"ffn\", \"dim\": 6, \"heads\": 3, \"ffn\": true, "
                 "\"combine\": \"gate\", \"image_features\": \"pooled\", \"dropout\": 0}", true},
};
#define NKINDS (sizeof kinds / sizeof *kinds)

static float max_abs_diff(const xa_tensor *a, const float *b) {
    float m = 0;
    for (int64_t i = 0; i < a->numel; i++)
        m = fmaxf(m, fabsf(a->data[i] - b[i]));
    return m;
}

static float *copy_of(const xa_tensor *t) {
    float *c = malloc((size_t)t->numel * sizeof *c);
    memcpy(c, t->data, (size_t)t->numel * sizeof *c);
    return c;
}

Test(adapters, untrained_adapters_leave_the_base_bit_for_bit_unchanged) {
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        fixture_open(&f, kinds[k].vlm);
        float *base = copy_of(fixture_forward(&f));
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, NULL, kinds[k].opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        xa_arena_reset(f.ctx);
        xa_tensor *y = fixture_forward(&f);
        cr_assert(y, "%s", xa_errmsg(f.ctx));
        cr_expect_eq(max_abs_diff(y, base), 0.0f, "%s %s changed the output", kinds[k].cls,
                     kinds[k].opts);
        free(base);
        fixture_close(&f);
    }
}

static fixture *gc_fixture;
static xa_tensor *gc_forward(xa_ctx *ctx, xa_tensor **in, void *user) {
    (void)ctx, (void)in, (void)user;
    return fixture_forward(gc_fixture);
}

Test(adapters, gradients_match_central_differences) {
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        fixture_open(&f, kinds[k].vlm);
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, NULL, kinds[k].opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        fixture_randomize(&f, 0.2f);
        xa_params *ps = xa_net_params(f.net);
        size_t n = xa_params_count(ps);
        xa_tensor *in[64];
        for (size_t i = 0; i < n && i < 64; i++)
            in[i] = xa_params_at(ps, i);
        gc_fixture = &f;
        gc_report rep;
        bool ok = gradcheck(f.ctx, "adapter", gc_forward, in, (int)(n < 64 ? n : 64), NULL, &rep);
        cr_expect(ok, "%s %s: %d of %d off: %s", kinds[k].cls, kinds[k].opts, rep.failed,
                  rep.checked, rep.first_failure);
        fixture_close(&f);
    }
}

Test(adapters, training_steps_lower_the_loss_and_leave_the_base_untouched) {
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        fixture_open(&f, kinds[k].vlm);
        const char *fp_before = strdup(xa_model_fingerprint(f.plm));
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, NULL, kinds[k].opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        xa_optim *opt = xa_optim_new(f.ctx, xa_net_params(f.net),
                                     &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 1e-2f});
        // regress the first token's state onto a fixed random target
        xa_tensor *target = rand_tensor(f.ctx, 2, 7, 32, 0);
        float first = 0, last = 0;
        for (int step = 0; step < 30; step++) {
            xa_arena_reset(f.ctx);
            xa_tensor *loss = xa_mse(f.ctx, fixture_forward(&f), target);
            cr_assert_eq(xa_backward(f.ctx, loss), XA_OK, "%s", xa_errmsg(f.ctx));
            cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
            if (step == 0)
                first = loss->data[0];
            last = loss->data[0];
        }
        cr_expect_lt(last, first * 0.97f, "%s: loss %g -> %g", kinds[k].cls, first, last);
        // the fingerprint is cached: recompute from the mapped bytes to prove nothing changed
        xa_model *again;
        cr_assert_eq(xa_model_load(f.ctx, src_path("tests/golden/fixtures/bert_tiny"), &again), XA_OK);
        cr_expect_str_eq(xa_model_fingerprint(again), fp_before);
        xa_model_free(again);
        free((void *)fp_before);
        xa_tensor_release(target);
        xa_optim_free(opt);
        fixture_close(&f);
    }
}

Test(adapters, save_then_load_gives_bit_identical_outputs) {
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        fixture_open(&f, kinds[k].vlm);
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, "a1", kinds[k].opts), XA_OK);
        fixture_randomize(&f, 0.1f);
        float *y1 = copy_of(fixture_forward(&f));
        char path[4200];
        snprintf(path, sizeof path, "%s/adapters.safetensors", make_tmpdir());
        cr_assert_eq(xa_net_save(f.net, path), XA_OK, "%s", xa_errmsg(f.ctx));
        // a fresh net rebuilt from the file alone
        xa_net *n2 = xa_net_new(f.ctx, f.plm, f.vlm, f.reg);
        cr_assert_eq(xa_net_load(n2, path, false), XA_OK, "%s", xa_errmsg(f.ctx));
        xa_net *keep = f.net;
        f.net = n2;
        xa_arena_reset(f.ctx);
        xa_tensor *y2 = fixture_forward(&f);
        cr_expect_eq(max_abs_diff(y2, y1), 0.0f);
        f.net = keep;
        xa_net_free(n2);
        free(y1);
        fixture_close(&f);
    }
}

Test(adapters, unknown_classes_and_options_list_the_valid_ones) {
    fixture f;
    fixture_open(&f, false);
    cr_expect_eq(xa_net_insert(f.net, "bottlenek", NULL, "{}"), XA_ENOTFOUND);
    cr_expect(strstr(xa_errmsg(f.ctx), "unknown adapter 'bottlenek'") &&
              strstr(xa_errmsg(f.ctx), "bottleneck"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_insert(f.net, "bottleneck", NULL, "{\"reduction\": 4}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "unknown option 'reduction'") &&
              strstr(xa_errmsg(f.ctx), "reduction_factor"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_insert(f.net, "bottleneck", NULL, "{\"layers\": [7]}"), XA_ERANGE);
    cr_expect(strstr(xa_errmsg(f.ctx), "layer 7 is outside"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_params_count(xa_net_params(f.net)), 0, "a failed insert leaves nothing");
    cr_expect_eq(xa_net_adapter_count(f.net), 0);
    fixture_close(&f);
}

Test(adapters, loading_onto_another_base_is_refused_unless_forced) {
    fixture f;
    fixture_open(&f, false);
    cr_assert_eq(xa_net_insert(f.net, "bottleneck", NULL, "{}"), XA_OK);
    char path[4200];
    snprintf(path, sizeof path, "%s/a.safetensors", make_tmpdir());
    cr_assert_eq(xa_net_save(f.net, path), XA_OK);
    // the same architecture with other weights
    char *cfg = read_file(src_path("tests/golden/fixtures/bert_tiny/config.json"), NULL);
    const char *dir = make_tmpdir();
    cr_assert_eq(xa_model_write_random(f.ctx, cfg, dir, &(xa_random_opts){.seed = 5}), XA_OK,
                 "%s", xa_errmsg(f.ctx));
    free(cfg);
    xa_model *other;
    cr_assert_eq(xa_model_load(f.ctx, dir, &other), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_net *n2 = xa_net_new(f.ctx, other, NULL, f.reg);
    cr_expect_eq(xa_net_load(n2, path, false), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "fingerprint"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_load(n2, path, true), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_net_free(n2);
    xa_model_free(other);
    fixture_close(&f);
}

static float *run_with(fixture *f, const char *adapter, const char *const *experts, int n) {
    cr_assert_eq(xa_net_activate(f->net, adapter, experts, n), XA_OK, "%s", xa_errmsg(f->ctx));
    xa_arena_reset(f->ctx);
    xa_tensor *y = fixture_forward(f);
    cr_assert(y, "%s", xa_errmsg(f->ctx));
    return copy_of(y);
}

Test(adapters, xadapter_experts_switch_at_run_time) {
    fixture f;
    fixture_open(&f, true);
    float *base = copy_of(fixture_forward(&f));
    int64_t T = 2 * 7 * 32;
    cr_assert_eq(xa_net_insert(f.net, "xadapter", "x", "{\"layers\": [1], \"dim\": 8, \"heads\": 2, "
                                                       "\"dropout\": 0}"), XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.3f); // trained-looking experts
    const char *v[] = {"v"}, *t[] = {"t"}, *vt[] = {"v", "t"};
    float *none = run_with(&f, "x", NULL, 0), *yv = run_with(&f, "x", v, 1);
    float *yt = run_with(&f, "x", t, 1), *yvt = run_with(&f, "x", vt, 2);
    float dv = 0, dt = 0, sum_err = 0, off = 0;
    for (int64_t i = 0; i < T; i++) {
        off = fmaxf(off, fabsf(none[i] - base[i]));
        dv = fmaxf(dv, fabsf(yv[i] - base[i]));
        dt = fmaxf(dt, fabsf(yt[i] - base[i]));
        sum_err = fmaxf(sum_err, fabsf((yvt[i] - base[i]) - (yv[i] - base[i]) - (yt[i] - base[i])));
    }
    cr_expect_eq(off, 0.0f, "experts off must equal the frozen PLM exactly");
    cr_expect_gt(dv, 1e-3f, "the V-expert must change the output");
    cr_expect_gt(dt, 1e-3f, "the T-expert must change the output");
    cr_expect_lt(sum_err, 1e-5f, "at the last block, v+t adds both experts' contributions");
    cr_expect_str_eq(xa_net_active(f.net, "x"), "v, t");
    const char *bad[] = {"w"};
    cr_expect_eq(xa_net_activate(f.net, "x", bad, 1), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "no sub-module 'w' (it has: v, t)"), "%s", xa_errmsg(f.ctx));
    free(base), free(none), free(yv), free(yt), free(yvt);
    fixture_close(&f);
}

Test(adapters, xadapter_needs_a_vlm_and_features) {
    fixture f;
    fixture_open(&f, false);
    cr_expect_eq(xa_net_insert(f.net, "xadapter", NULL, "{}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "needs a vision-language model"), "%s", xa_errmsg(f.ctx));
    fixture_close(&f);
    fixture_open(&f, true);
    cr_assert_eq(xa_net_insert(f.net, "xadapter", NULL, "{\"layers\": [0]}"), XA_OK);
    f.batch.feats = NULL;
    cr_expect_null(fixture_forward(&f));
    cr_expect(strstr(xa_errmsg(f.ctx), "V-expert is on but the batch has no CLIP image features"),
              "%s", xa_errmsg(f.ctx));
    fixture_close(&f);
}
