// The plugin template: copy this folder to start an adapter plugin (see README.md here and
// docs/plugins.md). It is a small but real adapter, "scale": a learned per-channel scaling of a
// block's output, h * (1 + g), with g starting at zero so an untrained adapter is the identity.
// Everything a plugin may use comes through the host's function table; rules in docs/abi.md.
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

// The only xadapt header a plugin includes. It declares the function table, the structs that
// cross the boundary and the one symbol to export. Plugins never link against libxadapt.
#include "xadapt/plugin.h"

// The host's function table, saved by xa_plugin_init. It stays valid while the plugin is loaded
// and is the same for every adapter instance, so a file-static pointer is the simplest home.
static const xa_host_api *H;

// Whether the host's table is long enough to hold `member`. Tables only grow at the end (a minor
// version bump), so a member is present when the table's struct_size reaches past it. Check the
// last member you call in xa_plugin_init, once, instead of before every call.
#define HOST_HAS(h, member)                                                                        \
    ((h)->struct_size >= offsetof(xa_host_api, member) + sizeof((h)->member))

// Per-instance state: whatever the forward needs besides the host's arguments. The plugin owns
// it (malloc here, free in destroy); the host only keeps the pointer (set_state/state).
typedef struct {
    int64_t layers; // blocks in the frozen model
    xa_tensor **g;  // g[layer]: the (hidden,) scaling, NULL where this instance is not attached
} scale;

// Every option this class accepts. The host refuses any other key before create runs and lists
// these in the message, so a typo in a script fails loudly instead of being ignored.
static const char *const options[] = {"layers", NULL};

// Called once per m:insert / xa_net_insert, with the options table the script passed. Read the
// options, create the parameters and attach to sites; parameters, attach and tap are only
// allowed here. On failure report through H->errorf and return its (nonzero) result: the host
// then undoes the attachments and parameters and calls destroy if a state was set.
static int create(xa_adapter *a, const xa_opts *o) {
    xa_ctx *ctx = H->ctx_of(a);    // the context messages go to
    const xa_dims *d = H->dims(a); // sizes of the frozen model (hidden, layers, heads, ...)

    scale *s = calloc(1, sizeof *s);
    if (!s)
        return H->errorf(ctx, -2, "out of memory"); // -2: XA_ENOMEM, codes are core.h's
    H->set_state(a, s); // from here on, destroy frees it whatever happens below
    s->layers = d->layers;
    s->g = calloc((size_t)d->layers, sizeof *s->g);
    if (!s->g)
        return H->errorf(ctx, -2, "out of memory");

    // Options: each accessor returns the default when the key is absent; a present key of the
    // wrong type records an error in ctx that the host reports after create returns.
    // "layers": a number or a list of numbers (block indices); default every block.
    int64_t layers[256];
    int n = H->opt_ints(o, "layers", layers, 256);
    if (n > 256)
        return H->errorf(ctx, -1, "at most 256 layers, got %d", n);
    if (n < 0)
        for (n = 0; n < d->layers && n < 256; n++)
            layers[n] = n;

    for (int i = 0; i < n; i++) {
        // Run forward on the block output of this layer. The host checks the layer against the
        // model and reports "layer 7 is outside the model's 0..1" itself: just pass it on.
        if (H->attach(a, (int)layers[i], XA_AT_OUT) != 0)
            return -1;
        int64_t l = layers[i]; // in range now
        if (s->g[l])
            return H->errorf(ctx, -1, "layer %lld is listed twice", (long long)l);
        // A trainable parameter, owned by the host: it lives in the net's parameter slab, gets
        // gradients and optimizer state there and is saved and loaded by the host under the
        // name "<instance>.<name>" (here "scale.l0.g"). Never free it. Zero initialisation
        // makes h * (1 + g) == h until training moves g.
        char name[32];
        snprintf(name, sizeof name, "l%lld.g", (long long)l);
        s->g[l] = H->param(a, name, 1, (int64_t[]){d->hidden}, XA_INIT_ZERO_, 0.0f);
        if (!s->g[l])
            return -1; // the host has set the message
    }
    return 0;
}

// Called at every attached site in every forward pass. Build the output from the host's ops:
// each records itself on the tape, so backward (and the gradient of g) comes for free. The
// tensors ops return live in the step arena until the host resets it at the end of the step:
// never free them and never keep them across steps (keep parameters or buffers instead).
static xa_tensor *forward(xa_adapter *a, const xa_site_args *args) {
    const scale *s = H->state(a);
    xa_ctx *ctx = H->ctx_of(a);
    xa_tensor *g = s->g[args->layer]; // attached layers only, so never NULL here
    // h * (1 + g) written as h + h * g: mul_row broadcasts the (hidden,) vector over (B, T).
    // An op returns NULL on failure with the message set, and passes NULL inputs through, so a
    // chain needs one check at the end; returning NULL tells the host this forward failed.
    return H->add(ctx, args->h, H->mul_row(ctx, args->h, g));
}

// Called when the instance is removed (the net is freed, or create failed after set_state).
// Free what the plugin allocated; parameters and buffers belong to the host.
static void destroy(xa_adapter *a) {
    scale *s = H->state(a);
    free(s->g);
    free(s);
}

// The class. Start struct_size with sizeof: the host reads only the members your header had, so
// a plugin built against an older header keeps working when members are appended.
static const xa_adapter_class scale_class = {
    .struct_size = sizeof(xa_adapter_class),
    .name = "scale", // unique across every loaded plugin: rename it when you copy this file
    .description = "learned per-channel scaling of block outputs, h * (1 + g), g = 0 at start",
    .submodules = NULL, // e.g. {"v", "t", NULL} for parts scripts can switch on and off
    .options = options,
    .create = create,
    .forward = forward,
    .destroy = destroy,
    .control = NULL, // optional named actions (m:control(name, "merge")); none here
};

// NULL-terminated; a plugin may register several classes. Strings and arrays handed to the host
// must live as long as the plugin is loaded: static storage does that.
static const xa_adapter_class *const classes[] = {&scale_class, NULL};

// The one exported symbol (every other symbol is hidden by -fvisibility=hidden). Fill in the
// plugin info, check that the host offers what this file uses, keep the table. On failure return
// nonzero with *errmsg from malloc (strdup is POSIX, not declared under -std=c11): the host frees
// it and shows it in its refusal.
XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg) {
    XA_PLUGIN_INFO_INIT(info, "template", "1.0.0", classes);
    if (host->abi_major != XA_ABI_MAJOR || !HOST_HAS(host, mul_row)) {
        char msg[128];
        snprintf(msg, sizeof msg, "needs plugin ABI %d.x with mul_row, the host offers %u.%u",
                 XA_ABI_MAJOR, host->abi_major, host->abi_minor);
        *errmsg = malloc(sizeof msg);
        if (*errmsg)
            snprintf(*errmsg, sizeof msg, "%s", msg);
        return 1;
    }
    H = host;
    return 0;
}
