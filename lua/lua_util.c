// Small module functions scripts and the Lua helpers need from C: a wall clock, isatty, JSON
// encode/decode, seeding and the RNG state, seeded permutations for shuffling, the thread count,
// the plugin list, and an uncompressed PNG writer for synthetic image data.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "xadapt/blas.h"
#include "xl.h"

static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static int l_isatty(lua_State *L) {
    lua_Integer fd = luaL_optinteger(L, 1, 1);
    lua_pushboolean(L, isatty((int)fd));
    return 1;
}

static int l_json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    char err[256];
    cJSON *j = xl_to_json_exact(L, 1, lua_toboolean(L, 2), err, sizeof err);
    if (!j)
        return xl_argerror(L, 1, "%s", err);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s)
        return xl_raise(L, "xa.json.encode: out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int l_json_decode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *end = NULL;
    cJSON **box = xl_json_box(L);
    if (!(*box = cJSON_ParseWithLengthOpts(s, n, &end, false)))
        return xl_failf(L, "invalid JSON at byte %d", end ? (int)(end - s) + 1 : 1);
    xl_push_json(L, *box);
    return 1;
}

static int l_seed(lua_State *L) {
    lua_Integer seed = luaL_checkinteger(L, 1);
    xa_ctx_seed(xl_ctx(L), (uint64_t)seed);
    return 0;
}

// The RNG state as 4 integers (Lua integers carry all 64 bits).
static int l_rng_state(lua_State *L) {
    xa_ctx *ctx = xl_ctx(L);
    if (lua_istable(L, 1)) {
        uint64_t st[4];
        for (int i = 0; i < 4; i++) {
            lua_rawgeti(L, 1, i + 1);
            int ok;
            st[i] = (uint64_t)lua_tointegerx(L, -1, &ok);
            if (!ok)
                return xl_argerror(L, 1, "a list of 4 integers (from xa.rng_state())");
            lua_pop(L, 1);
        }
        xa_rng_set_state(ctx, st);
        return 0;
    }
    uint64_t st[4];
    xa_rng_state(ctx, st);
    lua_createtable(L, 4, 0);
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, (lua_Integer)st[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// xa.permutation(n, seed): 1..n shuffled (Fisher-Yates), the same for the same (n, seed) on every
// machine. Independent of the context's RNG, so data order never shifts dropout or masking.
static int l_permutation(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    uint64_t x = (uint64_t)luaL_checkinteger(L, 2);
    if (n < 0 || n > (1 << 28))
        return xl_argerror(L, 1, "0..2^28 expected, got %lld", (long long)n);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushinteger(L, i);
        lua_rawseti(L, -2, i);
    }
    for (lua_Integer i = n; i > 1; i--) {
        lua_Integer j = 1 + (lua_Integer)(((unsigned __int128)splitmix64(&x) * (uint64_t)i) >> 64);
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -2, j);
        lua_rawseti(L, -3, i);
        lua_rawseti(L, -2, j);
    }
    return 1;
}

static int dir_gc(lua_State *L) {
    DIR **d = luaL_checkudata(L, 1, "xadapt.Dir");
    if (*d)
        closedir(*d);
    *d = NULL;
    return 0;
}

// xa.listdir(dir) -> file names (regular files, unsorted) | nil, msg
static int l_listdir(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    DIR **d = lua_newuserdatauv(L, sizeof *d, 0); // closed by the GC if pushing names fails
    *d = NULL;
    if (luaL_newmetatable(L, "xadapt.Dir")) {
        lua_pushcfunction(L, dir_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (!(*d = opendir(dir)))
        return xl_failf(L, "%s: %s", dir, strerror(errno));
    lua_newtable(L);
    lua_Integer n = 0;
    struct dirent *e;
    while ((e = readdir(*d))) {
        if (e->d_name[0] == '.' ||
            (e->d_type != DT_REG && e->d_type != DT_LNK && e->d_type != DT_UNKNOWN))
            continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(*d);
    *d = NULL;
    return 1;
}

// xa.mkdir(path): create a directory and its parents (like mkdir -p) -> true | nil, msg
static int l_mkdir(lua_State *L) {
    size_t n;
    const char *path = luaL_checklstring(L, 1, &n);
    char buf[4096];
    if (n == 0 || n >= sizeof buf)
        return xl_argerror(L, 1, "a path of 1..4095 bytes");
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            char c = *p;
            *p = '\0';
            struct stat st;
            if (stat(buf, &st) != 0 && mkdir(buf, 0777) != 0 && errno != EEXIST)
                return xl_failf(L, "mkdir %s: %s", buf, strerror(errno));
            *p = c;
        }
        if (end)
            break;
    }
    lua_pushboolean(L, 1);
    return 1;
}

// xa.tempdir([prefix]) -> a new empty directory under $TMPDIR (or /tmp)
static int l_tempdir(lua_State *L) {
    const char *prefix = luaL_optstring(L, 1, "xadapt-");
    const char *base = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/%.200sXXXXXX", base && *base ? base : "/tmp", prefix);
    if (strchr(prefix, '/'))
        return xl_argerror(L, 1, "a prefix without '/'");
    if (!mkdtemp(buf))
        return xl_failf(L, "mkdtemp %s: %s", buf, strerror(errno));
    lua_pushstring(L, buf);
    return 1;
}

static int l_threads(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);
        if (n < 0 || n > 1024)
            return xl_argerror(L, 1, "0 (all cores) .. 1024 expected, got %lld", (long long)n);
        xa_set_threads((int)n);
    }
    lua_pushinteger(L, xa_threads());
    return 1;
}

static int l_plugins(lua_State *L) {
    xa_registry *r = xl_registry(L);
    size_t n = xa_registry_count(r);
    lua_createtable(L, (int)n, 3);
    for (size_t i = 0; i < n; i++) {
        const xa_plugin_record *p = xa_registry_at(r, i);
        lua_createtable(L, 0, 5);
        lua_pushstring(L, p->path);
        lua_setfield(L, -2, "path");
        if (p->name) {
            lua_pushstring(L, p->name);
            lua_setfield(L, -2, "name");
            lua_pushstring(L, p->version);
            lua_setfield(L, -2, "version");
        }
        if (p->refused) {
            lua_pushstring(L, p->refused);
            lua_setfield(L, -2, "refused");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushstring(L, xa_registry_class_names(r));
    lua_setfield(L, -2, "classes");
    lua_pushstring(L, xa_registry_path(r));
    lua_setfield(L, -2, "search_path");
    return 1;
}

// --- PNG (stored deflate blocks: valid for every decoder, no compression library needed) --------

static uint32_t crc_table[256];

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static bool write_chunk(FILE *f, const char *type, const uint8_t *data, size_t n) {
    uint8_t head[8], tail[4];
    be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    uint32_t crc = crc32_update(crc32_update(0, head + 4, 4), data, n);
    be32(tail, crc);
    return fwrite(head, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) &&
           fwrite(tail, 1, 4, f) == 4;
}

// xa.write_png(path, width, height, rgb): rgb is a string of 3*width*height bytes, rows top to
// bottom. Returns true, or nil and a message.
static int l_write_png(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_Integer w = luaL_checkinteger(L, 2), h = luaL_checkinteger(L, 3);
    size_t n;
    const uint8_t *rgb = (const uint8_t *)luaL_checklstring(L, 4, &n);
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384)
        return xl_argerror(L, 2, "width and height must be 1..16384, got %lldx%lld", (long long)w,
                           (long long)h);
    if (n != (size_t)(3 * w * h))
        return xl_argerror(L, 4, "expected %lld bytes (3 x %lld x %lld), got %zu",
                           (long long)(3 * w * h), (long long)w, (long long)h, n);
    size_t row = (size_t)(1 + 3 * w), raw = row * (size_t)h;
    size_t blocks = (raw + 65534) / 65535, zlen = 2 + raw + 5 * blocks + 4;
    // The compressed stream is built in a userdata so an error cannot leak it.
    uint8_t *z = lua_newuserdatauv(L, zlen, 0);
    size_t at = 0, done = 0;
    z[at++] = 0x78, z[at++] = 0x01;
    uint32_t a = 1, b = 0;
    uint8_t *scan = lua_newuserdatauv(L, raw, 0);
    for (lua_Integer y = 0; y < h; y++) {
        scan[(size_t)y * row] = 0; // filter: none
        memcpy(scan + (size_t)y * row + 1, rgb + (size_t)y * (size_t)(3 * w), (size_t)(3 * w));
    }
    for (size_t i = 0; i < raw; i++) {
        a = (a + scan[i]) % 65521;
        b = (b + a) % 65521;
    }
    while (done < raw) {
        size_t len = raw - done < 65535 ? raw - done : 65535;
        z[at++] = done + len == raw;
        z[at++] = (uint8_t)len, z[at++] = (uint8_t)(len >> 8);
        z[at++] = (uint8_t)~len, z[at++] = (uint8_t)(~len >> 8);
        memcpy(z + at, scan + done, len);
        at += len, done += len;
    }
    be32(z + at, (b << 16) | a);
    at += 4;
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)w);
    be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = ihdr[11] = ihdr[12] = 0; // 8-bit RGB
    FILE *f = fopen(path, "wb");
    if (!f)
        return xl_failf(L, "cannot write '%s': %s", path, strerror(errno));
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    bool ok = fwrite(sig, 1, 8, f) == 8 && write_chunk(f, "IHDR", ihdr, 13) &&
              write_chunk(f, "IDAT", z, at) && write_chunk(f, "IEND", NULL, 0);
    ok = (fclose(f) == 0) && ok;
    if (!ok)
        return xl_failf(L, "cannot write '%s': %s", path, strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

void xl_open_util(lua_State *L, int mod) {
    static const luaL_Reg fns[] = {
        {"clock", l_clock},         {"isatty", l_isatty},           {"seed", l_seed},
        {"rng_state", l_rng_state}, {"permutation", l_permutation}, {"threads", l_threads},
        {"plugins", l_plugins},     {"write_png", l_write_png},     {"listdir", l_listdir},
        {"mkdir", l_mkdir},         {"tempdir", l_tempdir},         {NULL, NULL},
    };
    lua_pushvalue(L, mod);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_json_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_json_decode);
    lua_setfield(L, -2, "decode");
    lua_setfield(L, mod, "json");
}
