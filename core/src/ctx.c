// The context: error messages, the seeded RNG, allocation helpers. Arena and tape live in their
// own files; this one only creates and frees them.
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

xa_ctx *xa_ctx_new(void) {
    xa_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->grad_enabled = true;
    xa_ctx_seed(ctx, 0x5eed);
    return ctx;
}

void xa_ctx_free(xa_ctx *ctx) {
    if (!ctx)
        return;
    xa_tape_free(ctx);
    xa_arena_deinit(&ctx->arena);
    free(ctx->made.v);
    free(ctx);
}

xa_status xa_errorf(xa_ctx *ctx, xa_status code, const char *fmt, ...) {
    XA_ASSERT(code != XA_OK);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
    va_end(ap);
    ctx->code = code;
    return code;
}

xa_status xa_error_wrap(xa_ctx *ctx, const char *fmt, ...) {
    char prefix[512], old[XA_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->msg, sizeof old);
    int n = snprintf(ctx->msg, sizeof ctx->msg, "%s: ", prefix);
    if (n > 0 && (size_t)n < sizeof ctx->msg)
        snprintf(ctx->msg + n, sizeof ctx->msg - (size_t)n, "%.*s", (int)(sizeof ctx->msg) - n - 1, old);
    if (ctx->code == XA_OK)
        ctx->code = XA_EINVAL;
    return ctx->code;
}

const char *xa_errmsg(const xa_ctx *ctx) { return ctx->code ? ctx->msg : ""; }
xa_status xa_errcode(const xa_ctx *ctx) { return ctx->code; }

void xa_error_clear(xa_ctx *ctx) {
    ctx->code = XA_OK;
    ctx->msg[0] = '\0';
}

const char *xa_status_name(xa_status s) {
    switch (s) {
    case XA_OK: return "OK";
    case XA_EINVAL: return "EINVAL";
    case XA_ENOMEM: return "ENOMEM";
    case XA_EIO: return "EIO";
    case XA_EFORMAT: return "EFORMAT";
    case XA_ESHAPE: return "ESHAPE";
    case XA_ENOTFOUND: return "ENOTFOUND";
    case XA_EPLUGIN: return "EPLUGIN";
    case XA_EABI: return "EABI";
    case XA_ERANGE: return "ERANGE";
    case XA_ESTATE: return "ESTATE";
    }
    return "E?";
}

_Noreturn void xa_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "xadapt: internal error: %s:%d: assertion '%s' failed\n", file, line, expr);
    abort();
}

// --- RNG: xoshiro256** seeded through splitmix64 ------------------------------------------

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void xa_ctx_seed(xa_ctx *ctx, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        ctx->rng[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t xa_rng_next(xa_ctx *ctx) {
    uint64_t *s = ctx->rng;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

float xa_rng_uniform(xa_ctx *ctx) { return (float)(xa_rng_next(ctx) >> 40) * 0x1.0p-24f; }

float xa_rng_normal(xa_ctx *ctx) {
    // Box-Muller in double; one value per call keeps the stream position simple to reason about.
    double u1 = ((double)(xa_rng_next(ctx) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(xa_rng_next(ctx) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void xa_rng_state(const xa_ctx *ctx, uint64_t state[4]) { memcpy(state, ctx->rng, sizeof ctx->rng); }
void xa_rng_set_state(xa_ctx *ctx, const uint64_t state[4]) {
    memcpy(ctx->rng, state, sizeof ctx->rng);
}

// --- allocation -----------------------------------------------------------------------------

void *xa_malloc(xa_ctx *ctx, size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p)
        xa_errorf(ctx, XA_ENOMEM, "out of memory allocating %zu bytes", size);
    return p;
}

void *xa_calloc(xa_ctx *ctx, size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        xa_errorf(ctx, XA_ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *xa_aligned_alloc(xa_ctx *ctx, size_t size) {
    void *p = NULL;
    size_t rounded = (size + 63) & ~(size_t)63;
    if (rounded < size || posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        xa_errorf(ctx, XA_ENOMEM, "out of memory allocating %zu bytes", size);
        return NULL;
    }
    return p;
}

char *xa_strdup(xa_ctx *ctx, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xa_malloc(ctx, n);
    if (p)
        memcpy(p, s, n);
    return p;
}
