// Data in C where speed matters: tokenizers ("xadapt.Tokenizer"), the JSONL and TSV/CSV readers
// (records and their line numbers; bad lines name file and line), and batches ("xadapt.Batch":
// padded ids and masks from the tokenizer's batch API, labels, CLIP texts and image paths).
// Datasets, field mapping, shuffling and bucketing are Lua (lua/xadapt/data.lua).
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "xl.h"

// --- tokenizers
// -----------------------------------------------------------------------------------

xl_tokenizer *xl_check_tokenizer(lua_State *L, int idx) {
    xl_tokenizer *t = luaL_testudata(L, idx, XL_TOKENIZER);
    if (!t || !t->tok)
        xl_argerror(L, idx, "tokenizer expected (xa.tokenizer(dir) or m:tokenizer()), got %s",
                    luaL_typename(L, idx));
    return t;
}

static int tokenizer_gc(lua_State *L) {
    xl_tokenizer *t = luaL_checkudata(L, 1, XL_TOKENIZER);
    xa_tokenizer_free(t->tok);
    t->tok = NULL;
    return 0;
}

int xl_push_tokenizer(lua_State *L, const char *dir) {
    xl_tokenizer *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->tok = NULL;
    luaL_setmetatable(L, XL_TOKENIZER);
    if (xa_tokenizer_load_dir(xl_ctx(L), dir, &t->tok) != XA_OK)
        return xl_fail(L);
    return 1;
}

static int l_tokenizer(lua_State *L) {
    return xl_push_tokenizer(L, luaL_checkstring(L, 1));
}

static const char *const encode_keys[] = {"max_length", "no_special_tokens", NULL};

static void push_ints(lua_State *L, const int32_t *v, int64_t n) {
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_pushinteger(L, v[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

// tok:encode(text[, pair][, {max_length=, no_special_tokens=}]) -> ids, type_ids, special_mask
static int tokenizer_encode(lua_State *L) {
    xl_tokenizer *t = xl_check_tokenizer(L, 1);
    const char *text = luaL_checkstring(L, 2);
    int opts = 3; // tok:encode(text, opts), tok:encode(text, pair, opts), tok:encode(text, nil, opts)
    const char *pair = NULL;
    if (lua_type(L, 3) == LUA_TSTRING)
        pair = lua_tostring(L, 3), opts = 4;
    else if (lua_isnil(L, 3) && lua_gettop(L) >= 4)
        opts = 4;
    else if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
        return xl_argerror(L, 3, "a pair text (string) or the options (table)");
    if (lua_gettop(L) > opts)
        return xl_argerror(L, opts + 1, "nothing (tok:encode(text[, pair][, opts]))");
    xl_check_opts(L, opts, "tok:encode", encode_keys, true);
    xa_encode_opts o = {0};
    if (lua_istable(L, opts)) {
        o.max_length = (int32_t)xl_opt_int(L, opts, "max_length", 0);
        o.no_special_tokens = xl_opt_bool(L, opts, "no_special_tokens", false);
    }
    xa_encoding enc = {0};
    if (xa_tokenizer_encode(xl_ctx(L), t->tok, text, pair, &o, &enc) != XA_OK) {
        xa_encoding_deinit(&enc);
        return xl_fail(L);
    }
    // Copy into Lua before anything can raise (pushing may fail only on memory exhaustion).
    lua_checkstack(L, 4);
    push_ints(L, enc.ids, enc.len);
    push_ints(L, enc.type_ids, enc.len);
    push_ints(L, enc.special_mask, enc.len);
    xa_encoding_deinit(&enc);
    return 3;
}

static int tokenizer_decode(lua_State *L) {
    xl_tokenizer *t = xl_check_tokenizer(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    bool skip = lua_toboolean(L, 3);
    int64_t n = (int64_t)lua_rawlen(L, 2);
    int32_t *ids = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ids, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < INT32_MIN || v > INT32_MAX)
            return xl_argerror(L, 2, "a list of token ids (entry %lld is not)", (long long)i + 1);
        ids[i] = (int32_t)v;
        lua_pop(L, 1);
    }
    char *text = NULL;
    if (xa_tokenizer_decode(xl_ctx(L), t->tok, ids, n, skip, &text) != XA_OK)
        return xl_fail(L);
    lua_pushstring(L, text);
    free(text);
    return 1;
}

static int tokenizer_id(lua_State *L) {
    xl_tokenizer *t = xl_check_tokenizer(L, 1);
    int32_t id = xa_tokenizer_token_id(t->tok, luaL_checkstring(L, 2));
    if (id < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, id);
    return 1;
}

static int tokenizer_token(lua_State *L) {
    xl_tokenizer *t = xl_check_tokenizer(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    const char *s = id >= 0 && id <= INT32_MAX ? xa_tokenizer_id_token(t->tok, (int32_t)id) : NULL;
    if (s)
        lua_pushstring(L, s);
    else
        lua_pushnil(L);
    return 1;
}

static void set_id(lua_State *L, const char *k, int32_t v) {
    if (v < 0)
        return;
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static int tokenizer_info(lua_State *L) {
    xl_tokenizer *t = xl_check_tokenizer(L, 1);
    const xa_tokenizer_info *i = xa_tokenizer_info_get(t->tok);
    static const char *const kinds[] = {"?", "bert", "roberta", "clip"};
    lua_createtable(L, 0, 10);
    lua_pushstring(L, kinds[i->kind >= 1 && i->kind <= 3 ? i->kind : 0]);
    lua_setfield(L, -2, "kind");
    set_id(L, "vocab_size", i->vocab_size);
    set_id(L, "model_max_length", i->model_max_length);
    set_id(L, "unk_id", i->unk_id);
    set_id(L, "pad_id", i->pad_id);
    set_id(L, "bos_id", i->bos_id);
    set_id(L, "eos_id", i->eos_id);
    set_id(L, "mask_id", i->mask_id);
    if (i->mask_id >= 0) {
        lua_pushstring(L, xa_tokenizer_id_token(t->tok, i->mask_id));
        lua_setfield(L, -2, "mask_token");
    }
    lua_pushboolean(L, i->type_ids);
    lua_setfield(L, -2, "type_ids");
    return 1;
}

// tok:lengths(examples[, max_length]) -> token counts of ex.text (+ ex.pair), for bucketing
static int tokenizer_lengths(lua_State *L) {
    xl_tokenizer *t = xl_check_tokenizer(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer maxlen = luaL_optinteger(L, 3, 0);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    lua_createtable(L, (int)n, 0);
    int res = lua_gettop(L);
    xa_encoding *enc = lua_newuserdatauv(L, sizeof *enc, 0); // buffers reused across rows
    memset(enc, 0, sizeof *enc);
    xa_encode_opts o = {.max_length = (int32_t)maxlen};
    xa_ctx *ctx = xl_ctx(L);
    xa_status st = XA_OK;
    for (lua_Integer i = 1; i <= n && st == XA_OK; i++) {
        lua_rawgeti(L, 2, i);
        lua_getfield(L, -1, "text");
        lua_getfield(L, -2, "pair");
        const char *text = lua_tostring(L, -2), *pair = lua_tostring(L, -1);
        if (text)
            st = xa_tokenizer_encode(ctx, t->tok, text, pair, &o, enc);
        lua_pop(L, 3);
        if (st == XA_OK) {
            lua_pushinteger(L, text ? enc->len : 0);
            lua_rawseti(L, res, i);
        }
    }
    xa_encoding_deinit(enc);
    if (st != XA_OK)
        return xl_fail(L);
    lua_settop(L, res);
    return 1;
}

static int tokenizer_tostring(lua_State *L) {
    xl_tokenizer *t = luaL_checkudata(L, 1, XL_TOKENIZER);
    lua_pushfstring(L, "xadapt.Tokenizer(%d tokens)",
                    t->tok ? (int)xa_tokenizer_info_get(t->tok)->vocab_size : 0);
    return 1;
}

// --- readers ------------------------------------------------------------------------------------

typedef struct {
    char *data;
    size_t len;
} text_file;

// The whole file in a userdata (freed by the GC). Pushes it; NULL with errno on failure.
static text_file *slurp(lua_State *L, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || S_ISDIR(sb.st_mode)) {
        int e = S_ISDIR(sb.st_mode) ? EISDIR : errno;
        fclose(f);
        errno = e;
        return NULL;
    }
    text_file *tf = lua_newuserdatauv(L, sizeof *tf, 1);
    tf->data = NULL, tf->len = 0;
    // Read to the end: the size a regular file reports is only a first guess (/proc files and
    // pipes report 0), and the bytes go into a Lua-owned buffer of the final size.
    size_t cap = S_ISREG(sb.st_mode) && sb.st_size > 0 ? (size_t)sb.st_size + 1 : 65536, size = 0;
    char *tmp = malloc(cap);
    while (tmp) {
        size += fread(tmp + size, 1, cap - size, f);
        if (size < cap || ferror(f))
            break;
        char *grown = cap < SIZE_MAX / 2 ? realloc(tmp, cap * 2) : NULL;
        if (!grown) {
            free(tmp);
            tmp = NULL;
            break;
        }
        tmp = grown, cap *= 2;
    }
    int err = !tmp ? ENOMEM : ferror(f) ? EIO : 0;
    fclose(f);
    if (err) {
        free(tmp);
        errno = err;
        return NULL;
    }
    char *buf = lua_newuserdatauv(L, size + 1, 0);
    lua_setiuservalue(L, -2, 1);
    memcpy(buf, tmp, size);
    free(tmp);
    buf[size] = '\0';
    tf->data = buf, tf->len = size;
    if (tf->len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) // a UTF-8 byte order mark
        tf->data += 3, tf->len -= 3;
    return tf;
}

static const char *const jsonl_keys[] = {"skip_bad", NULL};

// Records as the reader returns them: (records, lines, warnings).
static void push_result_tables(lua_State *L) {
    lua_newtable(L); // records
    lua_newtable(L); // line numbers
    lua_newtable(L); // warnings (skipped lines)
}

static int bad_line(lua_State *L, bool skip, int warn_idx, const char *msg) {
    if (!skip) {
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    lua_pushstring(L, msg);
    lua_rawseti(L, warn_idx, (lua_Integer)lua_rawlen(L, warn_idx) + 1);
    return 0;
}

// xa.data.read_jsonl(path[, {skip_bad=}]) -> records, lines, warnings | nil, msg
static int l_read_jsonl(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    xl_check_opts(L, 2, "read_jsonl", jsonl_keys, true);
    bool skip = lua_istable(L, 2) && xl_opt_bool(L, 2, "skip_bad", false);
    lua_settop(L, 2);
    text_file *tf = slurp(L, path);
    if (!tf)
        return xl_failf(L, "%s: %s", path, strerror(errno));
    push_result_tables(L);
    int rec = lua_gettop(L) - 2, lines = rec + 1, warns = rec + 2;
    cJSON **box = xl_json_box(L);
    lua_Integer n = 0;
    int lineno = 0;
    char msg[1024];
    for (char *p = tf->data, *end = tf->data + tf->len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        lineno++;
        char *line = p;
        p += len + (nl ? 1 : 0);
        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
            len--;
        size_t lead = strspn(line, " \t");
        if (lead >= len)
            continue; // blank line
        const char *stop = NULL;
        *box = cJSON_ParseWithLengthOpts(line, len, &stop, false);
        if (!*box || !cJSON_IsObject(*box) || (stop && stop < line + len)) {
            if (*box && !cJSON_IsObject(*box))
                snprintf(msg, sizeof msg, "%s:%d: expected a JSON object per line", path, lineno);
            else if (*box)
                snprintf(msg, sizeof msg, "%s:%d: text after the JSON object (column %d)", path,
                         lineno, (int)(stop - line) + 1);
            else
                snprintf(msg, sizeof msg, "%s:%d: invalid JSON at column %d", path, lineno,
                         stop ? (int)(stop - line) + 1 : 1);
            cJSON_Delete(*box);
            *box = NULL;
            if (bad_line(L, skip, warns, msg))
                return 2;
            continue;
        }
        xl_push_json(L, *box);
        cJSON_Delete(*box);
        *box = NULL;
        lua_rawseti(L, rec, ++n);
        lua_pushinteger(L, lineno);
        lua_rawseti(L, lines, n);
    }
    lua_settop(L, warns);
    return 3;
}

static const char *const table_keys[] = {"sep", "quote", "header", "skip_bad", NULL};

// One field of a delimited file: unquoted (up to sep/newline) or, with `quote`, RFC 4180 quoted
// ("" is a quote inside). Pushes the field; returns the position after it, NULL when a quote is
// not closed.
static char *read_field(lua_State *L, char *p, char *end, char sep, bool quote, int *lineno) {
    if (quote && p < end && *p == '"') {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (p++; p < end; p++) {
            if (*p == '"') {
                if (p + 1 < end && p[1] == '"') {
                    luaL_addchar(&b, '"');
                    p++;
                    continue;
                }
                luaL_pushresult(&b);
                return p + 1;
            }
            if (*p == '\n')
                (*lineno)++;
            luaL_addchar(&b, *p);
        }
        luaL_pushresult(&b);
        return NULL;
    }
    char *s = p;
    while (p < end && *p != sep && *p != '\n')
        p++;
    size_t len = (size_t)(p - s);
    if (len && s[len - 1] == '\r' && (p == end || *p == '\n'))
        len--;
    lua_pushlstring(L, s, len);
    return p;
}

// xa.data.read_table(path[, {sep="\t", quote=false, header=true, skip_bad=false}])
//   -> records, lines, warnings | nil, msg
// With a header, records are keyed by column name; without, they are lists.
static int l_read_table(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    xl_check_opts(L, 2, "read_table", table_keys, true);
    char sep = '\t';
    bool quote = false, header = true, skip = false;
    if (lua_istable(L, 2)) {
        const char *s = xl_opt_str(L, 2, "sep", "\t");
        if (strlen(s) != 1)
            return xl_raise(L, "read_table: sep must be one character");
        sep = s[0];
        quote = xl_opt_bool(L, 2, "quote", false);
        header = xl_opt_bool(L, 2, "header", true);
        skip = xl_opt_bool(L, 2, "skip_bad", false);
    }
    lua_settop(L, 2);
    text_file *tf = slurp(L, path);
    if (!tf)
        return xl_failf(L, "%s: %s", path, strerror(errno));
    push_result_tables(L);
    int rec = lua_gettop(L) - 2, lines = rec + 1, warns = rec + 2;
    lua_newtable(L); // column names
    int names = lua_gettop(L);
    lua_Integer ncols = 0, n = 0;
    int lineno = 1;
    char msg[1024];
    bool first = true;
    for (char *p = tf->data, *end = tf->data + tf->len; p < end;) {
        int start = lineno;
        if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')) { // blank line
            p += *p == '\r' ? 2 : 1;
            lineno++;
            continue;
        }
        lua_newtable(L);
        int row = lua_gettop(L);
        lua_Integer k = 0;
        bool ok = true;
        for (;;) {
            char *q = read_field(L, p, end, sep, quote, &lineno);
            if (!q) {
                snprintf(msg, sizeof msg, "%s:%d: a quoted field is not closed", path, start);
                ok = false, p = end;
                lua_pop(L, 1);
                break;
            }
            lua_rawseti(L, row, ++k);
            p = q;
            if (p < end && *p == sep) {
                p++;
                continue;
            }
            if (p < end && *p == '\r')
                p++;
            if (p < end && *p != '\n') {
                snprintf(msg, sizeof msg, "%s:%d: unexpected text after a quoted field", path,
                         lineno);
                ok = false;
                while (p < end && *p != '\n')
                    p++;
            }
            if (p < end)
                p++;
            lineno++;
            break;
        }
        if (ok && first && header) {
            ncols = k;
            lua_replace(L, names);
            first = false;
            continue;
        }
        if (ok && first)
            ncols = k;
        first = false;
        if (ok && k != ncols) {
            snprintf(msg, sizeof msg, "%s:%d: expected %lld columns, found %lld%s", path, start,
                     (long long)ncols, (long long)k,
                     quote ? "" : " (fields are separated by tabs; no quoting)");
            ok = false;
        }
        if (!ok) {
            lua_settop(L, names);
            if (bad_line(L, skip, warns, msg))
                return 2;
            continue;
        }
        if (header) { // key the row by column name
            lua_createtable(L, 0, (int)ncols);
            for (lua_Integer c = 1; c <= ncols; c++) {
                lua_rawgeti(L, names, c);
                lua_rawgeti(L, row, c);
                lua_rawset(L, -3);
            }
            lua_replace(L, row);
        }
        lua_rawseti(L, rec, ++n);
        lua_pushinteger(L, start);
        lua_rawseti(L, lines, n);
    }
    lua_settop(L, names);
    lua_pushvalue(L, rec);
    lua_pushvalue(L, lines);
    lua_pushvalue(L, warns);
    lua_pushvalue(L, names);
    return 4;
}

// --- batches ------------------------------------------------------------------------------------

xl_batch *xl_check_batch(lua_State *L, int idx) {
    xl_batch *b = luaL_testudata(L, idx, XL_BATCH);
    if (!b)
        xl_argerror(L, idx, "batch expected, got %s", luaL_typename(L, idx));
    return b;
}

static int batch_gc(lua_State *L) {
    xl_batch *b = luaL_checkudata(L, 1, XL_BATCH);
    xa_token_batch_deinit(&b->tok);
    free(b->mask);
    free(b->special);
    free(b->labels);
    for (int64_t i = 0; b->where && i < b->n; i++)
        free(b->where[i]);
    free(b->where);
    free(b->targets);
    for (int64_t i = 0; b->texts && i < b->n; i++)
        free(b->texts[i]);
    free(b->texts);
    for (int64_t i = 0; b->images && i < b->n * b->k; i++)
        free(b->images[i]);
    free(b->images);
    memset(b, 0, sizeof *b);
    return 0;
}

static const char *const batch_keys[] = {"max_length", "pad_multiple", "labels",
                                         "images",     "choices",      NULL};
static const char *const label_kinds[] = {"none", "int", "float", NULL};

// Where an example came from, for messages: ex._where ("file:line") or "example #i".
static const char *where(lua_State *L, int ex, lua_Integer i, char *buf, size_t n) {
    if (lua_getfield(L, ex, "_where") == LUA_TSTRING)
        snprintf(buf, n, "%s", lua_tostring(L, -1));
    else
        snprintf(buf, n, "example #%lld", (long long)i);
    lua_pop(L, 1);
    return buf;
}

static void read_label(lua_State *L, xl_batch *b, int ex, int64_t i, lua_Integer idx) {
    char w[512];
    int ty = lua_getfield(L, ex, "label");
    if (b->label_kind == 1) {
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        if (ty != LUA_TNUMBER || !ok || v < 0 || v > INT32_MAX)
            xl_raise(L, "%s: label must be a class index 0, 1, ..., got %s",
                     where(L, ex, idx, w, sizeof w),
                     ty == LUA_TNIL ? "none" : luaL_tolstring(L, -1, NULL));
        b->labels[i] = (int32_t)v;
        if (!(b->where[i] = strdup(where(L, ex, idx, w, sizeof w))))
            xl_raise(L, "out of memory");
    } else if (b->label_kind == 2) {
        if (ty != LUA_TNUMBER)
            xl_raise(L, "%s: label must be a number, got %s", where(L, ex, idx, w, sizeof w),
                     luaL_typename(L, -1));
        b->targets[i] = (float)lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
}

// Image paths of example `ex` into b->images[i*k ...]; k fixed by the first example.
static void read_images(lua_State *L, xl_batch *b, int ex, int64_t i, lua_Integer idx) {
    char w[512];
    int ty = lua_getfield(L, ex, "images");
    int count = ty == LUA_TTABLE ? (int)lua_rawlen(L, -1) : 0;
    if (ty != LUA_TTABLE) {
        lua_pop(L, 1);
        ty = lua_getfield(L, ex, "image");
        count = ty == LUA_TSTRING ? 1 : 0;
    }
    if (count != b->k)
        xl_raise(L, "%s: expected %d image%s per example (as the batch's first), found %d",
                 where(L, ex, idx, w, sizeof w), b->k, b->k == 1 ? "" : "s", count);
    for (int j = 0; j < count; j++) {
        if (ty == LUA_TTABLE)
            lua_rawgeti(L, -1, j + 1);
        else
            lua_pushvalue(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING)
            xl_raise(L, "%s: image paths must be strings", where(L, ex, idx, w, sizeof w));
        if (!(b->images[i * b->k + j] = strdup(lua_tostring(L, -1))))
            xl_raise(L, "out of memory");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int example_images(lua_State *L, int ex) {
    int n = 0;
    if (lua_getfield(L, ex, "images") == LUA_TTABLE)
        n = (int)lua_rawlen(L, -1);
    else if (lua_getfield(L, ex, "image") == LUA_TSTRING)
        n = 1, lua_pop(L, 1);
    else
        lua_pop(L, 1);
    lua_pop(L, 1);
    return n;
}

#define ALLOC(dst, count)                                                                          \
    do {                                                                                           \
        size_t count_ = (size_t)(count);                                                           \
        if (!((dst) = calloc(count_ ? count_ : 1, sizeof *(dst))))                                 \
            return xl_raise(L, "out of memory building a batch");                                  \
    } while (0)

// xa.batch(tokenizer, examples, indices, {max_length=, pad_multiple=, labels="none"|"int"|"float",
//          images=bool, choices=n}) -> Batch
// Reads ex.text, ex.pair, ex.label, ex.images / ex.image, ex.choices of each example.
static int l_batch(lua_State *L) {
    xl_tokenizer *t = xl_check_tokenizer(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    xl_check_opts(L, 4, "xa.batch", batch_keys, true);
    lua_settop(L, 4);
    if (lua_isnil(L, 4)) {
        lua_newtable(L);
        lua_replace(L, 4);
    }
    int64_t n = (int64_t)lua_rawlen(L, 3);
    if (n <= 0)
        return xl_argerror(L, 3, "a non-empty list of example indices");
    int maxlen = (int)xl_opt_int(L, 4, "max_length", 0);
    int multiple = (int)xl_opt_int(L, 4, "pad_multiple", 0);
    int lk = xl_opt_enum(L, 4, "labels", label_kinds, 0);
    bool want_images = xl_opt_bool(L, 4, "images", false);
    int choices = (int)xl_opt_int(L, 4, "choices", 0);
    if (choices < 0 || choices == 1)
        return xl_raise(L, "xa.batch: choices must be 2 or more");

    xl_batch *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, XL_BATCH);
    int bidx = lua_gettop(L);
    b->n = n, b->choices = choices ? choices : 1, b->rows = n * b->choices, b->label_kind = lk;
    ALLOC(b->texts, n);
    if (lk == 1) {
        ALLOC(b->labels, n);
        ALLOC(b->where, n);
    }
    if (lk == 2)
        ALLOC(b->targets, n);
    // Row texts for the tokenizer point into Lua strings held by the examples (kept on the stack).
    const char **rt = lua_newuserdatauv(L, (size_t)b->rows * sizeof *rt, 0);
    const char **rp = lua_newuserdatauv(L, (size_t)b->rows * sizeof *rp, 0);
    bool any_pair = false;
    char w[512];
    for (int64_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, i + 1);
        lua_Integer idx = lua_tointeger(L, -1);
        lua_pop(L, 1);
        if (lua_rawgeti(L, 2, idx) != LUA_TTABLE)
            return xl_raise(L, "xa.batch: example %lld is not a table", (long long)idx);
        int ex = lua_gettop(L);
        if (lua_getfield(L, ex, "text") != LUA_TSTRING)
            return xl_raise(L, "%s: no text (give the text field when reading the data)",
                            where(L, ex, idx, w, sizeof w));
        const char *text = lua_tostring(L, -1);
        if (!(b->texts[i] = strdup(text)))
            return xl_raise(L, "out of memory");
        lua_getfield(L, ex, "pair");
        const char *pair = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 2);
        if (choices) {
            if (lua_getfield(L, ex, "choices") != LUA_TTABLE || (int)lua_rawlen(L, -1) != choices)
                return xl_raise(L, "%s: expected a list of %d choices",
                                where(L, ex, idx, w, sizeof w), choices);
            for (int c = 0; c < choices; c++) {
                lua_rawgeti(L, -1, c + 1);
                rt[i * choices + c] = text;
                rp[i * choices + c] = lua_tostring(L, -1);
                if (!rp[i * choices + c])
                    return xl_raise(L, "%s: choices must be strings",
                                    where(L, ex, idx, w, sizeof w));
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
            any_pair = true;
        } else {
            rt[i] = b->texts[i];
            rp[i] = pair;
            any_pair |= pair != NULL;
        }
        if (lk)
            read_label(L, b, ex, i, idx);
        if (want_images) {
            if (i == 0) {
                b->k = example_images(L, ex);
                if (b->k == 0)
                    return xl_raise(L,
                                    "%s: no image (the images feature needs ex.image or "
                                    "ex.images)",
                                    where(L, ex, idx, w, sizeof w));
                ALLOC(b->images, n * b->k);
            }
            read_images(L, b, ex, i, idx);
        }
        lua_settop(L, bidx + 2);
    }
    if (choices) { // the row texts point into example strings: copy them to the batch's texts
        for (int64_t r = 0; r < b->rows; r++)
            rt[r] = b->texts[r / choices];
    }
    xa_encode_opts o = {.max_length = maxlen, .pad_multiple = multiple};
    xa_ctx *ctx = xl_ctx(L);
    if (xa_tokenizer_encode_batch(ctx, t->tok, rt, any_pair ? rp : NULL, b->rows, &o, &b->tok) !=
        XA_OK)
        return xl_raise_ctx(L, "xa.batch");
    int64_t cells = b->tok.rows * b->tok.cols;
    ALLOC(b->mask, cells);
    ALLOC(b->special, cells);
    for (int64_t c = 0; c < cells; c++) {
        b->mask[c] = (float)b->tok.attention_mask[c];
        b->special[c] = (uint8_t)(b->tok.special_mask[c] != 0);
    }
    lua_settop(L, bidx);
    return 1;
}

static int batch_index(lua_State *L) {
    xl_batch *b = xl_check_batch(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "rows"))
        lua_pushinteger(L, b->tok.rows);
    else if (!strcmp(k, "cols"))
        lua_pushinteger(L, b->tok.cols);
    else if (!strcmp(k, "size"))
        lua_pushinteger(L, b->n);
    else if (!strcmp(k, "images_per_example"))
        lua_pushinteger(L, b->k);
    else if (!strcmp(k, "ids") || !strcmp(k, "mask")) {
        bool ids = k[0] == 'i';
        lua_createtable(L, (int)b->tok.rows, 0);
        for (int64_t r = 0; r < b->tok.rows; r++) {
            push_ints(L, (ids ? b->tok.input_ids : b->tok.attention_mask) + r * b->tok.cols,
                      b->tok.cols);
            lua_rawseti(L, -2, r + 1);
        }
    } else if (!strcmp(k, "labels")) {
        if (!b->label_kind)
            return lua_pushnil(L), 1;
        lua_createtable(L, (int)b->n, 0);
        for (int64_t i = 0; i < b->n; i++) {
            if (b->label_kind == 1)
                lua_pushinteger(L, b->labels[i]);
            else
                lua_pushnumber(L, b->targets[i]);
            lua_rawseti(L, -2, i + 1);
        }
    } else {
        lua_pushnil(L);
    }
    return 1;
}

static int batch_tostring(lua_State *L) {
    xl_batch *b = luaL_checkudata(L, 1, XL_BATCH);
    lua_pushfstring(L, "xadapt.Batch(%d x %d)", (int)b->tok.rows, (int)b->tok.cols);
    return 1;
}

void xl_open_data(lua_State *L, int mod) {
    static const luaL_Reg tok_methods[] = {
        {"encode", tokenizer_encode},
        {"decode", tokenizer_decode},
        {"id", tokenizer_id},
        {"token", tokenizer_token},
        {"info", tokenizer_info},
        {"lengths", tokenizer_lengths},
        {NULL, NULL},
    };
    luaL_newmetatable(L, XL_TOKENIZER);
    lua_newtable(L);
    luaL_setfuncs(L, tok_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, tokenizer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tokenizer_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, XL_BATCH);
    lua_pushcfunction(L, batch_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, batch_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_tokenizer);
    lua_setfield(L, mod, "tokenizer");
    lua_pushcfunction(L, l_batch);
    lua_setfield(L, mod, "batch");
    lua_newtable(L);
    lua_pushcfunction(L, l_read_jsonl);
    lua_setfield(L, -2, "read_jsonl");
    lua_pushcfunction(L, l_read_table);
    lua_setfield(L, -2, "read_table");
    lua_setfield(L, mod, "data");
}
