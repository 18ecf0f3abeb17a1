// Every adapter kind on a tiny frozen BERT: untrained adapters leave the base exactly as it was
// (those that should), gradients through the adapter and the frozen layers above it match
// central differences, a few steps lower a loss while the base fingerprint stays the same, and
// save/load round-trips bit for bit. Then what is particular to each class: X-adapter experts,
// K-Adapter as a side network (taps, skip rule, fusion, no PLM op on the tape), LoRA merging.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "adapters_common.h"
#include "gradcheck.h"
#include "support.h"
#include "xadapt/safetensors.h"
#include "xadapt/task.h"

typedef struct {
    const char *cls, *opts;
    bool vlm;
    // Untrained, the adapter leaves the base output bit for bit unchanged. K-Adapter cannot:
    // its up-projection starts at N(0, 0.0002), not zero, and its side output a_K = x + u (a
    // whole hidden state) is added to the last hidden state by the fusion.
    bool identity_at_init;
} kind;

static const kind kinds[] = {
    {"bottleneck", "{\"layers\": [0, 1], \"reduction_factor\": 4, \"non_linearity\": \"tanh\"}",
     false, true},
    {"bottleneck", "{\"placement\": \"pfeiffer\", \"dim\": 5, \"non_linearity\": \"gelu\"}", false,
     true},
    {"xadapter", "{\"layers\": [0, 1], \"dim\": 8, \"heads\": 2, \"dropout\": 0}", true, true},
    {"xadapter",
     "{\"layers\": [1], \"at\": \"ffn\", \"dim\": 6, \"heads\": 3, \"ffn\": true, "
     "\"combine\": \"gate\", \"image_features\": \"pooled\", \"dropout\": 0}",
     true, true},
    {"xadapter",
     "{\"layers\": [0], \"at\": \"parallel\", \"dim\": 4, \"heads\": 2, "
     "\"ln\": \"none\", \"dropout\": 0}",
     true, true},
    {"kadapter", "{\"taps\": [0, 1, 2], \"size\": 8, \"heads\": 2, \"layers\": 1, \"dropout\": 0}",
     false, false},
    {"kadapter",
     "{\"taps\": [1, 2], \"size\": 6, \"heads\": 3, \"layers\": 2, "
     "\"intermediate\": 10, \"skip\": 2, \"mask\": true, \"dropout\": 0}",
     false, false},
    {"lora", "{\"targets\": [\"q\", \"v\"], \"rank\": 2}", false, true},
    {"lora", "{\"targets\": [\"o\", \"ff1\", \"ff2\"], \"rank\": 3, \"alpha\": 6, \"layers\": [1]}",
     false, true},
};
#define NKINDS (sizeof kinds / sizeof *kinds)

// Backward of the MSE between the fused output and a random target; the largest |gradient| of
// the named parameter (0 when it has none).
static float backward_mse_grad(fixture *f, const xa_net_out *out, const char *param) {
    xa_tensor *target = rand_tensor(f->ctx, 2, 7, 32, 0);
    cr_assert_eq(xa_backward(f->ctx, xa_mse(f->ctx, out->fused, target)), XA_OK, "%s",
                 xa_errmsg(f->ctx));
    xa_tensor_release(target);
    xa_tensor *w = xa_params_find(xa_net_params(f->net), param);
    float g = 0;
    for (int64_t i = 0; w && w->grad && i < w->numel; i++)
        g = fmaxf(g, fabsf(w->grad[i]));
    return g;
}

Test(adapters, untrained_adapters_leave_the_base_bit_for_bit_unchanged) {
    for (size_t k = 0; k < NKINDS; k++) {
        if (!kinds[k].identity_at_init)
            continue;
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

Test(adapters, gradients_match_central_differences) {
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        fixture_open(&f, kinds[k].vlm);
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, NULL, kinds[k].opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        fixture_randomize(&f, 0.2f);
        gc_report rep;
        bool ok = fixture_gradcheck(&f, &rep);
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

// Switching a sub-module off (an X-adapter's V-expert) or a whole adapter off takes it out of
// training: AdamW neither decays nor moves it with old momentum, as PyTorch skips parameters
// whose gradient is None; the parts still on keep training.
Test(adapters, switched_off_parts_keep_their_values_under_adamw) {
    fixture f;
    fixture_open(&f, true);
    cr_assert_eq(xa_net_insert(f.net, "xadapter", "x", kinds[2].opts), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    cr_assert_eq(xa_net_insert(f.net, "bottleneck", "b", kinds[0].opts), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    xa_params *ps = xa_net_params(f.net);
    xa_optim *opt = xa_optim_new(
        f.ctx, ps, &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 1e-2f, .weight_decay = 0.1f});
    xa_tensor *target = rand_tensor(f.ctx, 2, 7, 32, 0);
    float **before = calloc(xa_params_count(ps), sizeof *before);
    for (int step = 0; step < 6; step++) {
        if (step == 3) { // V-expert and the bottleneck off; snapshot every parameter
            cr_assert_eq(xa_net_activate(f.net, "x", (const char *[]){"t"}, 1), XA_OK);
            cr_assert_eq(xa_net_activate(f.net, "b", NULL, 0), XA_OK);
            for (size_t i = 0; i < xa_params_count(ps); i++)
                before[i] = copy_of(xa_params_at(ps, i));
        }
        xa_arena_reset(f.ctx);
        xa_tensor *loss = xa_mse(f.ctx, fixture_forward(&f), target);
        cr_assert_eq(xa_backward(f.ctx, loss), XA_OK, "%s", xa_errmsg(f.ctx));
        cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
    }
    int off = 0, moved = 0;
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        const char *name = xa_params_name(ps, i);
        xa_tensor *t = xa_params_at(ps, i);
        bool same = !memcmp(t->data, before[i], (size_t)t->numel * sizeof(float));
        char expert = 0; // x.l<layer>.<expert>.<param>
        sscanf(name, "x.l%*d.%c.", &expert);
        bool switched_off = !strncmp(name, "b.", 2) || expert == 'v';
        if (switched_off) {
            off++;
            cr_expect(same, "%s changed while switched off", name);
        } else {
            moved += !same;
        }
        free(before[i]);
    }
    cr_expect_gt(off, 0);
    cr_expect_gt(moved, 0, "the T-expert kept training");
    free(before);
    xa_tensor_release(target);
    xa_optim_free(opt);
    fixture_close(&f);
}

// LoRA scales B·A by alpha / rank: rank 2 with (A, B) and rank 4 with A stacked twice and B
// side by side twice are both 2 B·A at alpha 4 (with alpha alone they would differ by 2x).
Test(adapters, lora_scales_by_alpha_over_rank) {
    const char *opts[2] = {"{\"targets\": [\"q\"], \"layers\": [1], \"rank\": 2, \"alpha\": 4}",
                           "{\"targets\": [\"q\"], \"layers\": [1], \"rank\": 4, \"alpha\": 4}"};
    float *out[2];
    xa_tensor *a2 = NULL, *b2 = NULL;
    for (int k = 0; k < 2; k++) {
        fixture f;
        fixture_open(&f, false);
        cr_assert_eq(xa_net_insert(f.net, "lora", NULL, opts[k]), XA_OK, "%s", xa_errmsg(f.ctx));
        xa_params *ps = xa_net_params(f.net);
        xa_tensor *A = xa_params_find(ps, "lora.l1.q.lora_A"),
                  *B = xa_params_find(ps, "lora.l1.q.lora_B");
        cr_assert(A && B);
        int64_t in = A->shape[1], o = B->shape[0];
        if (k == 0) { // random A and B (B starts at zero)
            fixture_randomize(&f, 0.3f);
            a2 = xa_tensor_new(f.ctx, 2, A->shape), b2 = xa_tensor_new(f.ctx, 2, B->shape);
            memcpy(a2->data, A->data, (size_t)A->numel * sizeof(float));
            memcpy(b2->data, B->data, (size_t)B->numel * sizeof(float));
        } else { // A' = [A; A] (4 x in), B' = [B, B] (out x 4)
            for (int r = 0; r < 4; r++)
                memcpy(A->data + r * in, a2->data + (r % 2) * in, (size_t)in * sizeof(float));
            for (int64_t i = 0; i < o; i++)
                for (int r = 0; r < 4; r++)
                    B->data[i * 4 + r] = b2->data[i * 2 + r % 2];
        }
        xa_tensor *y = fixture_forward(&f);
        cr_assert(y, "%s", xa_errmsg(f.ctx));
        out[k] = copy_of(y);
        if (k == 1) {
            cr_expect_lt(max_abs_diff(y, out[0]), 1e-5f, "rank 2 and rank 4 differ by %g",
                         max_abs_diff(y, out[0]));
            xa_tensor_release(a2), xa_tensor_release(b2);
        }
        fixture_close(&f);
    }
    free(out[0]), free(out[1]);
}

// Files saved before instances could leave a sub-module out list every sub-module of the class
// as active (an X-adapter with experts = {"t"} saved "v", "t"): they still load, and only the
// built expert is active.
Test(adapters, an_older_file_listing_an_unbuilt_expert_as_active_loads) {
    fixture f;
    fixture_open(&f, true);
    cr_assert_eq(xa_net_insert(f.net, "xadapter", "xt",
                               "{\"layers\": [1], \"dim\": 8, \"heads\": 2, "
                               "\"experts\": [\"t\"], \"dropout\": 0}"),
                 XA_OK, "%s", xa_errmsg(f.ctx));
    char path[4200];
    snprintf(path, sizeof path, "%s/xt.safetensors", make_tmpdir());
    cr_assert_eq(xa_net_save(f.net, path), XA_OK, "%s", xa_errmsg(f.ctx));
    // rewrite the file with "active": ["v", "t"], as the earlier host wrote it
    xa_st_file *in;
    cr_assert_eq(xa_st_open(f.ctx, path, &in), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_st_writer *w = xa_st_writer_new(f.ctx);
    xa_tensor *kept[64]; // the writer reads them when it writes
    size_t nt = xa_st_count(in);
    cr_assert(nt <= 64);
    for (size_t i = 0; i < nt; i++) {
        cr_assert_eq(xa_st_tensor(f.ctx, in, xa_st_at(in, i)->name, &kept[i]), XA_OK);
        cr_assert_eq(xa_st_writer_add_tensor(w, xa_st_at(in, i)->name, kept[i]), XA_OK);
    }
    for (size_t i = 0; i < xa_st_meta_count(in); i++) {
        const char *key = xa_st_meta_key(in, i), *value = xa_st_meta_value(in, i);
        char old[4096];
        snprintf(old, sizeof old, "%s", value);
        char *at = strcmp(key, "adapters") ? NULL : strstr(old, "\"active\":[\"t\"]");
        if (at) {
            char rest[4096];
            snprintf(rest, sizeof rest, "%s", at + strlen("\"active\":[\"t\"]"));
            snprintf(at, sizeof old - (size_t)(at - old), "\"active\":[\"v\",\"t\"]%s", rest);
        }
        cr_assert(!strcmp(key, "adapters") == (at != NULL), "%s = %s", key, value);
        cr_assert_eq(xa_st_writer_meta(w, key, old), XA_OK);
    }
    char fresh[4300]; // not over the file the tensors view
    snprintf(fresh, sizeof fresh, "%s.old", path);
    cr_assert_eq(xa_st_writer_write(w, fresh), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_st_writer_free(w);
    for (size_t i = 0; i < nt; i++)
        xa_tensor_release(kept[i]);
    xa_st_close(in);
    fixture g;
    fixture_open(&g, true);
    cr_assert_eq(xa_net_load(g.net, fresh, false), XA_OK, "%s", xa_errmsg(g.ctx));
    cr_expect_str_eq(xa_net_active(g.net, "xt"), "t");
    fixture_close(&g);
    fixture_close(&f);
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
    // the message names the instance even when its name is a letter found in any message
    cr_expect_eq(xa_net_insert(f.net, "bottleneck", "e", "{\"reduction_factor\": 0}"), XA_EINVAL);
    cr_expect(!strncmp(xa_errmsg(f.ctx), "bottleneck 'e': ", 16), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_params_count(xa_net_params(f.net)), 0, "a failed insert leaves nothing");
    cr_expect_eq(xa_net_adapter_count(f.net), 0);
    fixture_close(&f);
}

// Out-of-range numbers are refused when the adapter is inserted, not at the first forward (or
// never: an X-adapter used to swallow its expert's failure and pass the stream through).
Test(adapters, probabilities_and_scales_are_checked_at_insert) {
    fixture f;
    fixture_open(&f, true);
    const char *bad[][2] = {
        {"bottleneck", "{\"dropout\": 2}"},
        {"bottleneck", "{\"init_scale\": -1}"},
        {"xadapter", "{\"layers\": [1], \"dim\": 8, \"heads\": 2, \"dropout\": 1.5}"},
        {"xadapter", "{\"layers\": [1], \"dim\": 8, \"heads\": 2, \"dropout\": -0.1}"},
        {"lora", "{\"dropout\": 1}"},
        {"kadapter", "{\"taps\": [0], \"size\": 8, \"heads\": 2, \"dropout\": 1}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_eq(xa_net_insert(f.net, bad[i][0], NULL, bad[i][1]), XA_EINVAL, "%s %s",
                     bad[i][0], bad[i][1]);
        cr_expect(strstr(xa_errmsg(f.ctx), bad[i][0]) &&
                      (strstr(xa_errmsg(f.ctx), "[0, 1)") || strstr(xa_errmsg(f.ctx), ">= 0")),
                  "%s", xa_errmsg(f.ctx));
    }
    cr_expect_eq(xa_net_adapter_count(f.net), 0);
    fixture_close(&f);
}

// An expert that fails (here: text features of the wrong width) fails the forward with its
// message; it is not skipped as if it were switched off.
Test(adapters, a_failing_expert_fails_the_forward) {
    fixture f;
    fixture_open(&f, true);
    cr_assert_eq(xa_net_insert(f.net, "xadapter", "x",
                               "{\"layers\": [1], \"dim\": 8, \"heads\": 2, "
                               "\"experts\": [\"t\"], \"dropout\": 0}"),
                 XA_OK, "%s", xa_errmsg(f.ctx));
    xa_tensor *right = f.feats.text_tokens;
    f.feats.text_tokens = rand_tensor(f.ctx, 2, 4, right->shape[2] + 3, 0);
    xa_arena_reset(f.ctx);
    cr_expect_null(fixture_forward(&f), "the forward went through without the T-expert");
    cr_expect(xa_errmsg(f.ctx)[0] != '\0');
    xa_tensor_release(f.feats.text_tokens);
    f.feats.text_tokens = right;
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

// Beside the FFN the expert reads the FFN's input; after it, the FFN's output: with the same
// weights the two placements give different networks, and both start as the identity.
Test(adapters, xadapter_parallel_reads_the_ffn_input) {
    float *y[2];
    const char *at[2] = {"ffn", "parallel"};
    for (int k = 0; k < 2; k++) {
        fixture f;
        fixture_open(&f, true);
        char opts[160];
        snprintf(opts, sizeof opts,
                 "{\"layers\": [0], \"at\": \"%s\", \"dim\": 4, "
                 "\"heads\": 2, \"ln\": \"none\", \"dropout\": 0}",
                 at[k]);
        cr_assert_eq(xa_net_insert(f.net, "xadapter", "x", opts), XA_OK, "%s", xa_errmsg(f.ctx));
        fixture_randomize(&f, 0.5f); // the same draws for both: same names, shapes and seed
        y[k] = copy_of(fixture_forward(&f));
        fixture_close(&f);
    }
    float d = 0;
    for (int i = 0; i < 2 * 7 * 32; i++)
        d = fmaxf(d, fabsf(y[0][i] - y[1][i]));
    cr_expect_gt(d, 1e-4f, "parallel must not compute what ffn computes");
    free(y[0]);
    free(y[1]);
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

// --- K-Adapter -----------------------------------------------------------------------------------

static const char *const KA_SMALL =
    "{\"taps\": [0, 1, 2], \"size\": 8, \"heads\": 2, \"layers\": 1}";

// Forward on a net other than f->net (the arena is reset first: copy what must survive).
static xa_tensor *forward_on(fixture *f, xa_net *n) {
    xa_net_out out;
    xa_arena_reset(f->ctx);
    cr_assert_eq(xa_net_forward(f->ctx, n, &f->batch, NULL, &out), XA_OK, "%s", xa_errmsg(f->ctx));
    return out.fused;
}

// Give `to` the values of the same-named parameters of `from`.
static void copy_params(xa_net *to, xa_net *from) {
    xa_params *pt = xa_net_params(to), *pf = xa_net_params(from);
    for (size_t i = 0; i < xa_params_count(pt); i++) {
        xa_tensor *dst = xa_params_at(pt, i), *src = xa_params_find(pf, xa_params_name(pt, i));
        cr_assert(src && src->numel == dst->numel, "no %s to copy", xa_params_name(pt, i));
        memcpy(dst->data, src->data, (size_t)dst->numel * sizeof(float));
    }
}

Test(adapters, kadapter_training_step_records_no_plm_op_on_the_tape) {
    fixture f;
    fixture_open(&f, false);
    xa_net_out out;
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK);
    cr_expect_eq(xa_tape_count(f.ctx, NULL), 0, "the frozen PLM alone records nothing");
    cr_assert_eq(xa_net_insert(f.net, "kadapter", "fac", KA_SMALL), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_set_training(f.ctx, true); // dropout 0.1 inside the adapter's BERT layers is on
    xa_arena_reset(f.ctx);
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK, "%s", xa_errmsg(f.ctx));
    // What the adapter itself runs, per tap: down, N BERT layers (q, k, v, o, fc1, fc2, two
    // LayerNorms, attention, GELU, two dropouts, two residual adds), up, and x + up; taps after
    // the first add the previous output to their hidden state; the fusion adds one more.
    const size_t K = 3, N = 1;
    size_t linear = K * (2 + 6 * N), ln = K * 2 * N, attn = K * N, gelu = K * N, drop = K * 2 * N;
    size_t add = K * (2 * N + 1) + (K - 1) + 1;
    cr_expect_eq(xa_tape_count(f.ctx, "linear"), linear);
    cr_expect_eq(xa_tape_count(f.ctx, "layernorm"), ln);
    cr_expect_eq(xa_tape_count(f.ctx, "attention"), attn);
    cr_expect_eq(xa_tape_count(f.ctx, xa_act_name(XA_ACT_GELU)), gelu);
    cr_expect_eq(xa_tape_count(f.ctx, "dropout"), drop);
    cr_expect_eq(xa_tape_count(f.ctx, "add"), add);
    cr_expect_eq(xa_tape_count(f.ctx, NULL), linear + ln + attn + gelu + drop + add,
                 "every recorded op is the adapter's own (no embedding, no frozen block)");
    float g = backward_mse_grad(&f, &out, "fac.a0.down.weight");
    for (int i = 0; i <= 2; i++)
        cr_expect(!xa_tensor_needs_grad(out.plm.hidden[i]) && !out.plm.hidden[i]->grad,
                  "hidden state %d of the frozen PLM must not need or get a gradient", i);
    cr_expect_gt(g, 0.0f, "the first tap's down-projection must get a gradient");
    fixture_close(&f);
}

// The fixture with K-Adapters 'fac' and 'lin' under concat fusion, after a first forward.
static void open_fac_lin(fixture *f) {
    fixture_open(f, false);
    cr_assert_eq(xa_net_insert(f->net, "kadapter", "fac", KA_SMALL), XA_OK, "%s",
                 xa_errmsg(f->ctx));
    cr_assert_eq(xa_net_insert(f->net, "kadapter", "lin", KA_SMALL), XA_OK, "%s",
                 xa_errmsg(f->ctx));
    xa_net_set_fusion(f->net, XA_FUSION_CONCAT);
    cr_assert(fixture_forward(f), "%s", xa_errmsg(f->ctx));
}

Test(adapters, two_kadapters_fused_by_concat_train_and_round_trip) {
    fixture f;
    open_fac_lin(&f);
    // two stages, as K-Adapter's code: [h_L; fac] -> H and [h_L; lin] -> H, then the pair -> H
    const char *projections[] = {"fusion.fac.weight", "fusion.lin.weight", "fusion.weight"};
    for (int i = 0; i < 3; i++) {
        xa_tensor *w = xa_params_find(xa_net_params(f.net), projections[i]);
        cr_assert(w, "concat fusion creates %s", projections[i]);
        cr_expect(w->shape[0] == 32 && w->shape[1] == 2 * 32, "%s is 2H -> H", projections[i]);
    }
    xa_optim *opt = xa_optim_new(f.ctx, xa_net_params(f.net),
                                 &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 1e-2f});
    xa_tensor *target = rand_tensor(f.ctx, 2, 7, 32, 0);
    float first = 0, last = 0;
    for (int step = 0; step < 30; step++) {
        xa_arena_reset(f.ctx);
        xa_tensor *loss = xa_mse(f.ctx, fixture_forward(&f), target);
        cr_assert_eq(xa_backward(f.ctx, loss), XA_OK, "%s", xa_errmsg(f.ctx));
        if (step == 0) { // both adapters learn, independently of each other
            xa_tensor *a = xa_params_find(xa_net_params(f.net), "fac.a2.up.weight");
            xa_tensor *b = xa_params_find(xa_net_params(f.net), "lin.a2.up.weight");
            cr_expect(a->grad && b->grad && a->grad[0] != 0 && b->grad[0] != 0);
        }
        cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK);
        if (step == 0)
            first = loss->data[0];
        last = loss->data[0];
    }
    cr_expect_lt(last, first * 0.97f, "loss %g -> %g", first, last);
    xa_arena_reset(f.ctx);
    float *y1 = copy_of(fixture_forward(&f));
    char path[4200];
    snprintf(path, sizeof path, "%s/ka.safetensors", make_tmpdir());
    cr_assert_eq(xa_net_save(f.net, path), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_net *n2 = xa_net_new(f.ctx, f.plm, NULL, f.reg);
    // the fresh net is left at the default (add): the file restores concat fusion itself
    cr_assert_eq(xa_net_load(n2, path, false), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_fusion(n2), XA_FUSION_CONCAT);
    cr_expect_eq(xa_net_adapter_count(n2), 2);
    cr_expect_eq(max_abs_diff(forward_on(&f, n2), y1), 0.0f);
    xa_net_free(n2);
    // the network's other adapters keep their values; one of the file's already there must
    // have the file's options
    xa_net *n3 = xa_net_new(f.ctx, f.plm, NULL, f.reg);
    cr_assert_eq(xa_net_insert(n3, "bottleneck", "extra", "{}"), XA_OK);
    float *extra = copy_of(xa_params_at(xa_net_params(n3), 0));
    cr_expect_eq(xa_net_load(n3, path, false), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(max_abs_diff(xa_params_at(xa_net_params(n3), 0), extra), 0.0f);
    free(extra);
    xa_net_free(n3);
    n3 = xa_net_new(f.ctx, f.plm, NULL, f.reg);
    cr_assert_eq(xa_net_insert(n3, "kadapter", "fac",
                               "{\"taps\": [0, 1], \"size\": 8, \"heads\": 2, \"layers\": 1}"),
                 XA_OK);
    cr_expect_eq(xa_net_load(n3, path, false), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "'fac' was saved with options {\"taps\":[0,1,2]"), "%s",
              xa_errmsg(f.ctx));
    xa_net_free(n3);
    free(y1);
    xa_tensor_release(target);
    xa_optim_free(opt);
    fixture_close(&f);
}

// K-Adapter's workflow: factual and linguistic adapters pretrained apart, each saved with its own
// (single-network) fusion, then combined for fine-tuning with a new fusion and head.
static void save_one_kadapter(const char *name, const char *path) {
    fixture f;
    fixture_open(&f, false);
    cr_assert_eq(xa_net_insert(f.net, "kadapter", name, KA_SMALL), XA_OK);
    xa_net_set_fusion(f.net, XA_FUSION_CONCAT);
    cr_assert(fixture_forward(&f), "%s", xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.3f); // "trained"
    cr_assert_eq(xa_net_save(f.net, path), XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_close(&f);
}

Test(adapters, kadapters_trained_apart_combine_with_adapters_only) {
    char fac[4200], lin[4200];
    const char *dir = make_tmpdir();
    snprintf(fac, sizeof fac, "%s/fac.safetensors", dir);
    snprintf(lin, sizeof lin, "%s/lin.safetensors", dir);
    save_one_kadapter("fac", fac);
    save_one_kadapter("lin", lin);
    fixture f;
    fixture_open(&f, false);
    xa_net_set_fusion(f.net, XA_FUSION_CONCAT);
    xa_load_opts only = {.adapters_only = true};
    cr_assert_eq(xa_net_load_with(f.net, fac, &only), XA_OK, "%s", xa_errmsg(f.ctx));
    // the whole file would bring a fusion trained for 'fac' alone: refused, nothing changes
    size_t count = xa_params_count(xa_net_params(f.net));
    cr_expect_eq(xa_net_load(f.net, lin, false), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "trained on the side networks (lin), this network has "
                                       "(fac, lin)"),
              "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_params_count(xa_net_params(f.net)), count);
    cr_assert_eq(xa_net_load_with(f.net, lin, &only), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_fusion(f.net), XA_FUSION_CONCAT, "the network's fusion mode stays");
    cr_expect_null(xa_params_find(xa_net_params(f.net), "fusion.weight"), "no fusion loaded");
    cr_assert(fixture_forward(&f), "%s", xa_errmsg(f.ctx));
    cr_expect(xa_params_find(xa_net_params(f.net), "fusion.fac.weight"), "a new two-stage fusion");
    // both adapters carry their files' values
    const char *files[] = {fac, lin}, *names[] = {"fac.a2.up.weight", "lin.a2.up.weight"};
    for (int i = 0; i < 2; i++) {
        xa_st_file *sf;
        xa_tensor *want;
        cr_assert_eq(xa_st_open(f.ctx, files[i], &sf), XA_OK);
        cr_assert_eq(xa_st_tensor(f.ctx, sf, names[i], &want), XA_OK);
        xa_tensor *got = xa_params_find(xa_net_params(f.net), names[i]);
        cr_expect_eq(max_abs_diff(got, want->data), 0.0f, "%s", names[i]);
        xa_tensor_release(want);
        xa_st_close(sf);
    }
    fixture_close(&f);
}

// A load that fails leaves the network as it was: no adapter, parameter or fusion of the file
// left behind, the values, switches and RNG untouched.
static void expect_load_changes_nothing(fixture *f, const char *path, const char *why) {
    xa_params *ps = xa_net_params(f->net);
    size_t count = xa_params_count(ps), adapters = xa_net_adapter_count(f->net);
    float *before = copy_of(xa_params_at(ps, 0));
    const char *active = strdup(xa_net_active(f->net, xa_net_adapter_name(f->net, 0)));
    uint64_t rng[4], rng2[4];
    xa_rng_state(f->ctx, rng);
    cr_expect_neq(xa_net_load(f->net, path, false), XA_OK, "%s: the load must fail", why);
    cr_expect(strstr(xa_errmsg(f->ctx), why), "%s", xa_errmsg(f->ctx));
    cr_expect_eq(xa_net_adapter_count(f->net), adapters, "%s: adapters left behind", why);
    cr_expect_eq(xa_params_count(ps), count, "%s: parameters left behind", why);
    cr_expect_eq(max_abs_diff(xa_params_at(ps, 0), before), 0.0f, "%s: values changed", why);
    cr_expect_str_eq(xa_net_active(f->net, xa_net_adapter_name(f->net, 0)), active);
    cr_expect_eq(xa_net_fusion(f->net), XA_FUSION_ADD, "%s: fusion changed", why);
    xa_rng_state(f->ctx, rng2);
    cr_expect_arr_eq(rng, rng2, sizeof rng, "%s: RNG moved", why);
    free(before);
    free((void *)active);
}

Test(adapters, a_failed_load_leaves_the_network_as_it_was) {
    fixture f;
    fixture_open(&f, false);
    cr_assert_eq(xa_net_insert(f.net, "bottleneck", "bn", "{\"dim\": 4}"), XA_OK);
    cr_assert_eq(xa_net_insert(f.net, "kadapter", "k", KA_SMALL), XA_OK);
    xa_net_set_fusion(f.net, XA_FUSION_CONCAT);
    xa_head *h2, *h3;
    xa_head_opts two = {.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_CLS, .classes = 2};
    cr_assert_eq(xa_head_new(f.net, "cls", &two, &h2), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_assert(fixture_forward(&f), "%s", xa_errmsg(f.ctx));
    char path[4200];
    snprintf(path, sizeof path, "%s/bn_k.safetensors", make_tmpdir());
    cr_assert_eq(xa_net_save(f.net, path), XA_OK, "%s", xa_errmsg(f.ctx));
    fixture g;
    fixture_open(&g, false);
    // a same-named adapter of another class
    cr_assert_eq(xa_net_insert(g.net, "lora", "bn", "{}"), XA_OK);
    expect_load_changes_nothing(&g, path, "adapter 'bn' is a bottleneck in the file but a lora");
    xa_net_free(g.net);
    // the same class with other options
    g.net = xa_net_new(g.ctx, g.plm, NULL, g.reg);
    cr_assert_eq(xa_net_insert(g.net, "bottleneck", "bn", "{\"dim\": 6}"), XA_OK);
    cr_assert_eq(xa_net_activate(g.net, "bn", NULL, 0), XA_OK); // off, and it must stay off
    expect_load_changes_nothing(&g, path,
                                "'bn' was saved with options {\"dim\":4}, this "
                                "network's has {\"dim\":6}");
    xa_net_free(g.net);
    // a head of another shape: found only when the values are checked, after 'bn', 'k' and the
    // fusion were made
    g.net = xa_net_new(g.ctx, g.plm, NULL, g.reg);
    cr_assert_eq(xa_net_insert(g.net, "lora", "mine", "{}"), XA_OK);
    xa_head_opts three = {.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_CLS, .classes = 3};
    cr_assert_eq(xa_head_new(g.net, "cls", &three, &h3), XA_OK, "%s", xa_errmsg(g.ctx));
    expect_load_changes_nothing(&g, path, "'head.cls.weight' has shape (2,32)");
    xa_head_free(h3);
    // and the same network loads the file once it matches
    xa_net_free(g.net);
    g.net = xa_net_new(g.ctx, g.plm, NULL, g.reg);
    cr_assert_eq(xa_net_load(g.net, path, false), XA_OK, "%s", xa_errmsg(g.ctx));
    cr_expect_eq(xa_net_adapter_count(g.net), 2);
    fixture_close(&g);
    xa_head_free(h2);
    fixture_close(&f);
}

// y = W x + b for one row x of `in` floats (W is out x in, row-major).
static void affine(const xa_tensor *w, const xa_tensor *b, const float *x, float *y) {
    for (int64_t o = 0; o < w->shape[0]; o++) {
        double acc = b->data[o];
        for (int64_t i = 0; i < w->shape[1]; i++)
            acc += (double)w->data[o * w->shape[1] + i] * x[i];
        y[o] = (float)acc;
    }
}

// The side output a of one K-Adapter alone: under add fusion, fused = h_L + a.
static float *side_output(fixture *f, const char *on, const char *off) {
    xa_net_set_fusion(f->net, XA_FUSION_ADD);
    cr_assert_eq(xa_net_activate(f->net, on, NULL, -1), XA_OK);
    cr_assert_eq(xa_net_activate(f->net, off, NULL, 0), XA_OK);
    xa_arena_reset(f->ctx);
    xa_net_out out;
    cr_assert_eq(xa_net_forward(f->ctx, f->net, &f->batch, NULL, &out), XA_OK, "%s",
                 xa_errmsg(f->ctx));
    float *a = copy_of(out.fused);
    for (int64_t i = 0; i < out.fused->numel; i++)
        a[i] -= out.plm.last->data[i];
    return a;
}

Test(adapters, concat_fusion_of_two_kadapters_is_the_official_two_stage_projection) {
    fixture f;
    open_fac_lin(&f);
    fixture_randomize(&f, 0.2f); // the fusion parameters included
    gc_report rep;
    cr_expect(fixture_gradcheck(&f, &rep), "%d of %d off: %s", rep.failed, rep.checked,
              rep.first_failure);
    float *a_fac = side_output(&f, "fac", "lin"), *a_lin = side_output(&f, "lin", "fac");
    cr_assert_eq(xa_net_activate(f.net, "fac", NULL, -1), XA_OK);
    xa_net_set_fusion(f.net, XA_FUSION_CONCAT);
    xa_arena_reset(f.ctx);
    xa_net_out out;
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_params *ps = xa_net_params(f.net);
    enum { H = 32 };
    float x[2 * H], pair[2 * H], y[H], err = 0;
    for (int64_t r = 0; r < out.fused->numel / H; r++) {
        const float *h = out.plm.last->data + r * H;
        memcpy(x, h, sizeof(float) * H);
        memcpy(x + H, a_fac + r * H, sizeof(float) * H);
        affine(xa_params_find(ps, "fusion.fac.weight"), xa_params_find(ps, "fusion.fac.bias"), x,
               pair);
        memcpy(x + H, a_lin + r * H, sizeof(float) * H);
        affine(xa_params_find(ps, "fusion.lin.weight"), xa_params_find(ps, "fusion.lin.bias"), x,
               pair + H);
        affine(xa_params_find(ps, "fusion.weight"), xa_params_find(ps, "fusion.bias"), pair, y);
        for (int i = 0; i < H; i++)
            err = fmaxf(err, fabsf(out.fused->data[r * H + i] - y[i]));
    }
    cr_expect_lt(err, 1e-5f, "fused output vs the two-stage formula: %g", err);
    free(a_fac);
    free(a_lin);
    fixture_close(&f);
}

Test(adapters, concat_fusion_of_one_kadapter_is_one_projection_and_names_are_checked) {
    fixture f;
    fixture_open(&f, false);
    cr_assert_eq(xa_net_insert(f.net, "kadapter", "fac", KA_SMALL), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_net_set_fusion(f.net, XA_FUSION_CONCAT);
    cr_assert(fixture_forward(&f), "%s", xa_errmsg(f.ctx));
    xa_tensor *w = xa_params_find(xa_net_params(f.net), "fusion.weight");
    cr_assert(w && w->shape[1] == 2 * 32, "task_dense_x([h_L; a]): 2H -> H");
    cr_expect_null(xa_params_find(xa_net_params(f.net), "fusion.fac.weight"));
    // a second side network after the fusion was built is refused, not silently ignored
    cr_assert_eq(xa_net_insert(f.net, "kadapter", "lin", KA_SMALL), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_arena_reset(f.ctx);
    cr_expect_null(fixture_forward(&f));
    cr_expect(strstr(xa_errmsg(f.ctx),
                     "built for 1 side network(s) at the first forward, the net now has 2"),
              "%s", xa_errmsg(f.ctx));
    // names the fusion parameters use, and names too long for them, are not adapter names
    char longname[XA_ADAPTER_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    cr_expect_eq(xa_net_insert(f.net, "lora", "fusion", "{}"), XA_EINVAL);
    cr_expect_eq(xa_net_insert(f.net, "lora", longname, "{}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "at most 128 characters"), "%s", xa_errmsg(f.ctx));
    longname[XA_ADAPTER_NAME_MAX] = 0;
    cr_expect_eq(xa_net_insert(f.net, "lora", longname, "{}"), XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_close(&f);
}

// The official AdapterModel, after its c-th adapter (c = k + 1) with c % skip == 0, adds
// outs[c / skip] (0-based) to what feeds the next tap and, at the last tap, to the output. With
// taps (0, 1, 2) and skip 3 that is outs[1]: output = a_2 + a_1. Here a_1 comes from a second
// adapter with the same weights and taps (0, 1) only.
Test(adapters, kadapter_skip_adds_outs_at_count_over_skip_as_the_official_code_does) {
    fixture f;
    fixture_open(&f, false);
    float *base = copy_of(fixture_forward(&f));
    const char *opts[4] = {
        "{\"taps\": [0, 1, 2], \"size\": 8, \"heads\": 2, \"layers\": 1, \"skip\": 3}",
        KA_SMALL,
        "{\"taps\": [0, 1], \"size\": 8, \"heads\": 2, \"layers\": 1}",
        "{\"taps\": [0], \"size\": 8, \"heads\": 2, \"layers\": 1}",
    };
    cr_assert_eq(xa_net_insert(f.net, "kadapter", "k", opts[0]), XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.3f);
    float *y[4];
    y[0] = copy_of(forward_on(&f, f.net));
    for (int i = 1; i < 4; i++) {
        xa_net *n = xa_net_new(f.ctx, f.plm, NULL, f.reg);
        cr_assert_eq(xa_net_insert(n, "kadapter", "k", opts[i]), XA_OK, "%s", xa_errmsg(f.ctx));
        copy_params(n, f.net);
        y[i] = copy_of(forward_on(&f, n));
        xa_net_free(n);
    }
    float rule = 0, intent = 0; // against outs[1] (the code) and outs[0] (a plausible misreading)
    for (int64_t i = 0; i < 2 * 7 * 32; i++) {
        float added = y[0][i] - y[1][i];
        rule = fmaxf(rule, fabsf(added - (y[2][i] - base[i])));
        intent = fmaxf(intent, fabsf(added - (y[3][i] - base[i])));
    }
    cr_expect_lt(rule, 1e-5f, "skip 3 over taps (0, 1, 2) must add the second adapter's output");
    cr_expect_gt(intent, 1e-2f, "the test must tell outs[1] from outs[0]");
    for (int i = 0; i < 4; i++)
        free(y[i]);
    free(base);
    fixture_close(&f);
}

Test(adapters, kadapter_attends_to_padding_unless_mask_is_set) {
    for (int masked = 0; masked < 2; masked++) {
        fixture f;
        fixture_open(&f, false);
        char opts[160];
        snprintf(opts, sizeof opts, "{\"taps\": [0, 1, 2], \"size\": 8, \"heads\": 2, "
                                    "\"layers\": 1, \"mask\": %s}", masked ? "true" : "false");
        cr_assert_eq(xa_net_insert(f.net, "kadapter", NULL, opts), XA_OK, "%s", xa_errmsg(f.ctx));
        fixture_randomize(&f, 0.3f);
        float *y1 = copy_of(forward_on(&f, f.net));
        f.ids[12] = 7, f.ids[13] = 8; // row 1's two padding tokens
        xa_tensor *y2 = forward_on(&f, f.net);
        float d = 0; // row 1, real tokens 0..4
        for (int64_t i = 7 * 32; i < (7 + 5) * 32; i++)
            d = fmaxf(d, fabsf(y2->data[i] - y1[i]));
        if (masked)
            cr_expect_eq(d, 0.0f, "with mask = true padding cannot reach real tokens");
        else
            cr_expect_gt(d, 1e-4f, "the official all-ones mask lets padding reach real tokens");
        free(y1);
        fixture_close(&f);
    }
}

Test(adapters, kadapter_options_are_checked_and_default_taps_follow_the_rule) {
    fixture f;
    fixture_open(&f, false);
    cr_expect_eq(xa_net_insert(f.net, "kadapter", NULL, "{\"size\": 10, \"heads\": 4}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "size 10 must be positive and divisible by heads 4"), "%s",
              xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_insert(f.net, "kadapter", NULL, "{\"size\": 8, \"heads\": 2, \"skip\": 1}"),
                 XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "skip = 1"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(
        xa_net_insert(f.net, "kadapter", NULL, "{\"taps\": [3], \"size\": 8, \"heads\": 2}"),
        XA_ERANGE);
    cr_expect_eq(xa_params_count(xa_net_params(f.net)), 0, "failed inserts leave nothing");
    // {0, L/2 - 1, L - 2} for L = 2 is {0, 0, 0}: one tap, on the embeddings
    cr_assert_eq(xa_net_insert(f.net, "kadapter", NULL, "{\"size\": 8, \"heads\": 2}"), XA_OK,
                 "%s", xa_errmsg(f.ctx));
    xa_params *ps = xa_net_params(f.net);
    cr_expect(xa_params_find(ps, "kadapter.a0.down.weight") &&
              !xa_params_find(ps, "kadapter.a1.down.weight"));
    cr_expect(xa_params_find(ps, "kadapter.a0.l1.output.ln.bias") &&
              !xa_params_find(ps, "kadapter.a0.l2.output.ln.bias"), "two BERT layers by default");
    xa_tensor *fc1 = xa_params_find(ps, "kadapter.a0.l0.intermediate.weight");
    cr_expect(fc1 && fc1->shape[0] == 32 && fc1->shape[1] == 8, "intermediate = 4 * size");
    fixture_close(&f);
}

// --- LoRA ----------------------------------------------------------------------------------------

static void zero_lora_b(xa_net *n) {
    xa_params *ps = xa_net_params(n);
    for (size_t i = 0; i < xa_params_count(ps); i++)
        if (strstr(xa_params_name(ps, i), "lora_B")) {
            xa_tensor *t = xa_params_at(ps, i);
            memset(t->data, 0, (size_t)t->numel * sizeof(float));
        }
}

Test(adapters, lora_merged_matches_unmerged_and_unmerge_restores_the_exact_path) {
    fixture f;
    fixture_open(&f, false);
    float *base = copy_of(fixture_forward(&f));
    const char *all = "{\"targets\": [\"q\", \"k\", \"v\", \"o\", \"ff1\", \"ff2\"], \"rank\": 2, "
                      "\"alpha\": 3}";
    cr_assert_eq(xa_net_insert(f.net, "lora", "lo", all), XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.1f); // B != 0: a trained-looking LoRA
    float *y0 = copy_of(forward_on(&f, f.net));
    cr_expect_gt(max_abs_diff(forward_on(&f, f.net), base), 1e-3f, "LoRA must change the output");
    cr_assert_eq(xa_net_control(f.net, "lo", "merge"), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_lt(max_abs_diff(forward_on(&f, f.net), y0), 1e-5f, "W + s B A == W x + s B A x");
    cr_expect_eq(xa_tape_count(f.ctx, NULL), 0, "merged, nothing left to train records");
    cr_assert_eq(xa_net_control(f.net, "lo", "unmerge"), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(max_abs_diff(forward_on(&f, f.net), y0), 0.0f, "unmerge restores the exact path");
    cr_assert_eq(xa_net_control(f.net, "lo", "unmerge"), XA_OK, "unmerging twice does nothing");
    // While merged, the weights folded at merge time are used, not the live A and B ...
    cr_assert_eq(xa_net_control(f.net, "lo", "merge"), XA_OK, "%s", xa_errmsg(f.ctx));
    float *y1 = copy_of(forward_on(&f, f.net));
    zero_lora_b(f.net);
    cr_expect_eq(max_abs_diff(forward_on(&f, f.net), y1), 0.0f);
    // ... and merging again refolds them: W + 0 is W, so the base comes back bit for bit.
    cr_assert_eq(xa_net_control(f.net, "lo", "merge"), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(max_abs_diff(forward_on(&f, f.net), base), 0.0f);
    // one replacer per projection: a second LoRA on q cannot merge while the first is merged
    cr_assert_eq(xa_net_insert(f.net, "lora", "lo2", "{\"targets\": \"q\", \"rank\": 1}"), XA_OK,
                 "%s", xa_errmsg(f.ctx));
    cr_expect_neq(xa_net_control(f.net, "lo2", "merge"), XA_OK);
    cr_expect(strstr(xa_errmsg(f.ctx), "already replaced by lo"), "%s", xa_errmsg(f.ctx));
    cr_assert_eq(xa_net_control(f.net, "lo", "unmerge"), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(max_abs_diff(forward_on(&f, f.net), base), 0.0f, "lo2 (B = 0) and lo (B = 0)");
    free(y0), free(y1), free(base);
    fixture_close(&f);
}

Test(adapters, lora_refuses_to_train_while_merged) {
    fixture f;
    fixture_open(&f, false);
    cr_assert_eq(xa_net_insert(f.net, "lora", NULL, "{\"rank\": 2}"), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    cr_assert_eq(xa_net_control(f.net, "lora", "merge"), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_set_training(f.ctx, true);
    xa_net_out out;
    cr_expect_neq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK);
    cr_expect(strstr(xa_errmsg(f.ctx), "unmerge before training"), "%s", xa_errmsg(f.ctx));
    cr_assert_eq(xa_net_control(f.net, "lora", "unmerge"), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_arena_reset(f.ctx);
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect_gt(backward_mse_grad(&f, &out, "lora.l0.q.lora_B"), 0.0f, "unmerged, B learns again");
    fixture_close(&f);
}

Test(adapters, control_commands_are_checked) {
    fixture f;
    fixture_open(&f, false);
    cr_assert_eq(xa_net_insert(f.net, "bottleneck", NULL, "{}"), XA_OK);
    cr_assert_eq(xa_net_insert(f.net, "lora", NULL, "{}"), XA_OK);
    cr_expect_eq(xa_net_control(f.net, "bottleneck", "merge"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "bottleneck 'bottleneck' takes no commands (got 'merge')"),
              "%s", xa_errmsg(f.ctx));
    cr_expect_neq(xa_net_control(f.net, "lora", "fold"), XA_OK);
    cr_expect(strstr(xa_errmsg(f.ctx), "unknown command 'fold'") &&
              strstr(xa_errmsg(f.ctx), "merge and unmerge"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_control(f.net, "lroa", "merge"), XA_ENOTFOUND);
    cr_expect(strstr(xa_errmsg(f.ctx), "no adapter named 'lroa'"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_insert(f.net, "lora", "l2", "{\"targets\": [\"q\", \"x\"]}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "'x' is not one of q, k, v, o, ff1, ff2"), "%s",
              xa_errmsg(f.ctx));
    fixture_close(&f);
}

// The frozen-prefix cache must be exact: the same outputs and the same training trajectory, for
// a loss that reads the positions the mask keeps (the cache keeps no padding for in-stream
// adapters: see the next test).
// Two fixtures with the same adapter: `a` without the prefix cache, `b` with it.
static void open_without_and_with_cache(fixture *a, fixture *b, const char *cls, const char *opts) {
    fixture_open(a, false);
    fixture_open(b, false);
    cr_assert_eq(xa_net_insert(a->net, cls, NULL, opts), XA_OK, "%s", xa_errmsg(a->ctx));
    cr_assert_eq(xa_net_insert(b->net, cls, NULL, opts), XA_OK, "%s", xa_errmsg(b->ctx));
    xa_net_set_prefix_cache(b->net, 64 << 20);
}

static void prefix_cache_case(const char *cls, const char *opts) {
    fixture a, b;
    open_without_and_with_cache(&a, &b, cls, opts);
    xa_optim *oa = xa_optim_new(a.ctx, xa_net_params(a.net), &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 1e-2f});
    xa_optim *ob = xa_optim_new(b.ctx, xa_net_params(b.net), &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 1e-2f});
    xa_tensor *target = rand_tensor(a.ctx, 2, 32, 0, 0);
    for (int step = 0; step < 4; step++) {
        xa_arena_reset(a.ctx);
        xa_arena_reset(b.ctx);
        xa_tensor *la = xa_mse(a.ctx, xa_pool_mean(a.ctx, fixture_forward(&a), a.mask), target);
        xa_tensor *lb = xa_mse(b.ctx, xa_pool_mean(b.ctx, fixture_forward(&b), b.mask), target);
        cr_assert(la && lb, "%s / %s", xa_errmsg(a.ctx), xa_errmsg(b.ctx));
        cr_expect_eq(la->data[0], lb->data[0], "%s step %d: %g with the cache, %g without", cls,
                     step, lb->data[0], la->data[0]);
        cr_assert_eq(xa_backward(a.ctx, la), XA_OK, "%s", xa_errmsg(a.ctx));
        cr_assert_eq(xa_backward(b.ctx, lb), XA_OK, "%s", xa_errmsg(b.ctx));
        xa_optim_step(oa, -1, 1.0f);
        xa_optim_step(ob, -1, 1.0f);
    }
    int64_t hits, misses;
    xa_net_prefix_stats(b.net, &hits, &misses, NULL);
    cr_expect_eq(hits, 3, "%s: every step after the first reuses the prefix", cls);
    cr_expect_eq(misses, 1);
    // with dropout in the base while training, the prefix is random: never reused
    xa_set_training(b.ctx, true);
    xa_arena_reset(b.ctx);
    xa_net_out out;
    xa_forward_opts fo = {.dropout = 0.1f};
    cr_assert_eq(xa_net_forward(b.ctx, b.net, &b.batch, &fo, &out), XA_OK);
    int64_t hits2;
    xa_net_prefix_stats(b.net, &hits2, NULL, NULL);
    cr_expect_eq(hits2, hits);
    // attention dropout alone makes it random too
    xa_arena_reset(b.ctx);
    xa_forward_opts fa = {.attn_dropout = 0.1f};
    cr_assert_eq(xa_net_forward(b.ctx, b.net, &b.batch, &fa, &out), XA_OK);
    xa_net_prefix_stats(b.net, &hits2, NULL, NULL);
    cr_expect_eq(hits2, hits, "%s: the prefix was reused under attention dropout", cls);
    xa_tensor_release(target);
    xa_optim_free(oa);
    xa_optim_free(ob);
    fixture_close(&a);
    fixture_close(&b);
}

Test(adapters, frozen_prefix_cache_is_exact_for_in_stream_and_side_adapters) {
    prefix_cache_case("bottleneck", "{\"layers\": [1], \"non_linearity\": \"tanh\"}");
    prefix_cache_case("kadapter", "{\"size\": 8, \"heads\": 2, \"layers\": 1, \"taps\": [0, 1, 2], "
                                  "\"intermediate\": 16, \"dropout\": 0}");
}

// Shuffled batches are padded to their longest row, so rows come back at other lengths. The
// fixture's rows, computed at length 7, then asked for at length 10: with in-stream adapters only,
// the stored rows (their tokens only) serve it, padding zero-filled, and every position the mask
// keeps is what a net without the cache computes (up to rounding: GEMMs of another size may sum
// in another order); with a side network (which may attend to padding) the batch computes its
// prefix again.
static void prefix_cache_longer_batch(const char *cls, const char *opts, bool served) {
    fixture a, b;
    open_without_and_with_cache(&a, &b, cls, opts);
    cr_assert(fixture_forward(&b), "%s", xa_errmsg(b.ctx));
    enum { T = 10 };
    int32_t ids[2 * T];
    float mask[2 * T];
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < T; t++) {
            ids[r * T + t] = t < 7 ? b.ids[r * 7 + t] : 0;
            mask[r * T + t] = t < 7 ? b.mask[r * 7 + t] : 0.0f;
        }
    a.batch.text = b.batch.text = (xa_text_batch){.ids = ids, .mask = mask, .B = 2, .T = T};
    xa_arena_reset(b.ctx);
    xa_tensor *ya = fixture_forward(&a), *yb = fixture_forward(&b);
    cr_assert(ya && yb, "%s / %s", xa_errmsg(a.ctx), xa_errmsg(b.ctx));
    int64_t hits, misses, H = ya->shape[2];
    xa_net_prefix_stats(b.net, &hits, &misses, NULL);
    cr_expect_eq(hits, served ? 1 : 0, "%s: %lld hits", cls, (long long)hits);
    cr_expect_eq(misses, served ? 1 : 2, "%s: %lld misses", cls, (long long)misses);
    float worst = 0;
    for (int64_t p = 0; p < 2 * T; p++)
        for (int64_t h = 0; mask[p] != 0.0f && h < H; h++)
            worst = fmaxf(worst, fabsf(ya->data[p * H + h] - yb->data[p * H + h]));
    cr_expect_lt(worst, 1e-5f, "%s: kept positions differ from the net without the cache by %g",
                 cls, worst);
    fixture_close(&a);
    fixture_close(&b);
}

Test(adapters, frozen_prefix_cache_serves_longer_batches_when_only_masked_positions_change) {
    prefix_cache_longer_batch("bottleneck", "{\"layers\": [1], \"non_linearity\": \"tanh\"}", true);
    prefix_cache_longer_batch("lora", "{\"layers\": [1], \"targets\": [\"q\", \"ff1\"]}", true);
    prefix_cache_longer_batch("kadapter",
                              "{\"size\": 8, \"heads\": 2, \"layers\": 1, "
                              "\"taps\": [0, 1, 2], \"intermediate\": 16}",
                              false);
}

// Pfeiffer places one adapter per block, after the feed-forward sub-layer only; Houlsby one
// after each sub-layer.
Test(adapters, pfeiffer_has_no_attention_adapter_and_houlsby_has_both) {
    const char *opts[2] = {"{\"placement\": \"pfeiffer\", \"dim\": 5}",
                           "{\"placement\": \"houlsby\", \"dim\": 5}"};
    for (int k = 0; k < 2; k++) {
        fixture f;
        fixture_open(&f, false);
        cr_assert_eq(xa_net_insert(f.net, "bottleneck", NULL, opts[k]), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        xa_params *ps = xa_net_params(f.net);
        int attn = 0, ffn = 0;
        for (size_t i = 0; i < xa_params_count(ps); i++) {
            attn += strstr(xa_params_name(ps, i), ".attn.") != NULL;
            ffn += strstr(xa_params_name(ps, i), ".ffn.") != NULL;
        }
        cr_expect_eq(attn, k == 0 ? 0 : ffn, "%s: %d attention, %d feed-forward parameters",
                     opts[k], attn, ffn);
        cr_expect_gt(ffn, 0);
        fixture_close(&f);
    }
}

// Keys the X-adapter's expert attends to are CLIP tokens; padded ones (mask 0) must not count.
Test(adapters, xadapter_ignores_masked_feature_tokens) {
    fixture f;
    fixture_open(&f, true);
    cr_assert_eq(xa_net_insert(f.net, "xadapter", NULL,
                               "{\"layers\": [0, 1], \"dim\": 8, \"heads\": 2, \"dropout\": 0, "
                               "\"experts\": [\"t\"]}"),
                 XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.2f);
    float tmask[2 * 4] = {1, 1, 1, 1, 1, 1, 0, 0}; // row 1 pads its last two text tokens
    f.feats.text_token_mask = tmask;
    float *base = copy_of(fixture_forward(&f));
    xa_tensor *tt = f.feats.text_tokens;
    int64_t D = tt->shape[2];
    for (int64_t t = 2; t < 4; t++)
        for (int64_t d = 0; d < D; d++)
            tt->data[(4 + t) * D + d] += 5.0f;
    xa_arena_reset(f.ctx);
    xa_tensor *y = fixture_forward(&f);
    cr_assert(y, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(max_abs_diff(y, base), 0.0f, "padded feature tokens moved the output by %g",
                 max_abs_diff(y, base));
    for (int64_t d = 0; d < D; d++) // a kept token does move it: the check is not vacuous
        tt->data[4 * D + d] += 5.0f;
    xa_arena_reset(f.ctx);
    y = fixture_forward(&f);
    cr_expect_gt(max_abs_diff(y, base), 1e-4f);
    free(base);
    fixture_close(&f);
}

// An evaluation forward (gradients off) records nothing, so a block with adapter sites keeps only
// its output and what the hooks saw or made (they may hold on to it), and a side network only its
// output; their other intermediates go back to the arena for what follows, as a frozen block
// without sites gives back all of them. So evaluation never needs more of the arena than a
// training forward of the same batch, which keeps what backward reads besides; and its output is
// bit for bit the training forward's (no dropout in either).
Test(adapters, evaluation_forwards_need_less_memory_than_training_and_compute_the_same) {
    enum { B = 2, T = 40 };
    int32_t ids[B * T];
    float mask[B * T];
    for (int i = 0; i < B * T; i++)
        ids[i] = 2 + (i * 37) % 150, mask[i] = i >= T && i % T >= T - 5 ? 0.0f : 1.0f;
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        fixture_open(&f, kinds[k].vlm);
        f.batch.text = (xa_text_batch){.ids = ids, .mask = mask, .B = B, .T = T};
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, NULL, kinds[k].opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        fixture_randomize(&f, 0.1f);
        xa_tensor *y = fixture_forward(&f);
        cr_assert(y, "%s", xa_errmsg(f.ctx));
        cr_assert_gt(xa_tape_count(f.ctx, NULL), 0, "the training forward records");
        size_t train = xa_arena_used(f.ctx);
        float *trained = copy_of(y);
        xa_arena_reset(f.ctx);
        xa_set_grad_enabled(f.ctx, false);
        y = fixture_forward(&f);
        cr_assert(y, "%s", xa_errmsg(f.ctx));
        size_t eval = xa_arena_used(f.ctx);
        cr_expect_eq(max_abs_diff(y, trained), 0.0f, "%s %s", kinds[k].cls, kinds[k].opts);
        cr_expect_lt(eval, train, "%s %s: evaluation used %zu bytes of the arena, training %zu",
                     kinds[k].cls, kinds[k].opts, eval, train);
        free(trained);
        fixture_close(&f);
    }
}
