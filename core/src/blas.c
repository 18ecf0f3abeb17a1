// The only file that talks to cblas. OpenBLAS is dlopen'ed on first use, after xadapt has chosen
// its kernel set from the CPU: Debian's DYNAMIC_ARCH build does not know Zen 5 by name and some
// environments pin OPENBLAS_CORETYPE=Haswell (AVX2), which halves sgemm throughput on AVX-512
// machines. If no OpenBLAS can be loaded, a plain-loop sgemm keeps everything working (slowly)
// and xa_blas_info_get says so.
#include "xadapt/blas.h"

#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void (*sgemm_fn)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, blasint,
                         blasint, blasint, float, const float *, blasint, const float *, blasint,
                         float, float *, blasint);
typedef void (*set_threads_fn)(int);
typedef char *(*get_str_fn)(void);

static struct {
    pthread_once_t once;
    void *handle;
    sgemm_fn sgemm;
    set_threads_fn set_threads;
    xa_blas_info info;
    char library[512], coretype[64], reason[512], config[256];
    int want_threads; // 0 = not set by the caller
} B = {.once = PTHREAD_ONCE_INIT};

static int online_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int resolve_threads(void) {
    if (B.want_threads > 0)
        return B.want_threads;
    const char *env = getenv("XADAPT_THREADS");
    if (env && atoi(env) > 0)
        return atoi(env);
    return online_cores();
}

// Pick OPENBLAS_CORETYPE before loading; writes the reason. Returns NULL to leave it alone.
static const char *choose_coretype(void) {
    const char *knob = getenv("XADAPT_BLAS_CORETYPE");
    const char *env = getenv("OPENBLAS_CORETYPE");
    if (knob && *knob && strcmp(knob, "auto") != 0) {
        if (strcmp(knob, "keep") == 0) {
            snprintf(B.reason, sizeof B.reason,
                     "XADAPT_BLAS_CORETYPE=keep: OpenBLAS chooses (OPENBLAS_CORETYPE=%s)",
                     env ? env : "unset");
            return NULL;
        }
        snprintf(B.reason, sizeof B.reason, "XADAPT_BLAS_CORETYPE=%s", knob);
        return knob;
    }
    const char *pick = NULL, *why = NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
        pick = "SkylakeX";
        why = "CPU and OS support AVX-512 F/BW/DQ/VL";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        pick = "Haswell";
        why = "CPU supports AVX2+FMA but not AVX-512";
    }
#endif
    if (!pick) {
        snprintf(B.reason, sizeof B.reason, "auto: no known vector unit; OpenBLAS chooses");
        return NULL;
    }
    if (env && strcmp(env, pick) != 0)
        snprintf(B.reason, sizeof B.reason,
                 "auto: %s (overrides OPENBLAS_CORETYPE=%s from the environment; "
                 "XADAPT_BLAS_CORETYPE=keep keeps it)",
                 why, env);
    else
        snprintf(B.reason, sizeof B.reason, "auto: %s", why);
    return pick;
}

static void load_blas(void) {
    const char *core = choose_coretype();
    if (core)
        setenv("OPENBLAS_CORETYPE", core, 1);
    char nt[16];
    snprintf(nt, sizeof nt, "%d", resolve_threads());
    setenv("OPENBLAS_NUM_THREADS", nt, 1);

    const char *names[] = {getenv("XADAPT_BLAS_LIBRARY"), "libopenblas.so.0", "libopenblas.so"};
    for (size_t i = 0; i < sizeof names / sizeof *names && !B.handle; i++)
        if (names[i] && *names[i])
            B.handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (B.handle)
        B.sgemm = (sgemm_fn)dlsym(B.handle, "cblas_sgemm");
    if (!B.sgemm) {
        snprintf(B.reason, sizeof B.reason, "no OpenBLAS could be loaded (%s); using plain loops",
                 dlerror() ? "dlopen failed" : "cblas_sgemm missing");
        snprintf(B.library, sizeof B.library, "builtin");
        snprintf(B.coretype, sizeof B.coretype, "reference");
    } else {
        B.set_threads = (set_threads_fn)dlsym(B.handle, "openblas_set_num_threads");
        get_str_fn corename = (get_str_fn)dlsym(B.handle, "openblas_get_corename");
        get_str_fn config = (get_str_fn)dlsym(B.handle, "openblas_get_config");
        Dl_info di;
        if (dladdr((void *)B.sgemm, &di) && di.dli_fname)
            snprintf(B.library, sizeof B.library, "%s", di.dli_fname);
        snprintf(B.coretype, sizeof B.coretype, "%s", corename ? corename() : "unknown");
        snprintf(B.config, sizeof B.config, "%s", config ? config() : "");
        if (B.set_threads)
            B.set_threads(resolve_threads());
    }
    B.info.library = B.library;
    B.info.coretype = B.coretype;
    B.info.reason = B.reason;
    B.info.config = B.config;
    B.info.threads = resolve_threads();
}

const xa_blas_info *xa_blas_info_get(void) {
    pthread_once(&B.once, load_blas);
    return &B.info;
}

void xa_set_threads(int n) {
    B.want_threads = n > 0 ? n : online_cores();
    B.info.threads = B.want_threads;
    if (B.set_threads)
        B.set_threads(B.want_threads);
}

int xa_threads(void) { return xa_blas_info_get()->threads; }

void xa_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *Bm, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) {
                float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                float b = trans_b ? Bm[j * ldb + k] : Bm[k * ldb + j];
                acc += (double)a * b;
            }
            float prev = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc) + prev;
        }
}

void xa_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *Bm, int64_t ldb, float beta, float *C,
              int64_t ldc) {
    if (M == 0 || N == 0)
        return;
    pthread_once(&B.once, load_blas);
    if (!B.sgemm || K == 0) {
        xa_sgemm_ref(trans_a, trans_b, M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
        return;
    }
    B.sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
            (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, Bm, (blasint)ldb, beta, C,
            (blasint)ldc);
}
