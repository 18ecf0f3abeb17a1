// Reverse-mode autograd over coarse ops. An op records a node only when one of its inputs needs
// a gradient and recording is enabled; nodes live in the step arena and die at xa_arena_reset.
// Backward accumulates (+=) into trainable parameters and into activations that lead to them.
#ifndef XADAPT_TAPE_H
#define XADAPT_TAPE_H

#include "xadapt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define XA_NODE_MAX_IN 4

typedef void (*xa_backward_fn)(xa_ctx *ctx, xa_node *node);

struct xa_node {
    xa_node *prev;
    const char *op; // static name, for debugging and tape summaries
    xa_backward_fn backward;
    xa_tensor *out;
    xa_tensor *in[XA_NODE_MAX_IN];
    int nin;
    void *saved;   // op-specific data in the arena (statistics, masks, ids, probabilities)
    float f[4];    // small op parameters
    int64_t i[8];
    // Whose data backward reads: bit i for in[i], XA_READS_OUT for out. xa_tape_record sets every
    // bit; an op that needs less says so, which lets xa_tape_drop_unread free the rest early.
    uint8_t reads;
};

#define XA_READS_IN(i) ((uint8_t)(1u << (i)))
#define XA_READS_OUT ((uint8_t)0x80u)
#define XA_READS_ALL ((uint8_t)0xFFu)

// True when an op with these inputs must record (recording on and some input needs grad).
bool xa_tape_wants(const xa_ctx *ctx, int nin, xa_tensor *const *in);
// Record a node producing `out` from `in`; marks `out` as needing grad. NULL on arena failure.
xa_node *xa_tape_record(xa_ctx *ctx, const char *op, xa_backward_fn backward, xa_tensor *out,
                        int nin, xa_tensor *const *in);

// Free the data of activations made since the tape held `since` nodes whose data no node recorded
// since then reads in backward: outputs of those nodes that own their arena data, other than
// `keep` and pinned tensors. Their buffers serve later allocations of the same size. Only for
// callers that know nothing else holds those tensors (the encoder, after a block).
void xa_tape_drop_unread(xa_ctx *ctx, size_t since, const xa_tensor *keep);

// Seed d(loss) = 1 (loss must be a scalar or 1 element) and run every node backwards.
xa_status xa_backward(xa_ctx *ctx, xa_tensor *loss);

// Recording on/off (e.g. frozen encoders, evaluation). Returns the previous setting.
bool xa_set_grad_enabled(xa_ctx *ctx, bool on);
// Training mode turns dropout on. Returns the previous setting.
bool xa_set_training(xa_ctx *ctx, bool on);
bool xa_is_training(const xa_ctx *ctx);

// Nodes recorded since the last reset, and how many of them ran `op` (NULL = all).
size_t xa_tape_count(const xa_ctx *ctx, const char *op);

#ifdef __cplusplus
}
#endif
#endif
