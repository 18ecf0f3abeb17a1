// THE plugin ABI. A plugin is a shared object that exports one symbol, xa_plugin_init, and
// registers adapter classes. It never links against libxadapt: everything it may call comes
// through the versioned, append-only xa_host_api table the host passes in. This header is
// self-contained on purpose; a plugin includes nothing else from xadapt. Rules: docs/abi.md.
#ifndef XADAPT_PLUGIN_H
#define XADAPT_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Major changes break plugins (a field removed or reordered); minor ones only append.
#define XA_ABI_MAJOR 1
#define XA_ABI_MINOR 2

#if defined(__GNUC__)
#define XA_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define XA_PLUGIN_EXPORT
#endif

// Opaque to plugins.
typedef struct xa_ctx xa_ctx;
typedef struct xa_tensor xa_tensor;
typedef struct xa_node xa_node;
typedef struct xa_adapter xa_adapter; // one instance of an adapter class, owned by the host
typedef struct xa_opts xa_opts;       // the options table a script passed to m:insert

// Where an adapter's forward runs (values shared with the host's site enum).
enum {
    XA_AT_ATTN = 0, // attention sub-layer output, before its residual (+ LayerNorm in post-LN)
    XA_AT_FFN = 1,  // feed-forward sub-layer output, before its residual
    XA_AT_OUT = 2,  // block output: the residual stream after the block
    // a projection's output (LoRA): query, key, value, attention output, FF1, FF2
    XA_AT_Q = 3,
    XA_AT_K = 4,
    XA_AT_V = 5,
    XA_AT_O = 6,
    XA_AT_FF1 = 7,
    XA_AT_FF2 = 8,
    XA_AT_ACT = 9, // ABI 1.2: feed-forward activation after the nonlinearity, FF2's input (B,T,I)
    XA_AT_SIDE = 100, // side network: reads taps, output fused at the head (K-Adapter)
};

enum { XA_INIT_ZERO_ = 0, XA_INIT_ONE_, XA_INIT_NORMAL_, XA_INIT_UNIFORM_, XA_INIT_XAVIER_,
       XA_INIT_KAIMING_ }; // same values as xa_init_kind in xadapt/optim.h

enum { XA_ACT_GELU_ = 0, XA_ACT_GELU_TANH_, XA_ACT_QUICK_GELU_, XA_ACT_TANH_, XA_ACT_SIGMOID_,
       XA_ACT_RELU_ }; // same values as xa_act in xadapt/ops.h

enum { XA_LOG_DEBUG = 0, XA_LOG_INFO = 1, XA_LOG_WARN = 2 };

// Sizes of the frozen models an adapter is inserted into.
typedef struct xa_dims {
    size_t struct_size;
    int64_t hidden, layers, heads, intermediate; // the PLM
    int64_t vlm_text_hidden, vlm_vision_hidden;  // CLIP towers, 0 without a VLM
    int64_t vlm_projection;                      // CLIP projection_dim, 0 without a VLM
} xa_dims;

// What a forward call sees. Tensors are (B, T, H) unless noted; masks are (B, T) 1/0 floats.
typedef struct xa_site_args {
    size_t struct_size;
    int layer;          // block index, -1 for side networks
    int at;             // XA_AT_*
    xa_tensor *h;       // the tensor to rewrite (sub-layer output, block output, projection out)
    xa_tensor *x;       // the sub-layer's or projection's input
    const float *mask;  // text padding mask (B, T)
    int64_t B, T;
    // CLIP features for this batch (NULL when the script gave none):
    xa_tensor *image_tokens;       // (B, Ni, Dv) patch tokens (k images per example concatenated)
    const float *image_token_mask; // (B, Ni) or NULL
    xa_tensor *image_pooled;       // (B, k, P) projected image embeddings
    xa_tensor *text_tokens;        // (B, Nt, Dt) CLIP text token features of the same text
    const float *text_token_mask;  // (B, Nt) or NULL
    xa_tensor *text_pooled;        // (B, 1, P) projected text embedding
    // side networks: taps[i] = hidden state tapped at layer tap_layers[i] (HF numbering)
    xa_tensor *const *taps;
    const int *tap_layers;
    int ntaps;
} xa_site_args;

typedef struct xa_attn_args {
    size_t struct_size;
    int heads;
    bool causal;
    const float *key_mask; // (B, Tk) 1 attend / 0 pad, or NULL
    float dropout;         // on probabilities while training
    float scale;           // 0 = 1/sqrt(head dim)
} xa_attn_args;

typedef void (*xa_backward_cb)(xa_ctx *ctx, xa_node *node);

// The host's functions. Append-only: new members go at the end with a minor bump; a plugin
// checks abi_minor (or struct_size) before using a member newer than it was built against.
typedef struct xa_host_api {
    size_t struct_size;
    uint32_t abi_major, abi_minor;
    const char *host_version;

    // -- messages and memory --
    // Status codes are xadapt/core.h's: 0 ok, negative errors (-1 invalid argument, -5 shape).
    int (*errorf)(xa_ctx *ctx, int code, const char *fmt, ...);
    void (*log)(xa_ctx *ctx, int level, const char *fmt, ...);
    void *(*alloc)(xa_ctx *ctx, size_t size); // NULL + message on failure; free with release
    void (*release)(void *p);

    // -- options (the Lua table given to m:insert) --
    // Each returns `dflt` when the key is absent; a present key of the wrong type is an error
    // recorded in ctx (checked by the host after create returns).
    int64_t (*opt_int)(const xa_opts *o, const char *key, int64_t dflt);
    double (*opt_num)(const xa_opts *o, const char *key, double dflt);
    bool (*opt_bool)(const xa_opts *o, const char *key, bool dflt);
    const char *(*opt_str)(const xa_opts *o, const char *key, const char *dflt);
    // Integer list (a number is a list of one); returns the count, -1 when absent.
    int (*opt_ints)(const xa_opts *o, const char *key, int64_t *out, int cap);
    // String list (a string is a list of one); returns the count, -1 when absent.
    int (*opt_strs)(const xa_opts *o, const char *key, const char **out, int cap);

    // -- the adapter instance --
    xa_ctx *(*ctx_of)(xa_adapter *a);
    const char *(*name_of)(xa_adapter *a); // instance name ("xadapter", "fac", ...)
    const xa_dims *(*dims)(xa_adapter *a);
    void *(*state)(xa_adapter *a);
    void (*set_state)(xa_adapter *a, void *state);
    // Run forward at (layer, at) for in-stream sites; declared order is kept per site.
    int (*attach)(xa_adapter *a, int layer, int at);
    // Read hidden state `layer` (0 = embeddings, i = block i) in side-network forwards.
    int (*tap)(xa_adapter *a, int layer);
    // Whether sub-module `name` is active now (scripts switch them at run time).
    bool (*active)(xa_adapter *a, const char *submodule);
    // A trainable parameter "<instance>.<name>", initialised by kind (XA_INIT_*_) and scale a.
    xa_tensor *(*param)(xa_adapter *a, const char *name, int ndim, const int64_t *shape, int init,
                        float scale);
    bool (*training)(xa_ctx *ctx);

    // -- tensors --
    int (*ndim)(const xa_tensor *t);
    int64_t (*dim)(const xa_tensor *t, int i); // negative i counts from the end
    int64_t (*numel)(const xa_tensor *t);
    float *(*data)(xa_tensor *t);
    float *(*grad)(xa_ctx *ctx, xa_tensor *t); // allocated zeroed on first use
    bool (*needs_grad)(const xa_tensor *t);
    xa_tensor *(*new_tensor)(xa_ctx *ctx, int ndim, const int64_t *shape); // step arena, zeroed

    // -- ops (forward now, backward on the tape); NULL in -> NULL out --
    xa_tensor *(*linear)(xa_ctx *ctx, xa_tensor *x, xa_tensor *w, xa_tensor *b);
    xa_tensor *(*matmul)(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, bool ta, bool tb);
    xa_tensor *(*add)(xa_ctx *ctx, xa_tensor *a, xa_tensor *b);
    xa_tensor *(*sub)(xa_ctx *ctx, xa_tensor *a, xa_tensor *b);
    xa_tensor *(*mul)(xa_ctx *ctx, xa_tensor *a, xa_tensor *b);
    xa_tensor *(*scale)(xa_ctx *ctx, xa_tensor *a, float s);
    xa_tensor *(*add_bias)(xa_ctx *ctx, xa_tensor *x, xa_tensor *bias);
    xa_tensor *(*mul_row)(xa_ctx *ctx, xa_tensor *x, xa_tensor *gate);
    xa_tensor *(*act)(xa_ctx *ctx, xa_tensor *x, int act); // XA_ACT_*_
    xa_tensor *(*layernorm)(xa_ctx *ctx, xa_tensor *x, xa_tensor *w, xa_tensor *b, float eps);
    xa_tensor *(*softmax)(xa_ctx *ctx, xa_tensor *x);
    xa_tensor *(*attention)(xa_ctx *ctx, xa_tensor *q, xa_tensor *k, xa_tensor *v,
                            const xa_attn_args *args);
    xa_tensor *(*dropout)(xa_ctx *ctx, xa_tensor *x, float p);
    xa_tensor *(*concat)(xa_ctx *ctx, xa_tensor *a, xa_tensor *b, int dim);
    xa_tensor *(*slice)(xa_ctx *ctx, xa_tensor *x, int dim, int64_t start, int64_t len);
    xa_tensor *(*reshape)(xa_ctx *ctx, xa_tensor *x, int ndim, const int64_t *shape);
    xa_tensor *(*pool_mean)(xa_ctx *ctx, xa_tensor *x, const float *mask);
    xa_tensor *(*sum)(xa_ctx *ctx, xa_tensor *x);
    // A plugin's own op: `out` computed by the plugin, `backward` accumulates into inputs.
    xa_tensor *(*custom)(xa_ctx *ctx, const char *name, xa_tensor *out, int nin,
                         xa_tensor *const *in, xa_backward_cb backward, void *saved);
    // Inside a custom backward: the node's output, inputs and saved data.
    xa_tensor *(*node_out)(xa_node *n);
    xa_tensor *(*node_in)(xa_node *n, int i);
    void *(*node_saved)(xa_node *n);

    // -- frozen projections (LoRA merging) --
    // The frozen weight (out, in) and bias (may be NULL) of projection `at` (XA_AT_Q..FF2) of
    // block `layer`. Read-only: they are the mapped checkpoint.
    int (*base_linear)(xa_adapter *a, int layer, int at, xa_tensor **w, xa_tensor **b);
    // A persistent, non-trainable tensor owned by the adapter (zeroed; freed with it); not saved.
    xa_tensor *(*buffer)(xa_adapter *a, int ndim, const int64_t *shape);
    void (*buffer_free)(xa_adapter *a, xa_tensor *t);
    // While on, the host skips projection `at` of `layer` and calls this adapter's forward with
    // args->h == NULL: the adapter computes the projection from args->x itself. One adapter per
    // projection. While any projection is replaced, the host refuses to load adapter files and
    // checkpoints (the replacement may hold values folded from the parameters, as LoRA's merge).
    int (*replace)(xa_adapter *a, int layer, int at, bool on);

    // -- since ABI 1.1 --
    // In create: this instance is built without sub-module `name` of its class (X-adapter with
    // experts = {"t"}): m:activate refuses it and m:active does not list it.
    int (*without)(xa_adapter *a, const char *submodule);
} xa_host_api;

// One adapter class. Strings and arrays must live as long as the plugin is loaded.
typedef struct xa_adapter_class {
    size_t struct_size;
    const char *name;                 // unique across plugins: "xadapter", "lora", ...
    const char *description;
    const char *const *submodules;    // NULL-terminated ("v", "t"), or NULL
    const char *const *options;       // NULL-terminated option names; others are refused
    // Read options, create parameters, attach to sites or taps. Errors through host->errorf.
    int (*create)(xa_adapter *a, const xa_opts *opts);
    // In-stream: return the rewritten args->h (or args->h itself); side: the side output (B,T,H).
    xa_tensor *(*forward)(xa_adapter *a, const xa_site_args *args);
    void (*destroy)(xa_adapter *a); // free the state; parameters belong to the host
    // Optional: a named action from a script (m:control(name, command)), e.g. LoRA's "merge"
    // and "unmerge". Return 0, or an error through host->errorf. NULL when the class has none.
    int (*control)(xa_adapter *a, const char *command);
} xa_adapter_class;

typedef struct xa_plugin_info {
    size_t struct_size;
    uint32_t abi_major, abi_minor; // what the plugin was built against (set by the host to the
                                   // plugin's XA_ABI_* through XA_PLUGIN_INFO_INIT)
    const char *name;
    const char *version;
    const xa_adapter_class *const *classes; // NULL-terminated
} xa_plugin_info;

// In xa_plugin_init: `XA_PLUGIN_INFO_INIT(info, "name", "1.0.0", classes);`
#define XA_PLUGIN_INFO_INIT(info, nm, ver, cls)                                                    \
    do {                                                                                           \
        (info)->abi_major = XA_ABI_MAJOR;                                                          \
        (info)->abi_minor = XA_ABI_MINOR;                                                          \
        (info)->name = (nm);                                                                       \
        (info)->version = (ver);                                                                   \
        (info)->classes = (cls);                                                                   \
    } while (0)

// The one symbol a plugin exports. Return 0 on success; on failure return nonzero and set
// *errmsg to a message from malloc (the host frees it; strdup is not declared under -std=c11).
typedef int (*xa_plugin_init_fn)(const xa_host_api *host, xa_plugin_info *info, char **errmsg);
#define XA_PLUGIN_INIT_SYMBOL "xa_plugin_init"

#ifdef __cplusplus
}
#endif
#endif
