// The `xadapt` Lua module: luaopen_xadapt (for the runner and for `require "xadapt"` from a stock
// lua5.4), the per-state context and plugin registry, errors located at the user's script line,
// option-table checking and JSON conversion shared by the other lua_*.c files. The functions
// themselves live in lua_model.c, lua_data.c, lua_train.c, lua_features.c and lua/xadapt/*.lua.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "xl.h"

#define STATE_KEY  "xadapt.state" // the registry slot of this Lua state's xl_state
#define STATE_META "xadapt.State"

#ifndef XADAPT_LUA_SRC_DIR
#define XADAPT_LUA_SRC_DIR ""
#endif
#ifndef XADAPT_LUA_INSTALL_DIR
#define XADAPT_LUA_INSTALL_DIR ""
#endif

// --- the state --------------------------------------------------------------------------------

static int state_gc(lua_State *L) {
    xl_state *s = luaL_checkudata(L, 1, STATE_META);
    // Finalizers run in reverse creation order, so every net made through this state (created
    // later) is gone before the registry unloads the plugins.
    if (s->reg)
        xa_registry_free(s->reg);
    xa_ctx_free(s->ctx);
    free(s->libdir);
    s->reg = NULL, s->ctx = NULL, s->libdir = NULL;
    return 0;
}

xl_state *xl_state_of(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    xl_state *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!s || !s->ctx)
        luaL_error(L, "xadapt: the module state is gone (closing?)");
    return s;
}

xa_ctx *xl_ctx(lua_State *L) {
    return xl_state_of(L)->ctx;
}

xa_registry *xl_registry(lua_State *L) {
    xl_state *s = xl_state_of(L);
    if (!s->scanned) {
        s->scanned = true;
        xa_registry_scan(s->reg); // refusals are recorded and listed by xa.plugins()
        xa_error_clear(s->ctx);
    }
    return s->reg;
}

void xl_arena_reset(lua_State *L) {
    xl_state *s = xl_state_of(L);
    xa_arena_reset(s->ctx);
    s->generation++;
}

// --- errors -----------------------------------------------------------------------------------

int xl_fail(lua_State *L) {
    xa_ctx *ctx = xl_ctx(L);
    lua_pushnil(L);
    lua_pushstring(L, xa_errcode(ctx) ? xa_errmsg(ctx) : "failed (no message)");
    xa_error_clear(ctx);
    return 2;
}

int xl_failf(lua_State *L, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

// The stack level of the innermost Lua frame that belongs to the user (not C, not our helpers).
static int user_level(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, STATE_KEY);
    xl_state *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    const char *lib = s ? s->libdir : NULL;
    size_t liblen = lib ? strlen(lib) : 0;
    lua_Debug ar;
    for (int lv = 1; lua_getstack(L, lv, &ar); lv++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
            continue;
        if (lib && ar.source[0] == '@' && !strncmp(ar.source + 1, lib, liblen))
            continue;
        return lv;
    }
    return 1;
}

void xl_push_user_where(lua_State *L) {
    luaL_where(L, user_level(L));
}

static int raise_msg(lua_State *L, const char *msg) {
    luaL_where(L, user_level(L));
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

int xl_raise(lua_State *L, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return raise_msg(L, msg);
}

int xl_raise_ctx(lua_State *L, const char *what) {
    xa_ctx *ctx = xl_ctx(L);
    char msg[2600];
    const char *why = xa_errcode(ctx) ? xa_errmsg(ctx) : "failed (no message)";
    size_t n = what ? strlen(what) : 0;
    if (n && !strncmp(why, what, n) && !strncmp(why + n, ": ", 2))
        what = NULL; // the message names it already ("backward: backward: ...")
    snprintf(msg, sizeof msg, "%s%s%s", what ? what : "", what ? ": " : "", why);
    xa_error_clear(ctx);
    return raise_msg(L, msg);
}

// The string key under which table `t` holds the value at `fn` ("prefix" + key into buf).
static bool key_of(lua_State *L, int t, int fn, const char *prefix, char *buf, size_t n) {
    int top = lua_gettop(L);
    bool found = false;
    lua_pushnil(L);
    while (!found && lua_next(L, t)) { // key at top + 1, value at top + 2
        if (lua_type(L, top + 1) == LUA_TSTRING && lua_rawequal(L, top + 2, fn)) {
            snprintf(buf, n, "%s%s", prefix, lua_tostring(L, top + 1));
            found = true;
        }
        lua_settop(L, top + 1);
    }
    lua_settop(L, top);
    return found;
}

// The running function's name as "xa.<field>" or "xa.<table>.<field>" (public tables only),
// looked up in the module table, for calls that carry no name (pcall(xa.json.encode, ...)).
static bool module_name(lua_State *L, lua_Debug *ar, char *buf, size_t n) {
    int top = lua_gettop(L);
    if (!lua_getinfo(L, "f", ar))
        return false;
    int fn = lua_gettop(L);
    bool found = false;
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE &&
        lua_getfield(L, -1, "xadapt") == LUA_TTABLE) {
        int mod = lua_gettop(L);
        found = key_of(L, mod, fn, "xa.", buf, n);
        lua_pushnil(L);
        while (!found && lua_next(L, mod)) { // key at mod + 1, value at mod + 2
            if (lua_type(L, mod + 1) == LUA_TSTRING && lua_istable(L, mod + 2) &&
                lua_tostring(L, mod + 1)[0] != '_') {
                char prefix[96];
                snprintf(prefix, sizeof prefix, "xa.%s.", lua_tostring(L, mod + 1));
                found = key_of(L, mod + 2, fn, prefix, buf, n);
            }
            lua_settop(L, mod + 1);
        }
    }
    lua_settop(L, top);
    return found;
}

// The running function's name when it is a method of its first argument (found in the __index
// table of that userdata's metatable), for calls without a name (pcall(f.retrieve, f, ...)).
static bool method_name(lua_State *L, lua_Debug *ar, char *buf, size_t n) {
    int top = lua_gettop(L);
    bool found = lua_type(L, 1) == LUA_TUSERDATA && lua_getinfo(L, "f", ar) &&
                 lua_getmetatable(L, 1) && lua_getfield(L, -1, "__index") == LUA_TTABLE &&
                 key_of(L, lua_gettop(L), top + 1, "", buf, n);
    lua_settop(L, top);
    return found;
}

// The name of the C function running now, as the caller wrote it, or NULL; ar->namewhat says
// "method" for m:f(...). `found` holds a name looked up in the module's tables.
static const char *running_name(lua_State *L, lua_Debug *ar, char *found, size_t n) {
    if (!lua_getstack(L, 0, ar))
        return NULL;
    if (lua_getinfo(L, "n", ar) && ar->name)
        return ar->name;
    if (method_name(L, ar, found, n)) {
        ar->namewhat = "method";
        return found;
    }
    return module_name(L, ar, found, n) ? found : NULL;
}

int xl_argerror(lua_State *L, int arg, const char *fmt, ...) {
    char extra[1024], msg[1400], found[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(extra, sizeof extra, fmt, ap);
    va_end(ap);
    lua_Debug ar = {0};
    const char *fname = running_name(L, &ar, found, sizeof found);
    if (!fname)
        fname = "?";
    if (ar.namewhat && !strcmp(ar.namewhat, "method")) {
        arg--;
        if (arg == 0) {
            snprintf(msg, sizeof msg, "calling '%s' on bad self (%s)", fname, extra);
            return raise_msg(L, msg);
        }
    }
    snprintf(msg, sizeof msg, "bad argument #%d to '%s' (%s)", arg, fname, extra);
    return raise_msg(L, msg);
}

static void join_keys(char *buf, size_t n, const char *const *keys) {
    buf[0] = '\0';
    for (int i = 0; keys[i]; i++) {
        if (i)
            strncat(buf, ", ", n - strlen(buf) - 1);
        strncat(buf, keys[i], n - strlen(buf) - 1);
    }
}

void xl_check_opts(lua_State *L, int idx, const char *fname, const char *const *keys,
                   bool optional) {
    idx = lua_absindex(L, idx);
    if (lua_isnoneornil(L, idx)) {
        if (!optional)
            xl_raise(L, "%s: expected an options table, got nothing", fname);
        return;
    }
    if (!lua_istable(L, idx))
        xl_raise(L, "%s: expected an options table, got %s", fname, luaL_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        bool ok = false;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; keys[i] && !ok; i++)
                ok = !strcmp(k, keys[i]);
        }
        if (!ok) {
            char list[1024];
            join_keys(list, sizeof list, keys);
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            if (k)
                xl_raise(L, "%s: unknown option '%s' (valid: %s)", fname, k, list);
            xl_raise(L, "%s: options must be key = value pairs (valid keys: %s)", fname, list);
        }
    }
}

static void opt_type(lua_State *L, int t, const char *key, const char *want) {
    lua_Debug ar = {0};
    char found[160];
    const char *fname = running_name(L, &ar, found, sizeof found);
    xl_raise(L, "%s%soption '%s' must be %s, got %s", fname ? fname : "", fname ? ": " : "", key,
             want, luaL_typename(L, -1));
    (void)t;
}

lua_Integer xl_opt_int(lua_State *L, int t, const char *key, lua_Integer dflt) {
    if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return dflt;
    }
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER)
        opt_type(L, t, key, "an integer");
    lua_pop(L, 1);
    return v;
}

lua_Number xl_opt_num(lua_State *L, int t, const char *key, lua_Number dflt) {
    if (lua_getfield(L, t, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return dflt;
    }
    if (lua_type(L, -1) != LUA_TNUMBER)
        opt_type(L, t, key, "a number");
    lua_Number v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

bool xl_opt_bool(lua_State *L, int t, const char *key, bool dflt) {
    int ty = lua_getfield(L, t, key);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return dflt;
    }
    if (ty != LUA_TBOOLEAN)
        opt_type(L, t, key, "true or false");
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

// The string stays valid while the options table holds it.
const char *xl_opt_str(lua_State *L, int t, const char *key, const char *dflt) {
    int ty = lua_getfield(L, t, key);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return dflt;
    }
    if (ty != LUA_TSTRING)
        opt_type(L, t, key, "a string");
    const char *v = lua_tostring(L, -1);
    lua_pop(L, 1);
    return v;
}

int xl_opt_enum(lua_State *L, int t, const char *key, const char *const *choices, int dflt) {
    const char *v = xl_opt_str(L, t, key, NULL);
    if (!v)
        return dflt;
    for (int i = 0; choices[i]; i++)
        if (!strcmp(v, choices[i]))
            return i;
    char list[512], found[160];
    join_keys(list, sizeof list, choices);
    lua_Debug ar = {0};
    const char *fname = running_name(L, &ar, found, sizeof found);
    return xl_raise(L, "%s%soption %s = '%s' is not one of: %s", fname ? fname : "",
                    fname ? ": " : "", key, v, list);
}

// --- JSON ---------------------------------------------------------------------------------------

void xl_push_json(lua_State *L, const cJSON *j) {
    luaL_checkstack(L, 4, "JSON nesting too deep");
    if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            lua_pushinteger(L, (lua_Integer)d);
        else
            lua_pushnumber(L, d);
    } else if (cJSON_IsBool(j)) {
        lua_pushboolean(L, cJSON_IsTrue(j));
    } else if (cJSON_IsArray(j)) {
        lua_createtable(L, cJSON_GetArraySize(j), 0);
        lua_Integer i = 1;
        for (const cJSON *e = j->child; e; e = e->next, i++) {
            xl_push_json(L, e);
            lua_rawseti(L, -2, i);
        }
    } else if (cJSON_IsObject(j)) {
        lua_createtable(L, 0, 4);
        for (const cJSON *e = j->child; e; e = e->next) {
            xl_push_json(L, e);
            lua_setfield(L, -2, e->string);
        }
    } else {
        lua_pushnil(L);
    }
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// A number as text that reads back as the same value: integers in full (cJSON would go through
// a double and lose digits above 2^53), floats with the fewest of 15-17 significant digits that
// round-trip (cJSON prints 15, so 0.1 + 0.2 came back as 0.3). Not finite: null, as cJSON does.
static cJSON *exact_number(lua_State *L, int idx) {
    char text[64];
    if (lua_isinteger(L, idx)) {
        snprintf(text, sizeof text, "%lld", (long long)lua_tointeger(L, idx));
        return cJSON_CreateRaw(text);
    }
    double d = lua_tonumber(L, idx);
    if (!isfinite(d))
        return cJSON_CreateNull();
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, d);
        if (strtod(text, NULL) == d)
            break;
    }
    return cJSON_CreateRaw(text);
}

static cJSON *to_json(lua_State *L, int idx, bool empty_array, bool exact, char *err, size_t n,
                      int depth) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return cJSON_CreateNull();
    case LUA_TBOOLEAN:
        return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        return exact ? exact_number(L, idx) : cJSON_CreateNumber(lua_tonumber(L, idx));
    case LUA_TSTRING:
        return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TTABLE:
        break;
    default:
        snprintf(err, n, "a %s cannot be written as JSON", luaL_typename(L, idx));
        return NULL;
    }
    if (depth > 64) {
        snprintf(err, n, "tables nested more than 64 deep (a cycle?)");
        return NULL;
    }
    luaL_checkstack(L, 6, "JSON nesting too deep");
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
    }
    bool array = count == len && (len > 0 || empty_array);
    cJSON *out = array ? cJSON_CreateArray() : cJSON_CreateObject();
    if (array) {
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, idx, i);
            cJSON *e = to_json(L, -1, empty_array, exact, err, n, depth + 1);
            lua_pop(L, 1);
            if (!e) {
                cJSON_Delete(out);
                return NULL;
            }
            cJSON_AddItemToArray(out, e);
        }
        return out;
    }
    // Objects are written with sorted keys, so the same table always gives the same text.
    const char **keys = lua_newuserdatauv(L, (size_t)(count ? count : 1) * sizeof *keys, 0);
    int kidx = lua_gettop(L);
    lua_Integer nk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            snprintf(err, n, "table keys must be strings (or 1..n for a list), got a %s",
                     luaL_typename(L, -1));
            lua_settop(L, kidx - 1);
            cJSON_Delete(out);
            return NULL;
        }
        keys[nk++] = lua_tostring(L, -1); // the table keeps its keys alive
    }
    qsort(keys, (size_t)nk, sizeof *keys, cmp_str);
    for (lua_Integer i = 0; i < nk; i++) {
        lua_pushstring(L, keys[i]);
        lua_rawget(L, idx); // raw: no metamethod can raise while `out` is held
        cJSON *e = to_json(L, -1, empty_array, exact, err, n, depth + 1);
        lua_pop(L, 1);
        if (!e) {
            lua_settop(L, kidx - 1);
            cJSON_Delete(out);
            return NULL;
        }
        cJSON_AddItemToObject(out, keys[i], e);
    }
    lua_settop(L, kidx - 1);
    return out;
}

static int json_box_gc(lua_State *L) {
    cJSON **box = luaL_checkudata(L, 1, "xadapt.JSON");
    cJSON_Delete(*box);
    *box = NULL;
    return 0;
}

cJSON **xl_json_box(lua_State *L) {
    cJSON **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, "xadapt.JSON")) {
        lua_pushcfunction(L, json_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

cJSON *xl_to_json(lua_State *L, int idx, bool empty_array, char *err, size_t errlen) {
    return to_json(L, idx, empty_array, false, err, errlen, 0);
}

cJSON *xl_to_json_exact(lua_State *L, int idx, bool empty_array, char *err, size_t errlen) {
    return to_json(L, idx, empty_array, true, err, errlen, 0);
}

// --- the module -------------------------------------------------------------------------------

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// Put the directory holding xadapt/*.lua first on package.path; remember it for error locations.
static void find_helpers(lua_State *L, xl_state *s) {
    const char *env = getenv("XADAPT_LUA_PATH");
    const char *dirs[] = {env, XADAPT_LUA_SRC_DIR, XADAPT_LUA_INSTALL_DIR};
    char probe[4096];
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        if (!dirs[i] || !dirs[i][0])
            continue;
        snprintf(probe, sizeof probe, "%s/xadapt/trainer.lua", dirs[i]);
        if (!is_file(probe))
            continue;
        snprintf(probe, sizeof probe, "%s/xadapt/", dirs[i]);
        s->libdir = strdup(probe);
        lua_getglobal(L, "package");
        lua_getfield(L, -1, "path");
        lua_pushfstring(L, "%s/?.lua;%s", dirs[i], lua_tostring(L, -1));
        lua_setfield(L, -3, "path");
        lua_pop(L, 2);
        return;
    }
    luaL_error(L,
               "xadapt: cannot find the Lua helpers xadapt/*.lua (looked in $XADAPT_LUA_PATH, "
               "%s and %s)",
               XADAPT_LUA_SRC_DIR, XADAPT_LUA_INSTALL_DIR);
}

static const char *const helpers[] = {"util",    "schedule", "data",  "progress", "plot",
                                      "metrics", "trainer",  "probe", NULL};

int luaopen_xadapt(lua_State *L) {
    // The state box first, then what it owns (so a failure leaves nothing behind).
    xl_state *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_newmetatable(L, STATE_META);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_setmetatable(L, STATE_META);
    if (!(s->ctx = xa_ctx_new()))
        return luaL_error(L, "xadapt: out of memory");
    if (!(s->reg = xa_registry_new(s->ctx)))
        return luaL_error(L, "xadapt: %s", xa_errmsg(s->ctx));
    s->generation = 1;
    lua_setfield(L, LUA_REGISTRYINDEX, STATE_KEY);

    lua_newtable(L);
    int mod = lua_gettop(L);
    lua_pushstring(L, XA_VERSION_STRING);
    lua_setfield(L, mod, "version");
    xl_open_util(L, mod);
    xl_open_model(L, mod);
    xl_open_random(L, mod);
    xl_open_data(L, mod);
    xl_open_train(L, mod);
    xl_open_eval(L, mod);
    xl_open_checkpoint(L, mod);
    xl_open_features(L, mod);
    // getmetatable(obj) gives scripts the class name (U.typeof reads __name), never the
    // metatable: a __gc called by hand would free what the object still points to.
    static const char *const classes[] = {XL_ENCODER, XL_MODEL, XL_HEAD,     XL_TOKENIZER, XL_BATCH,
                                          XL_OPTIM,   XL_LOSS,  XL_FEATURES, NULL};
    for (int i = 0; classes[i]; i++) {
        luaL_getmetatable(L, classes[i]);
        lua_createtable(L, 0, 1);
        lua_pushstring(L, classes[i]);
        lua_setfield(L, -2, "__name");
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }

    // The pure-Lua helpers add xa.train, xa.schedule, xa.data readers, xa.probe, ... They
    // `require "xadapt"` and must see this table, so it is registered before they load.
    find_helpers(L, s);
    lua_pushstring(L, s->libdir);
    lua_setfield(L, mod, "_libdir");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, mod);
    lua_setfield(L, -2, "xadapt");
    lua_pop(L, 1);
    for (int i = 0; helpers[i]; i++) {
        lua_getglobal(L, "require");
        lua_pushfstring(L, "xadapt.%s", helpers[i]);
        lua_call(L, 1, 0);
    }
    lua_settop(L, mod);
    return 1;
}
