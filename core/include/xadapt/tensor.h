// Tensors: f32, up to 4-D, row-major contiguous. Storage is a reference-counted buffer (heap or a
// read-only mmap of a file) or the context's step arena (valid until the next xa_arena_reset).
// Ops that build on tensors are in ops.h; the autograd tape in tape.h.
#ifndef XADAPT_TENSOR_H
#define XADAPT_TENSOR_H

#include <stdbool.h>
#include "xadapt/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define XA_MAX_DIMS 4

// Element types as files store them. Compute is always f32; ids are i32/i64.
typedef enum xa_dtype {
    XA_DTYPE_F32 = 0,
    XA_DTYPE_F16,
    XA_DTYPE_BF16,
    XA_DTYPE_F64,
    XA_DTYPE_I64,
    XA_DTYPE_I32,
    XA_DTYPE_I16,
    XA_DTYPE_I8,
    XA_DTYPE_U8,
    XA_DTYPE_BOOL,
    XA_DTYPE_COUNT
} xa_dtype;

const char *xa_dtype_name(xa_dtype t);        // "F32", as safetensors spells it
size_t xa_dtype_size(xa_dtype t);             // bytes per element
bool xa_dtype_parse(const char *s, xa_dtype *out);

// Owner of tensor memory. `release` frees the memory (free, munmap, or nothing for borrowed).
typedef struct xa_buffer {
    int refcount;
    void *data;
    size_t size;
    bool readonly; // mmapped PROT_READ: a write is a crash, never a silent change
    void (*release)(struct xa_buffer *b);
    void *owner; // release's private data
} xa_buffer;

xa_buffer *xa_buffer_retain(xa_buffer *b);
void xa_buffer_release(xa_buffer *b);

enum {
    XA_TENSOR_TRAINABLE = 1u << 0,       // a parameter the optimizer updates
    XA_TENSOR_NEEDS_GRAD = 1u << 1,      // backward must produce a gradient for it
    XA_TENSOR_ARENA = 1u << 2,           // struct and data live in the step arena
    XA_TENSOR_READONLY = 1u << 3,        // data is a read-only mapping (frozen weights)
    XA_TENSOR_OWNS_ARENA_DATA = 1u << 4, // data is its own arena allocation (not a view)
    XA_TENSOR_PINNED = 1u << 5,          // seen or made by an adapter hook: kept to the arena reset
    XA_TENSOR_MARK = 1u << 6,            // scratch bit of tape scans; clear outside them
    // A trainable parameter backward gave a gradient since the last optimizer step (the step
    // leaves the others alone, as PyTorch does; set it when writing a gradient by hand).
    XA_TENSOR_GRADED = 1u << 7,
};

typedef struct xa_node xa_node;

typedef struct xa_tensor {
    float *data;
    float *grad; // NULL until backward needs it; same shape as data
    int64_t shape[XA_MAX_DIMS];
    int ndim;
    int64_t numel;
    uint32_t flags;
    int refcount;     // heap tensors only; arena tensors die with the arena
    xa_buffer *buf;   // owner of `data`, NULL for arena tensors
    xa_node *node;    // the tape node that produced it, NULL for leaves
    const char *name; // optional, owned by whoever named it
} xa_tensor;

static inline bool xa_tensor_needs_grad(const xa_tensor *t) {
    return t && (t->flags & (XA_TENSOR_NEEDS_GRAD | XA_TENSOR_TRAINABLE));
}

// Heap tensor, zero-filled, refcount 1. NULL + XA_ENOMEM/XA_EINVAL on failure.
xa_tensor *xa_tensor_new(xa_ctx *ctx, int ndim, const int64_t *shape);
// A tensor viewing `data` inside `buf` (retained). Used for mmapped weights.
xa_tensor *xa_tensor_view(xa_ctx *ctx, xa_buffer *buf, float *data, int ndim,
                          const int64_t *shape);
// A tensor in the step arena, uninitialised (zeroed when `zero`). Lives until xa_arena_reset.
xa_tensor *xa_tensor_arena(xa_ctx *ctx, int ndim, const int64_t *shape, bool zero);
xa_tensor *xa_tensor_retain(xa_tensor *t);
void xa_tensor_release(xa_tensor *t); // no-op for arena tensors

// Convenience constructors for up to 4 dims (unused trailing dims are 0).
xa_tensor *xa_tensor_new_nd(xa_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
xa_tensor *xa_tensor_arena_nd(xa_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3);

bool xa_shape_equal(const xa_tensor *a, const xa_tensor *b);
int64_t xa_shape_numel(int ndim, const int64_t *shape, bool *overflow);
// "(8,128,768)" into buf; returns buf.
char *xa_shape_str(const xa_tensor *t, char *buf, size_t n);
char *xa_shape_fmt(int ndim, const int64_t *shape, char *buf, size_t n);
// Rows x last dim, the view most kernels take.
static inline int64_t xa_tensor_rows(const xa_tensor *t) {
    return t->ndim ? t->numel / t->shape[t->ndim - 1] : 1;
}
static inline int64_t xa_tensor_cols(const xa_tensor *t) {
    return t->ndim ? t->shape[t->ndim - 1] : 1;
}

// The gradient buffer of `t`, allocated zeroed on first use (arena for activations, heap for
// leaves). NULL + XA_ENOMEM on failure.
float *xa_tensor_grad(xa_ctx *ctx, xa_tensor *t);

// Step arena: bump allocation from chunks kept across resets (memory is allocated once and
// reused, never handed back between steps). 64-byte aligned.
void *xa_arena_alloc(xa_ctx *ctx, size_t size);
void xa_arena_reset(xa_ctx *ctx); // also clears the tape
// Mark the arena and later free everything allocated since (no tape node may have been recorded
// in between: rewinding is for work that backward will never read, like frozen layers).
typedef struct xa_arena_mark {
    void *chunk;
    size_t used, total;
    size_t tape_count;
} xa_arena_mark;
xa_arena_mark xa_arena_mark_get(const xa_ctx *ctx);
void xa_arena_rewind(xa_ctx *ctx, xa_arena_mark mark);
size_t xa_arena_used(const xa_ctx *ctx);
size_t xa_arena_capacity(const xa_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
