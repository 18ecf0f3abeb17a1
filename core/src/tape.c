// The autograd tape: a singly linked list of arena nodes, newest first, walked once by
// xa_backward. Gradients of activations come from the arena; of parameters, from their slab.
#include "xadapt/tape.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct xa_tape {
    xa_node *last;
    size_t count;
    const xa_tensor *loss; // during xa_backward: its gradient stays where it is
} xa_tape;

static xa_tape *tape_of(xa_ctx *ctx) {
    if (!ctx->tape)
        ctx->tape = xa_calloc(ctx, 1, sizeof(xa_tape));
    return ctx->tape;
}

void xa_tape_clear(xa_ctx *ctx) {
    if (ctx->tape)
        memset(ctx->tape, 0, sizeof(xa_tape));
}

void xa_tape_free(xa_ctx *ctx) {
    free(ctx->tape);
    ctx->tape = NULL;
}

static void mark_read(xa_node *n, int count, bool on) {
    for (int k = 0; n && k < count; k++, n = n->prev) {
        for (int i = 0; i < n->nin; i++)
            if (n->in[i] && (n->reads & XA_READS_IN(i)))
                n->in[i]->flags = on ? n->in[i]->flags | XA_TENSOR_MARK : n->in[i]->flags & ~XA_TENSOR_MARK;
        if (n->reads & XA_READS_OUT)
            n->out->flags = on ? n->out->flags | XA_TENSOR_MARK : n->out->flags & ~XA_TENSOR_MARK;
    }
}

void xa_tape_drop_unread(xa_ctx *ctx, size_t since, const xa_tensor *keep) {
    xa_tape *tape = ctx->tape;
    if (!tape || tape->count <= since)
        return;
    int count = (int)(tape->count - since);
    mark_read(tape->last, count, true);
    xa_node *n = tape->last;
    for (int k = 0; k < count; k++, n = n->prev) {
        xa_tensor *t = n->out;
        uint32_t f = t->flags;
        if (t != keep && t->data && (f & XA_TENSOR_OWNS_ARENA_DATA) &&
            !(f & (XA_TENSOR_MARK | XA_TENSOR_PINNED)))
            xa_tensor_drop_data(ctx, t);
    }
    mark_read(tape->last, count, false);
}

bool xa_tape_wants(const xa_ctx *ctx, int nin, xa_tensor *const *in) {
    if (!ctx->grad_enabled)
        return false;
    for (int i = 0; i < nin; i++)
        if (xa_tensor_needs_grad(in[i]))
            return true;
    return false;
}

xa_node *xa_tape_record(xa_ctx *ctx, const char *op, xa_backward_fn backward, xa_tensor *out,
                        int nin, xa_tensor *const *in) {
    XA_ASSERT(nin <= XA_NODE_MAX_IN);
    xa_tape *tape = tape_of(ctx);
    xa_node *n = tape ? xa_arena_alloc(ctx, sizeof *n) : NULL;
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    n->out = out;
    n->nin = nin;
    for (int i = 0; i < nin; i++)
        n->in[i] = in[i];
    n->reads = XA_READS_ALL;
    n->prev = tape->last;
    tape->last = n;
    tape->count++;
    out->node = n;
    out->flags |= XA_TENSOR_NEEDS_GRAD;
    return n;
}

xa_status xa_backward(xa_ctx *ctx, xa_tensor *loss) {
    if (!loss)
        return xa_errcode(ctx) ? xa_errcode(ctx)
                               : xa_errorf(ctx, XA_EINVAL, "backward: loss is NULL");
    if (loss->numel != 1)
        return xa_errorf(ctx, XA_ESHAPE, "backward: loss must have one element, has %lld",
                         (long long)loss->numel);
    if (!loss->node)
        return xa_errorf(ctx, XA_ESTATE,
                         "backward: the loss does not depend on any trainable parameter "
                         "(nothing was recorded; are all parameters frozen?)");
    float *g = xa_tensor_grad(ctx, loss);
    if (!g)
        return XA_ENOMEM;
    g[0] += 1.0f;
    ctx->tape->loss = loss;
    for (xa_node *n = ctx->tape->last; n; n = n->prev) {
        if (!n->out->grad)
            continue; // nothing downstream needed this output
        n->backward(ctx, n);
        if (ctx->code == XA_ENOMEM) {
            ctx->tape->loss = NULL;
            return XA_ENOMEM;
        }
        // Every consumer of n->out ran before n (reverse order): its gradient is spent.
        if (n->out != loss)
            xa_grad_recycle(ctx, n->out);
    }
    ctx->tape->loss = NULL;
    return XA_OK;
}

float *xa_grad_pass(xa_ctx *ctx, xa_node *n, xa_tensor *t) {
    if (!xa_tensor_needs_grad(t) || t->grad || !(t->flags & XA_TENSOR_ARENA) ||
        t->numel != n->out->numel || !n->out->grad || n->out == ctx->tape->loss)
        return NULL;
    t->grad = n->out->grad; // every consumer of n->out has run: its gradient is final
    n->out->grad = NULL;
    return t->grad;
}

bool xa_set_grad_enabled(xa_ctx *ctx, bool on) {
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = on;
    return prev;
}

bool xa_set_training(xa_ctx *ctx, bool on) {
    bool prev = ctx->training;
    ctx->training = on;
    return prev;
}

bool xa_is_training(const xa_ctx *ctx) { return ctx->training; }

size_t xa_tape_count(const xa_ctx *ctx, const char *op) {
    if (!ctx->tape)
        return 0;
    if (!op)
        return ctx->tape->count;
    size_t n = 0;
    for (const xa_node *node = ctx->tape->last; node; node = node->prev)
        n += strcmp(node->op, op) == 0;
    return n;
}
