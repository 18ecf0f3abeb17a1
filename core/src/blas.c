// The only file that talks to cblas. OpenBLAS is dlopen'ed on first use, after xadapt has chosen
// its kernel set from the CPU: Debian's DYNAMIC_ARCH build does not know Zen 5 by name and some
// environments pin OPENBLAS_CORETYPE=Haswell (AVX2), which halves sgemm throughput on AVX-512
// machines. If no OpenBLAS can be loaded, a plain-loop sgemm keeps everything working (slowly)
// and xa_blas_info_get says so. OpenBLAS always runs single-threaded: xadapt's own pool splits
// large products into blocks (see pool.h for why there is only one pool).
#include "xadapt/blas.h"

#include "pool.h"
#include "vec.h"

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
    return B.want_threads > 0 ? B.want_threads : xa_pool_default_threads();
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
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    xa_pool_resize(resolve_threads());

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
            B.set_threads(1);
    }
    B.info.library = B.library;
    B.info.coretype = B.coretype;
    B.info.reason = B.reason;
    B.info.config = B.config;
    B.info.threads = xa_pool_threads();
}

const xa_blas_info *xa_blas_info_get(void) {
    pthread_once(&B.once, load_blas);
    B.info.simd = xa_vec_level_name(xa_vec_level_get());
    return &B.info;
}

void xa_set_threads(int n) {
    B.want_threads = n > 0 ? n : online_cores();
    xa_pool_resize(B.want_threads);
    B.info.threads = xa_pool_threads();
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

typedef struct {
    bool ta, tb, split_m;
    int64_t M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
} gemm_job;

static void gemm_block(const gemm_job *j, int64_t M, int64_t N, const float *A, const float *Bm,
                       float *C) {
    if (!B.sgemm || j->K == 0) {
        xa_sgemm_ref(j->ta, j->tb, M, N, j->K, j->alpha, A, j->lda, Bm, j->ldb, j->beta, C, j->ldc);
        return;
    }
    B.sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans,
            (blasint)M, (blasint)N, (blasint)j->K, j->alpha, A, (blasint)j->lda, Bm,
            (blasint)j->ldb, j->beta, C, (blasint)j->ldc);
}

// One block of rows (split_m) or columns of C; blocks are multiples of 16 for the kernels.
static void gemm_range(void *arg, int64_t begin, int64_t end) {
    const gemm_job *j = arg;
    int64_t lo = begin * 16, hi = end * 16;
    if (j->split_m) {
        hi = hi < j->M ? hi : j->M;
        const float *A = j->ta ? j->A + lo : j->A + lo * j->lda;
        gemm_block(j, hi - lo, j->N, A, j->B, j->C + lo * j->ldc);
    } else {
        hi = hi < j->N ? hi : j->N;
        const float *Bm = j->tb ? j->B + lo * j->ldb : j->B + lo;
        gemm_block(j, j->M, hi - lo, j->A, Bm, j->C + lo);
    }
}

void xa_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *Bm, int64_t ldb, float beta, float *C,
              int64_t ldc) {
    if (M == 0 || N == 0)
        return;
    pthread_once(&B.once, load_blas);
    gemm_job j = {.ta = trans_a, .tb = trans_b, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb,
                  .ldc = ldc, .alpha = alpha, .beta = beta, .A = A, .B = Bm, .C = C};
    // Split the larger side of C across the pool when the product is worth it (~4 MFLOP).
    int64_t flops = 2 * M * N * K;
    if (flops < (4 << 20) || xa_pool_inside() || xa_pool_threads() == 1) {
        gemm_block(&j, M, N, A, Bm, C);
        return;
    }
    j.split_m = M >= N;
    int64_t blocks = ((j.split_m ? M : N) + 15) / 16;
    xa_parallel_for(blocks, 4, gemm_range, &j);
}
