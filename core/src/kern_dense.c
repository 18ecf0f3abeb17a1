// Dense kernels: linear layers and batched matmuls, all through xa_sgemm (blas.c). The backward
// products skip any gradient that is NULL, so frozen weights cost no GEMM.
#include "kernels.h"
#include "xadapt/blas.h"

void xa_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int64_t BT, int64_t C, int64_t OC) {
    if (bias) {
        for (int64_t i = 0; i < BT; i++)
            for (int64_t o = 0; o < OC; o++)
                out[i * OC + o] = bias[o];
    }
    xa_sgemm(false, true, BT, OC, C, 1.0f, inp, C, weight, C, bias ? 1.0f : 0.0f, out, OC);
}

void xa_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int64_t BT, int64_t C, int64_t OC,
                        bool dinp_assign) {
    if (dinp)
        xa_sgemm(false, false, BT, C, OC, 1.0f, dout, OC, weight, C, dinp_assign ? 0.0f : 1.0f,
                 dinp, C);
    if (dweight)
        xa_sgemm(true, false, OC, C, BT, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias)
        for (int64_t i = 0; i < BT; i++)
            for (int64_t o = 0; o < OC; o++)
                dbias[o] += dout[i * OC + o];
}

void xa_matmul_forward(float *out, const float *a, const float *b, bool ta, bool tb, int64_t NB,
                       int64_t M, int64_t K, int64_t N) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    for (int64_t i = 0; i < NB; i++)
        xa_sgemm(ta, tb, M, N, K, 1.0f, a + i * M * K, lda, b + i * K * N, ldb, 0.0f,
                 out + i * M * N, N);
}

void xa_matmul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                        bool ta, bool tb, int64_t NB, int64_t M, int64_t K, int64_t N) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    for (int64_t i = 0; i < NB; i++) {
        const float *A = a + i * M * K, *Bm = b + i * K * N, *dC = dout + i * M * N;
        if (da) {
            float *dA = da + i * M * K;
            if (!ta) // dA (M,K) += dC (M,N) . op(B)^T
                xa_sgemm(false, !tb, M, K, N, 1.0f, dC, N, Bm, ldb, 1.0f, dA, K);
            else // dA (K,M) += op(B) (K,N) . dC^T
                xa_sgemm(tb, true, K, M, N, 1.0f, Bm, ldb, dC, N, 1.0f, dA, M);
        }
        if (db) {
            float *dB = db + i * K * N;
            if (!tb) // dB (K,N) += op(A)^T (K,M) . dC
                xa_sgemm(!ta, false, K, N, M, 1.0f, A, lda, dC, N, 1.0f, dB, N);
            else // dB (N,K) += dC^T (N,M) . op(A)
                xa_sgemm(true, ta, N, K, M, 1.0f, dC, N, A, lda, 1.0f, dB, K);
        }
    }
}
