// Training objectives beyond the plain losses of ops_loss.c: BERT's MLM masking of a batch, and
// the two distillation losses VidLanKD uses: Neuron Selectivity Transfer (squared MMD with a
// polynomial kernel) and NT-Xent (symmetric InfoNCE). Each loss is a forward kernel and an
// explicit backward kernel recorded on the tape. Heads are in heads.c.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops_common.h"
#include "xadapt/blas.h"
#include "xadapt/task.h"

// --- MLM masking ---------------------------------------------------------------------------------

// Ids seen at special or padding positions of the batch, and mask_id: never drawn as the random
// replacement (the header promises "not special"; the batch is all the evidence of what is).
typedef struct {
    int32_t *v;
    int64_t n;
} id_set;

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static bool id_set_has(const id_set *s, int32_t id) {
    return s->v && bsearch(&id, s->v, (size_t)s->n, sizeof *s->v, cmp_i32) != NULL;
}

// Draw a random replacement id; keeps the original when no id is allowed after a bounded search.
static int32_t random_id(xa_ctx *ctx, const id_set *excl, int32_t vocab, int32_t orig) {
    for (int tries = 0; tries < 64; tries++) {
        int32_t id = (int32_t)(xa_rng_next(ctx) % (uint64_t)vocab);
        if (!id_set_has(excl, id))
            return id;
    }
    for (int32_t id = 0; id < vocab; id++) // tiny vocabularies that are mostly special
        if (!id_set_has(excl, id))
            return id;
    return orig;
}

// Decide what a chosen position becomes: 80 % mask_id; of the rest, half (10 %) a random id and
// half (10 %) unchanged: transformers' DataCollatorForLanguageModeling draws bernoulli(0.8), then
// bernoulli(0.5) among the positions not replaced.
static void corrupt(xa_ctx *ctx, int32_t *id, int32_t mask_id, int32_t vocab, const id_set *excl) {
    if (xa_rng_uniform(ctx) < 0.8f)
        *id = mask_id;
    else if (xa_rng_uniform(ctx) < 0.5f)
        *id = random_id(ctx, excl, vocab, *id);
}

void xa_mlm_mask(xa_ctx *ctx, int32_t *ids, int32_t *labels, const float *mask,
                 const uint8_t *special, int64_t B, int64_t T, int32_t mask_id, int32_t vocab,
                 float prob, int32_t ignore_index) {
    XA_ASSERT(vocab > 0 && B >= 0 && T >= 0);
    if (!(prob > 0.0f))
        prob = 0.0f; // NaN too: the "at least one" rule still picks a position per row
    if (prob > 1.0f)
        prob = 1.0f;
    // Excluded replacement ids: collect, sort, deduplicate (a malloc failure only loosens this).
    id_set excl = {0};
    int64_t cap = 1;
    for (int64_t i = 0; i < B * T; i++)
        cap += (special && special[i]) || (mask && mask[i] == 0.0f);
    if ((excl.v = malloc((size_t)cap * sizeof *excl.v))) {
        excl.v[excl.n++] = mask_id;
        for (int64_t i = 0; i < B * T; i++)
            if ((special && special[i]) || (mask && mask[i] == 0.0f))
                excl.v[excl.n++] = ids[i];
        qsort(excl.v, (size_t)excl.n, sizeof *excl.v, cmp_i32);
        int64_t k = 0;
        for (int64_t i = 0; i < excl.n; i++)
            if (k == 0 || excl.v[i] != excl.v[k - 1])
                excl.v[k++] = excl.v[i];
        excl.n = k;
    }
    for (int64_t b = 0; b < B; b++) {
        int32_t *row = ids + b * T, *lab = labels + b * T;
        int64_t maskable = 0, chosen = 0;
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t;
            lab[t] = ignore_index;
            if ((mask && mask[i] == 0.0f) || (special && special[i]))
                continue;
            maskable++;
            if (xa_rng_uniform(ctx) < prob) {
                lab[t] = row[t];
                corrupt(ctx, &row[t], mask_id, vocab, &excl);
                chosen++;
            }
        }
        if (chosen || !maskable)
            continue;
        // No position was drawn: choose one of the maskable ones uniformly.
        int64_t pick = (int64_t)(xa_rng_next(ctx) % (uint64_t)maskable);
        for (int64_t t = 0; t < T; t++) {
            int64_t i = b * T + t;
            if ((mask && mask[i] == 0.0f) || (special && special[i]) || pick-- != 0)
                continue;
            lab[t] = row[t];
            corrupt(ctx, &row[t], mask_id, vocab, &excl);
            break;
        }
    }
    free(excl.v);
}

// --- L2 normalisation helpers ------------------------------------------------------------------

// F.normalize's floor for the norm: vectors shorter than this are divided by it instead.
#define NST_EPS 1e-12
#define COS_EPS 1e-8

// L2 normalisation of `count` vectors of `len` values inside x: element k of vector v is at
// v * vstride + k * estride (columns of an (N, C) matrix: count C, len N, vstride 1, estride C;
// rows: count N, len C, vstride C, estride 1). Each is divided by max(||v||, eps) -> out, norm.
typedef struct {
    int64_t count, len, vstride, estride;
    double eps;
} vecs;

static void normalize(float *out, float *norm, const float *x, const vecs *g) {
    for (int64_t v = 0; v < g->count; v++) {
        const float *xv = x + v * g->vstride;
        double s = 0;
        for (int64_t k = 0; k < g->len; k++)
            s += (double)xv[k * g->estride] * xv[k * g->estride];
        double n = fmax(sqrt(s), g->eps);
        norm[v] = (float)n;
        for (int64_t k = 0; k < g->len; k++)
            out[v * g->vstride + k * g->estride] = (float)(xv[k * g->estride] / n);
    }
}

// dx += d(normalize)/dx . dxn for each vector: (dxn - xn (xn . dxn)) / n, or dxn / eps when the
// norm was floored (then the map is linear).
static void normalize_backward(float *dx, const float *dxn, const float *xn, const float *norm,
                               const vecs *g) {
    for (int64_t v = 0; v < g->count; v++) {
        int64_t base = v * g->vstride;
        double n = norm[v], dot = 0;
        for (int64_t k = 0; n > g->eps && k < g->len; k++)
            dot += (double)xn[base + k * g->estride] * dxn[base + k * g->estride];
        for (int64_t k = 0; k < g->len; k++) {
            int64_t at = base + k * g->estride;
            dx[at] += (float)((dxn[at] - xn[at] * dot) / n);
        }
    }
}

static vecs columns(int64_t N, int64_t C, double eps) { return (vecs){C, N, 1, C, eps}; }
static vecs rows(int64_t N, int64_t D, double eps) { return (vecs){N, D, D, 1, eps}; }

// --- NST -----------------------------------------------------------------------------------------
//
// Per example, with S_hat (Cs, T) the L2-normalised student channel vectors and Tt_hat (Ct, T)
// the teacher's, k(x, y) = (x.y)^2 gives
//   mean_ij k(s_i,s_j) + mean_ij k(t_i,t_j) - 2 mean_ij k(s_i,t_j) = || A - G ||_F^2
// with the (T, T) Gram matrices A = S_hat^T S_hat / Cs and G = Tt_hat^T Tt_hat / Ct, because
// sum_ij (s_i.t_j)^2 = <S^T S, T^T T>_F. That costs T^2 C instead of C^2 T, and the gradient
// is d||A - G||^2 / dS_hat = 4 S_hat (A - G) / Cs.

typedef struct {
    float *xs, *xt; // normalised student (B,T,Cs) and teacher (B,T,Ct)
    float *ns, *nt; // norms (B,Cs), (B,Ct)
    float *diff;    // A - G (B,T,T)
    int64_t B, T, Cs, Ct;
} nst_saved;

// student (B,T,Cs), teacher (B,T,Ct) -> loss; fills the saved normalised data and A - G.
static double nst_forward(nst_saved *s, const float *student, const float *teacher,
                          float *scratch) {
    int64_t B = s->B, T = s->T, Cs = s->Cs, Ct = s->Ct;
    double loss = 0;
    for (int64_t b = 0; b < B; b++) {
        float *xs = s->xs + b * T * Cs, *xt = s->xt + b * T * Ct, *A = s->diff + b * T * T;
        vecs cs = columns(T, Cs, NST_EPS), ct = columns(T, Ct, NST_EPS);
        normalize(xs, s->ns + b * Cs, student + b * T * Cs, &cs);
        normalize(xt, s->nt + b * Ct, teacher + b * T * Ct, &ct);
        xa_sgemm(false, true, T, T, Cs, 1.0f / (float)Cs, xs, Cs, xs, Cs, 0.0f, A, T);
        xa_sgemm(false, true, T, T, Ct, 1.0f / (float)Ct, xt, Ct, xt, Ct, 0.0f, scratch, T);
        double e = 0;
        for (int64_t i = 0; i < T * T; i++) {
            A[i] -= scratch[i];
            e += (double)A[i] * A[i];
        }
        loss += e;
    }
    return B ? loss / (double)B : 0.0;
}

// dloss -> dstudent, dteacher (either NULL when not needed); scratch: T * max(Cs, Ct) floats.
static void nst_backward(float *dstudent, float *dteacher, float dloss, const nst_saved *s,
                         float *scratch) {
    int64_t B = s->B, T = s->T, Cs = s->Cs, Ct = s->Ct;
    float g = B ? dloss / (float)B : 0.0f;
    for (int64_t b = 0; b < B; b++) {
        const float *A = s->diff + b * T * T;
        if (dstudent) {
            const float *xs = s->xs + b * T * Cs;
            xa_sgemm(false, false, T, Cs, T, 4.0f * g / (float)Cs, A, T, xs, Cs, 0.0f, scratch, Cs);
            vecs cols = columns(T, Cs, NST_EPS);
            normalize_backward(dstudent + b * T * Cs, scratch, xs, s->ns + b * Cs, &cols);
        }
        if (dteacher) {
            const float *xt = s->xt + b * T * Ct;
            xa_sgemm(false, false, T, Ct, T, -4.0f * g / (float)Ct, A, T, xt, Ct, 0.0f, scratch,
                     Ct);
            vecs cols = columns(T, Ct, NST_EPS);
            normalize_backward(dteacher + b * T * Ct, scratch, xt, s->nt + b * Ct, &cols);
        }
    }
}

static void nst_bw(xa_ctx *ctx, xa_node *n) {
    nst_saved *s = n->saved;
    float *ds = grad_of(ctx, n->in[0]), *dt = grad_of(ctx, n->in[1]);
    int64_t C = s->Cs > s->Ct ? s->Cs : s->Ct;
    float *scratch = xa_arena_alloc(ctx, (size_t)(s->T * C) * sizeof(float));
    if (!scratch || (!ds && !dt))
        return;
    nst_backward(ds, dt, n->out->grad[0], s, scratch);
}

xa_tensor *xa_nst_loss(xa_ctx *ctx, xa_tensor *student, xa_tensor *teacher) {
    if (!student || !teacher)
        return NULL;
    if (student->ndim != 3 || teacher->ndim != 3)
        return xa_op_shape_error(ctx, "nst_loss", "need student (B,T,Cs) and teacher (B,T,Ct)",
                                 student, teacher);
    if (student->shape[0] != teacher->shape[0] || student->shape[1] != teacher->shape[1])
        return xa_op_shape_error(ctx, "nst_loss",
                                 "batch and positions must match (pool or slice the longer one "
                                 "first)",
                                 student, teacher);
    nst_saved *s = xa_arena_alloc(ctx, sizeof *s);
    xa_tensor *out = out_scalar(ctx);
    if (!s || !out)
        return NULL;
    *s = (nst_saved){.B = student->shape[0],
                     .T = student->shape[1],
                     .Cs = student->shape[2],
                     .Ct = teacher->shape[2]};
    int64_t B = s->B, T = s->T;
    s->xs = xa_arena_alloc(ctx, (size_t)student->numel * sizeof(float));
    s->xt = xa_arena_alloc(ctx, (size_t)teacher->numel * sizeof(float));
    s->ns = xa_arena_alloc(ctx, (size_t)(B * s->Cs) * sizeof(float));
    s->nt = xa_arena_alloc(ctx, (size_t)(B * s->Ct) * sizeof(float));
    s->diff = xa_arena_alloc(ctx, (size_t)(B * T * T) * sizeof(float));
    float *scratch = xa_arena_alloc(ctx, (size_t)(T * T) * sizeof(float));
    if (!s->xs || !s->xt || !s->ns || !s->nt || !s->diff || !scratch)
        return NULL;
    out->data[0] = (float)nst_forward(s, student->data, teacher->data, scratch);
    xa_node *node;
    xa_tensor *in[2] = {student, teacher};
    out = record(ctx, "nst_loss", nst_bw, out, 2, in, &node);
    if (node)
        node->saved = s;
    return out;
}

// --- NT-Xent
// ---------------------------------------------------------------------------------------
//
// S_ij = cos(a_i, b_j) / tau; loss = (CE(rows of S, i) + CE(columns of S, j)) / 2, each a mean over
// the N pairs. dS = (softmax_rows(S) + softmax_cols(S) - 2 I) / (2N).

typedef struct {
    float *an, *bn; // normalised rows (N,D)
    float *na, *nb; // norms (N)
    float *m;       // softmax_rows(S) + softmax_cols(S) - 2 I (N,N)
    int64_t N, D;
    float tau;
} ntx_saved;

// a (N,D), b (N,D) -> loss; S is computed into s->m and replaced by the backward factor.
static double ntxent_forward(ntx_saved *s, const float *a, const float *b, double *lse) {
    int64_t N = s->N, D = s->D;
    float *S = s->m;
    vecs r = rows(N, D, COS_EPS);
    normalize(s->an, s->na, a, &r);
    normalize(s->bn, s->nb, b, &r);
    xa_sgemm(false, true, N, N, D, 1.0f / s->tau, s->an, D, s->bn, D, 0.0f, S, N);
    double loss = 0, *row = lse, *col = lse + N;
    for (int64_t i = 0; i < N; i++) { // log-sum-exp of each row and each column
        double mr = -INFINITY, mc = -INFINITY, zr = 0, zc = 0;
        for (int64_t j = 0; j < N; j++)
            mr = fmax(mr, S[i * N + j]), mc = fmax(mc, S[j * N + i]);
        for (int64_t j = 0; j < N; j++)
            zr += exp(S[i * N + j] - mr), zc += exp(S[j * N + i] - mc);
        row[i] = mr + log(zr), col[i] = mc + log(zc);
        loss += row[i] + col[i] - 2.0 * S[i * N + i];
    }
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) {
            double v = S[i * N + j];
            S[i * N + j] = (float)(exp(v - row[i]) + exp(v - col[j]) - (i == j ? 2.0 : 0.0));
        }
    return N ? loss / (2.0 * (double)N) : 0.0;
}

// scratch: N * D floats.
static void ntxent_backward(float *da, float *db, float dloss, const ntx_saved *s, float *scratch) {
    int64_t N = s->N, D = s->D;
    float g = N ? dloss / (2.0f * (float)N * s->tau) : 0.0f;
    vecs r = rows(N, D, COS_EPS);
    if (da) { // dan = g * M bn
        xa_sgemm(false, false, N, D, N, g, s->m, N, s->bn, D, 0.0f, scratch, D);
        normalize_backward(da, scratch, s->an, s->na, &r);
    }
    if (db) { // dbn = g * M^T an
        xa_sgemm(true, false, N, D, N, g, s->m, N, s->an, D, 0.0f, scratch, D);
        normalize_backward(db, scratch, s->bn, s->nb, &r);
    }
}

static void ntxent_bw(xa_ctx *ctx, xa_node *n) {
    ntx_saved *s = n->saved;
    float *da = grad_of(ctx, n->in[0]), *db = grad_of(ctx, n->in[1]);
    float *scratch = xa_arena_alloc(ctx, (size_t)(s->N * s->D) * sizeof(float));
    if (!scratch || (!da && !db))
        return;
    ntxent_backward(da, db, n->out->grad[0], s, scratch);
}

xa_tensor *xa_ntxent_loss(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, float temperature) {
    if (!a || !b)
        return NULL;
    if (!xa_shape_equal(a, b) || a->ndim != 2)
        return xa_op_shape_error(ctx, "ntxent_loss", "need a and b (N,D) of one shape", a, b);
    if (!(temperature > 0.0f)) {
        xa_errorf(ctx, XA_EINVAL, "ntxent_loss: temperature must be positive, got %g",
                  (double)temperature);
        return NULL;
    }
    int64_t N = a->shape[0], D = a->shape[1];
    ntx_saved *s = xa_arena_alloc(ctx, sizeof *s);
    xa_tensor *out = out_scalar(ctx);
    double *lse = xa_arena_alloc(ctx, (size_t)(2 * N + 1) * sizeof(double));
    if (!s || !out || !lse)
        return NULL;
    *s = (ntx_saved){.N = N, .D = D, .tau = temperature};
    s->an = xa_arena_alloc(ctx, (size_t)(N * D) * sizeof(float));
    s->bn = xa_arena_alloc(ctx, (size_t)(N * D) * sizeof(float));
    s->na = xa_arena_alloc(ctx, (size_t)(N + 1) * sizeof(float));
    s->nb = xa_arena_alloc(ctx, (size_t)(N + 1) * sizeof(float));
    s->m = xa_arena_alloc(ctx, (size_t)(N * N + 1) * sizeof(float));
    if (!s->an || !s->bn || !s->na || !s->nb || !s->m)
        return NULL;
    out->data[0] = (float)ntxent_forward(s, a->data, b->data, lse);
    xa_node *node;
    xa_tensor *in[2] = {a, b};
    out = record(ctx, "ntxent_loss", ntxent_bw, out, 2, in, &node);
    if (node)
        node->saved = s;
    return out;
}
