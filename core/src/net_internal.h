// Private to the host: what an adapter instance and an options table are, shared by the
// registry (plugins/loader.c), the host function table (plugins/host_api.c) and the network
// (core/src/net.c).
#ifndef XADAPT_NET_INTERNAL_H
#define XADAPT_NET_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "internal.h"
#include "xadapt/net.h"

#define XA_MAX_SUBMODULES 16

// An optional class member is usable when the plugin's struct is large enough to hold it.
#define XA_CLASS_HAS(cls, member)                                                                  \
    ((cls)->struct_size >= offsetof(xa_adapter_class, member) + sizeof((cls)->member) &&          \
     (cls)->member)

struct xa_opts {
    xa_ctx *ctx;
    const cJSON *json; // an object
    const char *owner; // "xadapter 'v1'", for messages
};

typedef struct xa_attachment {
    int layer, at;
} xa_attachment;

struct xa_adapter {
    xa_net *net;
    const xa_adapter_class *cls;
    const xa_plugin_record *plugin;
    char *name;
    char *opts_json;
    void *state;
    xa_dims dims;
    uint32_t active;      // bit i: submodule i active; all submodules start active
    uint32_t built;       // bit i: the instance has submodule i (a plugin may leave some out)
    int nsub;
    xa_attachment *sites;
    int nsites;
    int *taps;
    int ntaps;
    bool creating;        // attach/tap/param only during create
    bool disabled;        // switched off as a whole (classes without sub-modules)
    xa_tensor **buffers;  // persistent non-trainable tensors (host->buffer)
    int nbuffers;
};

xa_adapter *xa_adapter_create(xa_ctx *ctx, xa_net *net, const xa_adapter_class *cls,
                              const xa_plugin_record *plugin, const char *name, const cJSON *opts);
void xa_adapter_destroy(xa_adapter *a);

// net.c: called by the host API during create
xa_status xa_net_attach(xa_net *n, xa_adapter *a, int layer, int at);
xa_status xa_net_tap(xa_net *n, xa_adapter *a, int layer);
xa_tensor *xa_net_new_param(xa_net *n, xa_adapter *a, const char *name, int ndim,
                            const int64_t *shape, int init, float scale);
xa_ctx *xa_net_ctx(xa_net *n);
xa_model *xa_net_plm(xa_net *n);
xa_adapter *xa_net_adapter_at(xa_net *n, size_t i);
xa_registry *xa_net_registry(xa_net *n); // NULL when the net was made without one
xa_status xa_net_replace(xa_net *n, xa_adapter *a, int layer, int at, bool on);
xa_status xa_net_base_linear(xa_net *n, int layer, int at, xa_tensor **w, xa_tensor **b);

// What a load may change, taken before it so that a failed load leaves the network as it found
// it: the adapters (later ones are removed), their on/off state, the fusion and its parameters,
// and the RNG that initialised new parameters. Parameter values are the caller's to keep.
typedef struct xa_net_mark {
    size_t nadapters;
    xa_fusion fusion;
    bool fused; // concat-fusion parameters existed
    uint64_t rng[4];
    uint32_t *active;
    bool *disabled;
} xa_net_mark;
xa_status xa_net_mark_take(xa_net *n, xa_net_mark *m);
void xa_net_mark_restore(xa_net *n, xa_net_mark *m); // frees what the mark holds
void xa_net_mark_free(xa_net_mark *m);

#endif
