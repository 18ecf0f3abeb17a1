// The task layer (task.h): NST and NT-Xent against hand-computed values and naive double-precision
// references (values and gradients), MLM masking statistics, heads on the tiny BERT (shapes,
// gradients, the pooler against weights read from the checkpoint file, save/load), metrics
// against hand-computed values, and the CLIP feature cache (memory, disk, modified files, text,
// retrieval) on a random clip-tiny checkpoint with the real CLIP vocabulary.
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapters_common.h"
#include "gradcheck.h"
#include "support.h"
#include "xadapt/image.h"
#include "xadapt/safetensors.h"
#include "xadapt/task.h"

static xa_ctx *ctx;
static void setup(void) {
    ctx = xa_ctx_new();
    xa_ctx_seed(ctx, 1234);
}
static void teardown(void) {
    xa_ctx_free(ctx);
}

TestSuite(objectives, .init = setup, .fini = teardown);
TestSuite(mlm_mask, .init = setup, .fini = teardown);
TestSuite(metrics, .init = setup, .fini = teardown);
TestSuite(heads);
TestSuite(vlm_cache, .init = setup, .fini = teardown);

static xa_tensor *tensor_of(int64_t d0, int64_t d1, int64_t d2, const float *v) {
    xa_tensor *t = xa_tensor_new_nd(ctx, d0, d1, d2, 0);
    cr_assert(t);
    memcpy(t->data, v, (size_t)t->numel * sizeof(float));
    return t;
}

// --- naive references (double, straight from the definitions) ----------------------------------

// mean_ij k(s_i,s_j) + mean_ij k(t_i,t_j) - 2 mean_ij k(s_i,t_j), k = (x.y)^2, channel vectors
// over positions L2-normalised; averaged over the batch.
static double nst_ref(const float *s, const float *t, int B, int T, int Cs, int Ct) {
    double loss = 0;
    double *sv = malloc(sizeof(double) * (size_t)(Cs * T)),
           *tv = malloc(sizeof(double) * (size_t)(Ct * T));
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < Cs; c++) {
            double n = 0;
            for (int p = 0; p < T; p++)
                n += (double)s[(b * T + p) * Cs + c] * s[(b * T + p) * Cs + c];
            for (int p = 0; p < T; p++)
                sv[c * T + p] = s[(b * T + p) * Cs + c] / sqrt(n);
        }
        for (int c = 0; c < Ct; c++) {
            double n = 0;
            for (int p = 0; p < T; p++)
                n += (double)t[(b * T + p) * Ct + c] * t[(b * T + p) * Ct + c];
            for (int p = 0; p < T; p++)
                tv[c * T + p] = t[(b * T + p) * Ct + c] / sqrt(n);
        }
        double kss = 0, ktt = 0, kst = 0;
        for (int i = 0; i < Cs; i++)
            for (int j = 0; j < Cs; j++) {
                double d = 0;
                for (int p = 0; p < T; p++)
                    d += sv[i * T + p] * sv[j * T + p];
                kss += d * d;
            }
        for (int i = 0; i < Ct; i++)
            for (int j = 0; j < Ct; j++) {
                double d = 0;
                for (int p = 0; p < T; p++)
                    d += tv[i * T + p] * tv[j * T + p];
                ktt += d * d;
            }
        for (int i = 0; i < Cs; i++)
            for (int j = 0; j < Ct; j++) {
                double d = 0;
                for (int p = 0; p < T; p++)
                    d += sv[i * T + p] * tv[j * T + p];
                kst += d * d;
            }
        loss += kss / (Cs * Cs) + ktt / (Ct * Ct) - 2 * kst / (Cs * Ct);
    }
    free(sv);
    free(tv);
    return loss / B;
}

// Symmetric InfoNCE on cosine similarities / tau, the diagonal as targets.
static double ntxent_ref(const float *a, const float *b, int N, int D, double tau) {
    double *S = malloc(sizeof(double) * (size_t)(N * N));
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double ab = 0, aa = 0, bb = 0;
            for (int d = 0; d < D; d++)
                ab += (double)a[i * D + d] * b[j * D + d],
                    aa += (double)a[i * D + d] * a[i * D + d],
                    bb += (double)b[j * D + d] * b[j * D + d];
            S[i * N + j] = ab / (sqrt(aa) * sqrt(bb)) / tau;
        }
    double lab = 0, lba = 0;
    for (int i = 0; i < N; i++) {
        double zr = 0, zc = 0;
        for (int j = 0; j < N; j++)
            zr += exp(S[i * N + j]), zc += exp(S[j * N + i]);
        lab += log(zr) - S[i * N + i];
        lba += log(zc) - S[i * N + i];
    }
    free(S);
    return 0.5 * (lab / N + lba / N);
}

// --- NST ---------------------------------------------------------------------------------------

Test(objectives, nst_matches_hand_computed_value) {
    // Example 0: student channels (1,0) and (0,1) over T = 2; teacher channel (3,4) -> (0.6,0.8).
    //   k_ss: 1,0,0,1 -> 0.5; k_tt: 1; k_st: 0.36, 0.64 -> 0.5; loss 0.5 + 1 - 2 * 0.5 = 0.5.
    // Example 1: every channel (after normalisation) is (1,1)/sqrt 2: all kernels 1, loss 0.
    // Batch mean 0.25. The student is scaled per channel to show normalisation.
    float s[] = {5, 0, 0, 7, /* ex 1 */ 2, 3, 2, 3};
    float t[] = {3, 4, /* ex 1 */ 0.5f, 0.5f};
    xa_tensor *st = tensor_of(2, 2, 2, s), *tt = tensor_of(2, 2, 1, t);
    xa_tensor *loss = xa_nst_loss(ctx, st, tt);
    cr_assert(loss, "%s", xa_errmsg(ctx));
    cr_expect_eq(loss->numel, 1);
    cr_expect_float_eq(loss->data[0], 0.25f, 1e-6f, "got %g", loss->data[0]);
    xa_tensor_release(st);
    xa_tensor_release(tt);
}

Test(objectives, nst_matches_pairwise_definition_on_random_inputs) {
    xa_tensor *s = rand_tensor(ctx, 3, 5, 4, 0), *t = rand_tensor(ctx, 3, 5, 6, 0);
    xa_tensor *loss = xa_nst_loss(ctx, s, t);
    cr_assert(loss, "%s", xa_errmsg(ctx));
    double want = nst_ref(s->data, t->data, 3, 5, 4, 6);
    cr_expect(fabs(loss->data[0] - want) < 1e-5 * fmax(1.0, fabs(want)), "got %.8g want %.8g",
              loss->data[0], want);
    cr_expect(want > 1e-3, "inputs too easy: %g", want);
    xa_tensor_release(s);
    xa_tensor_release(t);
}

Test(objectives, nst_of_identical_sets_is_zero_and_refuses_other_lengths) {
    xa_tensor *s = rand_tensor(ctx, 2, 4, 3, 0);
    xa_tensor *loss = xa_nst_loss(ctx, s, s);
    cr_assert(loss);
    cr_expect(fabsf(loss->data[0]) < 1e-6f, "got %g", loss->data[0]);
    xa_tensor *t = rand_tensor(ctx, 2, 5, 3, 0);
    cr_expect_null(xa_nst_loss(ctx, s, t));
    cr_expect_eq(xa_errcode(ctx), XA_ESHAPE);
    cr_expect(strstr(xa_errmsg(ctx), "(2,4,3)") && strstr(xa_errmsg(ctx), "(2,5,3)"), "%s",
              xa_errmsg(ctx));
    xa_tensor_release(s);
    xa_tensor_release(t);
}

typedef double (*ref_fn)(const xa_tensor *const *in, void *user);

// The tape's gradient of `loss` (already computed from `in`) against central differences of an
// independent double-precision reference.
static void expect_grad_matches_ref(xa_tensor *loss, xa_tensor **in, int nin, ref_fn ref,
                                    void *user) {
    cr_assert(loss, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_backward(ctx, loss), XA_OK, "%s", xa_errmsg(ctx));
    for (int k = 0; k < nin; k++) {
        cr_assert(in[k]->grad, "input %d has no gradient", k);
        for (int64_t i = 0; i < in[k]->numel; i++) {
            float keep = in[k]->data[i];
            double h = 1e-3;
            in[k]->data[i] = (float)(keep + h);
            double hp = in[k]->data[i] - keep;
            double lp = ref((const xa_tensor *const *)in, user);
            in[k]->data[i] = (float)(keep - h);
            double hm = keep - in[k]->data[i];
            double lm = ref((const xa_tensor *const *)in, user);
            in[k]->data[i] = keep;
            double num = (lp - lm) / (hp + hm);
            cr_expect(fabs(num - in[k]->grad[i]) < 2e-4 + 1e-3 * fabs(num),
                      "input %d element %lld: tape %.7g, reference %.7g", k, (long long)i,
                      in[k]->grad[i], num);
        }
    }
}

static double nst_ref_in(const xa_tensor *const *in, void *u) {
    (void)u;
    return nst_ref(in[0]->data, in[1]->data, (int)in[0]->shape[0], (int)in[0]->shape[1],
                   (int)in[0]->shape[2], (int)in[1]->shape[2]);
}

Test(objectives, nst_gradient_matches_reference_derivative) {
    xa_tensor *in[2] = {rand_tensor(ctx, 2, 4, 3, 0), rand_tensor(ctx, 2, 4, 5, 0)};
    in[0]->flags |= XA_TENSOR_TRAINABLE, in[1]->flags |= XA_TENSOR_TRAINABLE;
    expect_grad_matches_ref(xa_nst_loss(ctx, in[0], in[1]), in, 2, nst_ref_in, NULL);
    xa_tensor_release(in[0]);
    xa_tensor_release(in[1]);
}

static xa_tensor *f_nst(xa_ctx *c, xa_tensor **in, void *u) {
    (void)u;
    return xa_scale(c, xa_nst_loss(c, in[0], in[1]), 10.0f);
}
static xa_tensor *f_nst_frozen_teacher(xa_ctx *c, xa_tensor **in, void *u) {
    return xa_scale(c, xa_nst_loss(c, in[0], (xa_tensor *)u), 10.0f);
}

Test(objectives, nst_passes_gradcheck) {
    xa_tensor *in[2] = {rand_tensor(ctx, 2, 5, 4, 0), rand_tensor(ctx, 2, 5, 3, 0)};
    gc_report rep;
    cr_expect(gradcheck(ctx, "nst", f_nst, in, 2, NULL, &rep), "%s (max abs err %.3g)",
              rep.first_failure, rep.max_abs_err);
    cr_expect_gt(rep.checked, 0);
    // a frozen (constant) teacher, as in distillation: only the student gets a gradient
    xa_tensor *teacher = rand_tensor(ctx, 2, 5, 6, 0);
    cr_expect(gradcheck(ctx, "nst", f_nst_frozen_teacher, in, 1, teacher, &rep), "%s",
              rep.first_failure);
    cr_expect_null(teacher->grad);
    xa_tensor_release(in[0]);
    xa_tensor_release(in[1]);
    xa_tensor_release(teacher);
}

// --- NT-Xent -----------------------------------------------------------------------------------

Test(objectives, ntxent_matches_hand_computed_values) {
    // Orthonormal pairs: S = I / tau, each row and column: log(e^(1/tau) + 1) - 1/tau.
    float a[] = {1, 0, 0, 1}, b[] = {2, 0, 0, 3};
    xa_tensor *ta = tensor_of(2, 2, 1, a), *tb = tensor_of(2, 2, 1, b);
    xa_tensor *ra = xa_reshape(ctx, ta, 2, (int64_t[]){2, 2});
    xa_tensor *rb = xa_reshape(ctx, tb, 2, (int64_t[]){2, 2});
    xa_tensor *l1 = xa_ntxent_loss(ctx, ra, rb, 1.0f), *l2 = xa_ntxent_loss(ctx, ra, rb, 0.5f);
    cr_assert(l1 && l2, "%s", xa_errmsg(ctx));
    cr_expect(fabs(l1->data[0] - (log(M_E + 1) - 1)) < 1e-6, "got %.8g", l1->data[0]);
    cr_expect(fabs(l2->data[0] - (log(M_E * M_E + 1) - 2)) < 1e-6, "got %.8g", l2->data[0]);
    // Asymmetric: a = (1,0), (1,1); b = (1,0), (0,1); c = cos 45 = 1/sqrt 2.
    //   S = [[1, 0], [c, c]]; rows: log(1 + e^-1), log 2; columns: log(1 + e^(c-1)), log(1 + e^-c)
    float a2[] = {1, 0, 1, 1};
    xa_tensor *t2 = tensor_of(2, 2, 1, a2);
    xa_tensor *l3 = xa_ntxent_loss(ctx, xa_reshape(ctx, t2, 2, (int64_t[]){2, 2}), rb, 1.0f);
    cr_assert(l3, "%s", xa_errmsg(ctx));
    double c = 1 / sqrt(2.0);
    double rows = 0.5 * (log(1 + exp(-1.0)) + log(2.0));
    double cols = 0.5 * (log(1 + exp(c - 1)) + log(1 + exp(-c)));
    cr_expect(fabs(l3->data[0] - 0.5 * (rows + cols)) < 1e-6, "got %.8g want %.8g", l3->data[0],
              0.5 * (rows + cols));
    xa_tensor_release(ta);
    xa_tensor_release(tb);
    xa_tensor_release(t2);
}

Test(objectives, ntxent_matches_reference_on_random_inputs) {
    xa_tensor *a = rand_tensor(ctx, 6, 5, 0, 0), *b = rand_tensor(ctx, 6, 5, 0, 0);
    for (int k = 0; k < 3; k++) {
        float tau[] = {1.0f, 0.5f, 0.07f};
        xa_tensor *l = xa_ntxent_loss(ctx, a, b, tau[k]);
        cr_assert(l, "%s", xa_errmsg(ctx));
        double want = ntxent_ref(a->data, b->data, 6, 5, tau[k]);
        cr_expect(fabs(l->data[0] - want) < 1e-5 * fmax(1.0, fabs(want)),
                  "tau %g: got %.8g want "
                  "%.8g",
                  (double)tau[k], l->data[0], want);
    }
    xa_tensor_release(a);
    xa_tensor_release(b);
}

static double ntxent_ref_in(const xa_tensor *const *in, void *u) {
    return ntxent_ref(in[0]->data, in[1]->data, (int)in[0]->shape[0], (int)in[0]->shape[1],
                      *(float *)u);
}

Test(objectives, ntxent_gradient_matches_reference_derivative) {
    xa_tensor *in[2] = {rand_tensor(ctx, 5, 4, 0, 0), rand_tensor(ctx, 5, 4, 0, 0)};
    in[0]->flags |= XA_TENSOR_TRAINABLE, in[1]->flags |= XA_TENSOR_TRAINABLE;
    float tau = 0.5f;
    expect_grad_matches_ref(xa_ntxent_loss(ctx, in[0], in[1], tau), in, 2, ntxent_ref_in, &tau);
    xa_tensor_release(in[0]);
    xa_tensor_release(in[1]);
}

static xa_tensor *f_ntxent(xa_ctx *c, xa_tensor **in, void *u) {
    return xa_scale(c, xa_ntxent_loss(c, in[0], in[1], *(float *)u), 10.0f);
}

Test(objectives, ntxent_passes_gradcheck_and_refuses_bad_arguments) {
    xa_tensor *in[2] = {rand_tensor(ctx, 4, 3, 0, 0), rand_tensor(ctx, 4, 3, 0, 0)};
    float tau = 0.5f;
    gc_report rep;
    cr_expect(gradcheck(ctx, "ntxent", f_ntxent, in, 2, &tau, &rep), "%s (max abs err %.3g)",
              rep.first_failure, rep.max_abs_err);
    cr_expect_gt(rep.checked, 0);
    cr_expect_null(xa_ntxent_loss(ctx, in[0], in[1], 0.0f));
    cr_expect_eq(xa_errcode(ctx), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(ctx), "temperature"), "%s", xa_errmsg(ctx));
    xa_tensor *c = rand_tensor(ctx, 3, 3, 0, 0);
    cr_expect_null(xa_ntxent_loss(ctx, in[0], c, 1.0f));
    cr_expect_eq(xa_errcode(ctx), XA_ESHAPE);
    xa_tensor_release(in[0]);
    xa_tensor_release(in[1]);
    xa_tensor_release(c);
}

// --- MLM masking ---------------------------------------------------------------------------------

enum { MB = 1100, MT = 128, VOCAB = 1000, PAD = 0, CLS = 1, SEP = 2, MASK = 3, IGN = -100 };

typedef struct {
    int32_t ids[MB * MT], orig[MB * MT], labels[MB * MT];
    float mask[MB * MT];
    uint8_t special[MB * MT];
} mlm_batch;

// Rows of length 64..128: [CLS] tokens [SEP] then padding; token ids 5..VOCAB-1 from a test LCG.
static void make_batch(mlm_batch *m) {
    uint64_t s = 42;
    for (int b = 0; b < MB; b++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int len = 64 + (int)((s >> 33) % 65);
        for (int t = 0; t < MT; t++) {
            int i = b * MT + t;
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            m->ids[i] = t == 0         ? CLS
                        : t == len - 1 ? SEP
                        : t < len      ? 5 + (int32_t)((s >> 33) % (VOCAB - 5))
                                       : PAD;
            m->mask[i] = t < len ? 1.0f : 0.0f;
            m->special[i] = t == 0 || t == len - 1;
        }
    }
    memcpy(m->orig, m->ids, sizeof m->ids);
}

Test(mlm_mask, chooses_15_percent_split_80_10_10_and_never_specials_or_padding) {
    static mlm_batch m;
    make_batch(&m);
    xa_mlm_mask(ctx, m.ids, m.labels, m.mask, m.special, MB, MT, MASK, VOCAB, 0.15f, IGN);
    int64_t maskable = 0, chosen = 0, masked = 0, random = 0, kept = 0;
    for (int i = 0; i < MB * MT; i++) {
        bool can = m.mask[i] == 1.0f && !m.special[i];
        maskable += can;
        if (!can) {
            cr_assert_eq(m.labels[i], IGN, "special/padding position %d chosen", i);
            cr_assert_eq(m.ids[i], m.orig[i], "special/padding position %d rewritten", i);
            continue;
        }
        if (m.labels[i] == IGN) {
            cr_assert_eq(m.ids[i], m.orig[i], "position %d rewritten but not chosen", i);
            continue;
        }
        cr_assert_eq(m.labels[i], m.orig[i], "label at %d is not the original id", i);
        chosen++;
        if (m.ids[i] == MASK) {
            masked++;
        } else if (m.ids[i] == m.orig[i]) {
            kept++;
        } else {
            random++;
            cr_assert(m.ids[i] >= 0 && m.ids[i] < VOCAB, "random id %d out of range", m.ids[i]);
            cr_assert(m.ids[i] != PAD && m.ids[i] != CLS && m.ids[i] != SEP,
                      "random id %d is special", m.ids[i]);
        }
    }
    cr_assert_gt(maskable, 100000, "only %lld maskable positions", (long long)maskable);
    double p = (double)chosen / maskable;
    cr_expect(fabs(p - 0.15) < 0.01, "chosen %.4f", p);
    cr_expect(fabs((double)masked / chosen - 0.8) < 0.02, "[MASK] %.4f", (double)masked / chosen);
    cr_expect(fabs((double)random / chosen - 0.1) < 0.02, "random %.4f", (double)random / chosen);
    cr_expect(fabs((double)kept / chosen - 0.1) < 0.02, "kept %.4f", (double)kept / chosen);
}

Test(mlm_mask, is_reproducible_from_the_seed) {
    static mlm_batch a, b;
    make_batch(&a);
    make_batch(&b);
    xa_ctx_seed(ctx, 7);
    xa_mlm_mask(ctx, a.ids, a.labels, a.mask, a.special, MB, MT, MASK, VOCAB, 0.15f, IGN);
    xa_ctx_seed(ctx, 7);
    xa_mlm_mask(ctx, b.ids, b.labels, b.mask, b.special, MB, MT, MASK, VOCAB, 0.15f, IGN);
    cr_expect(!memcmp(a.ids, b.ids, sizeof a.ids) && !memcmp(a.labels, b.labels, sizeof a.labels));
    make_batch(&b);
    xa_ctx_seed(ctx, 8);
    xa_mlm_mask(ctx, b.ids, b.labels, b.mask, b.special, MB, MT, MASK, VOCAB, 0.15f, IGN);
    cr_expect(memcmp(a.labels, b.labels, sizeof a.labels) != 0, "another seed, same masks");
}

Test(mlm_mask, chooses_at_least_one_position_in_every_row_with_a_maskable_token) {
    // probability 0: only the "at least one" rule picks; row 2 has nothing maskable.
    int32_t ids[3 * 5] = {CLS, 10, 11, SEP, PAD, CLS, 12, SEP, PAD, PAD, CLS, SEP, PAD, PAD, PAD};
    int32_t orig[15], labels[15];
    float mask[15] = {1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0};
    uint8_t special[15] = {1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0};
    int seen[2] = {0, 0};
    for (int round = 0; round < 200; round++) {
        memcpy(orig, ids, sizeof ids);
        xa_mlm_mask(ctx, orig, labels, mask, special, 3, 5, MASK, VOCAB, 0.0f, IGN);
        int per_row[3] = {0, 0, 0};
        for (int i = 0; i < 15; i++)
            if (labels[i] != IGN) {
                per_row[i / 5]++;
                cr_assert_eq(labels[i], ids[i]);
                cr_assert(!special[i] && mask[i] == 1.0f, "position %d", i);
                if (i / 5 == 0)
                    seen[i - 1]++;
            }
        cr_assert_eq(per_row[0], 1);
        cr_assert_eq(per_row[1], 1);
        cr_assert_eq(per_row[2], 0);
    }
    cr_expect(seen[0] > 60 && seen[1] > 60, "not uniform: %d / %d", seen[0], seen[1]);
}

// --- heads
// ----------------------------------------------------------------------------------------

static const xa_head_opts classify3 = {.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_CLS, .classes = 3};

Test(heads, have_the_documented_shapes_and_parameters) {
    fixture f;
    fixture_open(&f, false);
    xa_head *hc, *hr, *hch;
    cr_assert_eq(xa_head_new(f.net, "cls", &classify3, &hc), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_head_opts r = {.kind = XA_HEAD_REGRESS, .pool = XA_POOL_MEAN};
    cr_assert_eq(xa_head_new(f.net, "reg", &r, &hr), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_head_opts ch = {.kind = XA_HEAD_CHOICE, .pool = XA_POOL_POOLER, .choices = 2};
    cr_assert_eq(xa_head_new(f.net, "mc", &ch, &hch), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_params *ps = xa_net_params(f.net);
    xa_tensor *w = xa_params_find(ps, "head.cls.weight"), *b = xa_params_find(ps, "head.cls.bias");
    cr_assert(w && b);
    cr_expect(w->shape[0] == 3 && w->shape[1] == 32 && b->shape[0] == 3);
    double var = 0;
    for (int64_t i = 0; i < w->numel; i++)
        var += (double)w->data[i] * w->data[i];
    cr_expect(sqrt(var / w->numel) > 0.005 && sqrt(var / w->numel) < 0.05, "std %g",
              sqrt(var / w->numel));
    for (int64_t i = 0; i < b->numel; i++)
        cr_expect_eq(b->data[i], 0.0f);
    cr_expect(xa_params_find(ps, "head.reg.weight")->shape[0] == 1);
    cr_expect_eq(xa_head_options(hch)->choices, 2);

    xa_net_out out;
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_tensor *lc = xa_head_forward(f.ctx, hc, &out, f.mask, 2, 7);
    xa_tensor *lr = xa_head_forward(f.ctx, hr, &out, f.mask, 2, 7);
    xa_tensor *lm = xa_head_forward(f.ctx, hch, &out, f.mask, 2, 7);
    cr_assert(lc && lr && lm, "%s", xa_errmsg(f.ctx));
    cr_expect(lc->ndim == 2 && lc->shape[0] == 2 && lc->shape[1] == 3);
    cr_expect(lr->ndim == 2 && lr->shape[0] == 2 && lr->shape[1] == 1);
    cr_expect(lm->ndim == 2 && lm->shape[0] == 1 && lm->shape[1] == 2);
    // 2 rows are not a whole number of 3-choice examples
    xa_head *h3;
    ch.choices = 3;
    cr_assert_eq(xa_head_new(f.net, "mc3", &ch, &h3), XA_OK);
    cr_expect_null(xa_head_forward(f.ctx, h3, &out, f.mask, 2, 7));
    cr_expect_eq(xa_errcode(f.ctx), XA_ESHAPE);
    cr_expect(strstr(xa_errmsg(f.ctx), "3 choices"), "%s", xa_errmsg(f.ctx));
    // B, T disagreeing with the hidden state
    cr_expect_null(xa_head_forward(f.ctx, hc, &out, f.mask, 2, 6));
    cr_expect_eq(xa_errcode(f.ctx), XA_ESHAPE);
    xa_head_free(hc);
    xa_head_free(hr);
    xa_head_free(hch);
    xa_head_free(h3);
    fixture_close(&f);
}

Test(heads, refuse_bad_options_with_a_reason) {
    fixture f;
    fixture_open(&f, false);
    xa_head *h = NULL;
    xa_head_opts o = {.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_CLS, .classes = 1};
    cr_expect_eq(xa_head_new(f.net, "x", &o, &h), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "classes >= 2"), "%s", xa_errmsg(f.ctx));
    o = (xa_head_opts){.kind = XA_HEAD_CHOICE, .choices = 1};
    cr_expect_eq(xa_head_new(f.net, "x", &o, &h), XA_EINVAL);
    o = (xa_head_opts){.kind = XA_HEAD_CLASSIFY, .classes = 2, .dropout = 1.0f};
    cr_expect_eq(xa_head_new(f.net, "x", &o, &h), XA_EINVAL);
    o = (xa_head_opts){.kind = XA_HEAD_MLM}; // bert_tiny is a BertModel without cls.predictions
    cr_expect_eq(xa_head_new(f.net, "x", &o, &h), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "masked-LM"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_head_new(f.net, "bad.name", &classify3, &h), XA_EINVAL);
    cr_assert_eq(xa_head_new(f.net, "x", &classify3, &h), XA_OK);
    xa_head *dup = NULL;
    cr_expect_eq(xa_head_new(f.net, "x", &classify3, &dup), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "already exists"), "%s", xa_errmsg(f.ctx));
    cr_expect_null(dup);
    cr_expect(xa_params_find(xa_net_params(f.net), "head.x.weight"), "the first head survives");
    xa_head_free(h);
    fixture_close(&f);

    // RoBERTa without a pooler: pooling 'pooler' is refused; its MLM head is accepted
    xa_ctx *c = xa_ctx_new();
    xa_model *rob;
    cr_assert_eq(xa_model_load(c, src_path("tests/golden/fixtures/roberta_tiny"), &rob), XA_OK);
    xa_net *net = xa_net_new(c, rob, NULL, NULL);
    o = (xa_head_opts){.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_POOLER, .classes = 2};
    cr_expect_eq(xa_head_new(net, "p", &o, &h), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(c), "pooler"), "%s", xa_errmsg(c));
    o = (xa_head_opts){.kind = XA_HEAD_MLM};
    cr_expect_eq(xa_head_new(net, "mlm", &o, &h), XA_OK, "%s", xa_errmsg(c));
    xa_head_free(h);
    xa_net_free(net);
    xa_model_free(rob);
    xa_ctx_free(c);
}

Test(heads, mlm_head_gives_the_checkpoints_vocabulary_logits) {
    xa_ctx *c = xa_ctx_new();
    xa_model *m;
    cr_assert_eq(xa_model_load(c, src_path("tests/golden/fixtures/bert_prefixed_mlm"), &m), XA_OK,
                 "%s", xa_errmsg(c));
    xa_net *net = xa_net_new(c, m, NULL, NULL);
    xa_head *h;
    xa_head_opts o = {.kind = XA_HEAD_MLM};
    cr_assert_eq(xa_head_new(net, "mlm", &o, &h), XA_OK, "%s", xa_errmsg(c));
    int32_t ids[6] = {2, 5, 9, 14, 3, 0};
    xa_net_batch b = {.text = {.ids = ids, .B = 2, .T = 3}};
    xa_net_out out;
    cr_assert_eq(xa_net_forward(c, net, &b, NULL, &out), XA_OK, "%s", xa_errmsg(c));
    xa_tensor *logits = xa_head_forward(c, h, &out, NULL, 2, 3);
    cr_assert(logits, "%s", xa_errmsg(c));
    int64_t V = xa_model_config_of(m)->text.vocab;
    cr_expect(logits->ndim == 3 && logits->shape[0] == 2 && logits->shape[1] == 3 &&
              logits->shape[2] == V);
    xa_tensor *direct = xa_mlm_logits(c, m, out.fused);
    cr_expect(!memcmp(direct->data, logits->data, (size_t)logits->numel * sizeof(float)));
    xa_head_free(h);
    xa_net_free(net);
    xa_model_free(m);
    xa_ctx_free(c);
}

// The pooler read from the checkpoint file and the head computed by hand: tanh(Wp h0 + bp), then
// W x + b. With a fused state different from plm.last, POOLER must pool the fused state.
Test(heads, pooler_head_matches_weights_read_from_the_checkpoint) {
    fixture f;
    fixture_open(&f, false);
    xa_head *h;
    xa_head_opts o = {.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_POOLER, .classes = 2};
    cr_assert_eq(xa_head_new(f.net, "p", &o, &h), XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.5f);
    xa_st_file *st;
    cr_assert_eq(
        xa_st_open(f.ctx, src_path("tests/golden/fixtures/bert_tiny/model.safetensors"), &st),
        XA_OK);
    xa_tensor *pw, *pb;
    cr_assert_eq(xa_st_tensor(f.ctx, st, "pooler.dense.weight", &pw), XA_OK);
    cr_assert_eq(xa_st_tensor(f.ctx, st, "pooler.dense.bias", &pb), XA_OK);
    xa_params *ps = xa_net_params(f.net);
    const float *W = xa_params_find(ps, "head.p.weight")->data;
    const float *bias = xa_params_find(ps, "head.p.bias")->data;
    xa_net_out out;
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) // as if a side network had changed the last hidden state
            out.fused = xa_scale(f.ctx, out.plm.last, -0.7f);
        xa_tensor *logits = xa_head_forward(f.ctx, h, &out, f.mask, 2, 7);
        cr_assert(logits, "%s", xa_errmsg(f.ctx));
        for (int b = 0; b < 2; b++) {
            const float *h0 = out.fused->data + b * 7 * 32;
            double pooled[32];
            for (int i = 0; i < 32; i++) {
                double s = pb->data[i];
                for (int j = 0; j < 32; j++)
                    s += (double)pw->data[i * 32 + j] * h0[j];
                pooled[i] = tanh(s);
            }
            for (int k = 0; k < 2; k++) {
                double s = bias[k];
                for (int j = 0; j < 32; j++)
                    s += W[k * 32 + j] * pooled[j];
                cr_expect(fabs(logits->data[b * 2 + k] - s) < 1e-4,
                          "pass %d row %d class %d: %g "
                          "vs %g",
                          pass, b, k, logits->data[b * 2 + k], s);
            }
        }
    }
    xa_tensor_release(pw);
    xa_tensor_release(pb);
    xa_st_close(st);
    xa_head_free(h);
    fixture_close(&f);
}

typedef struct {
    fixture *f;
    xa_head *h;
    int32_t targets[2];
} head_check;

static xa_tensor *f_head_ce(xa_ctx *c, xa_tensor **in, void *u) {
    (void)in;
    head_check *hc = u;
    xa_net_out out;
    if (xa_net_forward(c, hc->f->net, &hc->f->batch, NULL, &out) != XA_OK)
        return NULL;
    xa_tensor *logits = xa_head_forward(c, hc->h, &out, hc->f->mask, 2, 7);
    return xa_scale(c, xa_cross_entropy(c, logits, hc->targets, -100), 10.0f);
}

Test(heads, classification_head_passes_gradcheck_for_every_pooling) {
    fixture f;
    fixture_open(&f, false);
    xa_pool pools[3] = {XA_POOL_CLS, XA_POOL_POOLER, XA_POOL_MEAN};
    const char *names[3] = {"cls", "pooler", "mean"};
    for (int p = 0; p < 3; p++) {
        xa_head *h;
        xa_head_opts o = {.kind = XA_HEAD_CLASSIFY,
                          .pool = pools[p],
                          .classes = 3,
                          .dropout = p == 2 ? 0.2f : 0.0f};
        cr_assert_eq(xa_head_new(f.net, names[p], &o, &h), XA_OK, "%s", xa_errmsg(f.ctx));
        char wn[64], bn[64];
        snprintf(wn, sizeof wn, "head.%s.weight", names[p]);
        snprintf(bn, sizeof bn, "head.%s.bias", names[p]);
        xa_params *ps = xa_net_params(f.net);
        xa_tensor *in[2] = {xa_params_find(ps, wn), xa_params_find(ps, bn)};
        fill_normal(f.ctx, in[0], 0.5f);
        fill_normal(f.ctx, in[1], 0.5f);
        head_check hc = {.f = &f, .h = h, .targets = {2, 0}};
        bool was = xa_set_training(f.ctx, p == 2); // mean pooling also with dropout on
        gc_report rep;
        cr_expect(gradcheck(f.ctx, "default", f_head_ce, in, 2, &hc, &rep), "%s: %s", names[p],
                  rep.first_failure);
        cr_expect_gt(rep.checked, 0);
        xa_set_training(f.ctx, was);
        xa_head_free(h);
    }
    fixture_close(&f);
}

Test(heads, dropout_is_active_only_in_training_mode) {
    fixture f;
    fixture_open(&f, false);
    xa_head *h;
    xa_head_opts o = {.kind = XA_HEAD_CLASSIFY, .pool = XA_POOL_CLS, .classes = 3, .dropout = 0.5f};
    cr_assert_eq(xa_head_new(f.net, "d", &o, &h), XA_OK);
    xa_net_out out;
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &out), XA_OK);
    xa_tensor *a = xa_head_forward(f.ctx, h, &out, f.mask, 2, 7);
    xa_tensor *b = xa_head_forward(f.ctx, h, &out, f.mask, 2, 7);
    cr_assert(a && b);
    cr_expect(!memcmp(a->data, b->data, 6 * sizeof(float)), "evaluation must be deterministic");
    xa_set_training(f.ctx, true);
    xa_tensor *c = xa_head_forward(f.ctx, h, &out, f.mask, 2, 7);
    cr_assert(c);
    cr_expect(memcmp(a->data, c->data, 6 * sizeof(float)) != 0, "dropout had no effect");
    xa_head_free(h);
    fixture_close(&f);
}

Test(heads, parameters_are_saved_and_loaded_with_the_network) {
    fixture f;
    fixture_open(&f, false);
    xa_head *h;
    cr_assert_eq(xa_head_new(f.net, "cls", &classify3, &h), XA_OK);
    fixture_randomize(&f, 1.0f);
    char path[4200], *tmp = strdup(make_tmpdir());
    snprintf(path, sizeof path, "%s/heads.safetensors", tmp);
    cr_assert_eq(xa_net_save(f.net, path), XA_OK, "%s", xa_errmsg(f.ctx));

    xa_net *net2 = xa_net_new(f.ctx, f.plm, NULL, f.reg);
    xa_head *h2, *extra;
    cr_assert_eq(xa_head_new(net2, "cls", &classify3, &h2), XA_OK);
    xa_head_opts r = {.kind = XA_HEAD_REGRESS, .pool = XA_POOL_CLS};
    cr_assert_eq(xa_head_new(net2, "new", &r, &extra), XA_OK); // absent from the file: kept
    xa_params *p1 = xa_net_params(f.net), *p2 = xa_net_params(net2);
    xa_tensor *w1 = xa_params_find(p1, "head.cls.weight"),
              *w2 = xa_params_find(p2, "head.cls.weight");
    cr_expect(memcmp(w1->data, w2->data, (size_t)w1->numel * sizeof(float)) != 0);
    cr_assert_eq(xa_net_load(net2, path, false), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_expect(!memcmp(w1->data, w2->data, (size_t)w1->numel * sizeof(float)));
    xa_tensor *b1 = xa_params_find(p1, "head.cls.bias"), *b2 = xa_params_find(p2, "head.cls.bias");
    cr_expect(!memcmp(b1->data, b2->data, (size_t)b1->numel * sizeof(float)));
    xa_net_out o1, o2;
    cr_assert_eq(xa_net_forward(f.ctx, f.net, &f.batch, NULL, &o1), XA_OK);
    cr_assert_eq(xa_net_forward(f.ctx, net2, &f.batch, NULL, &o2), XA_OK);
    xa_tensor *l1 = xa_head_forward(f.ctx, h, &o1, f.mask, 2, 7);
    xa_tensor *l2 = xa_head_forward(f.ctx, h2, &o2, f.mask, 2, 7);
    cr_assert(l1 && l2);
    cr_expect(!memcmp(l1->data, l2->data, 6 * sizeof(float)));
    xa_head_free(h);
    xa_head_free(h2);
    xa_head_free(extra);
    xa_net_free(net2);
    fixture_close(&f);
    remove_tree(tmp);
    free(tmp);
}

// --- metrics -------------------------------------------------------------------------------------

#define NEAR(got, want)                                                                            \
    cr_expect(fabs((got) - (want)) < 1e-12, "got %.15g want %.15g", (got), (want))

Test(metrics, accuracy_and_f1_match_hand_computed_values) {
    int32_t pred[] = {1, 0, 1, 1}, gold[] = {1, 1, 1, 0};
    NEAR(xa_metric_accuracy(pred, gold, 4), 0.5);
    NEAR(xa_metric_f1(pred, gold, 4, 1), 4.0 / 6.0); // tp 2, fp 1, fn 1
    NEAR(xa_metric_f1(pred, gold, 4, 0), 0.0);       // tp 0, fp 1, fn 1
    int32_t none[] = {0, 0};
    NEAR(xa_metric_f1(none, none, 2, 1), 0.0); // no positive anywhere
    NEAR(xa_metric_accuracy(pred, gold, 0), 0.0);
}

Test(metrics, matthews_matches_hand_computed_values_and_the_degenerate_case) {
    // tp 2, tn 2, fp 1, fn 1: (4 - 1) / sqrt(3 * 3 * 3 * 3) = 1/3
    int32_t pred[] = {1, 0, 1, 1, 0, 0}, gold[] = {1, 0, 0, 1, 0, 1};
    NEAR(xa_metric_matthews(pred, gold, 6), 1.0 / 3.0);
    // the same with other label values
    int32_t p2[] = {7, -1, 7, 7, -1, -1}, g2[] = {7, -1, -1, 7, -1, 7};
    NEAR(xa_metric_matthews(p2, g2, 6), 1.0 / 3.0);
    NEAR(xa_metric_matthews(gold, gold, 6), 1.0);
    int32_t inv[] = {0, 1, 1, 0, 1, 0};
    NEAR(xa_metric_matthews(inv, gold, 6), -1.0);
    // a constant prediction: the denominator is 0 and sklearn returns 0
    int32_t ones[] = {1, 1, 1, 1, 1, 1};
    NEAR(xa_metric_matthews(ones, gold, 6), 0.0);
    NEAR(xa_metric_matthews(gold, ones, 6), 0.0);
    // three classes: c = 5, s = 6, t = (2,2,2), p = (2,1,3): (30 - 12) / sqrt((36-14)(36-12))
    int32_t g3[] = {0, 0, 1, 1, 2, 2}, p3[] = {0, 0, 1, 2, 2, 2};
    NEAR(xa_metric_matthews(p3, g3, 6), 18.0 / sqrt(22.0 * 24.0));
}

Test(metrics, pearson_and_spearman_match_hand_computed_values) {
    double x[] = {1, 2, 3, 4}, y[] = {2, 4, 5, 9};
    NEAR(xa_metric_pearson(x, y, 4), 11.0 / sqrt(130.0)); // sxy 11, sxx 5, syy 26
    NEAR(xa_metric_spearman(x, y, 4), 1.0);
    // ties: ranks x (1, 2.5, 2.5, 4), y (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    double xt[] = {1, 2, 2, 3}, yt[] = {10, 30, 20, 40};
    NEAR(xa_metric_spearman(xt, yt, 4), 4.5 / sqrt(22.5));
    // ties on both sides: ranks (1.5, 1.5, 3, 4) and (1, 2.5, 2.5, 4)
    double xa[] = {5, 5, 6, 7}, ya[] = {1, 2, 2, 3};
    // centred: (-1, -1, .5, 1.5), (-1.5, 0, 0, 1.5): sxy 3.75, sxx 4.5, syy 4.5
    NEAR(xa_metric_spearman(xa, ya, 4), 3.75 / 4.5);
    double c[] = {3, 3, 3, 3};
    NEAR(xa_metric_pearson(c, y, 4), 0.0); // zero variance
    NEAR(xa_metric_spearman(y, c, 4), 0.0);
    double neg[] = {4, 3, 2, 1};
    NEAR(xa_metric_pearson(x, neg, 4), -1.0);
    // r does not depend on the scale: squares of 1e-200 underflow, of 1e200 overflow
    double tiny[] = {1e-200, 2e-200, 3e-200, 4e-200}, huge[] = {1e200, 2e200, 3e200, 4e200};
    NEAR(xa_metric_pearson(tiny, x, 4), 1.0);
    NEAR(xa_metric_pearson(huge, x, 4), 1.0);
    // NaN in, NaN out (as scipy), not 0 or an arbitrary rank correlation
    double nan[] = {1, NAN, 3, 4};
    cr_expect(isnan(xa_metric_pearson(nan, y, 4)));
    cr_expect(isnan(xa_metric_spearman(nan, y, 4)));
    cr_expect(isnan(xa_metric_spearman(y, nan, 4)));
}

// --- CLIP feature cache
// ----------------------------------------------------------------------------

// A random clip-tiny checkpoint (real vocabulary size) with HF's CLIP vocab.json/merges.txt.
static char *clip_checkpoint(void) {
    const char *gz = shared_path("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz");
    if (!gz)
        cr_skip_test("../shared/tokenizers/clip is absent: the CLIP vocabulary is needed");
    char *dir = strdup(make_tmpdir());
    xa_random_opts o = {.seed = 11};
    cr_assert_eq(xa_model_write_random(ctx, xa_model_preset("clip-tiny"), dir, &o), XA_OK, "%s",
                 xa_errmsg(ctx));
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' --source '%s'", src_path("tools/clip-vocab.py"),
             dir, gz);
    int rc = system(cmd);
    if (rc != 0)
        cr_skip_test("python3 tools/clip-vocab.py failed (status %d): python3 is needed", rc);
    return dir;
}

// clip_checkpoint loaded: *dir gets the directory; clip_free frees the model and removes it.
static xa_model *clip_load(char **dir) {
    *dir = clip_checkpoint();
    xa_model *vlm;
    cr_assert_eq(xa_model_load(ctx, *dir, &vlm), XA_OK, "%s", xa_errmsg(ctx));
    return vlm;
}

static void clip_free(xa_model *vlm, char *dir) {
    xa_model_free(vlm);
    remove_tree(dir);
    free(dir);
}

static const char *const flickr[] = {
    "1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg",
    "1003163366_44323f5815.jpg", "1007129816_e794419615.jpg",
};

// n shared Flickr images (static paths), or skip.
static const char **images(int n) {
    static char paths[5][4096];
    static const char *p[5];
    for (int i = 0; i < n; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "data/flickr8k_1k/images/%s", flickr[i]);
        const char *s = shared_path(rel);
        if (!s)
            cr_skip_test("../shared/data/flickr8k_1k is absent");
        snprintf(paths[i], sizeof paths[i], "%s", s);
        p[i] = paths[i];
    }
    return p;
}

static void stats(xa_vlm_cache *c, int64_t comp, int64_t mem, int64_t disk) {
    int64_t a, b, d;
    xa_vlm_cache_stats(c, &a, &b, &d);
    cr_expect(a == comp && b == mem && d == disk,
              "stats computed %lld memory %lld disk %lld, expected %lld %lld %lld", (long long)a,
              (long long)b, (long long)d, (long long)comp, (long long)mem, (long long)disk);
}

static float max_diff(const float *a, const float *b, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

Test(vlm_cache, computes_images_once_and_matches_the_vision_tower) {
    const char **img = images(3);
    char *dir;
    xa_model *vlm = clip_load(&dir);
    xa_vlm_cache *c;
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, NULL, &c), XA_OK, "%s", xa_errmsg(ctx));
    xa_vlm_feats f = {0};
    cr_assert_eq(xa_vlm_images(ctx, c, img, 3, 1, &f), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 3, 0, 0);
    // clip-tiny: 224 / 32 = 7 x 7 patches + class token, width 64, projection 64
    cr_assert(f.image_tokens && f.image_pooled && f.image_token_mask);
    cr_expect(f.image_tokens->ndim == 3 && f.image_tokens->shape[0] == 3 &&
              f.image_tokens->shape[1] == 50 && f.image_tokens->shape[2] == 64);
    cr_expect(f.image_pooled->shape[0] == 3 && f.image_pooled->shape[1] == 1 &&
              f.image_pooled->shape[2] == 64);
    for (int i = 0; i < 3 * 50; i++)
        cr_assert_eq(f.image_token_mask[i], 1.0f);
    cr_expect_null(f.text_tokens, "image features leave the text fields alone");
    // the same as running the vision tower directly on the preprocessed image
    float *px = malloc(3 * 224 * 224 * sizeof(float));
    cr_assert_eq(xa_clip_preprocess_file(ctx, img[1], 224, px), XA_OK);
    xa_vision_out vo;
    cr_assert_eq(xa_vision_forward(ctx, vlm, px, 1, &vo), XA_OK);
    cr_expect(max_diff(vo.last->data, f.image_tokens->data + 50 * 64, 50 * 64) < 1e-5f);
    cr_expect(max_diff(vo.embeds->data, f.image_pooled->data + 64, 64) < 1e-5f);
    free(px);
    // again, now as B = 2 examples with k = 2 images each (one repeated): all from memory
    const char *pairs[4] = {img[0], img[1], img[2], img[0]};
    xa_vlm_feats g = {0};
    cr_assert_eq(xa_vlm_images(ctx, c, pairs, 2, 2, &g), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 3, 4, 0);
    cr_expect(g.image_tokens->shape[0] == 2 && g.image_tokens->shape[1] == 100);
    cr_expect(g.image_pooled->shape[0] == 2 && g.image_pooled->shape[1] == 2);
    int order[4] = {0, 1, 2, 0};
    for (int i = 0; i < 4; i++) {
        cr_expect(!memcmp(g.image_tokens->data + i * 50 * 64,
                          f.image_tokens->data + order[i] * 50 * 64, 50 * 64 * sizeof(float)));
        cr_expect(!memcmp(g.image_pooled->data + i * 64, f.image_pooled->data + order[i] * 64,
                          64 * sizeof(float)));
    }
    // a missing image: a clear error, and the cache still works
    const char *missing[1] = {"/nonexistent/x.jpg"};
    cr_expect_eq(xa_vlm_images(ctx, c, missing, 1, 1, &g), XA_ENOTFOUND);
    cr_expect(strstr(xa_errmsg(ctx), "/nonexistent/x.jpg"), "%s", xa_errmsg(ctx));
    cr_expect_eq(xa_vlm_images(ctx, c, img, 1, 1, &g), XA_OK);
    stats(c, 3, 5, 0);
    xa_vlm_cache_free(c);
    clip_free(vlm, dir);
}

Test(vlm_cache, a_new_cache_serves_the_disk_copy_bit_identically) {
    const char **img = images(3);
    char *dir;
    xa_model *vlm = clip_load(&dir);
    char *cache_dir = strdup(make_tmpdir());
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/nested/features", cache_dir); // created on demand
    xa_vlm_cache *c1, *c2;
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, sub, &c1), XA_OK, "%s", xa_errmsg(ctx));
    // the text is the key, stored in the file's JSON header: quotes, controls and UTF-8 survive
    const char *texts[2] = {"a dog runs on the grass", "\"two\" chil\\dren\tin a\nc\u00e4f\u00e9"};
    xa_vlm_feats a = {0}, b = {0};
    cr_assert_eq(xa_vlm_images(ctx, c1, img, 3, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_texts(ctx, c1, texts, 2, &a), XA_OK, "%s", xa_errmsg(ctx));
    stats(c1, 5, 0, 0);
    xa_vlm_cache_free(c1);

    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, sub, &c2), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_images(ctx, c2, img, 3, 1, &b), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_texts(ctx, c2, texts, 2, &b), XA_OK, "%s", xa_errmsg(ctx));
    stats(c2, 0, 0, 5);
    xa_tensor *pa[4] = {a.image_tokens, a.image_pooled, a.text_tokens, a.text_pooled};
    xa_tensor *pb[4] = {b.image_tokens, b.image_pooled, b.text_tokens, b.text_pooled};
    for (int i = 0; i < 4; i++) {
        cr_assert(xa_shape_equal(pa[i], pb[i]), "tensor %d changed shape", i);
        cr_expect(!memcmp(pa[i]->data, pb[i]->data, (size_t)pa[i]->numel * sizeof(float)),
                  "tensor %d differs", i);
    }
    cr_expect(!memcmp(a.text_token_mask, b.text_token_mask,
                      (size_t)(a.text_tokens->shape[0] * a.text_tokens->shape[1]) * sizeof(float)));
    // a second request in the same cache: memory
    cr_assert_eq(xa_vlm_images(ctx, c2, img, 3, 1, &b), XA_OK);
    stats(c2, 0, 3, 5);
    xa_vlm_cache_free(c2);
    remove_tree(cache_dir);
    clip_free(vlm, dir);
    free(cache_dir);
}

// Every cache file in `dir` (full paths, NULL-terminated; caller frees).
static char **cache_files(const char *dir) {
    char **out = calloc(64, sizeof *out);
    DIR *d = opendir(dir);
    cr_assert(d && out);
    int n = 0;
    for (struct dirent *de; (de = readdir(d)) && n < 63;)
        if (strstr(de->d_name, ".safetensors")) {
            out[n] = malloc(strlen(dir) + strlen(de->d_name) + 2);
            sprintf(out[n++], "%s/%s", dir, de->d_name);
        }
    closedir(d);
    return out;
}

// A disk cache serves only what it can vouch for: a flipped byte in a file's values fails its
// checksum and the input is computed again; a VLM whose config or tokenizer differs (same
// weights) never reads another's files.
Test(vlm_cache, damaged_files_and_other_configs_or_tokenizers_miss_the_disk_cache) {
    const char **img = images(2);
    char *dir = clip_checkpoint();
    char *cache_dir = strdup(make_tmpdir());
    xa_model *vlm;
    cr_assert_eq(xa_model_load(ctx, dir, &vlm), XA_OK, "%s", xa_errmsg(ctx));
    xa_vlm_cache *c;
    const char *texts[1] = {"a dog runs on the grass"};
    xa_vlm_feats a = {0};
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, cache_dir, &c), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_images(ctx, c, img, 2, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_texts(ctx, c, texts, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    xa_vlm_cache_free(c);
    char **files = cache_files(cache_dir);
    cr_assert(files[0] && files[1] && files[2] && !files[3], "three cache files");
    for (int i = 0; files[i]; i++) { // the last value's lowest byte: a silent bit flip
        size_t n;
        char *bytes = read_file(files[i], &n);
        bytes[n - 4] ^= 1;
        cr_assert(write_file(files[i], bytes, n));
        free(bytes);
        free(files[i]);
    }
    free(files);
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, cache_dir, &c), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_images(ctx, c, img, 2, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_texts(ctx, c, texts, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 3, 0, 0);
    xa_vlm_cache_free(c);
    xa_model_free(vlm);

    // the same weights with another activation in config.json, then another merges.txt
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *cfg = read_file(path, NULL), *at = strstr(cfg, "\"quick_gelu\"");
    cr_assert(at);
    memcpy(at, "\"gelu\"      ", 12); // same length, other activation
    cr_assert(write_file(path, cfg, strlen(cfg)));
    free(cfg);
    cr_assert_eq(xa_model_load(ctx, dir, &vlm), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, cache_dir, &c), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_images(ctx, c, img, 1, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 1, 0, 0);
    xa_vlm_cache_free(c);
    xa_model_free(vlm);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    size_t n;
    char *merges = read_file(path, &n);
    cr_assert(merges && n > 1000);
    size_t keep = n - 200;
    while (merges[keep - 1] != '\n')
        keep--;
    cr_assert(write_file(path, merges, keep)); // the last merges gone
    free(merges);
    cr_assert_eq(xa_model_load(ctx, dir, &vlm), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, cache_dir, &c), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_vlm_texts(ctx, c, texts, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 1, 0, 0);
    xa_vlm_cache_free(c);
    xa_model_free(vlm);
    remove_tree(dir);
    remove_tree(cache_dir);
    free(dir);
    free(cache_dir);
}

// A cache directory that cannot be written any more (here: removed; a full disk or lost
// permissions alike) does not stop training: the cache goes on in memory and says why.
Test(vlm_cache, a_failing_disk_write_goes_on_in_memory) {
    const char **img = images(2);
    char *dir;
    xa_model *vlm = clip_load(&dir);
    char *cache_dir = strdup(make_tmpdir());
    xa_vlm_cache *c;
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, cache_dir, &c), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_null(xa_vlm_cache_disk_error(c));
    remove_tree(cache_dir);
    xa_vlm_feats a = {0};
    cr_assert_eq(xa_vlm_images(ctx, c, img, 2, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    const char *why = xa_vlm_cache_disk_error(c);
    cr_assert(why && strstr(why, cache_dir) && strstr(why, "memory only"), "%s", why);
    cr_assert_eq(xa_vlm_images(ctx, c, img, 2, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 2, 2, 0);
    xa_vlm_cache_free(c);
    clip_free(vlm, dir);
    free(cache_dir);
}

static void copy_with_mtime(const char *from, const char *to, time_t mtime) {
    size_t n;
    char *data = read_file(from, &n);
    cr_assert(data && write_file(to, data, n), "copying %s", from);
    free(data);
    struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};
    cr_assert_eq(utimensat(AT_FDCWD, to, ts, 0), 0);
}

Test(vlm_cache, recomputes_a_modified_image_file) {
    const char **img = images(2);
    char *dir;
    xa_model *vlm = clip_load(&dir);
    char *work = strdup(make_tmpdir());
    char path[4200], cache_dir[4200];
    snprintf(path, sizeof path, "%s/photo.jpg", work);
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", work);
    copy_with_mtime(img[0], path, 1000000000);
    xa_vlm_cache *c;
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, cache_dir, &c), XA_OK, "%s", xa_errmsg(ctx));
    const char *p[1] = {path};
    xa_vlm_feats a = {0}, b = {0}, ref = {0};
    cr_assert_eq(xa_vlm_images(ctx, c, p, 1, 1, &a), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 1, 0, 0);
    copy_with_mtime(img[1], path, 1000000100); // new content, new mtime, same path
    cr_assert_eq(xa_vlm_images(ctx, c, p, 1, 1, &b), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 2, 0, 0);
    cr_expect(memcmp(a.image_pooled->data, b.image_pooled->data, 64 * sizeof(float)) != 0);
    cr_assert_eq(xa_vlm_images(ctx, c, &img[1], 1, 1, &ref), XA_OK); // the same bytes elsewhere
    stats(c, 2, 1, 0);
    cr_expect(max_diff(ref.image_pooled->data, b.image_pooled->data, 64) < 1e-5f,
              "the modified file's features are not those of its new content");
    // only the mtime changes (same bytes): the same input
    copy_with_mtime(img[1], path, 1000000200);
    cr_assert_eq(xa_vlm_images(ctx, c, p, 1, 1, &b), XA_OK);
    stats(c, 2, 2, 0);
    // other bytes with the same size and the same mtime (cp -p, rsync -a, an unpacked archive):
    // a new input. The JFIF density field is changed, which leaves the pixels as they are.
    size_t n;
    char *bytes = read_file(img[1], &n);
    cr_assert(bytes && n > 20 && (unsigned char)bytes[3] == 0xE0, "a JFIF file");
    bytes[15] ^= 1; // X density, low byte
    cr_assert(write_file(path, bytes, n));
    free(bytes);
    struct timespec ts[2] = {{1000000200, 0}, {1000000200, 0}};
    cr_assert_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
    cr_assert_eq(xa_vlm_images(ctx, c, p, 1, 1, &b), XA_OK);
    stats(c, 3, 2, 0);
    xa_vlm_cache_free(c);
    remove_tree(work);
    clip_free(vlm, dir);
    free(work);
}

Test(vlm_cache, text_features_are_padded_with_a_mask_and_match_the_text_tower) {
    char *dir;
    xa_model *vlm = clip_load(&dir);
    xa_vlm_cache *c;
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, NULL, &c), XA_OK, "%s", xa_errmsg(ctx));
    static char longtext[4000];
    longtext[0] = '\0';
    for (int i = 0; i < 150; i++)
        strcat(longtext, "word ");
    const char *texts[3] = {"a red apple", longtext, "a photo of a cat sitting on a mat"};
    xa_vlm_feats f = {0};
    cr_assert_eq(xa_vlm_texts(ctx, c, texts, 3, &f), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 3, 0, 0);
    xa_tokenizer *tok;
    cr_assert_eq(xa_tokenizer_load_dir(ctx, dir, &tok), XA_OK, "%s", xa_errmsg(ctx));
    int64_t len[3];
    xa_encoding enc = {0};
    for (int i = 0; i < 3; i++) {
        xa_encode_opts eo = {.max_length = 77};
        cr_assert_eq(xa_tokenizer_encode(ctx, tok, texts[i], NULL, &eo, &enc), XA_OK);
        len[i] = enc.len;
    }
    cr_expect_eq(len[1], 77, "the long text is cut to CLIP's 77 tokens");
    cr_expect(f.text_tokens->shape[0] == 3 && f.text_tokens->shape[1] == 77 &&
              f.text_tokens->shape[2] == 64);
    cr_expect(f.text_pooled->shape[0] == 3 && f.text_pooled->shape[1] == 1 &&
              f.text_pooled->shape[2] == 64);
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < 77; t++) {
            cr_assert_eq(f.text_token_mask[i * 77 + t], t < len[i] ? 1.0f : 0.0f);
            if (t >= len[i])
                for (int d = 0; d < 64; d++)
                    cr_assert_eq(f.text_tokens->data[(i * 77 + t) * 64 + d], 0.0f);
        }
    // the third text alone through the text tower
    xa_encode_opts eo = {.max_length = 77};
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, texts[2], NULL, &eo, &enc), XA_OK);
    xa_text_batch tb = {.ids = enc.ids, .B = 1, .T = enc.len};
    xa_text_out to;
    cr_assert_eq(xa_text_forward(ctx, vlm, &tb, NULL, &to), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect(max_diff(to.last->data, f.text_tokens->data + 2 * 77 * 64, enc.len * 64) < 1e-5f);
    cr_expect(max_diff(to.embeds->data, f.text_pooled->data + 2 * 64, 64) < 1e-5f);
    // repeated texts in one request are computed once
    const char *again[3] = {"a red apple", "a new text", "a new text"};
    cr_assert_eq(xa_vlm_texts(ctx, c, again, 3, &f), XA_OK);
    stats(c, 4, 2, 0);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    xa_vlm_cache_free(c);
    clip_free(vlm, dir);
}

Test(vlm_cache, retrieval_returns_the_top_k_of_the_cosine_scores) {
    const char **img = images(4);
    char *dir;
    xa_model *vlm = clip_load(&dir);
    xa_vlm_cache *c;
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, NULL, &c), XA_OK, "%s", xa_errmsg(ctx));
    const char *texts[3] = {"a dog", "people on a street", "a child climbing stairs"};
    int64_t idx[3 * 4];
    cr_assert_eq(xa_vlm_retrieve(ctx, c, img, 4, texts, 3, 4, idx), XA_OK, "%s", xa_errmsg(ctx));
    stats(c, 7, 0, 0);
    // the scores, independently, from the pooled features
    xa_vlm_feats fi = {0}, ft = {0};
    cr_assert_eq(xa_vlm_images(ctx, c, img, 4, 1, &fi), XA_OK);
    cr_assert_eq(xa_vlm_texts(ctx, c, texts, 3, &ft), XA_OK);
    stats(c, 7, 7, 0);
    for (int b = 0; b < 3; b++) {
        double score[4];
        const float *q = ft.text_pooled->data + b * 64;
        for (int j = 0; j < 4; j++) {
            const float *v = fi.image_pooled->data + j * 64;
            double qv = 0, qq = 0, vv = 0;
            for (int d = 0; d < 64; d++)
                qv += (double)q[d] * v[d], qq += (double)q[d] * q[d], vv += (double)v[d] * v[d];
            score[j] = qv / sqrt(qq * vv);
        }
        int seen = 0;
        for (int r = 0; r < 4; r++) {
            int64_t j = idx[b * 4 + r];
            cr_assert(j >= 0 && j < 4);
            cr_expect(!(seen & (1 << j)), "index %lld twice", (long long)j);
            seen |= 1 << j;
            if (r > 0)
                cr_expect(score[idx[b * 4 + r - 1]] >= score[j] - 1e-6, "text %d: rank %d", b, r);
        }
        // k = 1 and k = 2 are prefixes of the full ranking
        int64_t top[2];
        cr_assert_eq(xa_vlm_retrieve(ctx, c, img, 4, &texts[b], 1, 2, top), XA_OK);
        cr_expect(top[0] == idx[b * 4] && top[1] == idx[b * 4 + 1]);
    }
    // a pool with the same image twice: one candidate (the first index), so it cannot take two
    // of the k places; k counts distinct images
    const char *dup[3] = {img[2], img[2], img[3]};
    int64_t d3[3];
    cr_assert_eq(xa_vlm_retrieve(ctx, c, dup, 3, texts, 1, 2, d3), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect((d3[0] == 0 && d3[1] == 2) || (d3[0] == 2 && d3[1] == 0), "got %lld %lld",
              (long long)d3[0], (long long)d3[1]);
    cr_expect_eq(xa_vlm_retrieve(ctx, c, dup, 3, texts, 1, 3, d3), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(ctx), "the pool has 2 distinct images (of 3)"), "%s",
              xa_errmsg(ctx));
    cr_expect_eq(xa_vlm_retrieve(ctx, c, img, 4, texts, 1, 5, d3), XA_EINVAL);
    xa_vlm_cache_free(c);
    clip_free(vlm, dir);
}

Test(vlm_cache, explains_how_to_add_a_missing_tokenizer) {
    xa_model *vlm, *bert;
    cr_assert_eq(xa_model_load(ctx, src_path("tests/golden/fixtures/clip_tiny"), &vlm), XA_OK);
    cr_assert_eq(xa_model_load(ctx, src_path("tests/golden/fixtures/bert_tiny"), &bert), XA_OK);
    xa_vlm_cache *c;
    cr_expect_eq(xa_vlm_cache_new(ctx, bert, NULL, &c), XA_EINVAL);
    cr_assert_eq(xa_vlm_cache_new(ctx, vlm, NULL, &c), XA_OK, "%s", xa_errmsg(ctx));
    // images need no tokenizer (the fixture's vision tower takes 32 x 32)
    const char *img[1] = {src_path("tests/golden/images/synth_rgb.png")};
    xa_vlm_feats f = {0};
    cr_expect_eq(xa_vlm_images(ctx, c, img, 1, 1, &f), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect(f.image_tokens && f.image_tokens->shape[1] == 17 && f.image_tokens->shape[2] == 48);
    const char *texts[1] = {"a cat"};
    cr_expect_eq(xa_vlm_texts(ctx, c, texts, 1, &f), XA_ENOTFOUND);
    cr_expect(strstr(xa_errmsg(ctx), "vocab.json") && strstr(xa_errmsg(ctx), "merges.txt"), "%s",
              xa_errmsg(ctx));
    int64_t idx[1];
    cr_expect_eq(xa_vlm_retrieve(ctx, c, img, 1, texts, 1, 1, idx), XA_ENOTFOUND);
    xa_vlm_cache_free(c);
    xa_model_free(vlm);
    xa_model_free(bert);
}

// `xadapt bench epochs` (the benchmark's cache row) on tiny models: epoch 2 reads every CLIP
// feature and every frozen prefix from the caches; without --data it says what it needs.
Test(vlm_cache, bench_epochs_reads_both_caches_in_epoch_two) {
    const char *data = shared_path("data/flickr8k_1k");
    if (!data)
        cr_skip_test("../shared/data/flickr8k_1k is absent");
    char flickr_dir[4096];
    snprintf(flickr_dir, sizeof flickr_dir, "%s", data);
    char *clip = clip_checkpoint();
    char plm[4096];
    snprintf(plm, sizeof plm, "%s", make_tmpdir());
    xa_random_opts o = {.seed = 3};
    cr_assert_eq(xa_model_write_random(ctx, xa_model_preset("bert-tiny"), plm, &o), XA_OK, "%s",
                 xa_errmsg(ctx));
    const char *args[] = {"--threads", "1",  "bench", "epochs", "--model", plm,  "--vlm",
                          clip,        "--data", flickr_dir, "--batches", "2", "--batch", "2",
                          "--seq",     "16", "--json", NULL};
    run_result r = run_xadapt(args);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    // 3 batches of 2 images and 2 captions computed (the warm-up batch included), epoch 2's 2
    // batches served from memory; the prefix computed for 3 batches and read for 2
    cr_expect(strstr(r.out, "\"clip_computed\":12,\"clip_memory_hits\":8,"), "%s", r.out);
    cr_expect(strstr(r.out, "\"prefix_misses\":3,\"prefix_hits\":2"), "%s", r.out);
    cr_expect(strstr(r.out, "epoch 1 median"), "%s", r.out);
    run_free(&r);
    const char *bad[] = {"bench", "epochs", "--model", plm, "--vlm", clip, NULL};
    r = run_xadapt(bad);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "--data DIR"), "%s", r.err);
    run_free(&r);
    free(clip);
}
