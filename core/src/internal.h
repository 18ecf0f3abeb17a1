// Private to libxadapt: the context's layout and helpers shared by core files. Never installed;
// plugins see the host table (plugin.h), scripts see the Lua binding.
#ifndef XADAPT_INTERNAL_H
#define XADAPT_INTERNAL_H

#include "xadapt/core.h"
#include "xadapt/tensor.h"

#define XA_ERRMSG_MAX 2048

typedef struct xa_arena_chunk {
    struct xa_arena_chunk *next;
    size_t size, used;
    unsigned char *mem;
} xa_arena_chunk;

typedef struct xa_arena {
    xa_arena_chunk *head;  // chunk being filled
    xa_arena_chunk *first; // chain in allocation order; kept across resets
    size_t used_total;
} xa_arena;

struct xa_tape; // tape.c

// Gradient buffers of activations that backward has finished with, by size, for reuse within
// the same step: activation gradients then cost a few live buffers instead of one per op.
typedef struct xa_free_grad {
    struct xa_free_grad *next;
    size_t bytes;
} xa_free_grad;

// Arena tensors made since xa_made_begin, while nothing can record (gradients off): at the end of
// a block the ones nobody keeps give their data back (xa_made_end), as xa_tape_drop_unread does
// for a recorded block. `lost`: an entry could not be stored (out of memory), or a rewind freed
// noted tensors, so nothing is given back until the outermost xa_made_end.
typedef struct xa_made {
    xa_tensor **v;
    size_t n, cap;
    bool on, lost;
} xa_made;

typedef struct xa_made_mark {
    size_t since;
    bool was_on;
} xa_made_mark;

struct xa_ctx {
    xa_status code;
    char msg[XA_ERRMSG_MAX];
    uint64_t rng[4];
    xa_arena arena;
    struct xa_tape *tape;
    bool grad_enabled; // recording allowed (xa_grad_mode)
    bool training;     // dropout active
    xa_free_grad *free_grads; // float buffers in the arena free for reuse (finished gradients,
                              // dropped activations); emptied by xa_arena_reset and rewind
    int hook_depth;           // > 0 while an adapter hook runs: what it makes is pinned
    xa_made made;             // arena tensors made in a forward that records nothing
};

// Give an activation's gradient buffer back for reuse (backward is done with it).
void xa_grad_recycle(xa_ctx *ctx, xa_tensor *t);
// A gradient buffer for an op that writes all of it: a new one is not zeroed and *fresh says so
// (the op assigns instead of accumulating); an existing one is returned as is. xa_tensor_grad is
// this plus zeroing.
float *xa_tensor_grad_fresh(xa_ctx *ctx, xa_tensor *t, bool *fresh);
// The backward of an op whose input gradient is its output gradient, as is or changed in place
// (sums, dropout, scaling, views): when `t` has no gradient buffer yet, the output's is handed to
// it instead of zeroing a new one and adding. Returns t's gradient then, NULL otherwise.
float *xa_grad_pass(xa_ctx *ctx, xa_node *n, xa_tensor *t);
// Give an activation's data buffer back for reuse (no backward reads it); t->data becomes NULL.
void xa_tensor_drop_data(xa_ctx *ctx, xa_tensor *t);

// Note an arena tensor (or view) just made, when a xa_made_begin is open.
void xa_made_note(xa_ctx *ctx, xa_tensor *t);
// Start noting the arena tensors made from now on (nests).
xa_made_mark xa_made_begin(xa_ctx *ctx);
// Give back the data of the tensors made since `mark` that nothing can read any more: not `keep`,
// not pinned (seen or made by an adapter hook, which may keep it), not the base of a view. Only
// for work that recorded nothing on the tape, whose nodes could read them in backward.
void xa_made_end(xa_ctx *ctx, xa_made_mark mark, const xa_tensor *keep);

void xa_arena_deinit(xa_arena *a);
void xa_tape_clear(xa_ctx *ctx);
void xa_tape_free(xa_ctx *ctx);

#endif
