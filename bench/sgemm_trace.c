// An LD_PRELOAD shim for profiling `xadapt bench` without touching core: it interposes
// xa_sgemm (libxadapt calls it through the PLT), forwards every call to the real one, and at
// exit prints to stderr the calls, FLOPs and seconds spent in GEMMs, and the shapes that took
// the most time. bench/run.py --profile builds it with cc and uses it to check the analytic
// FLOP counts of lua/cli_bench.c and to split time into GEMM and everything else. FLOPs count
// calls from every thread; seconds count the main thread only, which takes part in every
// parallel region (attention runs heads on all threads at once), so they read as wall time.
// SGEMM_TRACE_SKIP=N leaves out the first N calls (the untimed warmup iteration).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef void (*sgemm_fn)(bool, bool, int64_t, int64_t, int64_t, float, const float *, int64_t,
                         const float *, int64_t, float, float *, int64_t);

enum { MAX_SHAPES = 512 };

typedef struct {
    int64_t M, N, K;
    bool ta, tb;
    int64_t calls;
    double flop, secs;
} shape;

static sgemm_fn real;
static shape shapes[MAX_SHAPES];
static int nshapes;
static int64_t calls, seen, skip = -1;
static double flop, secs;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void note(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double dt) {
    double f = 2.0 * (double)M * (double)N * (double)K;
    calls++, flop += f, secs += dt;
    for (int i = 0; i < nshapes; i++) {
        shape *s = &shapes[i];
        if (s->M == M && s->N == N && s->K == K && s->ta == ta && s->tb == tb) {
            s->calls++, s->flop += f, s->secs += dt;
            return;
        }
    }
    if (nshapes < MAX_SHAPES)
        shapes[nshapes++] = (shape){M, N, K, ta, tb, 1, f, dt};
}

void xa_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (!real)
        real = (sgemm_fn)dlsym(RTLD_NEXT, "xa_sgemm");
    bool main_thread = syscall(SYS_gettid) == getpid();
    double t0 = now();
    real(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double dt = main_thread ? now() - t0 : 0.0;
    pthread_mutex_lock(&lock);
    if (skip < 0) {
        const char *env = getenv("SGEMM_TRACE_SKIP");
        skip = env ? atoll(env) : 0;
    }
    if (++seen > skip)
        note(ta, tb, M, N, K, dt);
    pthread_mutex_unlock(&lock);
}

static int by_time(const void *a, const void *b) {
    double x = ((const shape *)a)->secs, y = ((const shape *)b)->secs;
    return (x < y) - (x > y);
}

__attribute__((destructor)) static void report(void) {
    qsort(shapes, (size_t)nshapes, sizeof *shapes, by_time);
    fprintf(stderr, "{\"sgemm_trace\":{\"calls\":%lld,\"gflop\":%.4f,\"secs\":%.4f,\"top\":[",
            (long long)calls, flop * 1e-9, secs);
    for (int i = 0; i < nshapes && i < 12; i++) {
        shape *s = &shapes[i];
        fprintf(stderr,
                "%s{\"mnk\":\"%lldx%lldx%lld\",\"t\":\"%c%c\",\"calls\":%lld,"
                "\"gflop\":%.4f,\"secs\":%.4f}",
                i ? "," : "", (long long)s->M, (long long)s->N, (long long)s->K, s->ta ? 'T' : 'N',
                s->tb ? 'T' : 'N', (long long)s->calls, s->flop * 1e-9, s->secs);
    }
    fprintf(stderr, "]}}\n");
}
