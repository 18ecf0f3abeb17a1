// Models in Lua: the frozen encoders (xa.load_plm, xa.load_vlm -> "xadapt.Encoder"), the adapter
// network (xa.model -> "xadapt.Model": insert, freeze, activate, control, summary, save/load) and
// task heads (m:head -> "xadapt.Head"). Training steps on a model are in lua_train.c.
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "xl.h"

// Model uservalues: the PLM and VLM encoders (kept alive while the net borrows them), the
// tokenizer, and the heads by name.
enum { UV_PLM = 1, UV_VLM, UV_TOK, UV_HEADS, UV_COUNT = UV_HEADS };

// --- encoders -----------------------------------------------------------------------------------

xl_encoder *xl_check_encoder(lua_State *L, int idx) {
    xl_encoder *e = luaL_testudata(L, idx, XL_ENCODER);
    if (!e)
        xl_argerror(L, idx, "frozen model expected (xa.load_plm / xa.load_vlm), got %s",
                    luaL_typename(L, idx));
    return e;
}

bool xl_frozen_report;
int xl_frozen_violations;

static int encoder_gc(lua_State *L) {
    xl_encoder *e = luaL_checkudata(L, 1, XL_ENCODER);
    if (e->m) {
        // The script's context may already be collected: check with a private one.
        xa_ctx *ctx = xa_ctx_new();
        if (ctx && xa_model_verify(ctx, e->m) != XA_OK) {
            fprintf(stderr, "xadapt: %s\n", xa_errmsg(ctx));
            xl_frozen_violations++;
        } else if (ctx && xl_frozen_report) {
            fprintf(stderr, "frozen: %s fingerprint %s unchanged at the end of the run\n",
                    xa_model_dir(e->m), xa_model_fingerprint(e->m));
        }
        xa_ctx_free(ctx);
    }
    xa_model_free(e->m);
    e->m = NULL;
    return 0;
}

static int load_encoder(lua_State *L, bool vlm) {
    const char *dir = luaL_checkstring(L, 1);
    if (lua_gettop(L) > 1)
        return xl_argerror(L, 2, "%s takes one argument, a checkpoint directory",
                           vlm ? "load_vlm" : "load_plm");
    xl_encoder *e = lua_newuserdatauv(L, sizeof *e, 0);
    e->m = NULL;
    luaL_setmetatable(L, XL_ENCODER);
    if (xa_model_load(xl_ctx(L), dir, &e->m) != XA_OK)
        return xl_fail(L);
    const char *fp = xa_model_fingerprint(e->m); // taken now, checked when the model goes
    if (xl_frozen_report)
        fprintf(stderr, "frozen: %s fingerprint %s at load\n", dir, fp);
    bool clip = xa_model_config_of(e->m)->arch == XA_ARCH_CLIP;
    if (clip != vlm)
        return xl_failf(L, "%s is a %s checkpoint; load it with xa.%s", dir,
                        xa_arch_name(xa_model_config_of(e->m)->arch),
                        clip ? "load_vlm" : "load_plm");
    return 1;
}

static int l_load_plm(lua_State *L) {
    return load_encoder(L, false);
}
static int l_load_vlm(lua_State *L) {
    return load_encoder(L, true);
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static int encoder_info(lua_State *L) {
    xl_encoder *e = xl_check_encoder(L, 1);
    const xa_model_config *c = xa_model_config_of(e->m);
    lua_createtable(L, 0, 16);
    lua_pushstring(L, xa_arch_name(c->arch));
    lua_setfield(L, -2, "arch");
    lua_pushstring(L, c->model_type);
    lua_setfield(L, -2, "model_type");
    lua_pushstring(L, xa_model_dir(e->m));
    lua_setfield(L, -2, "dir");
    set_int(L, "hidden", c->text.hidden);
    set_int(L, "layers", c->text.layers);
    set_int(L, "heads", c->text.heads);
    set_int(L, "vocab", c->text.vocab);
    set_int(L, "max_positions", c->text.max_positions);
    set_int(L, "params", xa_model_param_count(e->m));
    if (c->arch == XA_ARCH_CLIP) {
        set_int(L, "vision_hidden", c->vision.hidden);
        set_int(L, "vision_layers", c->vision.layers);
        set_int(L, "image_size", c->vision.image_size);
        set_int(L, "patch_size", c->vision.patch_size);
        set_int(L, "projection_dim", c->projection_dim);
    } else {
        lua_pushboolean(L, xa_model_has_mlm_head(e->m));
        lua_setfield(L, -2, "mlm_head");
        lua_pushboolean(L, xa_model_has_pooler(e->m));
        lua_setfield(L, -2, "pooler");
    }
    lua_pushstring(L, xa_model_fingerprint(e->m));
    lua_setfield(L, -2, "fingerprint");
    return 1;
}

static int encoder_tostring(lua_State *L) {
    xl_encoder *e = xl_check_encoder(L, 1);
    const xa_model_config *c = e->m ? xa_model_config_of(e->m) : NULL;
    if (!c)
        lua_pushstring(L, "xadapt.Encoder (freed)");
    else
        lua_pushfstring(L, "xadapt.Encoder(%s, %d layers, hidden %d: %s)", xa_arch_name(c->arch),
                        (int)c->text.layers, (int)c->text.hidden, xa_model_dir(e->m));
    return 1;
}

// --- the model (network) ------------------------------------------------------------------------

xl_model *xl_check_model(lua_State *L, int idx) {
    xl_model *m = luaL_testudata(L, idx, XL_MODEL);
    if (!m)
        xl_argerror(L, idx, "model expected (from xa.model{...}), got %s", luaL_typename(L, idx));
    if (!m->net)
        xl_argerror(L, idx, "the model is not initialised");
    return m;
}

static int model_gc(lua_State *L) {
    xl_model *m = luaL_checkudata(L, 1, XL_MODEL);
    if (m->step.batch_ref)
        luaL_unref(L, LUA_REGISTRYINDEX, m->step.batch_ref);
    m->step.batch_ref = 0;
    xa_net_free(m->net);
    m->net = NULL;
    return 0;
}

static const char *const model_keys[] = {"plm", "vlm", "fusion", "tokenizer", "prefix_cache", NULL};

// The frozen-prefix cache budget: MB as a number, false (or 0) for off. Default 1024 MB.
#define PREFIX_CACHE_DEFAULT_MB 1024
static size_t prefix_budget(lua_State *L, int idx, const char *who) {
    if (lua_isnoneornil(L, idx))
        return (size_t)PREFIX_CACHE_DEFAULT_MB << 20;
    if (lua_isboolean(L, idx))
        return lua_toboolean(L, idx) ? (size_t)PREFIX_CACHE_DEFAULT_MB << 20 : 0;
    if (!lua_isnumber(L, idx) || lua_tonumber(L, idx) < 0 || lua_tonumber(L, idx) > 1 << 30)
        xl_raise(L, "%s: prefix_cache must be a size in MB or false, got %s", who,
                 luaL_tolstring(L, idx, NULL));
    return (size_t)(lua_tonumber(L, idx) * (1 << 20));
}
static const char *const fusions[] = {"add", "concat", NULL};

static int l_model(lua_State *L) {
    xl_check_opts(L, 1, "xa.model", model_keys, false);
    lua_getfield(L, 1, "plm");
    if (lua_isnil(L, -1))
        return xl_raise(L, "xa.model: plm = xa.load_plm(dir) is required");
    xl_encoder *plm = luaL_testudata(L, -1, XL_ENCODER);
    if (!plm)
        return xl_raise(L, "xa.model: plm must be a frozen model from xa.load_plm, got %s",
                        luaL_typename(L, -1));
    int plm_idx = lua_gettop(L);
    lua_getfield(L, 1, "vlm");
    xl_encoder *vlm = lua_isnil(L, -1) ? NULL : luaL_testudata(L, -1, XL_ENCODER);
    if (!lua_isnil(L, -1) && !vlm)
        return xl_raise(L, "xa.model: vlm must be a frozen model from xa.load_vlm, got %s",
                        luaL_typename(L, -1));
    int vlm_idx = lua_gettop(L);
    if (xa_model_config_of(plm->m)->arch == XA_ARCH_CLIP)
        return xl_raise(L, "xa.model: plm is a CLIP model; the language model must be BERT or "
                           "RoBERTa (give CLIP as vlm =)");
    if (vlm && xa_model_config_of(vlm->m)->arch != XA_ARCH_CLIP)
        return xl_raise(L, "xa.model: vlm must be a CLIP model, got %s",
                        xa_arch_name(xa_model_config_of(vlm->m)->arch));
    int fusion = xl_opt_enum(L, 1, "fusion", fusions, 0);
    const char *tokdir = xl_opt_str(L, 1, "tokenizer", NULL);

    // The tokenizer: the PLM directory's, or the directory given. A PLM without tokenizer files
    // is allowed (batches of ids only); text batches then say how to fix it.
    int ntok = xl_push_tokenizer(L, tokdir ? tokdir : xa_model_dir(plm->m));
    if (ntok == 2) {
        if (tokdir)
            return ntok; // nil, msg: the directory the script named has no tokenizer
        lua_pop(L, 2);
        lua_pushnil(L);
    }
    int tok_idx = lua_gettop(L);

    xa_registry *reg = xl_registry(L);
    xl_model *m = lua_newuserdatauv(L, sizeof *m, UV_COUNT);
    memset(m, 0, sizeof *m);
    luaL_setmetatable(L, XL_MODEL);
    lua_pushvalue(L, plm_idx);
    lua_setiuservalue(L, -2, UV_PLM);
    lua_pushvalue(L, vlm_idx);
    lua_setiuservalue(L, -2, UV_VLM);
    lua_pushvalue(L, tok_idx);
    lua_setiuservalue(L, -2, UV_TOK);
    lua_newtable(L);
    lua_setiuservalue(L, -2, UV_HEADS);
    xl_tokenizer *tok = lua_isnil(L, tok_idx) ? NULL : lua_touserdata(L, tok_idx);
    m->tok = tok ? tok->tok : NULL;
    if (!(m->net = xa_net_new(xl_ctx(L), plm->m, vlm ? vlm->m : NULL, reg)))
        return xl_raise_ctx(L, "xa.model");
    xa_net_set_fusion(m->net, fusion == 1 ? XA_FUSION_CONCAT : XA_FUSION_ADD);
    lua_getfield(L, 1, "prefix_cache");
    xa_net_set_prefix_cache(m->net, prefix_budget(L, -1, "xa.model"));
    lua_pop(L, 1);
    return 1;
}

// m:prefix_cache([mb | false]): set the frozen-prefix cache budget (dropping what it holds);
// returns {hits =, misses =, mb =} of the cache before the call.
static int model_prefix_cache(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    bool set = !lua_isnone(L, 2);
    size_t budget = set ? prefix_budget(L, 2, "m:prefix_cache") : 0;
    int64_t hits, misses;
    size_t bytes;
    xa_net_prefix_stats(m->net, &hits, &misses, &bytes);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, misses);
    lua_setfield(L, -2, "misses");
    lua_pushnumber(L, (double)bytes / (1 << 20));
    lua_setfield(L, -2, "mb");
    if (set)
        xa_net_set_prefix_cache(m->net, budget);
    return 1;
}

// m:insert(class, {name = ..., <the class's options>}) -> instance name
static int model_insert(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *cls = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
        return xl_argerror(L, 3, "options table expected, got %s", luaL_typename(L, 3));
    const char *name = NULL;
    cJSON **box = xl_json_box(L);
    *box = cJSON_CreateObject();
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                return xl_argerror(L, 3, "options are key = value pairs");
            const char *k = lua_tostring(L, -2);
            if (!strcmp(k, "name")) {
                if (lua_type(L, -1) != LUA_TSTRING)
                    return xl_raise(L, "m:insert: name must be a string");
                name = lua_tostring(L, -1);
            } else {
                char err[256];
                cJSON *v = xl_to_json(L, -1, true, err, sizeof err);
                if (!v)
                    return xl_raise(L, "m:insert: option '%s': %s", k, err);
                cJSON_AddItemToObject(*box, k, v);
            }
            lua_pop(L, 1);
        }
    }
    char *json = cJSON_PrintUnformatted(*box);
    xa_status st = json ? xa_net_insert(m->net, cls, name, json) : XA_ENOMEM;
    free(json);
    if (st != XA_OK)
        return xl_raise_ctx(L, NULL);
    lua_pushstring(L, name ? name : cls);
    return 1;
}

static int freeze(lua_State *L, bool frozen) {
    xl_model *m = xl_check_model(L, 1);
    const char *pattern = luaL_checkstring(L, 2);
    // The forward dropped what backward would not need under the old setting (a frozen
    // weight's input): changing it before the backward would read freed activations.
    if (xl_step_live(L, m) && m->step.training && !m->step.backward_done)
        return xl_raise(L,
                        "%s: a step is between its forward and its backward; change what trains "
                        "before the forward or after the backward (e.g. in on_step)",
                        frozen ? "freeze" : "unfreeze");
    int matched = 0;
    if (xa_net_freeze(m->net, pattern, frozen, &matched) != XA_OK)
        return xl_raise_ctx(L, NULL);
    if (matched == 0) {
        // Name the modules there are, so a typo is obvious.
        char list[512] = "plm.*";
        if (xa_net_vlm_model(m->net))
            strcat(list, ", vlm.*");
        xa_params *ps = xa_net_params(m->net);
        const char *last = "";
        size_t lastlen = 0;
        for (size_t i = 0; i < xa_params_count(ps); i++) {
            const char *n = xa_params_name(ps, i), *dot = strchr(n, '.');
            size_t len = dot ? (size_t)(dot - n) : strlen(n);
            if (!strncmp(n, "head.", 5) && dot && strchr(dot + 1, '.'))
                len = (size_t)(strchr(dot + 1, '.') - n);
            if (len == lastlen && !strncmp(n, last, len))
                continue;
            last = n, lastlen = len;
            size_t at = strlen(list);
            snprintf(list + at, sizeof list - at, ", %.*s.*", (int)len, n);
        }
        bool later = !strncmp(pattern, "fusion", 6) && xa_net_fusion(m->net) == XA_FUSION_CONCAT &&
                     !xa_params_find(ps, "fusion.weight");
        return xl_raise(L, "%s('%s'): the pattern matches no parameter (modules: %s)%s",
                        frozen ? "freeze" : "unfreeze", pattern, list,
                        later ? "; the concat fusion's parameters are made at the first forward "
                                "(or by xa.train / xa.evaluate)"
                              : "");
    }
    lua_pushinteger(L, matched);
    return 1;
}

static int model_freeze(lua_State *L) {
    return freeze(L, true);
}
static int model_unfreeze(lua_State *L) {
    return freeze(L, false);
}

// m:activate(name, {"v", "t"} | "all" | "none")
static int model_activate(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *names[32];
    int count;
    if (lua_type(L, 3) == LUA_TSTRING) {
        const char *w = lua_tostring(L, 3);
        if (!strcmp(w, "all"))
            count = -1;
        else if (!strcmp(w, "none"))
            count = 0;
        else
            names[0] = w, count = 1;
    } else if (lua_istable(L, 3)) {
        count = (int)lua_rawlen(L, 3);
        if (count > 32)
            return xl_argerror(L, 3, "at most 32 sub-modules");
        for (int i = 0; i < count; i++) {
            lua_rawgeti(L, 3, i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                return xl_argerror(L, 3, "a list of sub-module names, \"all\" or \"none\"");
            names[i] = lua_tostring(L, -1); // the table keeps the string alive
            lua_pop(L, 1);
        }
    } else {
        return xl_argerror(L, 3, "a list of sub-module names, \"all\" or \"none\" expected, got %s",
                           luaL_typename(L, 3));
    }
    if (xa_net_activate(m->net, name, names, count) != XA_OK)
        return xl_raise_ctx(L, NULL);
    lua_pushstring(L, xa_net_active(m->net, name));
    return 1;
}

static int model_active(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *a = xa_net_active(m->net, name);
    if (!a) {
        xa_net_activate(m->net, name, NULL, -1); // only to get the "inserted: ..." message
        xa_ctx *ctx = xl_ctx(L);
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", xa_errmsg(ctx));
        xa_error_clear(ctx);
        return xl_raise(L, "%s", msg);
    }
    lua_pushstring(L, a);
    return 1;
}

static int model_control(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *name = luaL_checkstring(L, 2), *cmd = luaL_checkstring(L, 3);
    if (xa_net_control(m->net, name, cmd) != XA_OK)
        return xl_raise_ctx(L, NULL);
    return 0;
}

static int model_adapters(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    size_t n = xa_net_adapter_count(m->net);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, xa_net_adapter_name(m->net, i));
        lua_setfield(L, -2, "name");
        lua_pushstring(L, xa_net_adapter_class(m->net, i));
        lua_setfield(L, -2, "class");
        lua_pushstring(L, xa_net_active(m->net, xa_net_adapter_name(m->net, i)));
        lua_setfield(L, -2, "active");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

// m:parameters([pattern]) -> { {name=, shape={...}, numel=, trainable=}, ... }
static int model_parameters(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *pattern = luaL_optstring(L, 2, "*");
    xa_params *ps = xa_net_params(m->net);
    lua_newtable(L);
    lua_Integer k = 0;
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        const char *name = xa_params_name(ps, i);
        if (fnmatch(pattern, name, 0))
            continue;
        xa_tensor *t = xa_params_at(ps, i);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        lua_createtable(L, t->ndim, 0);
        for (int d = 0; d < t->ndim; d++) {
            lua_pushinteger(L, t->shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
        lua_setfield(L, -2, "shape");
        set_int(L, "numel", t->numel);
        lua_pushboolean(L, (t->flags & XA_TENSOR_TRAINABLE) != 0);
        lua_setfield(L, -2, "trainable");
        lua_rawseti(L, -2, ++k);
    }
    return 1;
}

static void thousands(char *buf, size_t n, long long v) {
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", v);
    size_t len = strlen(raw), at = 0;
    for (size_t i = 0; i < len && at + 2 < n; i++) {
        buf[at++] = raw[i];
        if ((len - i - 1) % 3 == 0 && i + 1 < len && raw[i] != '-')
            buf[at++] = ',';
    }
    buf[at] = '\0';
}

typedef struct {
    char name[96];
    const char *cls;
    long long trainable, frozen;
} summary_row;

// The module a parameter belongs to: the adapter name, "head.<name>", or the first component.
static size_t module_len(const char *n) {
    const char *dot = strchr(n, '.');
    if (!dot)
        return strlen(n);
    if (!strncmp(n, "head.", 5) && strchr(dot + 1, '.'))
        return (size_t)(strchr(dot + 1, '.') - n);
    return (size_t)(dot - n);
}

// m:summary([print]) -> {modules = {{name, class, trainable, frozen}...}, trainable, frozen, total}
static int model_summary(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    bool print = lua_toboolean(L, 2);
    xa_params *ps = xa_net_params(m->net);
    size_t cap = 4 + xa_params_count(ps), n = 0;
    summary_row *rows = lua_newuserdatauv(L, cap * sizeof *rows, 0); // freed by the GC
    memset(rows, 0, cap * sizeof *rows);
    xa_model *plm = xa_net_plm_model(m->net), *vlm = xa_net_vlm_model(m->net);
    rows[n++] = (summary_row){"plm", xa_arch_name(xa_model_config_of(plm)->arch), 0,
                              xa_model_param_count(plm)};
    if (vlm)
        rows[n++] = (summary_row){"vlm", "clip", 0, xa_model_param_count(vlm)};
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        const char *name = xa_params_name(ps, i);
        size_t len = module_len(name);
        size_t r = 0;
        while (r < n && !(strlen(rows[r].name) == len && !strncmp(rows[r].name, name, len)))
            r++;
        if (r == n) {
            snprintf(rows[n].name, sizeof rows[n].name, "%.*s", (int)len, name);
            rows[n].cls = !strncmp(name, "head.", 5)     ? "head"
                          : !strncmp(name, "fusion.", 7) ? "fusion"
                                                         : "?";
            for (size_t a = 0; a < xa_net_adapter_count(m->net); a++)
                if (!strcmp(xa_net_adapter_name(m->net, a), rows[n].name))
                    rows[n].cls = xa_net_adapter_class(m->net, a);
            n++;
        }
        xa_tensor *t = xa_params_at(ps, i);
        if (t->flags & XA_TENSOR_TRAINABLE)
            rows[r].trainable += t->numel;
        else
            rows[r].frozen += t->numel;
    }
    long long tr = 0, fr = 0;
    lua_createtable(L, 0, 4);
    lua_createtable(L, (int)n, 0);
    for (size_t r = 0; r < n; r++) {
        tr += rows[r].trainable, fr += rows[r].frozen;
        lua_createtable(L, 0, 4);
        lua_pushstring(L, rows[r].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, rows[r].cls);
        lua_setfield(L, -2, "class");
        set_int(L, "trainable", rows[r].trainable);
        set_int(L, "frozen", rows[r].frozen);
        lua_rawseti(L, -2, (lua_Integer)r + 1);
    }
    lua_setfield(L, -2, "modules");
    set_int(L, "trainable", tr);
    set_int(L, "frozen", fr);
    set_int(L, "total", tr + fr);
    if (print) {
        char a[32], b[32];
        printf("%-24s %-10s %14s %14s\n", "module", "class", "trainable", "frozen");
        for (size_t r = 0; r < n; r++) {
            thousands(a, sizeof a, rows[r].trainable);
            thousands(b, sizeof b, rows[r].frozen);
            printf("%-24s %-10s %14s %14s\n", rows[r].name, rows[r].cls, a, b);
        }
        thousands(a, sizeof a, tr);
        thousands(b, sizeof b, fr);
        printf("%-24s %-10s %14s %14s  (%.3f%% trainable)\n", "total", "", a, b,
               tr + fr ? 100.0 * (double)tr / (double)(tr + fr) : 0.0);
        fflush(stdout);
    }
    return 1;
}

static int model_save(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *path = luaL_checkstring(L, 2);
    if (xa_net_save(m->net, path) != XA_OK)
        return xl_fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

static const char *const load_keys[] = {"force", "adapters_only", NULL};

static int model_load(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *path = luaL_checkstring(L, 2);
    xl_check_opts(L, 3, "m:load_adapters", load_keys, true);
    xa_load_opts o = {.force = lua_istable(L, 3) && xl_opt_bool(L, 3, "force", false),
                      .adapters_only =
                          lua_istable(L, 3) && xl_opt_bool(L, 3, "adapters_only", false)};
    if (xa_net_load_with(m->net, path, &o) != XA_OK)
        return xl_fail(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int model_tokenizer(lua_State *L) {
    xl_check_model(L, 1);
    lua_getiuservalue(L, 1, UV_TOK);
    return 1;
}

static int model_encoders(lua_State *L) {
    xl_check_model(L, 1);
    lua_getiuservalue(L, 1, UV_PLM);
    lua_getiuservalue(L, 1, UV_VLM);
    return 2;
}

static int model_tostring(lua_State *L) {
    xl_model *m = luaL_checkudata(L, 1, XL_MODEL);
    if (!m->net) {
        lua_pushstring(L, "xadapt.Model (freed)");
        return 1;
    }
    lua_pushfstring(L, "xadapt.Model(%s%s, %d adapters, %d trainable parameters)",
                    xa_model_dir(xa_net_plm_model(m->net)),
                    xa_net_vlm_model(m->net) ? " + CLIP" : "", (int)xa_net_adapter_count(m->net),
                    (int)xa_params_numel(xa_net_params(m->net), true));
    return 1;
}

// --- heads --------------------------------------------------------------------------------------

xl_head *xl_check_head(lua_State *L, int idx) {
    xl_head *h = luaL_testudata(L, idx, XL_HEAD);
    if (!h)
        xl_argerror(L, idx, "head expected (from m:head), got %s", luaL_typename(L, idx));
    return h;
}

static int head_gc(lua_State *L) {
    xl_head *h = luaL_checkudata(L, 1, XL_HEAD);
    if (h->h)
        xa_head_free(h->h);
    free(h->name);
    h->h = NULL, h->name = NULL;
    return 0;
}

static const char *const head_keys[] = {"kind",    "pool", "classes", "choices",
                                        "dropout", "dim",  NULL};
static const char *const head_kinds[] = {"classify", "regress", "choice", "mlm", "project", NULL};
static const char *const pools[] = {"cls", "pooler", "mean", NULL};

// A projection head (the distillation student's): pool -> linear(dim), parameters of the net.
static bool make_projection(lua_State *L, xl_model *m, xl_head *h, int64_t dim) {
    int64_t H = xa_model_config_of(xa_net_plm_model(m->net))->text.hidden;
    char name[160];
    snprintf(name, sizeof name, "head.%s.weight", h->name);
    int64_t ws[2] = {dim, H}, bs[1] = {dim};
    h->proj_w = xa_net_param(m->net, name, 2, ws, (xa_init){XA_INIT_XAVIER, 0});
    snprintf(name, sizeof name, "head.%s.bias", h->name);
    h->proj_b = h->proj_w ? xa_net_param(m->net, name, 1, bs, (xa_init){XA_INIT_ZERO, 0}) : NULL;
    if (!h->proj_b) { // leave no half-made head behind
        snprintf(name, sizeof name, "head.%s.", h->name);
        xa_params_remove_prefix(xa_net_params(m->net), name);
        h->proj_w = NULL;
    }
    (void)L;
    return h->proj_b != NULL;
}

// m:head(name, {kind=, pool=, classes=, choices=, dropout=, dim=}) -> Head
static int model_head(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *name = luaL_checkstring(L, 2);
    xl_check_opts(L, 3, "m:head", head_keys, false);
    if (!*name || strchr(name, '.') || strchr(name, '*'))
        return xl_argerror(L, 2, "a head name is non-empty, without '.' or '*'");
    lua_getiuservalue(L, 1, UV_HEADS);
    int heads = lua_gettop(L);
    if (lua_getfield(L, heads, name) != LUA_TNIL)
        return xl_raise(L, "m:head: a head named '%s' exists already", name);
    lua_pop(L, 1);
    int kind = xl_opt_enum(L, 3, "kind", head_kinds, -1);
    if (kind < 0)
        return xl_raise(L, "m:head: kind = \"classify\", \"regress\", \"choice\", \"mlm\" or "
                           "\"project\" is required");
    xa_head_opts o = {.kind = (xa_head_kind)(kind < 4 ? kind : 0)};
    o.pool = (xa_pool)xl_opt_enum(L, 3, "pool", pools, kind == 4 ? XA_POOL_MEAN : XA_POOL_CLS);
    o.classes = (int)xl_opt_int(L, 3, "classes", 0);
    o.choices = (int)xl_opt_int(L, 3, "choices", 0);
    o.dropout = (float)xl_opt_num(L, 3, "dropout", 0.1);
    lua_Integer dim = xl_opt_int(L, 3, "dim", 0);
    if (kind == 0 && o.classes < 2)
        return xl_raise(L, "m:head('%s'): a classify head needs classes = 2 or more", name);
    if (kind == 2 && o.choices < 2)
        return xl_raise(L, "m:head('%s'): a choice head needs choices = 2 or more", name);
    bool has_classes = lua_getfield(L, 3, "classes") != LUA_TNIL;
    bool has_choices = lua_getfield(L, 3, "choices") != LUA_TNIL;
    lua_pop(L, 2);
    if ((kind != 0 && has_classes) || (kind != 2 && has_choices))
        return xl_raise(L, "m:head('%s'): %s is for %s heads (this one is %s)", name,
                        has_classes && kind != 0 ? "classes" : "choices",
                        has_classes && kind != 0 ? "classify" : "choice", head_kinds[kind]);
    if (kind == 4 && dim <= 0)
        return xl_raise(L, "m:head('%s'): a project head needs dim = its output size", name);
    if (kind != 4 && dim != 0)
        return xl_raise(L,
                        "m:head('%s'): dim is for project heads (use classes = for "
                        "classify)",
                        name);
    if (!(o.dropout >= 0 && o.dropout < 1))
        return xl_raise(L, "m:head('%s'): dropout must be in [0, 1)", name);

    xl_head *h = lua_newuserdatauv(L, sizeof *h, 1);
    memset(h, 0, sizeof *h);
    luaL_setmetatable(L, XL_HEAD);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); // the head keeps its model alive
    if (!(h->name = strdup(name)))
        return xl_raise(L, "out of memory");
    h->opts = o;
    if (kind == 4) {
        if (!(o.dropout >= 0.0f && o.dropout < 1.0f))
            return xl_raise(L, "m:head('%s'): dropout %g is outside [0, 1)", name,
                            (double)o.dropout);
        h->proj_pool = o.pool;
        h->opts.kind = XA_HEAD_REGRESS; // unused for projections; kept valid
        if (!make_projection(L, m, h, dim))
            return xl_raise_ctx(L, "m:head");
    } else if (xa_head_new(m->net, name, &o, &h->h) != XA_OK) {
        return xl_raise_ctx(L, NULL);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, heads, name);
    return 1;
}

// The head at `idx` as a Head or a name of one of the model's heads.
xl_head *xl_model_head(lua_State *L, int model_idx, int idx) {
    model_idx = lua_absindex(L, model_idx), idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TSTRING) { // a Head: it must be this model's
        xl_head *h = xl_check_head(L, idx);
        lua_getiuservalue(L, model_idx, UV_HEADS);
        bool ours = lua_getfield(L, -1, h->name) != LUA_TNIL && lua_rawequal(L, -1, idx);
        lua_pop(L, 2);
        if (!ours)
            xl_raise(L, "head '%s' belongs to another model", h->name);
        return h;
    }
    const char *name = lua_tostring(L, idx);
    lua_getiuservalue(L, model_idx, UV_HEADS);
    if (lua_getfield(L, -1, name) == LUA_TNIL) {
        char list[512] = "";
        lua_pushnil(L);
        while (lua_next(L, -3)) {
            lua_pop(L, 1);
            size_t at = strlen(list);
            snprintf(list + at, sizeof list - at, "%s%s", at ? ", " : "", lua_tostring(L, -1));
        }
        xl_raise(L, "the model has no head named '%s' (heads: %s)", name,
                 list[0] ? list : "none: add one with m:head(name, {kind = ...})");
    }
    xl_head *h = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return h;
}

static int model_heads(lua_State *L) {
    xl_check_model(L, 1);
    lua_getiuservalue(L, 1, UV_HEADS);
    return 1;
}

static int head_index(lua_State *L) {
    xl_head *h = xl_check_head(L, 1);
    const char *k = luaL_checkstring(L, 2);
    static const char *const kinds[] = {"classify", "regress", "choice", "mlm"};
    static const char *const pnames[] = {"cls", "pooler", "mean"};
    if (!strcmp(k, "name"))
        lua_pushstring(L, h->name);
    else if (!strcmp(k, "kind"))
        lua_pushstring(L, h->proj_w ? "project" : kinds[h->opts.kind]);
    else if (!strcmp(k, "pool"))
        lua_pushstring(L, pnames[h->proj_w ? h->proj_pool : h->opts.pool]);
    else if (!strcmp(k, "classes"))
        lua_pushinteger(L, h->opts.classes);
    else if (!strcmp(k, "choices"))
        lua_pushinteger(L, h->opts.choices);
    else if (!strcmp(k, "dim"))
        lua_pushinteger(L, h->proj_w ? h->proj_w->shape[0] : 0);
    else if (!strcmp(k, "model"))
        lua_getiuservalue(L, 1, 1);
    else
        lua_pushnil(L);
    return 1;
}

static int head_tostring(lua_State *L) {
    xl_head *h = xl_check_head(L, 1);
    lua_pushfstring(L, "xadapt.Head(%s)", h->name ? h->name : "?");
    return 1;
}

// --- registration -------------------------------------------------------------------------------

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                      lua_CFunction tostring) {
    luaL_newmetatable(L, name);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

void xl_open_model(lua_State *L, int mod) {
    static const luaL_Reg encoder_methods[] = {{"info", encoder_info}, {NULL, NULL}};
    static const luaL_Reg model_methods[] = {
        {"insert", model_insert},      {"freeze", model_freeze},
        {"unfreeze", model_unfreeze},  {"activate", model_activate},
        {"active", model_active},      {"control", model_control},
        {"adapters", model_adapters},  {"parameters", model_parameters},
        {"summary", model_summary},    {"head", model_head},
        {"heads", model_heads},        {"save_adapters", model_save},
        {"load_adapters", model_load}, {"tokenizer", model_tokenizer},
        {"encoders", model_encoders},  {"prefix_cache", model_prefix_cache},
        {NULL, NULL},
    };
    new_class(L, XL_ENCODER, encoder_methods, encoder_gc, encoder_tostring);
    new_class(L, XL_MODEL, model_methods, model_gc, model_tostring);
    new_class(L, XL_HEAD, NULL, head_gc, head_tostring);
    luaL_getmetatable(L, XL_HEAD);
    lua_pushcfunction(L, head_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"load_plm", l_load_plm}, {"load_vlm", l_load_vlm}, {"model", l_model}, {NULL, NULL}};
    lua_pushvalue(L, mod);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
