// xa.make_random{...}: a random-weight checkpoint in Hugging Face layout for scripts that need
// no download: a preset or a config (Lua overrides merged into the preset, or raw JSON), plus
// tokenizer files (a small WordPiece vocab.txt from a word list, or copies of a tokenizer
// directory; OpenAI's bpe_simple_vocab_16e6.txt.gz is turned into CLIP's vocab.json/merges.txt).
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "xl.h"

static const char *const random_keys[] = {"arch",     "config", "config_json", "out",
                                          "seed",     "dtype",  "shards",      "prefix",
                                          "no_heads", "vocab",  "tokenizer",   NULL};
static const char *const dtypes[] = {"f32", "f16", "bf16", NULL};

// Merge the Lua table at `idx` into the JSON object `dst` (nested tables merge into objects).
// Only keys `dst` has are taken: the base config has every key xadapt reads, so another key
// is a typo (hiden_size) or misplaced (CLIP's text = {...}) and would change nothing.
static bool merge(lua_State *L, int idx, cJSON *dst, char *err, size_t n) {
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(err, n, "config: keys must be strings");
            lua_pop(L, 2);
            return false;
        }
        const char *k = lua_tostring(L, -2);
        cJSON *old = cJSON_GetObjectItemCaseSensitive(dst, k);
        if (!old) {
            int at = snprintf(err, n, "config: '%s' is not a key of this config (its keys:", k);
            for (const cJSON *c = dst->child; c && at > 0 && (size_t)at < n; c = c->next)
                at += snprintf(err + at, n - (size_t)at, "%s %s", c == dst->child ? "" : ",",
                               c->string);
            if (at > 0 && (size_t)at < n)
                snprintf(err + at, n - (size_t)at, ")");
            lua_pop(L, 2);
            return false;
        }
        if (lua_istable(L, -1) && cJSON_IsObject(old) && lua_rawlen(L, -1) == 0) {
            if (!merge(L, -1, old, err, n)) {
                lua_pop(L, 2);
                return false;
            }
        } else {
            cJSON *v = xl_to_json(L, -1, true, err, n);
            if (!v) {
                lua_pop(L, 2);
                return false;
            }
            cJSON_ReplaceItemInObjectCaseSensitive(dst, k, v);
        }
        lua_pop(L, 1);
    }
    return true;
}

static bool copy_file(const char *src, const char *dst, char *err, size_t n) {
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    bool ok = in && out;
    char buf[1 << 15];
    size_t got;
    while (ok && (got = fread(buf, 1, sizeof buf, in)) > 0)
        ok = fwrite(buf, 1, got, out) == got;
    ok = ok && !ferror(in);
    if (out && fclose(out) != 0)
        ok = false;
    if (in)
        fclose(in);
    if (!ok)
        snprintf(err, n, "copying %.480s to %.480s: %s", src, dst, strerror(errno));
    return ok;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// GPT-2's byte -> printable code point table, in its own order (as OpenAI's CLIP tokenizer).
static void byte_symbols(int order[256], int cp[256]) {
    int n = 0, extra = 0;
    bool taken[256] = {false};
    for (int b = '!'; b <= '~'; b++)
        order[n] = b, cp[n++] = b, taken[b] = true;
    for (int b = 0xA1; b <= 0xAC; b++)
        order[n] = b, cp[n++] = b, taken[b] = true;
    for (int b = 0xAE; b <= 0xFF; b++)
        order[n] = b, cp[n++] = b, taken[b] = true;
    for (int b = 0; b < 256; b++)
        if (!taken[b])
            order[n] = b, cp[n++] = 256 + extra++;
}

static void put_utf8(FILE *f, int c) {
    if (c == '"' || c == '\\')
        fputc('\\', f), fputc(c, f);
    else if (c < 0x80)
        fputc(c, f);
    else if (c < 0x800)
        fputc(0xC0 | (c >> 6), f), fputc(0x80 | (c & 0x3F), f);
    else
        fputc(0xE0 | (c >> 12), f), fputc(0x80 | ((c >> 6) & 0x3F), f), fputc(0x80 | (c & 0x3F), f);
}

static void put_json_str(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
}

// vocab.json + merges.txt from bpe_simple_vocab_16e6.txt.gz, as tools/clip-vocab.py derives them.
static bool clip_vocab(const char *gz, const char *dir, char *err, size_t n) {
    enum { N_MERGES = 49152 - 256 - 2 };
    char vpath[4096], mpath[4096], line[1024];
    snprintf(vpath, sizeof vpath, "%s/vocab.json", dir);
    snprintf(mpath, sizeof mpath, "%s/merges.txt", dir);
    gzFile in = gzopen(gz, "rb");
    FILE *vj = in ? fopen(vpath, "wb") : NULL, *mt = vj ? fopen(mpath, "wb") : NULL;
    bool ok = in && vj && mt;
    if (!ok) {
        snprintf(err, n, "%.900s: %s", !in ? gz : !vj ? vpath : mpath, strerror(errno));
        goto out;
    }
    int order[256], cp[256];
    byte_symbols(order, cp);
    fputs("{", vj);
    int id = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 256; i++) {
            fputs(id ? ",\"" : "\"", vj);
            put_utf8(vj, cp[i]);
            fprintf(vj, "%s\":%d", pass ? "</w>" : "", id++);
        }
    fputs("#version: 0.2\n", mt);
    int merges = 0;
    for (int ln = 0; merges < N_MERGES && gzgets(in, line, sizeof line); ln++) {
        if (ln == 0)
            continue; // the file's header
        line[strcspn(line, "\r\n")] = '\0';
        char *sp = strchr(line, ' ');
        if (!sp || strchr(sp + 1, ' ')) {
            snprintf(err, n, "%.900s:%d: expected two symbols", gz, ln + 1);
            ok = false;
            goto out;
        }
        fprintf(mt, "%s\n", line);
        *sp = '\0';
        fputs(",\"", vj);
        put_json_str(vj, line);
        put_json_str(vj, sp + 1);
        fprintf(vj, "\":%d", id++);
        merges++;
    }
    if (merges != N_MERGES) {
        snprintf(err, n, "%.900s: expected %d merges, found %d", gz, N_MERGES, merges);
        ok = false;
        goto out;
    }
    fprintf(vj, ",\"<|startoftext|>\":%d,\"<|endoftext|>\":%d}\n", id, id + 1);
out:
    if (mt && fclose(mt) != 0)
        ok = false;
    if (vj && fclose(vj) != 0)
        ok = false;
    if (in)
        gzclose(in);
    return ok;
}

bool xl_copy_tokenizer(const char *from, const char *dir, char *err, size_t n) {
    static const char *const files[] = {"vocab.txt",
                                        "tokenizer.json",
                                        "tokenizer_config.json",
                                        "special_tokens_map.json",
                                        "vocab.json",
                                        "merges.txt",
                                        NULL};
    char src[4096], dst[4096];
    int copied = 0;
    bool vocab_json = false; // the directory has its own vocab.json
    for (int i = 0; files[i]; i++) {
        snprintf(src, sizeof src, "%s/%s", from, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        if (!exists(src))
            continue;
        if (!copy_file(src, dst, err, n))
            return false;
        copied++;
        vocab_json |= !strcmp(files[i], "vocab.json");
    }
    // OpenAI's file gives vocab.json + merges.txt, written afresh (also over an earlier run's)
    snprintf(src, sizeof src, "%s/bpe_simple_vocab_16e6.txt.gz", from);
    if (exists(src) && !vocab_json) {
        if (!clip_vocab(src, dir, err, n))
            return false;
        copied++;
    }
    if (!copied)
        snprintf(err, n,
                 "tokenizer: %.700s has no tokenizer files (vocab.txt, tokenizer.json, "
                 "vocab.json + merges.txt, or bpe_simple_vocab_16e6.txt.gz)",
                 from);
    return copied > 0;
}

// A WordPiece vocab.txt: BERT's special tokens, then the words of the list at `idx`.
static int write_vocab(lua_State *L, int idx, const char *dir, char *err, size_t n) {
    static const char *const specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, n, "%.900s: %s", path, strerror(errno));
        return -1;
    }
    int count = 0;
    for (int i = 0; i < 5; i++)
        fprintf(f, "%s\n", specials[i]), count++;
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= len; i++, count++) {
        lua_rawgeti(L, idx, i);
        fprintf(f, "%s\n", lua_tostring(L, -1)); // checked by check_vocab
        lua_pop(L, 1);
    }
    if (fclose(f) != 0) {
        snprintf(err, n, "%.900s: %s", path, strerror(errno));
        return -1;
    }
    return count;
}

// Words must be non-empty strings without white space (raises otherwise).
static void check_vocab(lua_State *L, int idx) {
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, i);
        const char *w = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!w || !*w || strpbrk(w, " \t\r\n"))
            xl_raise(L,
                     "xa.make_random: vocab[%lld]: words are non-empty strings without white "
                     "space",
                     (long long)i);
        lua_pop(L, 1);
    }
}

// xa.make_random{arch=, config=, config_json=, out=, seed=, dtype=, shards=, prefix=, no_heads=,
//                vocab=, tokenizer=} -> out, or nil and a message
static int l_make_random(lua_State *L) {
    xl_check_opts(L, 1, "xa.make_random", random_keys, false);
    const char *arch = xl_opt_str(L, 1, "arch", NULL);
    const char *raw = xl_opt_str(L, 1, "config_json", NULL);
    const char *out = xl_opt_str(L, 1, "out", NULL);
    const char *tokdir = xl_opt_str(L, 1, "tokenizer", NULL);
    xa_random_opts o = {.seed = (uint64_t)xl_opt_int(L, 1, "seed", 0), .shards = 1};
    int dt = xl_opt_enum(L, 1, "dtype", dtypes, 0);
    o.dtype = dt == 1 ? XA_DTYPE_F16 : dt == 2 ? XA_DTYPE_BF16 : XA_DTYPE_F32;
    o.shards = (int)xl_opt_int(L, 1, "shards", 1);
    o.prefix = xl_opt_bool(L, 1, "prefix", false);
    o.no_heads = xl_opt_bool(L, 1, "no_heads", false);
    if (!out)
        return xl_raise(L, "xa.make_random: out = <directory> is required");
    if (!arch == !raw)
        return xl_raise(L, "xa.make_random: give arch = <preset> (%s) or config_json = <text>",
                        xa_model_preset_names());
    lua_getfield(L, 1, "config");
    int cfg = lua_gettop(L);
    if (!lua_isnil(L, cfg) && !lua_istable(L, cfg))
        return xl_raise(L, "xa.make_random: config must be a table of config.json overrides");
    lua_getfield(L, 1, "vocab");
    int vocab = lua_gettop(L);
    if (!lua_isnil(L, vocab) && !lua_istable(L, vocab))
        return xl_raise(L, "xa.make_random: vocab must be a list of words");
    if (!lua_isnil(L, vocab) && tokdir)
        return xl_raise(L, "xa.make_random: give vocab = or tokenizer =, not both");
    if (!lua_isnil(L, vocab))
        check_vocab(L, vocab);
    const char *base = raw ? raw : xa_model_preset(arch);
    if (!base)
        return xl_raise(L, "xa.make_random: unknown preset '%s' (presets: %s)", arch,
                        xa_model_preset_names());

    cJSON **box = xl_json_box(L);
    if (!(*box = cJSON_Parse(base)) || !cJSON_IsObject(*box))
        return xl_raise(L, "xa.make_random: config_json is not a JSON object");
    char err[1024] = "";
    const cJSON *mt0 = cJSON_GetObjectItemCaseSensitive(*box, "model_type");
    if (!lua_isnil(L, cfg) && cJSON_IsString(mt0) && !strncmp(mt0->valuestring, "clip", 4)) {
        // CLIP's sizes live in text_config / vision_config: a top-level key would be ignored
        static const char *const towers[] = {"vision_config", "text_config"};
        lua_pushnil(L);
        while (lua_next(L, cfg)) {
            lua_pop(L, 1);
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            for (int t = 0; k && t < 2 && !cJSON_HasObjectItem(*box, k); t++)
                if (cJSON_HasObjectItem(cJSON_GetObjectItemCaseSensitive(*box, towers[t]), k))
                    return xl_raise(L,
                                    "xa.make_random: CLIP's '%s' is a key of %s: config = {%s = "
                                    "{%s = ...}}",
                                    k, towers[t], towers[t], k);
        }
    }
    if (!lua_isnil(L, cfg) && !merge(L, cfg, *box, err, sizeof err))
        return xl_raise(L, "xa.make_random: %s", err);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(*box, "model_type");
    bool clip = cJSON_IsString(mt) && !strncmp(mt->valuestring, "clip", 4);
    if (!lua_isnil(L, vocab)) {
        if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "bert"))
            return xl_raise(L,
                            "xa.make_random: vocab = writes a WordPiece vocab.txt, which only "
                            "BERT reads; give %s a tokenizer = directory",
                            clip ? "CLIP" : "this model");
        // The embedding table is as large as the vocabulary, unless the config says otherwise.
        int want = 5 + (int)lua_rawlen(L, vocab);
        bool given = !lua_isnil(L, cfg) && lua_getfield(L, cfg, "vocab_size") != LUA_TNIL;
        if (!lua_isnil(L, cfg))
            lua_pop(L, 1);
        cJSON *vs = cJSON_GetObjectItemCaseSensitive(*box, "vocab_size");
        if (given && cJSON_IsNumber(vs) && vs->valuedouble < want)
            return xl_raise(L,
                            "xa.make_random: vocab_size %d is smaller than the %d tokens of "
                            "vocab (5 special tokens + the words)",
                            (int)vs->valuedouble, want);
        if (!given)
            cJSON_ReplaceItemInObjectCaseSensitive(*box, "vocab_size", cJSON_CreateNumber(want));
    }
    char *json = cJSON_PrintUnformatted(*box);
    if (!json)
        return xl_raise(L, "xa.make_random: out of memory");
    xa_ctx *ctx = xl_ctx(L);
    xa_status st = xa_model_write_random(ctx, json, out, &o);
    free(json);
    if (st != XA_OK)
        return xl_fail(L);
    if (!lua_isnil(L, vocab) && write_vocab(L, vocab, out, err, sizeof err) < 0)
        return xl_failf(L, "xa.make_random: %s", err);
    if (tokdir && !xl_copy_tokenizer(tokdir, out, err, sizeof err))
        return xl_failf(L, "xa.make_random: %s", err);
    lua_pushstring(L, out);
    return 1;
}

void xl_open_random(lua_State *L, int mod) {
    lua_pushcfunction(L, l_make_random);
    lua_setfield(L, mod, "make_random");
}
