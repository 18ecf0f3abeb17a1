// xadapt core: the context, status codes and error messages, allocation, version.
// Every fallible library call returns an xa_status and leaves a message in its context;
// library code never prints and never exits. Tensors, ops and files live in their own headers.
#ifndef XADAPT_CORE_H
#define XADAPT_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define XA_VERSION_MAJOR 0
#define XA_VERSION_MINOR 1
#define XA_VERSION_PATCH 0
#define XA_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define XA_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define XA_NODISCARD __attribute__((warn_unused_result))
#else
#define XA_PRINTF(fmt, args)
#define XA_NODISCARD
#endif

// 0 is success; every error is negative. The message in the context says what and where.
typedef enum xa_status {
    XA_OK = 0,
    XA_EINVAL = -1,    // bad argument or option from the caller or a script
    XA_ENOMEM = -2,    // allocation failed
    XA_EIO = -3,       // open/read/write/mmap failed
    XA_EFORMAT = -4,   // a file is malformed (header, JSON, dtype, offsets, ...)
    XA_ESHAPE = -5,    // shapes disagree
    XA_ENOTFOUND = -6, // a named thing (tensor, file, plugin, class) does not exist
    XA_EPLUGIN = -7,   // a plugin was refused or failed
    XA_EABI = -8,      // plugin ABI version or struct size mismatch
    XA_ERANGE = -9,    // a value out of its allowed range (index, id, size overflow)
    XA_ESTATE = -10,   // call not valid in the current state (e.g. backward without a loss)
} xa_status;

typedef struct xa_ctx xa_ctx;

// A new context with its own arena, tape and RNG. NULL only when memory is exhausted.
xa_ctx *xa_ctx_new(void);
void xa_ctx_free(xa_ctx *ctx);

// Store a formatted message and return `code` (so callers can `return xa_errorf(...)`).
// The message replaces any earlier one. Passing XA_OK is a misuse and aborts.
xa_status xa_errorf(xa_ctx *ctx, xa_status code, const char *fmt, ...) XA_PRINTF(3, 4);
// Prepend context to the current message: "loading 'x': <old message>". Returns the current code.
xa_status xa_error_wrap(xa_ctx *ctx, const char *fmt, ...) XA_PRINTF(2, 3);
// The last error's message ("" when none) and code (XA_OK when none).
const char *xa_errmsg(const xa_ctx *ctx);
xa_status xa_errcode(const xa_ctx *ctx);
void xa_error_clear(xa_ctx *ctx);
// A short stable name for a status ("EFORMAT").
const char *xa_status_name(xa_status s);

// Seeded, reproducible random numbers (xoshiro128+ style); each context has its own stream.
void xa_ctx_seed(xa_ctx *ctx, uint64_t seed);
uint64_t xa_rng_next(xa_ctx *ctx);
float xa_rng_uniform(xa_ctx *ctx);            // [0, 1)
float xa_rng_normal(xa_ctx *ctx);             // N(0, 1)
void xa_rng_state(const xa_ctx *ctx, uint64_t state[4]);
void xa_rng_set_state(xa_ctx *ctx, const uint64_t state[4]);

// Aborts with file:line on a broken internal invariant (never for bad input).
#define XA_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            xa_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)
#ifdef __cplusplus // the headers are usable from C++ too (extern "C" above)
[[noreturn]] void xa_assert_fail(const char *expr, const char *file, int line);
#else
_Noreturn void xa_assert_fail(const char *expr, const char *file, int line);
#endif

// Allocation that aborts on exhaustion is never used for input-sized buffers: these return NULL
// and set XA_ENOMEM with the size that failed.
void *xa_malloc(xa_ctx *ctx, size_t size);
void *xa_calloc(xa_ctx *ctx, size_t n, size_t size);
void *xa_aligned_alloc(xa_ctx *ctx, size_t size); // 64-byte aligned, release with free()
char *xa_strdup(xa_ctx *ctx, const char *s);

#ifdef __cplusplus
}
#endif
#endif
