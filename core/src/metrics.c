// Evaluation metrics as GLUE reports them: accuracy, F1 of one class, Matthews correlation
// (CoLA), Pearson and Spearman correlations (STS-B). Conventions follow scikit-learn / scipy;
// where those return NaN or warn on degenerate input, these return 0 (documented per function).
// Heads and objectives are in heads.c and objectives.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/task.h"

// Fraction of pred[i] == gold[i]; 0 for n == 0.
double xa_metric_accuracy(const int32_t *pred, const int32_t *gold, int64_t n) {
    if (n <= 0)
        return 0.0;
    int64_t hit = 0;
    for (int64_t i = 0; i < n; i++)
        hit += pred[i] == gold[i];
    return (double)hit / (double)n;
}

// Binary F1 of class `positive`: 2 tp / (2 tp + fp + fn); 0 when there is no positive in either
// (sklearn's zero_division default).
double xa_metric_f1(const int32_t *pred, const int32_t *gold, int64_t n, int32_t positive) {
    int64_t tp = 0, fp = 0, fn = 0;
    for (int64_t i = 0; i < n; i++) {
        bool p = pred[i] == positive, g = gold[i] == positive;
        tp += p && g, fp += p && !g, fn += !p && g;
    }
    return tp + fp + fn ? 2.0 * (double)tp / (double)(2 * tp + fp + fn) : 0.0;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

// sklearn's matthews_corrcoef for any number of classes, from the confusion matrix C:
//   (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2))
// with c = correct, s = n, t_k / p_k = how often class k is true / predicted. 0 when a factor of
// the denominator is 0 (a constant prediction or gold), as sklearn returns. NaN only when the
// scratch memory cannot be allocated.
double xa_metric_matthews(const int32_t *pred, const int32_t *gold, int64_t n) {
    if (n <= 0)
        return 0.0;
    int32_t *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
    if (!p || !g) {
        free(p);
        free(g);
        return NAN;
    }
    memcpy(p, pred, (size_t)n * sizeof *p);
    memcpy(g, gold, (size_t)n * sizeof *g);
    qsort(p, (size_t)n, sizeof *p, cmp_i32);
    qsort(g, (size_t)n, sizeof *g, cmp_i32);
    // Walk both sorted lists class by class: sum p_k t_k, sum p_k^2, sum t_k^2.
    double pt = 0, pp = 0, tt = 0;
    for (int64_t i = 0, j = 0; i < n || j < n;) {
        int32_t k = i < n && (j >= n || p[i] <= g[j]) ? p[i] : g[j];
        int64_t pk = 0, tk = 0;
        while (i < n && p[i] == k)
            i++, pk++;
        while (j < n && g[j] == k)
            j++, tk++;
        pt += (double)pk * tk, pp += (double)pk * pk, tt += (double)tk * tk;
    }
    free(p);
    free(g);
    double c = 0, s = (double)n;
    for (int64_t i = 0; i < n; i++)
        c += pred[i] == gold[i];
    double den = (s * s - pp) * (s * s - tt);
    return den > 0 ? (c * s - pt) / sqrt(den) : 0.0;
}

// Pearson's r with two-pass (mean-centred) sums in double, the deviations scaled to at most 1 so
// that their squares neither underflow (values near 1e-200) nor overflow (near 1e200): r does not
// change with the scale. 0 when n < 2 or either variance is 0 (scipy returns NaN there; 0 keeps
// averages of GLUE scores finite); NaN when an input is NaN or infinite, as scipy propagates it.
double xa_metric_pearson(const double *x, const double *y, int64_t n) {
    if (n < 2)
        return 0.0;
    double mx = 0, my = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i]))
            return NAN;
        mx += (x[i] - mx) / (double)(i + 1), my += (y[i] - my) / (double)(i + 1);
    }
    double ax = 0, ay = 0;
    for (int64_t i = 0; i < n; i++)
        ax = fmax(ax, fabs(x[i] - mx)), ay = fmax(ay, fabs(y[i] - my));
    if (!(ax > 0) || !(ay > 0))
        return 0.0;
    double sxy = 0, sxx = 0, syy = 0;
    for (int64_t i = 0; i < n; i++) {
        double dx = (x[i] - mx) / ax, dy = (y[i] - my) / ay;
        sxy += dx * dy, sxx += dx * dx, syy += dy * dy;
    }
    if (!(sxx > 0) || !(syy > 0))
        return 0.0;
    double r = sxy / sqrt(sxx * syy);
    return r > 1.0 ? 1.0 : r < -1.0 ? -1.0 : r;
}

typedef struct {
    double v;
    int64_t i;
} ranked;

static int by_value(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->v != b->v)
        return a->v < b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

// 1-based ranks, ties sharing the average of their positions (scipy.stats.rankdata "average").
static bool average_ranks(double *rank, const double *x, int64_t n) {
    ranked *r = malloc((size_t)n * sizeof *r);
    if (!r)
        return false;
    for (int64_t i = 0; i < n; i++)
        r[i] = (ranked){x[i], i};
    qsort(r, (size_t)n, sizeof *r, by_value);
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j + 1 < n && r[j + 1].v == r[i].v)
            j++;
        double avg = 0.5 * (double)(i + j) + 1.0;
        for (int64_t k = i; k <= j; k++)
            rank[r[k].i] = avg;
        i = j + 1;
    }
    free(r);
    return true;
}

// Spearman's rho: Pearson's r of the average ranks (0 in the same degenerate cases; NaN for NaN
// input or when scratch memory cannot be allocated; infinities rank like any value).
double xa_metric_spearman(const double *x, const double *y, int64_t n) {
    if (n < 2)
        return 0.0;
    for (int64_t i = 0; i < n; i++)
        if (isnan(x[i]) || isnan(y[i])) // NaN has no rank (and would break the sort)
            return NAN;
    double *rx = malloc((size_t)n * sizeof *rx), *ry = malloc((size_t)n * sizeof *ry);
    double r = NAN;
    if (rx && ry && average_ranks(rx, x, n) && average_ranks(ry, y, n))
        r = xa_metric_pearson(rx, ry, n);
    free(rx);
    free(ry);
    return r;
}
