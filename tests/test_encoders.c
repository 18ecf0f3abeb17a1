// Encoders against golden outputs from an independent PyTorch implementation
// (tests/golden/reference.py): every output tensor of every fixture within 1e-4, and broken
// checkpoint directories refused with one clear message.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.h"
#include "xadapt/model.h"
#include "xadapt/safetensors.h"

#define ATOL 1e-4f

static xa_ctx *ctx;
static void setup(void) { ctx = xa_ctx_new(); }
static void teardown(void) { xa_ctx_free(ctx); }
TestSuite(encoders, .init = setup, .fini = teardown);

static const char *fixture(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s", src_path("tests/golden/fixtures"));
    size_t n = strlen(buf);
    snprintf(buf + n, sizeof buf - n, "/%s", name);
    return buf;
}

// An I64 input of the expected file, converted; NULL when absent.
static void *input(xa_st_file *f, const char *name, bool as_float, int64_t *B, int64_t *T) {
    const xa_st_entry *e = xa_st_find(f, name);
    if (!e)
        return NULL;
    cr_assert_eq(e->dtype, XA_DTYPE_I64, "%s must be I64", name);
    *B = e->shape[0], *T = e->shape[1];
    const int64_t *src = xa_st_bytes(f, e);
    size_t n = (size_t)(*B * *T);
    if (as_float) {
        float *out = malloc(n * sizeof *out);
        for (size_t i = 0; i < n; i++)
            out[i] = (float)src[i];
        return out;
    }
    int32_t *out = malloc(n * sizeof *out);
    for (size_t i = 0; i < n; i++)
        out[i] = (int32_t)src[i];
    return out;
}

static int compare(xa_st_file *expect, const xa_named *outs, int n, const char *fx) {
    int compared = 0;
    for (int i = 0; i < n; i++) {
        const xa_st_entry *e = xa_st_find(expect, outs[i].name);
        if (!e)
            continue;
        xa_tensor *want;
        cr_assert_eq(xa_st_tensor(ctx, expect, outs[i].name, &want), XA_OK, "%s", xa_errmsg(ctx));
        xa_tensor *got = outs[i].t;
        cr_assert_eq(got->numel, want->numel, "%s %s: %lld values, expected %lld", fx,
                     outs[i].name, (long long)got->numel, (long long)want->numel);
        float worst = 0;
        int64_t at = 0;
        for (int64_t j = 0; j < got->numel; j++) {
            float d = fabsf(got->data[j] - want->data[j]);
            if (!(d <= worst)) // NaN counts as worst
                worst = d, at = j;
        }
        cr_expect(worst <= ATOL, "%s %s: max |diff| %g at %lld (got %g, want %g)", fx,
                  outs[i].name, worst, (long long)at, got->data[at], want->data[at]);
        xa_tensor_release(want);
        compared++;
    }
    return compared;
}

static void check_fixture(const char *name, int min_outputs) {
    const char *dir = fixture(name);
    char path[4200];
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    xa_st_file *expect;
    cr_assert_eq(xa_st_open(ctx, path, &expect), XA_OK, "%s", xa_errmsg(ctx));
    xa_model *m;
    cr_assert_eq(xa_model_load(ctx, dir, &m), XA_OK, "%s", xa_errmsg(ctx));
    int64_t B, T, Bt, Tt;
    int32_t *ids = input(expect, "input_ids", false, &B, &T);
    float *mask = input(expect, "attention_mask", true, &B, &T);
    int32_t *types = input(expect, "token_type_ids", false, &Bt, &Tt);
    xa_text_batch batch = {.ids = ids, .mask = mask, .type_ids = types, .B = B, .T = T};
    xa_forward_opts o = {.all_hidden = true};
    xa_text_out text;
    cr_assert_eq(xa_text_forward(ctx, m, &batch, &o, &text), XA_OK, "%s", xa_errmsg(ctx));
    xa_tensor *logits = xa_model_has_mlm_head(m) ? xa_mlm_logits(ctx, m, text.last) : NULL;
    xa_vision_out vis, *vp = NULL;
    const xa_st_entry *px = xa_st_find(expect, "pixel_values");
    if (px) {
        cr_assert_eq(xa_vision_forward(ctx, m, xa_st_bytes(expect, px), px->shape[0], &vis), XA_OK,
                     "%s", xa_errmsg(ctx));
        vp = &vis;
    }
    xa_named outs[64];
    int n = xa_named_outputs(m, &text, logits, vp, outs, 64);
    int compared = compare(expect, outs, n, name);
    cr_expect_geq(compared, min_outputs, "%s: only %d outputs compared", name, compared);
    free(ids), free(mask), free(types);
    xa_model_free(m);
    xa_st_close(expect);
}

Test(encoders, bert_matches_pytorch) { check_fixture("bert_tiny", 5); }
Test(encoders, bert_with_prefix_legacy_layernorm_names_and_tied_mlm_head) {
    check_fixture("bert_prefixed_mlm", 5);
}
Test(encoders, bert_sharded_checkpoint) { check_fixture("bert_sharded", 5); }
Test(encoders, bert_stored_as_f16) { check_fixture("bert_f16", 5); }
Test(encoders, bert_stored_as_bf16) { check_fixture("bert_bf16", 5); }
Test(encoders, bert_with_tanh_gelu) { check_fixture("bert_gelu_new", 5); }
Test(encoders, roberta_positions_after_padding_index_and_lm_head) { check_fixture("roberta_tiny", 5); }
Test(encoders, clip_text_and_vision_with_legacy_eos_rule) { check_fixture("clip_tiny", 10); }
Test(encoders, clip_pooling_at_the_configured_eos_token) { check_fixture("clip_tiny_eos", 10); }

// --- broken directories -------------------------------------------------------------------

static const char *copy_fixture(const char *name) {
    const char *tmp = make_tmpdir();
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp -r '%s'/. '%s'", fixture(name), tmp);
    cr_assert_eq(system(cmd), 0);
    return tmp;
}

static void expect_load_error(const char *dir, const char *needle) {
    xa_model *m = NULL;
    cr_expect_neq(xa_model_load(ctx, dir, &m), XA_OK);
    cr_expect_null(m);
    cr_expect(strstr(xa_errmsg(ctx), needle) != NULL, "message '%s' lacks '%s'", xa_errmsg(ctx),
              needle);
}

Test(encoders, missing_directory_and_config) {
    expect_load_error("/nonexistent/model", "config.json");
    expect_load_error("", "no model directory given");
    expect_load_error(make_tmpdir(), "config.json: cannot open");
}

Test(encoders, pickle_checkpoints_are_refused_with_a_conversion_hint) {
    const char *d = copy_fixture("bert_tiny");
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    cr_assert_eq(unlink(p), 0);
    snprintf(p, sizeof p, "%s/pytorch_model.bin", d);
    write_file(p, "x", 1);
    expect_load_error(d, "save_pretrained");
}

// The text of config.json in `dir` (the tiny BERT's) with num_hidden_layers 2 changed to
// `layers`; *path is where it goes back.
static char *config_with_layers(const char *dir, char *path, size_t n, char layers) {
    snprintf(path, n, "%s/config.json", dir);
    char *cfg = read_file(path, NULL);
    char *at = strstr(cfg, "\"num_hidden_layers\": 2");
    cr_assert(at, "fixture config changed");
    at[strlen("\"num_hidden_layers\": ")] = layers;
    return cfg;
}

Test(encoders, wrong_shapes_and_missing_tensors_are_listed_together) {
    const char *d = copy_fixture("bert_tiny");
    char p[4200];
    // claim 3 layers and a wider FFN: every tensor of layer 2 is missing, every FFN is misshapen
    char *cfg = config_with_layers(d, p, sizeof p, '3');
    char *at = strstr(cfg, "\"intermediate_size\": ");
    cr_assert(at);
    char *num = at + strlen("\"intermediate_size\": ");
    char rest[4096];
    snprintf(rest, sizeof rest, "%s", strpbrk(num, ",\n}"));
    sprintf(num, "99%s", rest);
    write_file(p, cfg, strlen(cfg));
    free(cfg);
    expect_load_error(d, "config.json says 3 layers (num_hidden_layers), the file has blocks 0..1");
    cr_expect(strstr(xa_errmsg(ctx), "tensor 'encoder.layer.0.intermediate.dense.weight': expected "
                                     "shape (99,") != NULL, "%s", xa_errmsg(ctx));
}

// A copy of fixture `name` whose model.safetensors lacks the tensors named in `drop` (a
// space-separated list).
static const char *fixture_without(const char *name, const char *drop) {
    const char *d = copy_fixture(name);
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    xa_st_file *f;
    cr_assert_eq(xa_st_open(ctx, p, &f), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer *w = xa_st_writer_new(ctx);
    for (size_t i = 0; i < xa_st_count(f); i++) {
        const char *n = xa_st_at(f, i)->name, *at = strstr(drop, n);
        size_t len = strlen(n);
        if ((at && (at == drop || at[-1] == ' ') && (at[len] == ' ' || at[len] == '\0')) ||
            xa_st_at(f, i)->dtype == XA_DTYPE_I64) // position_ids: a buffer the loader skips
            continue;
        xa_tensor *t;
        cr_assert_eq(xa_st_tensor(ctx, f, n, &t), XA_OK, "%s", xa_errmsg(ctx));
        cr_assert_eq(xa_st_writer_add_tensor(w, n, t), XA_OK);
        xa_tensor_release(t);
    }
    cr_assert_eq(xa_st_writer_write(w, p), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);
    xa_st_close(f);
    return d;
}

// The pooler and the MLM head are optional, but whole: one tensor of them missing is an error
// naming it (the head was silently dropped when its first tensor was the missing one).
Test(encoders, a_half_present_pooler_or_mlm_head_is_an_error) {
    expect_load_error(fixture_without("bert_tiny", "pooler.dense.weight"),
                      "missing tensor 'pooler.dense.weight'");
    expect_load_error(fixture_without("bert_prefixed_mlm", "cls.predictions.transform.dense.weight"),
                      "missing tensor 'cls.predictions.transform.dense.weight'");
    expect_load_error(fixture_without("bert_prefixed_mlm", "cls.predictions.bias"),
                      "missing tensor 'cls.predictions.bias'");
    // a group absent as a whole is fine: no pooler
    xa_model *m = NULL;
    cr_assert_eq(xa_model_load(ctx, fixture_without("bert_tiny", "pooler.dense.weight pooler.dense.bias"),
                               &m),
                 XA_OK, "%s", xa_errmsg(ctx));
    xa_model_free(m);
}

// A config with fewer layers than the file would drop blocks silently: the extra ones are named.
// One with far more (found by fuzz_config: 230522 layers) is one problem, not 3.7 million
// lookups of missing tensors.
Test(encoders, block_counts_other_than_the_files_are_refused) {
    const char *d = copy_fixture("bert_tiny");
    char p[4200];
    char *cfg = config_with_layers(d, p, sizeof p, '1');
    write_file(p, cfg, strlen(cfg));
    free(cfg);
    expect_load_error(d, "the file has blocks up to 1, config.json says 1 layers");
    d = copy_fixture("bert_tiny");
    cfg = config_with_layers(d, p, sizeof p, '2'); // as it was, then 2 -> 230522
    const char *key = "\"num_hidden_layers\": 2", *at = strstr(cfg, key);
    cr_assert(at, "fixture config changed");
    size_t size = strlen(cfg) + 16;
    char *big = malloc(size);
    cr_assert(big);
    snprintf(big, size, "%.*s\"num_hidden_layers\": 230522%s", (int)(at - cfg), cfg,
             at + strlen(key));
    write_file(p, big, strlen(big));
    free(big);
    free(cfg);
    expect_load_error(d, "config.json says 230522 layers (num_hidden_layers), the file has blocks "
                         "0..1");
}

Test(encoders, bad_configs_are_refused_with_the_key) {
    const char *d = copy_fixture("bert_tiny");
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", d);
    const char *cases[][2] = {
        {"{\"model_type\": \"gpt2\"}", "model_type 'gpt2' is not supported"},
        {"{\"model_type\": \"bert\", \"hidden_size\": 30, \"num_attention_heads\": 4}",
         "num_attention_heads 4 does not divide hidden_size 30"},
        {"{\"model_type\": \"bert\", \"hidden_act\": \"swish\"}", "hidden_act 'swish'"},
        {"{\"model_type\": \"bert\", \"num_hidden_layers\": 2.5}", "'num_hidden_layers' must be an integer"},
        // found by fuzz_config: converting these to int64/float was undefined behaviour
        {"{\"model_type\": \"bert\", \"hidden_size\": 2.5e36}", "'hidden_size' must be an integer"},
        {"{\"model_type\": \"bert\", \"layer_norm_eps\": 1e300}", "'layer_norm_eps' must be a number a float"},
        {"{\"model_type\": \"bert\", \"position_embedding_type\": \"relative_key\"}", "relative_key"},
        {"{\"model_type\": \"bert\",", "invalid JSON"},
        {"[1, 2]", "expected a JSON object"},
        {"{}", "no 'model_type'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_file(p, cases[i][0], strlen(cases[i][0]));
        expect_load_error(d, cases[i][1]);
    }
}

Test(encoders, make_random_refuses_an_initializer_range_no_float_holds) {
    const char *d = make_tmpdir();
    const char *cfg = "{\"model_type\": \"bert\", \"hidden_size\": 8, \"num_hidden_layers\": 1, "
                      "\"num_attention_heads\": 2, \"intermediate_size\": 16, \"vocab_size\": 30, "
                      "\"initializer_range\": 1e300}";
    cr_expect_eq(xa_model_write_random(ctx, cfg, d, &(xa_random_opts){.seed = 1}), XA_EFORMAT);
    cr_expect(strstr(xa_errmsg(ctx), "'initializer_range'") != NULL, "%s", xa_errmsg(ctx));
}

Test(encoders, a_truncated_weight_file_is_refused) {
    const char *d = copy_fixture("bert_tiny");
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    cr_assert_eq(truncate(p, 5000), 0);
    expect_load_error(d, "model.safetensors");
}

Test(encoders, frozen_weights_are_read_only_views_of_the_file) {
    xa_model *m;
    cr_assert_eq(xa_model_load(ctx, fixture("bert_tiny"), &m), XA_OK, "%s", xa_errmsg(ctx));
    xa_block *b = xa_model_block(m, 0);
    cr_expect(b->wq->flags & XA_TENSOR_READONLY);
    const char *fp = xa_model_fingerprint(m);
    cr_expect_eq(strlen(fp), 16);
    cr_expect_gt(xa_model_param_count(m), 1000);
    xa_model_free(m);
}

Test(encoders, a_changed_weight_is_caught_by_verify) {
    xa_model *m; // f16 storage: the weights are converted copies, so a test can change one
    cr_assert_eq(xa_model_load(ctx, fixture("bert_f16"), &m), XA_OK, "%s", xa_errmsg(ctx));
    char before[17];
    snprintf(before, sizeof before, "%s", xa_model_fingerprint(m));
    cr_expect_eq(xa_model_verify(ctx, m), XA_OK);
    xa_model_block(m, 1)->w1->data[3] += 1e-3f;
    cr_expect_eq(xa_model_verify(ctx, m), XA_ESTATE);
    cr_expect(strstr(xa_errmsg(ctx), "frozen weights changed") && strstr(xa_errmsg(ctx), before),
              "%s", xa_errmsg(ctx));
    xa_model_free(m);
}
