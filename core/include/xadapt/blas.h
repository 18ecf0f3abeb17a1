// The BLAS xadapt computes with: OpenBLAS, loaded at run time so that xadapt can choose its
// kernel set from the CPU's features before the library initialises (OpenBLAS reads
// OPENBLAS_CORETYPE only once, at load). Knobs: XADAPT_BLAS_CORETYPE=auto|keep|<OpenBLAS core>,
// XADAPT_THREADS=N. Only blas.c calls cblas_*; everything else calls xa_sgemm.
#ifndef XADAPT_BLAS_H
#define XADAPT_BLAS_H

#include <stdbool.h>
#include "xadapt/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xa_blas_info {
    const char *library;  // path or "builtin"
    const char *coretype; // OpenBLAS's own name for the kernels in use ("SkylakeX", ...)
    const char *reason;   // why these kernels were chosen
    const char *config;   // openblas_get_config(), or ""
    int threads;
    const char *simd;     // level of the element-wise kernels: "avx512", or "scalar" (portable C;
                          // also forced by XADAPT_SIMD=scalar)
} xa_blas_info;

// Set the thread count for every pool xadapt uses (OpenBLAS's and its own). 0 = all cores.
// Before the first GEMM it takes effect at load; later calls change it in place.
void xa_set_threads(int n);
int xa_threads(void);

// Load and configure the BLAS (idempotent, thread-safe). Called implicitly by the first GEMM.
const xa_blas_info *xa_blas_info_get(void);

// C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C, row-major, with leading dimensions.
void xa_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);

// The same product by plain loops, for tests and as the fallback when no BLAS can be loaded.
void xa_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);

#ifdef __cplusplus
}
#endif
#endif
