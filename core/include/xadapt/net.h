// The host side of plugins: the registry that finds and loads adapter plugins (plugins/loader.c)
// and the network that composes a frozen PLM, an optional frozen VLM, adapter instances at
// their sites and taps, and side-network fusion (core/src/net.c). Task heads are in task.h.
#ifndef XADAPT_NET_H
#define XADAPT_NET_H

#include "xadapt/model.h"
#include "xadapt/optim.h"
#include "xadapt/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- registry ------------------------------------------------------------------------------

typedef struct xa_registry xa_registry;

typedef struct xa_plugin_record {
    const char *path;
    const char *name, *version; // NULL for refused files
    uint32_t abi_major, abi_minor;
    const char *refused;        // why the file was refused, NULL when loaded
    const xa_adapter_class *const *classes; // NULL-terminated; NULL when refused
} xa_plugin_record;

xa_registry *xa_registry_new(xa_ctx *ctx);
void xa_registry_free(xa_registry *r); // unloads every plugin: free nets first
// Load one plugin file. A refusal (missing file, not a shared object, no init symbol, ABI
// major mismatch, minor newer than the host, init failed, duplicate class) is recorded and
// returned as XA_EPLUGIN / XA_EABI with the path and the reason.
xa_status xa_registry_load(xa_registry *r, const char *path);
// Load every *.so in the search path: $XADAPT_PLUGIN_PATH (':'-separated), the build tree's
// adapters/, then the install directory. Refusals are recorded, not fatal.
xa_status xa_registry_scan(xa_registry *r);
// The search path in order, ':'-separated (for messages and `xadapt plugins`).
const char *xa_registry_path(xa_registry *r);
size_t xa_registry_count(const xa_registry *r);
const xa_plugin_record *xa_registry_at(const xa_registry *r, size_t i);
const xa_adapter_class *xa_registry_find(const xa_registry *r, const char *cls,
                                         const xa_plugin_record **from);
// Every class name, ", "-separated (for "unknown adapter" messages).
const char *xa_registry_class_names(xa_registry *r);
const xa_host_api *xa_host_api_get(void);

// --- network -------------------------------------------------------------------------------

typedef struct xa_net xa_net;

// The features CLIP gives the experts for one batch (see xa_site_args in plugin.h).
typedef struct xa_vlm_feats {
    xa_tensor *image_tokens, *image_pooled, *text_tokens, *text_pooled;
    const float *image_token_mask, *text_token_mask;
} xa_vlm_feats;

// How side networks (K-Adapter) join the last hidden state h_L. ADD: h_L + a_1 + ... + a_k.
// CONCAT, as K-Adapter's code: one side network, Linear(2H -> H) on [h_L; a] ("fusion.*"); k of
// them, Linear(2H -> H) on [h_L; a_i] per side network ("fusion.<name>.*"), then Linear(kH -> H)
// on the concatenation of the k results ("fusion.*").
typedef enum xa_fusion { XA_FUSION_ADD, XA_FUSION_CONCAT } xa_fusion;

// The net borrows plm, vlm (may be NULL) and the registry; they must outlive it.
xa_net *xa_net_new(xa_ctx *ctx, xa_model *plm, xa_model *vlm, xa_registry *reg);
void xa_net_free(xa_net *n);

// Insert an adapter of class `cls` named `name` (NULL: the class name) with options as a JSON
// object. Unknown classes and options are errors listing the valid ones. Names are unique, at
// most XA_ADAPTER_NAME_MAX characters, without '.' or '*', and not plm, vlm, head or fusion.
#define XA_ADAPTER_NAME_MAX 128
xa_status xa_net_insert(xa_net *n, const char *cls, const char *name, const char *opts_json);
size_t xa_net_adapter_count(const xa_net *n);
const char *xa_net_adapter_name(const xa_net *n, size_t i);
const char *xa_net_adapter_class(const xa_net *n, size_t i);
// Active sub-modules of an adapter: `names` (n of them; n = -1 means all, 0 none).
xa_status xa_net_activate(xa_net *n, const char *adapter, const char *const *names, int count);
// ", "-separated list of the active sub-modules, or "none"/"all" (static or internal buffer).
const char *xa_net_active(xa_net *n, const char *adapter);
// Freeze or unfreeze parameters whose "<adapter>.<param>" name matches a glob pattern.
// "plm.*" and "vlm.*" match the frozen bases (always frozen: a pattern that would unfreeze
// them and nothing else is an error; "*" unfreezes every adapter and head). Returns the number
// matched through *matched when not NULL (the bases, when matched, count as one).
xa_status xa_net_freeze(xa_net *n, const char *pattern, bool frozen, int *matched);
xa_params *xa_net_params(xa_net *n);
// A trainable parameter of the network itself (task heads: "head.<name>.<param>"), saved and
// loaded with the adapters. Loading tolerates head parameters absent from a file (a new head
// on adapters trained without it keeps its initial values).
xa_tensor *xa_net_param(xa_net *n, const char *name, int ndim, const int64_t *shape,
                        xa_init init);
xa_model *xa_net_plm_model(xa_net *n);
xa_model *xa_net_vlm_model(xa_net *n);
// The name of an adapter that computes a frozen projection itself (replace; a merged LoRA), or
// NULL. What it computes may fold its trained values in (LoRA's merge does): loading new ones
// under it would leave that stale, so adapter files and checkpoints are refused meanwhile.
const char *xa_net_merged(const xa_net *n);
// Send a named action to an adapter (LoRA: "merge", "unmerge"); XA_EINVAL when its class
// has no such action.
xa_status xa_net_control(xa_net *n, const char *adapter, const char *command);
void xa_net_set_fusion(xa_net *n, xa_fusion f);
// Create now the parameters the network otherwise creates on its first forward (the concat
// fusion's, for the side networks inserted so far), so that an optimizer or a checkpoint sees them.
xa_status xa_net_prepare(xa_net *n);
xa_fusion xa_net_fusion(const xa_net *n);

typedef struct xa_net_batch {
    xa_text_batch text;
    const xa_vlm_feats *feats; // NULL when the adapters need none
    bool one_off; // ids drawn at random for this step (MLM masking): the frozen-prefix cache
                  // would never see them again, so it neither looks them up nor keeps them
} xa_net_batch;

typedef struct xa_net_out {
    xa_text_out plm; // plm.last is the last hidden state after in-stream adapters
    xa_tensor *fused; // last hidden state fused with side-network outputs (== plm.last if none)
} xa_net_out;

xa_status xa_net_forward(xa_ctx *ctx, xa_net *n, const xa_net_batch *b,
                         const xa_forward_opts *opts, xa_net_out *out);
// Lowest layer with an in-stream adapter (L when none): layers below it are a frozen prefix.
int xa_net_lowest_site(const xa_net *n);
// Keep frozen-prefix hidden states per example (up to `budget_bytes`; 0 turns it off), so later
// epochs skip the blocks below the lowest in-stream adapter (all of them for side networks).
// Used only while the prefix is deterministic: not when training with base dropout.
void xa_net_set_prefix_cache(xa_net *n, size_t budget_bytes);
void xa_net_prefix_stats(const xa_net *n, int64_t *hits, int64_t *misses, size_t *bytes);

// One safetensors file with every adapter's parameters and, in __metadata__, plugin names and
// versions, the ABI, each adapter's options and active sub-modules, and the fingerprint of
// the frozen PLM. Loading onto another base is refused unless `force`.
xa_status xa_net_save(xa_net *n, const char *path);
xa_status xa_net_load(xa_net *n, const char *path, bool force);
// Loading inserts the file's adapters the network lacks and restores their switches and values;
// the network's other adapters keep theirs. Heads the network has take the file's values, and
// the file's fusion mode and (concat) projections are restored, which needs the network's side
// networks to be the file's, in its order. adapters_only takes the adapters alone: no head, no
// fusion, the network's fusion mode unchanged (K-Adapter's fine-tuning: pretrained adapters,
// new fusion and head). A failed load changes nothing.
typedef struct xa_load_opts {
    bool force;         // load onto a base with another fingerprint
    bool adapters_only; // leave heads and fusion alone
} xa_load_opts;
xa_status xa_net_load_with(xa_net *n, const char *path, const xa_load_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
