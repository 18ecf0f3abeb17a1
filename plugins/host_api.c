// The function table the host hands to plugins (xa_host_api, plugin.h), the options accessors
// over the JSON object a script passed, and the life cycle of adapter instances. Every entry is
// a thin forward to libxadapt so the ABI stays a list of stable C signatures.
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"
#include "xadapt/ops.h"

// --- messages and memory ----------------------------------------------------------------------

static int host_errorf(xa_ctx *ctx, int code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return xa_errorf(ctx, code < 0 ? (xa_status)code : XA_EPLUGIN, "%s", msg);
}

static void host_log(xa_ctx *ctx, int level, const char *fmt, ...) {
    (void)ctx; // library code never prints: plugin logs go to stderr only when asked for
    const char *env = getenv("XADAPT_PLUGIN_LOG");
    if (!env || atoi(env) > level + 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "xadapt plugin: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void *host_alloc(xa_ctx *ctx, size_t size) { return ctx ? xa_malloc(ctx, size) : malloc(size); }
static void host_release(void *p) { free(p); }

// --- options ---------------------------------------------------------------------------------

static const cJSON *opt(const xa_opts *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o->json, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static void opt_type_error(const xa_opts *o, const char *key, const char *want) {
    if (!xa_errcode(o->ctx))
        xa_errorf(o->ctx, XA_EINVAL, "%s: option '%s' must be %s", o->owner, key, want);
}

static bool is_int(const cJSON *v) {
    return cJSON_IsNumber(v) && v->valuedouble == (double)(int64_t)v->valuedouble;
}

static int64_t opt_int(const xa_opts *o, const char *key, int64_t dflt) {
    const cJSON *v = opt(o, key);
    if (!v)
        return dflt;
    if (!is_int(v)) {
        opt_type_error(o, key, "an integer");
        return dflt;
    }
    return (int64_t)v->valuedouble;
}

static double opt_num(const xa_opts *o, const char *key, double dflt) {
    const cJSON *v = opt(o, key);
    if (!v)
        return dflt;
    if (!cJSON_IsNumber(v)) {
        opt_type_error(o, key, "a number");
        return dflt;
    }
    return v->valuedouble;
}

static bool opt_bool(const xa_opts *o, const char *key, bool dflt) {
    const cJSON *v = opt(o, key);
    if (!v)
        return dflt;
    if (!cJSON_IsBool(v)) {
        opt_type_error(o, key, "true or false");
        return dflt;
    }
    return cJSON_IsTrue(v);
}

static const char *opt_str(const xa_opts *o, const char *key, const char *dflt) {
    const cJSON *v = opt(o, key);
    if (!v)
        return dflt;
    if (!cJSON_IsString(v)) {
        opt_type_error(o, key, "a string");
        return dflt;
    }
    return v->valuestring;
}

static int opt_ints(const xa_opts *o, const char *key, int64_t *out, int cap) {
    const cJSON *v = opt(o, key);
    if (!v)
        return -1;
    if (is_int(v)) {
        if (cap > 0)
            out[0] = (int64_t)v->valuedouble;
        return 1;
    }
    if (!cJSON_IsArray(v)) {
        opt_type_error(o, key, "an integer or a list of integers");
        return -1;
    }
    int n = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!is_int(e)) {
            opt_type_error(o, key, "a list of integers");
            return -1;
        }
        if (n < cap)
            out[n] = (int64_t)e->valuedouble;
        n++;
    }
    return n;
}

static int opt_strs(const xa_opts *o, const char *key, const char **out, int cap) {
    const cJSON *v = opt(o, key);
    if (!v)
        return -1;
    if (cJSON_IsString(v)) {
        if (cap > 0)
            out[0] = v->valuestring;
        return 1;
    }
    if (!cJSON_IsArray(v)) {
        opt_type_error(o, key, "a string or a list of strings");
        return -1;
    }
    int n = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            opt_type_error(o, key, "a list of strings");
            return -1;
        }
        if (n < cap)
            out[n] = e->valuestring;
        n++;
    }
    return n;
}

// --- the adapter instance ----------------------------------------------------------------

static xa_ctx *ctx_of(xa_adapter *a) { return xa_net_ctx(a->net); }
static const char *name_of(xa_adapter *a) { return a->name; }
static const xa_dims *dims(xa_adapter *a) { return &a->dims; }
static void *state(xa_adapter *a) { return a->state; }
static void set_state(xa_adapter *a, void *s) { a->state = s; }

// plugin.h's XA_AT_* and model.h's xa_site are one numbering: `at` is passed on as it is.
#define SAME(at, site) ((int)(at) == (int)(site))
_Static_assert(SAME(XA_AT_ATTN, XA_SITE_ATTN) && SAME(XA_AT_FFN, XA_SITE_FFN) &&
                   SAME(XA_AT_OUT, XA_SITE_OUT) && SAME(XA_AT_Q, XA_SITE_Q) &&
                   SAME(XA_AT_K, XA_SITE_K) && SAME(XA_AT_V, XA_SITE_V) &&
                   SAME(XA_AT_O, XA_SITE_O) && SAME(XA_AT_FF1, XA_SITE_FF1) &&
                   SAME(XA_AT_FF2, XA_SITE_FF2) && SAME(XA_AT_ACT, XA_SITE_ACT) &&
                   SAME(XA_AT_ACT + 1, XA_SITE_COUNT),
               "XA_AT_* and xa_site must agree (a new site is appended to both)");
#undef SAME

static int attach(xa_adapter *a, int layer, int at) {
    if (!a->creating)
        return xa_errorf(ctx_of(a), XA_ESTATE, "%s: attach is only allowed in create", a->name);
    return xa_net_attach(a->net, a, layer, at);
}

static int tap(xa_adapter *a, int layer) {
    if (!a->creating)
        return xa_errorf(ctx_of(a), XA_ESTATE, "%s: tap is only allowed in create", a->name);
    return xa_net_tap(a->net, a, layer);
}

static bool active(xa_adapter *a, const char *sub) {
    for (int i = 0; a->cls->submodules && i < a->nsub; i++)
        if (!strcmp(a->cls->submodules[i], sub))
            return (a->active >> i) & 1u;
    return false;
}

static int without(xa_adapter *a, const char *sub) {
    if (!a->creating)
        return xa_errorf(ctx_of(a), XA_ESTATE, "%s: without is only allowed in create", a->name);
    for (int i = 0; a->cls->submodules && i < a->nsub; i++)
        if (!strcmp(a->cls->submodules[i], sub)) {
            a->built &= ~(1u << i);
            a->active &= ~(1u << i);
            return XA_OK;
        }
    return xa_errorf(ctx_of(a), XA_EINVAL, "%s: class %s has no sub-module '%s'", a->name,
                     a->cls->name, sub);
}

static xa_tensor *param(xa_adapter *a, const char *name, int ndim, const int64_t *shape, int init,
                        float scale) {
    if (!a->creating) {
        xa_errorf(ctx_of(a), XA_ESTATE, "%s: parameters can only be created in create", a->name);
        return NULL;
    }
    return xa_net_new_param(a->net, a, name, ndim, shape, init, scale);
}

static bool training(xa_ctx *ctx) { return xa_is_training(ctx); }

// --- tensors and ops -------------------------------------------------------------------------

static int t_ndim(const xa_tensor *t) { return t->ndim; }
static int64_t t_dim(const xa_tensor *t, int i) {
    if (i < 0)
        i += t->ndim;
    return i >= 0 && i < t->ndim ? t->shape[i] : 0;
}
static int64_t t_numel(const xa_tensor *t) { return t->numel; }
static float *t_data(xa_tensor *t) { return t->data; }
static bool t_needs_grad(const xa_tensor *t) { return xa_tensor_needs_grad(t); }
static xa_tensor *t_new(xa_ctx *ctx, int ndim, const int64_t *shape) {
    return xa_tensor_arena(ctx, ndim, shape, true);
}

static xa_tensor *op_act(xa_ctx *ctx, xa_tensor *x, int act) {
    if (act < 0 || act >= XA_ACT_COUNT) {
        xa_errorf(ctx, XA_EINVAL, "plugin asked for unknown activation %d", act);
        return NULL;
    }
    return xa_act_apply(ctx, x, (xa_act)act);
}

static xa_tensor *op_attention(xa_ctx *ctx, xa_tensor *q, xa_tensor *k, xa_tensor *v,
                               const xa_attn_args *args) {
    // Older plugins pass the struct as ABI 1.0 defined it; members appended later default.
    const size_t v1_0 = offsetof(xa_attn_args, scale) + sizeof(float);
    if (!args || args->struct_size < v1_0) {
        xa_errorf(ctx, XA_EABI, "attention: xa_attn_args of size %zu, at least %zu",
                  args ? args->struct_size : 0, v1_0);
        return NULL;
    }
    xa_attn_opts o = {.heads = args->heads, .causal = args->causal, .key_mask = args->key_mask,
                      .dropout = args->dropout, .scale = args->scale};
    return xa_attention(ctx, q, k, v, &o);
}

static xa_tensor *op_custom(xa_ctx *ctx, const char *name, xa_tensor *out, int nin,
                            xa_tensor *const *in, xa_backward_cb bw, void *saved) {
    return xa_custom(ctx, name, out, nin, in, (xa_backward_fn)bw, saved);
}

static xa_tensor *node_out(xa_node *n) { return n->out; }
static xa_tensor *node_in(xa_node *n, int i) { return i >= 0 && i < n->nin ? n->in[i] : NULL; }
static void *node_saved(xa_node *n) { return n->saved; }

static int base_linear(xa_adapter *a, int layer, int at, xa_tensor **w, xa_tensor **b) {
    return xa_net_base_linear(a->net, layer, at, w, b);
}

static xa_tensor *buffer(xa_adapter *a, int ndim, const int64_t *shape) {
    xa_ctx *ctx = ctx_of(a);
    xa_tensor **v = realloc(a->buffers, (size_t)(a->nbuffers + 1) * sizeof *v);
    if (!v) {
        xa_errorf(ctx, XA_ENOMEM, "out of memory");
        return NULL;
    }
    a->buffers = v;
    xa_tensor *t = xa_tensor_new(ctx, ndim, shape);
    if (t)
        a->buffers[a->nbuffers++] = t;
    return t;
}

static void buffer_free(xa_adapter *a, xa_tensor *t) {
    for (int i = 0; i < a->nbuffers; i++)
        if (a->buffers[i] == t) {
            xa_tensor_release(t);
            a->buffers[i] = a->buffers[--a->nbuffers];
            return;
        }
}

static int replace(xa_adapter *a, int layer, int at, bool on) {
    return xa_net_replace(a->net, a, layer, at, on);
}

static const xa_host_api host = {
    .struct_size = sizeof(xa_host_api),
    .abi_major = XA_ABI_MAJOR,
    .abi_minor = XA_ABI_MINOR,
    .host_version = XA_VERSION_STRING,
    .errorf = host_errorf,
    .log = host_log,
    .alloc = host_alloc,
    .release = host_release,
    .opt_int = opt_int,
    .opt_num = opt_num,
    .opt_bool = opt_bool,
    .opt_str = opt_str,
    .opt_ints = opt_ints,
    .opt_strs = opt_strs,
    .ctx_of = ctx_of,
    .name_of = name_of,
    .dims = dims,
    .state = state,
    .set_state = set_state,
    .attach = attach,
    .tap = tap,
    .active = active,
    .param = param,
    .training = training,
    .ndim = t_ndim,
    .dim = t_dim,
    .numel = t_numel,
    .data = t_data,
    .grad = xa_tensor_grad,
    .needs_grad = t_needs_grad,
    .new_tensor = t_new,
    .linear = xa_linear,
    .matmul = xa_matmul,
    .add = xa_add,
    .sub = xa_sub,
    .mul = xa_mul,
    .scale = xa_scale,
    .add_bias = xa_add_bias,
    .mul_row = xa_mul_row,
    .act = op_act,
    .layernorm = xa_layernorm,
    .softmax = xa_softmax,
    .attention = op_attention,
    .dropout = xa_dropout,
    .concat = xa_concat,
    .slice = xa_slice,
    .reshape = xa_reshape,
    .pool_mean = xa_pool_mean,
    .sum = xa_sum,
    .custom = op_custom,
    .node_out = node_out,
    .node_in = node_in,
    .node_saved = node_saved,
    .base_linear = base_linear,
    .buffer = buffer,
    .buffer_free = buffer_free,
    .replace = replace,
    .without = without,
};

const xa_host_api *xa_host_api_get(void) { return &host; }

// --- instances ---------------------------------------------------------------------------------

// Refuse options the class does not declare, listing the ones it does.
static xa_status check_options(xa_ctx *ctx, const xa_adapter_class *cls, const char *name,
                               const cJSON *opts) {
    for (const cJSON *e = opts ? opts->child : NULL; e; e = e->next) {
        bool known = false;
        for (size_t i = 0; cls->options && cls->options[i] && !known; i++)
            known = !strcmp(cls->options[i], e->string);
        if (known)
            continue;
        char valid[1024] = "";
        for (size_t i = 0; cls->options && cls->options[i]; i++) {
            if (i)
                strncat(valid, ", ", sizeof valid - strlen(valid) - 1);
            strncat(valid, cls->options[i], sizeof valid - strlen(valid) - 1);
        }
        return xa_errorf(ctx, XA_EINVAL, "%s '%s': unknown option '%s' (valid: %s)", cls->name,
                         name, e->string, valid[0] ? valid : "none");
    }
    return XA_OK;
}

xa_adapter *xa_adapter_create(xa_ctx *ctx, xa_net *net, const xa_adapter_class *cls,
                              const xa_plugin_record *plugin, const char *name, const cJSON *opts) {
    if (check_options(ctx, cls, name, opts))
        return NULL;
    xa_adapter *a = xa_calloc(ctx, 1, sizeof *a);
    if (!a)
        return NULL;
    a->net = net, a->cls = cls, a->plugin = plugin;
    a->name = xa_strdup(ctx, name);
    a->opts_json = opts ? cJSON_PrintUnformatted(opts) : xa_strdup(ctx, "{}");
    while (cls->submodules && cls->submodules[a->nsub] && a->nsub < XA_MAX_SUBMODULES)
        a->nsub++;
    a->active = a->built = a->nsub ? (1u << a->nsub) - 1 : 0;
    if (!a->name || !a->opts_json) {
        xa_adapter_destroy(a);
        return NULL;
    }
    return a;
}

void xa_adapter_destroy(xa_adapter *a) {
    if (!a)
        return;
    if (a->cls && a->cls->destroy && a->state)
        a->cls->destroy(a);
    free(a->name);
    free(a->opts_json);
    for (int i = 0; i < a->nbuffers; i++)
        xa_tensor_release(a->buffers[i]);
    free(a->buffers);
    free(a->sites);
    free(a->taps);
    free(a);
}
