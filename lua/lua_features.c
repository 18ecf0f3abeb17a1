// CLIP features for scripts: the feature cache of a frozen VLM ("xadapt.Features", wrapping
// task.h's xa_vlm_cache: computed once per image or text, kept in memory and on disk) and
// retrieval of pool images for text-only data. Training steps take the cache (lua_train.c).
#include <stdlib.h>
#include <string.h>

#include "xl.h"

xl_features *xl_check_features(lua_State *L, int idx) {
    xl_features *f = luaL_testudata(L, idx, XL_FEATURES);
    if (!f || !f->c)
        xl_argerror(L, idx, "feature cache expected (xa.features(vlm)), got %s",
                    luaL_typename(L, idx));
    return f;
}

static int features_gc(lua_State *L) {
    xl_features *f = luaL_checkudata(L, 1, XL_FEATURES);
    xa_vlm_cache_free(f->c);
    f->c = NULL;
    return 0;
}

static const char *const feature_keys[] = {"cache_dir", NULL};

// xa.features(vlm[, {cache_dir=}]) -> Features, or nil and a message
static int l_features(lua_State *L) {
    xl_encoder *e = xl_check_encoder(L, 1);
    xl_check_opts(L, 2, "xa.features", feature_keys, true);
    const char *dir = lua_istable(L, 2) ? xl_opt_str(L, 2, "cache_dir", NULL) : NULL;
    if (xa_model_config_of(e->m)->arch != XA_ARCH_CLIP)
        return xl_argerror(L, 1, "a CLIP model (xa.load_vlm) expected");
    xl_features *f = lua_newuserdatauv(L, sizeof *f, 1);
    f->c = NULL, f->told = false;
    luaL_setmetatable(L, XL_FEATURES);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); // the cache borrows the VLM
    if (xa_vlm_cache_new(xl_ctx(L), e->m, dir, &f->c) != XA_OK)
        return xl_fail(L);
    return 1;
}

static int features_stats(lua_State *L) {
    xl_features *f = xl_check_features(L, 1);
    int64_t computed = 0, mem = 0, disk = 0;
    xa_vlm_cache_stats(f->c, &computed, &mem, &disk);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, computed);
    lua_setfield(L, -2, "computed");
    lua_pushinteger(L, mem);
    lua_setfield(L, -2, "memory_hits");
    lua_pushinteger(L, disk);
    lua_setfield(L, -2, "disk_hits");
    return 1;
}

// A list of strings at `idx` as a C array in a userdata (pushed; pointers into the list's
// strings, valid while the list lives).
static const char **string_list(lua_State *L, int idx, int64_t *n, const char *what) {
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    *n = (int64_t)lua_rawlen(L, idx);
    const char **v = lua_newuserdatauv(L, (size_t)(*n ? *n : 1) * sizeof *v, 0);
    for (int64_t i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            xl_argerror(L, idx, "%s: a list of strings (entry %lld is a %s)", what,
                        (long long)i + 1, luaL_typename(L, -1));
        v[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return v;
}

// f:retrieve(pool_paths, texts, k) -> { {i1, ..., ik}, ... } (1-based pool indices, best first)
static int features_retrieve(lua_State *L) {
    xl_features *f = xl_check_features(L, 1);
    int64_t npool, ntext;
    const char **pool = string_list(L, 2, &npool, "pool");
    const char **texts = string_list(L, 3, &ntext, "texts");
    lua_Integer k = luaL_checkinteger(L, 4);
    if (npool == 0)
        return xl_argerror(L, 2, "the image pool is empty");
    if (k < 1 || k > npool)
        return xl_argerror(L, 4, "k must be 1..%lld (the pool size), got %lld", (long long)npool,
                           (long long)k);
    int64_t *idx = lua_newuserdatauv(L, (size_t)((ntext ? ntext : 1) * k) * sizeof *idx, 0);
    // Retrieval runs the VLM in the step arena; it is reset after, as after any step.
    xa_ctx *ctx = xl_ctx(L);
    bool grad = xa_set_grad_enabled(ctx, false);
    xa_status st =
        ntext ? xa_vlm_retrieve(ctx, f->c, pool, npool, texts, ntext, (int)k, idx) : XA_OK;
    xa_set_grad_enabled(ctx, grad);
    xl_arena_reset(L);
    if (st != XA_OK)
        return xl_fail(L);
    lua_createtable(L, (int)ntext, 0);
    for (int64_t i = 0; i < ntext; i++) {
        lua_createtable(L, (int)k, 0);
        for (lua_Integer j = 0; j < k; j++) {
            if (idx[i * k + j] < 0 || idx[i * k + j] >= npool)
                return xl_raise(L, "retrieve: index %lld outside the pool of %lld",
                                (long long)idx[i * k + j], (long long)npool);
            lua_pushinteger(L, idx[i * k + j] + 1);
            lua_rawseti(L, -2, j + 1);
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int features_tostring(lua_State *L) {
    lua_pushstring(L, "xadapt.Features");
    return 1;
}

void xl_open_features(lua_State *L, int mod) {
    static const luaL_Reg methods[] = {
        {"stats", features_stats}, {"retrieve", features_retrieve}, {NULL, NULL}};
    luaL_newmetatable(L, XL_FEATURES);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, features_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, features_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_features);
    lua_setfield(L, mod, "features");
}
