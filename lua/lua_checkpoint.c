// Training checkpoints for scripts (xa.checkpoint_save / xa.checkpoint_load, used by xa.train):
// one safetensors file, written atomically, with every parameter of the network, the optimizer
// moments and step count, the context's RNG state and the trainer's own state as JSON, so that a
// resumed run reproduces the uninterrupted one exactly. Adapter files are lua_model.c's.
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/safetensors.h"
#include "xl.h"

// --- checkpoints --------------------------------------------------------------------------------

// xa.checkpoint_save(path, model, optim, trainer_json) -> true | nil, msg. Atomic (temp + rename).
static int l_checkpoint_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    xl_model *m = xl_check_model(L, 2);
    xl_optim *o = xl_check_optim(L, 3);
    const char *trainer = luaL_optstring(L, 4, "{}");
    if (!o->opt || o->net != m->net)
        return xl_argerror(L, 3, "the optimizer training this model");
    xa_ctx *ctx = xl_ctx(L);
    float *mom, *vel;
    int64_t numel = xa_optim_state(o->opt, &mom, &vel);
    if (numel < 0)
        return xl_fail(L);
    size_t n_steps;
    const int64_t *param_steps = xa_optim_param_steps(o->opt, &n_steps);
    if (!param_steps)
        return xl_fail(L);
    luaL_Buffer pb; // per-parameter step counts, space-separated, in parameter order
    luaL_buffinit(L, &pb);
    for (size_t i = 0; i < n_steps; i++) {
        char one[24];
        snprintf(one, sizeof one, i ? " %lld" : "%lld", (long long)param_steps[i]);
        luaL_addstring(&pb, one);
    }
    luaL_pushresult(&pb);
    xa_st_writer **w = lua_newuserdatauv(L, sizeof *w, 0); // freed below; nothing raises between
    if (!(*w = xa_st_writer_new(ctx)))
        return xl_fail(L);
    xa_params *ps = xa_net_params(m->net);
    xa_status st = XA_OK;
    char name[300];
    for (size_t i = 0; i < xa_params_count(ps) && st == XA_OK; i++) {
        snprintf(name, sizeof name, "param.%s", xa_params_name(ps, i));
        st = xa_st_writer_add_tensor(*w, name, xa_params_at(ps, i));
    }
    int64_t shape[1] = {numel};
    if (st == XA_OK && numel > 0)
        st = xa_st_writer_add(*w, "optim.m", XA_DTYPE_F32, 1, shape, mom);
    if (st == XA_OK && numel > 0 && vel)
        st = xa_st_writer_add(*w, "optim.v", XA_DTYPE_F32, 1, shape, vel);
    uint64_t rng[4];
    xa_rng_state(ctx, rng);
    char rngs[80], steps[32];
    snprintf(rngs, sizeof rngs, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, rng[0],
             rng[1], rng[2], rng[3]);
    snprintf(steps, sizeof steps, "%lld", (long long)xa_optim_steps(o->opt));
    if (st == XA_OK) {
        xa_st_writer_meta(*w, "format", "xadapt-checkpoint/1");
        xa_st_writer_meta(*w, "optimizer", o->o.kind == XA_OPTIM_ADAMW ? "adamw" : "sgd");
        xa_st_writer_meta(*w, "optimizer_steps", steps);
        xa_st_writer_meta(*w, "optimizer_param_steps", lua_tostring(L, -2));
        xa_st_writer_meta(*w, "rng", rngs);
        xa_st_writer_meta(*w, "base_fingerprint", xa_model_fingerprint(xa_net_plm_model(m->net)));
        xa_st_writer_meta(*w, "trainer", trainer);
        st = xa_st_writer_write(*w, path);
    }
    xa_st_writer_free(*w);
    *w = NULL;
    if (st != XA_OK)
        return xl_fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

typedef struct {
    xa_st_file *f;
} st_box;

static int st_box_gc(lua_State *L) {
    st_box *b = luaL_checkudata(L, 1, "xadapt.StFile");
    xa_st_close(b->f);
    b->f = NULL;
    return 0;
}

// Copy tensor `name` of the file into dst (same element count), converting from its dtype.
// The file's tensor `name` must be there with the shape the run has (ndim 0: just `numel`
// values), so that every check is done before the first value is copied.
static xa_status check_entry(xa_ctx *ctx, const xa_st_file *f, const char *name, int ndim,
                             const int64_t *shape, int64_t numel, const char *path) {
    const xa_st_entry *e = xa_st_find(f, name);
    if (!e)
        return xa_errorf(ctx, XA_EFORMAT, "%s: no '%s' (a different model or adapter set?)", path,
                         name);
    int64_t have = xa_shape_numel(e->ndim, e->shape, NULL);
    bool same = have == numel && (ndim == 0 || e->ndim == ndim);
    for (int d = 0; same && ndim && d < ndim; d++)
        same = e->shape[d] == shape[d];
    if (!same)
        return xa_errorf(ctx, XA_ESHAPE,
                         "%s: '%s' has %lld values in %d dimensions, this run has %lld (a "
                         "different model or adapter set?)",
                         path, name, (long long)have, e->ndim, (long long)numel);
    return XA_OK;
}

static xa_status load_into(xa_ctx *ctx, xa_st_file *f, const char *name, float *dst,
                           int64_t numel) {
    xa_tensor *t;
    xa_status st = xa_st_tensor(ctx, f, name, &t);
    if (st)
        return st;
    memcpy(dst, t->data, (size_t)numel * sizeof(float));
    xa_tensor_release(t);
    return XA_OK;
}

// `text` holds n space-separated counts; a checkpoint from before they were written has none:
// every parameter then took part in every step.
static xa_status read_param_steps(const char *text, int64_t steps, int64_t *out, size_t n) {
    if (!text) {
        for (size_t i = 0; i < n; i++)
            out[i] = steps;
        return XA_OK;
    }
    for (size_t i = 0; i < n; i++) {
        char *end;
        long long v = strtoll(text, &end, 10);
        if (end == text || v < 0)
            return XA_EFORMAT;
        out[i] = v < steps ? v : steps, text = end; // no parameter took more steps than all
    }
    return *text == '\0' ? XA_OK : XA_EFORMAT;
}

// xa.checkpoint_load(path, model, optim) -> trainer state (table) | nil, msg
static int l_checkpoint_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    xl_model *m = xl_check_model(L, 2);
    xl_optim *o = xl_check_optim(L, 3);
    if (!o->opt || o->net != m->net)
        return xl_argerror(L, 3, "the optimizer training this model");
    xa_ctx *ctx = xl_ctx(L);
    if (xa_net_merged(m->net))
        return xl_failf(L,
                        "%s: adapter '%s' computes frozen projections itself (a merged LoRA: "
                        "m:control('%s', 'unmerge') first); a checkpoint cannot be loaded under it",
                        path, xa_net_merged(m->net), xa_net_merged(m->net));
    st_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->f = NULL;
    if (luaL_newmetatable(L, "xadapt.StFile")) {
        lua_pushcfunction(L, st_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (xa_st_open(ctx, path, &box->f) != XA_OK)
        return xl_fail(L);
    xa_st_file *f = box->f;
    const char *fmt = xa_st_meta_get(f, "format"), *fp = xa_st_meta_get(f, "base_fingerprint");
    const char *rngs = xa_st_meta_get(f, "rng"), *steps = xa_st_meta_get(f, "optimizer_steps");
    const char *kind = xa_st_meta_get(f, "optimizer"), *trainer = xa_st_meta_get(f, "trainer");
    if (!fmt || strcmp(fmt, "xadapt-checkpoint/1") || !rngs || strlen(rngs) != 64 || !steps ||
        !kind)
        return xl_failf(L, "%s: not an xadapt training checkpoint", path);
    if (!fp || strcmp(fp, xa_model_fingerprint(xa_net_plm_model(m->net))))
        return xl_failf(L, "%s: written for another frozen base (fingerprint %s, this PLM has %s)",
                        path, fp ? fp : "?", xa_model_fingerprint(xa_net_plm_model(m->net)));
    if (strcmp(kind, o->o.kind == XA_OPTIM_ADAMW ? "adamw" : "sgd"))
        return xl_failf(L, "%s: written by a %s optimizer, this run uses %s", path, kind,
                        o->o.kind == XA_OPTIM_ADAMW ? "adamw" : "sgd");
    // Every parameter of the network must be in the file, and nothing else.
    xa_params *ps = xa_net_params(m->net);
    size_t nparams = 0;
    for (size_t i = 0; i < xa_st_count(f); i++)
        nparams += !strncmp(xa_st_at(f, i)->name, "param.", 6);
    if (nparams != xa_params_count(ps))
        return xl_failf(L,
                        "%s: holds %zu parameters, this model has %zu (insert the same "
                        "adapters and heads before resuming)",
                        path, nparams, xa_params_count(ps));
    float *mom, *vel;
    int64_t numel = xa_optim_state(o->opt, &mom, &vel);
    if (numel < 0)
        return xl_fail(L);
    // Check everything first: a refused checkpoint leaves the run's values as they were.
    char name[300];
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        xa_tensor *t = xa_params_at(ps, i);
        snprintf(name, sizeof name, "param.%s", xa_params_name(ps, i));
        if (check_entry(ctx, f, name, t->ndim, t->shape, t->numel, path) != XA_OK)
            return xl_fail(L);
    }
    if (numel > 0 && (check_entry(ctx, f, "optim.m", 0, NULL, numel, path) != XA_OK ||
                      (vel && check_entry(ctx, f, "optim.v", 0, NULL, numel, path) != XA_OK)))
        return xl_fail(L);
    size_t n_steps;
    int64_t *param_steps = xa_optim_param_steps(o->opt, &n_steps);
    if (!param_steps)
        return xl_fail(L);
    // on the stack (so not collected) until the function returns
    int64_t *loaded_steps = lua_newuserdatauv(L, (n_steps ? n_steps : 1) * sizeof *loaded_steps, 0);
    if (read_param_steps(xa_st_meta_get(f, "optimizer_param_steps"), strtoll(steps, NULL, 10),
                         loaded_steps, n_steps) != XA_OK)
        return xl_failf(L, "%s: 'optimizer_param_steps' is not %zu step counts", path, n_steps);
    cJSON **j = xl_json_box(L);
    if (!(*j = cJSON_Parse(trainer ? trainer : "{}")))
        return xl_failf(L, "%s: the trainer state is not JSON", path);
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        xa_tensor *t = xa_params_at(ps, i);
        snprintf(name, sizeof name, "param.%s", xa_params_name(ps, i));
        if (load_into(ctx, f, name, t->data, t->numel) != XA_OK)
            return xl_fail(L);
    }
    if (numel > 0 && (load_into(ctx, f, "optim.m", mom, numel) != XA_OK ||
                      (vel && load_into(ctx, f, "optim.v", vel, numel) != XA_OK)))
        return xl_fail(L);
    uint64_t rng[4];
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, rngs + 16 * i, 16);
        part[16] = '\0';
        rng[i] = strtoull(part, NULL, 16);
    }
    xa_rng_set_state(ctx, rng);
    xa_optim_set_steps(o->opt, strtoll(steps, NULL, 10));
    memcpy(param_steps, loaded_steps, n_steps * sizeof *param_steps);
    xa_params_zero_grad(ps);
    xl_push_json(L, *j);
    return 1;
}

void xl_open_checkpoint(lua_State *L, int mod) {
    lua_pushcfunction(L, l_checkpoint_save);
    lua_setfield(L, mod, "checkpoint_save");
    lua_pushcfunction(L, l_checkpoint_load);
    lua_setfield(L, mod, "checkpoint_load");
}
