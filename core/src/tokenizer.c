// Tokenizers: loading (tokenizer.json, vocab.txt, vocab.json + merges.txt, a model directory),
// added tokens matched in the text as HF's AddedVocabulary does, the normalize -> pre-tokenize ->
// model pipeline, templates, truncation, padding, batches and decoding. The BERT stages are in
// tok_wordpiece.c, the byte-level and CLIP ones in tok_bpe.c.
#include "tok_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

// --- growable arrays -------------------------------------------------------------------------------

static bool grow(void **pv, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap && *pv)
        return true;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 4 / elem)
            return false;
        n *= 2;
    }
    void *p = realloc(*pv, n * elem);
    if (!p)
        return false;
    *pv = p;
    *cap = n;
    return true;
}

bool xa_tok_i32_reserve(tok_i32 *a, size_t n) {
    void *v = a->v;
    bool ok = grow(&v, &a->cap, n, sizeof *a->v);
    a->v = v;
    return ok;
}

bool xa_tok_i32_push(tok_i32 *a, int32_t x) {
    if (a->n == a->cap && !xa_tok_i32_reserve(a, a->n + 1))
        return false;
    a->v[a->n++] = x;
    return true;
}

bool xa_tok_bytes_reserve(tok_bytes *b, size_t n) {
    void *v = b->v;
    bool ok = grow(&v, &b->cap, n, 1);
    b->v = v;
    return ok;
}

bool xa_tok_bytes_push(tok_bytes *b, const char *s, size_t n) {
    if (!xa_tok_bytes_reserve(b, b->n + n + 1))
        return false;
    if (n)
        memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = '\0';
    return true;
}

bool xa_tok_bytes_push_cp(tok_bytes *b, int32_t cp) {
    char buf[4];
    utf8proc_ssize_t k = utf8proc_encode_char(cp, (utf8proc_uint8_t *)buf);
    return xa_tok_bytes_push(b, buf, (size_t)k);
}

bool xa_tok_spans_push(tok_spans *s, int32_t start, int32_t end, bool space) {
    if (s->n == s->cap) {
        void *v = s->v;
        if (!grow(&v, &s->cap, s->n + 1, sizeof *s->v))
            return false;
        s->v = v;
    }
    s->v[s->n++] = (tok_span){start, end, space};
    return true;
}

// --- vocabulary --------------------------------------------------------------------------------------

static uint64_t hash_str(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static void vocab_insert_slot(tok_vocab *v, int32_t id) {
    const char *s = v->pool + v->off[id];
    size_t n = v->len[id];
    size_t i = hash_str(s, n) & (v->n_slots - 1);
    while (v->slots[i] >= 0) {
        int32_t o = v->slots[i];
        if (v->len[o] == n && !memcmp(v->pool + v->off[o], s, n)) {
            v->slots[i] = id; // same string: the later id wins
            return;
        }
        i = (i + 1) & (v->n_slots - 1);
    }
    v->slots[i] = id;
    v->count++;
}

static int vocab_rehash(tok_vocab *v, size_t n_slots) {
    int32_t *slots = malloc(n_slots * sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < n_slots; i++)
        slots[i] = -1;
    int32_t *old = v->slots;
    size_t old_n = v->n_slots;
    v->slots = slots;
    v->n_slots = n_slots;
    v->count = 0;
    for (size_t i = 0; i < old_n; i++)
        if (old[i] >= 0)
            vocab_insert_slot(v, old[i]);
    free(old);
    return 0;
}

int xa_tok_vocab_add(tok_vocab *v, const char *s, size_t n, int32_t id) {
    if (id < 0 || n >= UINT32_MAX || v->pool_len + n + 1 >= UINT32_MAX)
        return -1;
    if ((size_t)id >= v->ids_cap) {
        size_t cap = v->ids_cap ? v->ids_cap : 1024;
        while (cap <= (size_t)id)
            cap *= 2;
        uint32_t *off = realloc(v->off, cap * sizeof *off);
        if (!off)
            return -1;
        v->off = off;
        uint32_t *len = realloc(v->len, cap * sizeof *len);
        if (!len)
            return -1;
        v->len = len;
        for (size_t i = v->ids_cap; i < cap; i++)
            v->off[i] = UINT32_MAX, v->len[i] = 0;
        v->ids_cap = cap;
    }
    void *pool = v->pool;
    if (!grow(&pool, &v->pool_cap, v->pool_len + n + 1, 1))
        return -1;
    v->pool = pool;
    memcpy(v->pool + v->pool_len, s, n);
    v->pool[v->pool_len + n] = '\0';
    v->off[id] = (uint32_t)v->pool_len;
    v->len[id] = (uint32_t)n;
    v->pool_len += n + 1;
    if ((v->count + 1) * 2 > v->n_slots && vocab_rehash(v, v->n_slots ? v->n_slots * 2 : 1024) < 0)
        return -1;
    vocab_insert_slot(v, id);
    if (id >= v->n_ids)
        v->n_ids = id + 1;
    if (n > v->max_len)
        v->max_len = n;
    return 0;
}

int32_t xa_tok_vocab_find(const tok_vocab *v, const char *s, size_t n) {
    if (!v->n_slots)
        return -1;
    for (size_t i = hash_str(s, n) & (v->n_slots - 1);; i = (i + 1) & (v->n_slots - 1)) {
        int32_t id = v->slots[i];
        if (id < 0)
            return -1;
        if (v->len[id] == n && !memcmp(v->pool + v->off[id], s, n))
            return id;
    }
}

const char *xa_tok_vocab_str(const tok_vocab *v, int32_t id, size_t *n) {
    if (id < 0 || id >= v->n_ids || v->off[id] == UINT32_MAX)
        return NULL;
    if (n)
        *n = v->len[id];
    return v->pool + v->off[id];
}

void xa_tok_vocab_deinit(tok_vocab *v) {
    free(v->pool);
    free(v->off);
    free(v->len);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

const char *xa_tok_id_str(const xa_tokenizer *tok, int32_t id, size_t *len) {
    const char *s = xa_tok_vocab_str(&tok->vocab, id, len);
    if (s)
        return s;
    for (int a = 0; a < tok->n_added; a++)
        if (tok->added[a].id == id) {
            *len = tok->added[a].len;
            return tok->added[a].content;
        }
    *len = 0;
    return "";
}

// --- Unicode helpers -----------------------------------------------------------------------------------

bool xa_tok_is_whitespace(int32_t c) {
    if ((c >= 9 && c <= 13) || c == ' ' || c == 0x85)
        return true;
    if (c < 0xA0)
        return false;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

bool xa_tok_is_letter(int32_t c) {
    if (c < 128)
        return (c | 32) >= 'a' && (c | 32) <= 'z';
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

bool xa_tok_is_number(int32_t c) {
    if (c < 128)
        return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

bool xa_tok_lower_push(tok_i32 *out, int32_t c) {
    if (c == 0x130) // the one unconditional multi-character lowercase mapping (SpecialCasing.txt)
        return xa_tok_i32_push(out, 'i') && xa_tok_i32_push(out, 0x307);
    return xa_tok_i32_push(out, c < 128 ? ((c >= 'A' && c <= 'Z') ? c + 32 : c)
                                        : utf8proc_tolower(c));
}

bool xa_tok_unicode_form(tok_norm_op form, const int32_t *in, size_t n, tok_i32 *out,
                         tok_bytes *scratch) {
    scratch->n = 0;
    for (size_t i = 0; i < n; i++)
        if (!xa_tok_bytes_push_cp(scratch, in[i]))
            return false;
    int opts = UTF8PROC_STABLE;
    if (form == NORM_NFC || form == NORM_NFKC)
        opts |= UTF8PROC_COMPOSE;
    else
        opts |= UTF8PROC_DECOMPOSE;
    if (form == NORM_NFKC || form == NORM_NFKD)
        opts |= UTF8PROC_COMPAT;
    for (;;) {
        size_t room = out->cap - out->n;
        utf8proc_ssize_t k =
            utf8proc_decompose((const utf8proc_uint8_t *)scratch->v, (utf8proc_ssize_t)scratch->n,
                               out->v ? out->v + out->n : NULL, (utf8proc_ssize_t)room,
                               (utf8proc_option_t)opts);
        if (k < 0)
            return false;
        if ((size_t)k > room) {
            if (!xa_tok_i32_reserve(out, out->n + (size_t)k))
                return false;
            continue;
        }
        if (opts & UTF8PROC_COMPOSE) {
            k = utf8proc_normalize_utf32(out->v + out->n, k, (utf8proc_option_t)opts);
            if (k < 0)
                return false;
        }
        out->n += (size_t)k;
        return true;
    }
}

// Python's str.isspace, for CLIP's decode (transformers strips with it).
static bool py_isspace(int32_t c) { return xa_tok_is_whitespace(c) || (c >= 0x1C && c <= 0x1F); }

// \w as the regex crate has it, near enough for single_word tokens (none of BERT, RoBERTa and
// CLIP's tokens use single_word).
static bool is_word_char(int32_t c) {
    if (c == '_' || xa_tok_is_letter(c))
        return true;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_MN ||
           k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_PC;
}

static int32_t utf8_at(const char *s, size_t n, size_t i, size_t *len) {
    utf8proc_int32_t cp = -1;
    utf8proc_ssize_t r =
        utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    *len = r > 0 ? (size_t)r : 1;
    return cp;
}

static size_t utf8_prev(const char *s, size_t i) {
    do
        i--;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80);
    return i;
}

// --- files and JSON ---------------------------------------------------------------------------------

static xa_status read_text(xa_ctx *ctx, const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return xa_errorf(ctx, errno == ENOENT ? XA_ENOTFOUND : XA_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    tok_bytes b = {0};
    char chunk[1 << 16];
    size_t got;
    xa_status st = XA_OK;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (!xa_tok_bytes_push(&b, chunk, got)) {
            st = xa_errorf(ctx, XA_ENOMEM, "%s: out of memory reading the file", path);
            goto out_close;
        }
    if (ferror(f)) {
        st = xa_errorf(ctx, XA_EIO, "%s: read failed: %s", path, strerror(errno));
        goto out_close;
    }
    if (!b.v && !xa_tok_bytes_push(&b, "", 0)) {
        st = xa_errorf(ctx, XA_ENOMEM, "%s: out of memory reading the file", path);
        goto out_close;
    }
    *data = b.v;
    *len = b.n;
    b.v = NULL;
out_close:
    fclose(f);
    free(b.v);
    return st;
}

static xa_status parse_json(xa_ctx *ctx, const char *path, cJSON **out) {
    char *data;
    size_t len;
    xa_status st = read_text(ctx, path, &data, &len);
    if (st)
        return st;
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    if (!*out) {
        size_t pos = end && end >= data && end <= data + len ? (size_t)(end - data) : 0, line = 1;
        for (size_t i = 0; i < pos; i++)
            line += data[i] == '\n';
        int k = 0;
        while (k < 24 && pos + (size_t)k < len && data[pos + (size_t)k] != '\n')
            k++;
        st = xa_errorf(ctx, XA_EFORMAT, "%s:%zu: invalid JSON near '%.*s'", path, line, k,
                       data + pos);
    } else if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        st = xa_errorf(ctx, XA_EFORMAT, "%s: expected a JSON object at the top level", path);
    }
    free(data);
    return st;
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static const char *jstr(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

// -1 when absent or null
static int jbool(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(j) ? cJSON_IsTrue(j) : -1;
}

static bool jint(const cJSON *j, int32_t *out) {
    if (!cJSON_IsNumber(j) || j->valuedouble < 0 || j->valuedouble > INT32_MAX ||
        j->valuedouble != (double)(int32_t)j->valuedouble)
        return false;
    *out = (int32_t)j->valuedouble;
    return true;
}

// --- configuration a directory gives beyond the vocabulary files -----------------------------------

typedef struct tok_config {
    xa_tokenizer_kind kind;
    int lowercase, strip_accents, chinese; // -1 unset
    int32_t max_length, max_positions;     // 0 unset
    char unk[64], bos[64], eos[64], pad[64], mask[64];
} tok_config;

static void config_defaults(tok_config *cfg, xa_tokenizer_kind kind) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->lowercase = cfg->strip_accents = cfg->chinese = -1;
}

// A special token name in tokenizer_config.json: a string or {"content": ...}.
static void token_name(const cJSON *obj, const char *key, char dst[64]) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    const char *s = cJSON_IsString(j) ? j->valuestring : cJSON_IsObject(j) ? jstr(j, "content") : NULL;
    if (s && strlen(s) < 64)
        strcpy(dst, s);
}

static void read_tokenizer_config(const cJSON *j, tok_config *cfg) {
    cfg->lowercase = jbool(j, "do_lower_case");
    cfg->strip_accents = jbool(j, "strip_accents");
    cfg->chinese = jbool(j, "tokenize_chinese_chars");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model_max_length");
    if (cJSON_IsNumber(m) && m->valuedouble > 0 && m->valuedouble < 1e7)
        cfg->max_length = (int32_t)m->valuedouble;
    token_name(j, "unk_token", cfg->unk);
    token_name(j, "bos_token", cfg->bos);
    token_name(j, "cls_token", cfg->bos); // BERT and RoBERTa name it cls
    token_name(j, "eos_token", cfg->eos);
    token_name(j, "sep_token", cfg->eos);
    token_name(j, "pad_token", cfg->pad);
    token_name(j, "mask_token", cfg->mask);
}

static xa_tokenizer_kind kind_of_model_type(const char *t) {
    if (!t)
        return 0;
    if (!strcmp(t, "bert"))
        return XA_TOKENIZER_BERT;
    if (!strcmp(t, "roberta"))
        return XA_TOKENIZER_ROBERTA;
    if (!strcmp(t, "clip") || !strcmp(t, "clip_text_model"))
        return XA_TOKENIZER_CLIP;
    return 0;
}

static void read_model_config(const cJSON *j, tok_config *cfg) {
    cfg->kind = kind_of_model_type(jstr(j, "model_type"));
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text_config");
    const cJSON *src = cJSON_IsObject(text) ? text : j;
    int32_t mp;
    if (jint(cJSON_GetObjectItemCaseSensitive(src, "max_position_embeddings"), &mp))
        cfg->max_positions = mp;
}

// --- building a tokenizer ---------------------------------------------------------------------------

static xa_tokenizer *tok_new(xa_ctx *ctx) {
    xa_tokenizer *tok = xa_calloc(ctx, 1, sizeof *tok);
    if (!tok)
        return NULL;
    tok->unk_id = -1;
    tok->wp_max_chars = 100;
    tok->wp_cleanup = true;
    memcpy(tok->wp_prefix, "##", 3);
    tok->wp_prefix_len = 2;
    return tok;
}

void xa_tokenizer_free(xa_tokenizer *tok) {
    if (!tok)
        return;
    xa_tok_vocab_deinit(&tok->vocab);
    for (int i = 0; i < tok->n_norms; i++) {
        free(tok->norms[i].pattern);
        free(tok->norms[i].content);
    }
    free(tok->norms);
    free(tok->pres);
    for (int i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].norm);
    }
    free(tok->added);
    xa_tok_merges_deinit(&tok->merges);
    xa_tok_bpe_cache_deinit(&tok->cache);
    tok_i32 *arrs[] = {&tok->cps, &tok->cps2, &tok->cps3, &tok->seq_a, &tok->seq_b, &tok->sym,
                       &tok->heap};
    for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++)
        free(arrs[i]->v);
    free(tok->spans.v);
    free(tok->spans2.v);
    free(tok->word.v);
    free(tok->word2.v);
    free(tok->ubuf.v);
    free(tok);
}

static tok_norm *add_norm(xa_ctx *ctx, xa_tokenizer *tok, tok_norm_op op) {
    tok_norm *n = realloc(tok->norms, (size_t)(tok->n_norms + 1) * sizeof *n);
    if (!n) {
        xa_errorf(ctx, XA_ENOMEM, "out of memory building a normalizer");
        return NULL;
    }
    tok->norms = n;
    n += tok->n_norms++;
    memset(n, 0, sizeof *n);
    n->op = op;
    return n;
}

static tok_pre *add_pre(xa_ctx *ctx, xa_tokenizer *tok, tok_pre_op op) {
    tok_pre *p = realloc(tok->pres, (size_t)(tok->n_pres + 1) * sizeof *p);
    if (!p) {
        xa_errorf(ctx, XA_ENOMEM, "out of memory building a pre-tokenizer");
        return NULL;
    }
    tok->pres = p;
    p += tok->n_pres++;
    memset(p, 0, sizeof *p);
    p->op = op;
    p->use_regex = true;
    return p;
}

static bool utf8_to_cps(const char *s, size_t n, int32_t **out, size_t *count) {
    int32_t *v = malloc((n + 1) * sizeof *v);
    if (!v)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t len;
        int32_t cp = utf8_at(s, n, i, &len);
        v[k++] = cp < 0 ? 0xFFFD : cp;
        i += len;
    }
    *out = v;
    *count = k;
    return true;
}

static xa_status add_added(xa_ctx *ctx, xa_tokenizer *tok, const char *content, int32_t id,
                           bool special, bool lstrip, bool rstrip, bool single_word,
                           bool normalized) {
    for (int i = 0; i < tok->n_added; i++)
        if (!strcmp(tok->added[i].content, content))
            return XA_OK;
    tok_added *a = realloc(tok->added, (size_t)(tok->n_added + 1) * sizeof *a);
    if (!a)
        return xa_errorf(ctx, XA_ENOMEM, "out of memory adding token '%s'", content);
    tok->added = a;
    a += tok->n_added;
    memset(a, 0, sizeof *a);
    a->content = xa_strdup(ctx, content);
    if (!a->content)
        return XA_ENOMEM;
    tok->n_added++;
    a->len = strlen(content);
    a->id = id;
    a->special = special;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    a->single_word = single_word;
    a->normalized = normalized;
    return XA_OK;
}

static xa_status add_special_by_name(xa_ctx *ctx, xa_tokenizer *tok, const char *name,
                                     bool lstrip, bool normalized) {
    int32_t id = name[0] ? xa_tok_vocab_find(&tok->vocab, name, strlen(name)) : -1;
    return id < 0 ? XA_OK : add_added(ctx, tok, name, id, true, lstrip, false, false, normalized);
}

static void template_bos_eos(tok_template *t, int32_t bos, int32_t eos) {
    memset(t, 0, sizeof *t);
    t->items[t->n++] = (tok_tpl_item){-1, 0, 1, {bos}};
    t->items[t->n++] = (tok_tpl_item){0, 0, 0, {0}};
    t->items[t->n++] = (tok_tpl_item){-1, 0, 1, {eos}};
}

// BertProcessing: [CLS] A [SEP] B [SEP], B and its [SEP] type 1. RobertaProcessing:
// <s> A </s> </s> B </s>, every type id 0 (as HF's tokenizers returns them).
static void templates_for(xa_tokenizer *tok, int32_t bos, int32_t eos, bool roberta) {
    template_bos_eos(&tok->single, bos, eos);
    tok_template *p = &tok->pair;
    template_bos_eos(p, bos, eos);
    int tb = roberta ? 0 : 1;
    if (roberta)
        p->items[p->n++] = (tok_tpl_item){-1, 0, 1, {eos}};
    p->items[p->n++] = (tok_tpl_item){1, tb, 0, {0}};
    p->items[p->n++] = (tok_tpl_item){-1, tb, 1, {eos}};
    tok->has_template = true;
}

static int32_t find_name(const xa_tokenizer *tok, const char *cfg_name, const char *dflt) {
    const char *s = cfg_name && cfg_name[0] ? cfg_name : dflt;
    return s ? xa_tok_vocab_find(&tok->vocab, s, strlen(s)) : -1;
}

static int template_specials(const tok_template *t) {
    int k = 0;
    for (int i = 0; i < t->n; i++)
        if (t->items[i].seq < 0)
            k += t->items[i].n_ids;
    return k;
}

static bool normalize(xa_tokenizer *tok, tok_i32 **res);

// Everything that follows from the parsed parts: normalized added tokens, special ids, limits.
static xa_status finish(xa_ctx *ctx, xa_tokenizer *tok, const tok_config *cfg, const char *path) {
    xa_tokenizer_info *info = &tok->info;
    info->kind = cfg->kind;
    for (int i = 0; i < tok->n_added; i++) {
        tok_added *a = &tok->added[i];
        if (!utf8_to_cps(a->content, a->len, &a->norm, &a->n_norm))
            return xa_errorf(ctx, XA_ENOMEM, "out of memory preparing added tokens");
        if (a->normalized && tok->n_norms) {
            tok->cps.n = 0;
            tok_i32 *res;
            if (!xa_tok_i32_reserve(&tok->cps, a->n_norm))
                return xa_errorf(ctx, XA_ENOMEM, "out of memory preparing added tokens");
            memcpy(tok->cps.v, a->norm, a->n_norm * sizeof *a->norm);
            tok->cps.n = a->n_norm;
            if (!normalize(tok, &res))
                return xa_errorf(ctx, XA_ENOMEM, "out of memory preparing added tokens");
            int32_t *v = realloc(a->norm, (res->n + 1) * sizeof *v);
            if (!v)
                return xa_errorf(ctx, XA_ENOMEM, "out of memory preparing added tokens");
            memcpy(v, res->v, res->n * sizeof *v);
            a->norm = v;
            a->n_norm = res->n;
        }
        if (a->n_norm == 0 || a->len == 0)
            return xa_errorf(ctx, XA_EFORMAT, "%s: added token %d is empty", path, (int)a->id);
        tok->any_raw_added |= !a->normalized;
        tok->any_norm_added |= a->normalized;
    }
    int32_t n_ids = tok->vocab.n_ids;
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].id >= n_ids)
            n_ids = tok->added[i].id + 1;
    info->vocab_size = n_ids;
    bool bert = cfg->kind == XA_TOKENIZER_BERT, clip = cfg->kind == XA_TOKENIZER_CLIP;
    info->unk_id = find_name(tok, cfg->unk, bert ? "[UNK]" : clip ? "<|endoftext|>" : "<unk>");
    info->bos_id = find_name(tok, cfg->bos, bert ? "[CLS]" : clip ? "<|startoftext|>" : "<s>");
    info->eos_id = find_name(tok, cfg->eos, bert ? "[SEP]" : clip ? "<|endoftext|>" : "</s>");
    info->pad_id = find_name(tok, cfg->pad, bert ? "[PAD]" : clip ? "<|endoftext|>" : "<pad>");
    info->mask_id = find_name(tok, cfg->mask, bert ? "[MASK]" : clip ? NULL : "<mask>");
    if (tok->has_template && tok->single.n > 0) { // the template knows best
        const tok_tpl_item *first = &tok->single.items[0], *last = &tok->single.items[tok->single.n - 1];
        if (first->seq < 0 && first->n_ids > 0)
            info->bos_id = first->ids[0];
        if (last->seq < 0 && last->n_ids > 0)
            info->eos_id = last->ids[last->n_ids - 1];
    }
    info->type_ids = bert;
    info->model_max_length = clip ? 77 : 512;
    if (cfg->max_length > 0)
        info->model_max_length = cfg->max_length;
    else if (cfg->max_positions > 0)
        info->model_max_length = cfg->max_positions - (cfg->kind == XA_TOKENIZER_ROBERTA ? 2 : 0);
    if (tok->model == MODEL_BPE)
        xa_tok_bpe_bytes_init(tok);
    return XA_OK;
}

// --- vocab.txt -----------------------------------------------------------------------------------------

static xa_status wordpiece_defaults(xa_ctx *ctx, xa_tokenizer *tok, const tok_config *cfg,
                                    const char *path) {
    tok->model = MODEL_WORDPIECE;
    const char *unk = cfg->unk[0] ? cfg->unk : "[UNK]";
    tok->unk_id = xa_tok_vocab_find(&tok->vocab, unk, strlen(unk));
    if (tok->unk_id < 0)
        return xa_errorf(ctx, XA_EFORMAT,
                         "%s: no '%s' token: a WordPiece vocabulary needs one for unknown words",
                         path, unk);
    bool lower = cfg->lowercase != 0;
    tok_norm *nm = add_norm(ctx, tok, NORM_BERT);
    if (!nm)
        return XA_ENOMEM;
    nm->clean_text = true;
    nm->chinese = cfg->chinese != 0;
    nm->lowercase = lower;
    nm->strip_accents = cfg->strip_accents < 0 ? lower : cfg->strip_accents;
    if (!add_pre(ctx, tok, PRE_BERT))
        return XA_ENOMEM;
    const char *names[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                           cfg->pad, cfg->unk, cfg->bos, cfg->eos, cfg->mask};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        xa_status st = add_special_by_name(ctx, tok, names[i], false, false);
        if (st)
            return st;
    }
    int32_t cls = find_name(tok, cfg->bos, "[CLS]"), sep = find_name(tok, cfg->eos, "[SEP]");
    if (cls < 0 || sep < 0)
        return xa_errorf(ctx, XA_EFORMAT, "%s: no '%s' token for the template", path,
                         cls < 0 ? "[CLS]" : "[SEP]");
    templates_for(tok, cls, sep, false);
    return XA_OK;
}

static xa_status load_vocab_txt(xa_ctx *ctx, const char *path, const tok_config *cfg,
                                xa_tokenizer **out) {
    char *data;
    size_t len;
    xa_status st = read_text(ctx, path, &data, &len);
    if (st)
        return st;
    xa_tokenizer *tok = tok_new(ctx);
    if (!tok) {
        st = XA_ENOMEM;
        goto out_free;
    }
    int32_t id = 0;
    for (size_t i = 0; i < len; id++) {
        size_t j = i;
        while (j < len && data[j] != '\n')
            j++;
        size_t e = j;
        while (e > i && (data[e - 1] == '\r' || data[e - 1] == ' ' || data[e - 1] == '\t'))
            e--; // HF trims the end of each line
        for (size_t k = i; k < e;) {
            size_t l;
            if (utf8_at(data, e, k, &l) < 0) {
                st = xa_errorf(ctx, XA_EFORMAT, "%s:%d: not valid UTF-8", path, (int)id + 1);
                goto out_tok;
            }
            k += l;
        }
        if (xa_tok_vocab_add(&tok->vocab, data + i, e - i, id) < 0) {
            st = xa_errorf(ctx, XA_ENOMEM, "%s:%d: out of memory", path, (int)id + 1);
            goto out_tok;
        }
        i = j + 1;
    }
    tok_config c = *cfg;
    if (!c.kind)
        c.kind = XA_TOKENIZER_BERT;
    if ((st = wordpiece_defaults(ctx, tok, &c, path)) || (st = finish(ctx, tok, &c, path)))
        goto out_tok;
    *out = tok;
    tok = NULL;
out_tok:
    xa_tokenizer_free(tok);
out_free:
    free(data);
    return st;
}

// --- vocab.json + merges.txt -------------------------------------------------------------------------

static xa_status read_vocab_object(xa_ctx *ctx, const char *where, const cJSON *vocab,
                                   xa_tokenizer *tok) {
    if (!cJSON_IsObject(vocab))
        return xa_errorf(ctx, XA_EFORMAT, "%s: expected an object of token -> id", where);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id;
        if (!jint(e, &id))
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: token '%s' has id %.17g, expected a non-negative integer", where,
                             e->string, cJSON_IsNumber(e) ? e->valuedouble : -1.0);
        if (xa_tok_vocab_add(&tok->vocab, e->string, strlen(e->string), id) < 0)
            return xa_errorf(ctx, XA_ENOMEM, "%s: out of memory", where);
    }
    return XA_OK;
}

static xa_status add_merge(xa_ctx *ctx, xa_tokenizer *tok, const char *a, size_t na,
                           const char *b, size_t nb, int32_t rank, const char *where,
                           const char *vocab_name) {
    int32_t ia = xa_tok_vocab_find(&tok->vocab, a, na), ib = xa_tok_vocab_find(&tok->vocab, b, nb);
    if (ia < 0 || ib < 0)
        return xa_errorf(ctx, XA_EFORMAT, "%s: symbol '%.*s' is not in %s", where,
                         ia < 0 ? (int)na : (int)nb, ia < 0 ? a : b, vocab_name);
    tok->word.n = 0;
    if (!xa_tok_bytes_push(&tok->word, a, na) || !xa_tok_bytes_push(&tok->word, b, nb))
        return xa_errorf(ctx, XA_ENOMEM, "out of memory reading merges");
    int32_t merged = xa_tok_vocab_find(&tok->vocab, tok->word.v, tok->word.n);
    if (merged < 0)
        return xa_errorf(ctx, XA_EFORMAT, "%s: merge '%.*s %.*s' gives '%s', which is not in %s",
                         where, (int)na, a, (int)nb, b, tok->word.v, vocab_name);
    if (xa_tok_merges_add(&tok->merges, ia, ib, rank, merged) < 0)
        return xa_errorf(ctx, XA_ENOMEM, "out of memory reading merges");
    return XA_OK;
}

static xa_status read_merges_txt(xa_ctx *ctx, const char *path, const char *vocab_name,
                                 xa_tokenizer *tok) {
    char *data;
    size_t len;
    xa_status st = read_text(ctx, path, &data, &len);
    if (st)
        return st;
    int32_t rank = 0;
    int line = 0;
    char where[600];
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && data[j] != '\n')
            j++;
        size_t e = j > i && data[j - 1] == '\r' ? j - 1 : j;
        line++;
        const char *s = data + i;
        size_t n = e - i;
        i = j + 1;
        if (n >= 8 && !memcmp(s, "#version", 8))
            continue;
        snprintf(where, sizeof where, "%s:%d", path, line);
        const char *sp = memchr(s, ' ', n);
        size_t parts = 1;
        for (size_t k = 0; k < n; k++)
            parts += s[k] == ' ';
        if (!sp || parts != 2 || sp == s || sp + 1 == s + n) {
            st = xa_errorf(ctx, XA_EFORMAT, "%s: expected two symbols separated by a space, found "
                                            "'%.*s'", where, (int)(n > 60 ? 60 : n), s);
            goto out_free;
        }
        st = add_merge(ctx, tok, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), rank++,
                       where, vocab_name);
        if (st)
            goto out_free;
    }
out_free:
    free(data);
    return st;
}

static xa_status bpe_defaults(xa_ctx *ctx, xa_tokenizer *tok, tok_config *cfg) {
    tok->model = MODEL_BPE;
    if (!cfg->kind)
        cfg->kind = xa_tok_vocab_find(&tok->vocab, "<|startoftext|>", 15) >= 0
                        ? XA_TOKENIZER_CLIP
                        : XA_TOKENIZER_ROBERTA;
    xa_status st;
    if (cfg->kind == XA_TOKENIZER_CLIP) {
        // transformers' CLIPConverter: NFC, \s+ -> " ", lowercase; CLIP split then ByteLevel.
        tok_norm *nm;
        if (!add_norm(ctx, tok, NORM_NFC) || !(nm = add_norm(ctx, tok, NORM_REPLACE_SPACES)) ||
            !add_norm(ctx, tok, NORM_LOWERCASE))
            return XA_ENOMEM;
        nm->content = malloc(sizeof *nm->content);
        if (!nm->content)
            return xa_errorf(ctx, XA_ENOMEM, "out of memory building a normalizer");
        nm->content[0] = ' ';
        nm->n_content = 1;
        if (!add_pre(ctx, tok, PRE_CLIP) || !add_pre(ctx, tok, PRE_BYTELEVEL))
            return XA_ENOMEM;
        memcpy(tok->eow, "</w>", 5);
        tok->eow_len = 4;
        const char *eos = cfg->eos[0] ? cfg->eos : "<|endoftext|>";
        const char *bos = cfg->bos[0] ? cfg->bos : "<|startoftext|>";
        tok->unk_id = find_name(tok, cfg->unk, "<|endoftext|>");
        if ((st = add_special_by_name(ctx, tok, bos, false, true)) ||
            (st = add_special_by_name(ctx, tok, eos, false, false)))
            return st;
        int32_t b = find_name(tok, bos, NULL), e = find_name(tok, eos, NULL);
        if (b < 0 || e < 0)
            return xa_errorf(ctx, XA_EFORMAT, "vocab.json: no '%s' token for the template",
                             b < 0 ? bos : eos);
        templates_for(tok, b, e, true);
        return XA_OK;
    }
    if (!add_pre(ctx, tok, PRE_BYTELEVEL))
        return XA_ENOMEM;
    const char *names[] = {"<s>", "<pad>", "</s>", "<unk>", cfg->bos, cfg->pad, cfg->eos, cfg->unk};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if ((st = add_special_by_name(ctx, tok, names[i], false, true)))
            return st;
    if ((st = add_special_by_name(ctx, tok, cfg->mask[0] ? cfg->mask : "<mask>", true, true)))
        return st;
    int32_t b = find_name(tok, cfg->bos, "<s>"), e = find_name(tok, cfg->eos, "</s>");
    if (b < 0 || e < 0)
        return xa_errorf(ctx, XA_EFORMAT, "vocab.json: no '%s' token for the template",
                         b < 0 ? "<s>" : "</s>");
    templates_for(tok, b, e, true);
    return XA_OK;
}

static xa_status load_bpe_files(xa_ctx *ctx, const char *vocab_json, const char *merges_txt,
                                const tok_config *cfg, xa_tokenizer **out) {
    cJSON *vocab = NULL;
    xa_status st = parse_json(ctx, vocab_json, &vocab);
    if (st)
        return st;
    xa_tokenizer *tok = tok_new(ctx);
    if (!tok) {
        st = XA_ENOMEM;
        goto out_json;
    }
    tok_config c = *cfg;
    if ((st = read_vocab_object(ctx, vocab_json, vocab, tok)) ||
        (st = read_merges_txt(ctx, merges_txt, vocab_json, tok)) ||
        (st = bpe_defaults(ctx, tok, &c)) || (st = finish(ctx, tok, &c, vocab_json)))
        goto out_tok;
    *out = tok;
    tok = NULL;
out_tok:
    xa_tokenizer_free(tok);
out_json:
    cJSON_Delete(vocab);
    return st;
}

// --- tokenizer.json -----------------------------------------------------------------------------------

static const char *const CLIP_SPLIT =
    "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
static const char *const CLIP_SPLIT_SPECIALS = "<\\|startoftext\\|>|<\\|endoftext\\|>|";

static xa_status unsupported(xa_ctx *ctx, const char *path, const char *what, const char *type) {
    return xa_errorf(ctx, XA_EFORMAT, "%s: %s '%s' is not supported (xadapt reads BERT WordPiece, "
                                      "RoBERTa and CLIP byte-level BPE tokenizers)",
                     path, what, type ? type : "(no type)");
}

static xa_status parse_normalizer(xa_ctx *ctx, const char *path, const cJSON *j, xa_tokenizer *tok) {
    if (!j || cJSON_IsNull(j))
        return XA_OK;
    const char *type = jstr(j, "type");
    if (!type)
        return unsupported(ctx, path, "normalizer", NULL);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next) {
            xa_status st = parse_normalizer(ctx, path, e, tok);
            if (st)
                return st;
        }
        return XA_OK;
    }
    static const struct {
        const char *name;
        tok_norm_op op;
    } simple[] = {{"NFC", NORM_NFC},           {"NFD", NORM_NFD},
                  {"NFKC", NORM_NFKC},         {"NFKD", NORM_NFKD},
                  {"Lowercase", NORM_LOWERCASE}, {"StripAccents", NORM_STRIP_ACCENTS}};
    for (size_t i = 0; i < sizeof simple / sizeof *simple; i++)
        if (!strcmp(type, simple[i].name))
            return add_norm(ctx, tok, simple[i].op) ? XA_OK : XA_ENOMEM;
    if (!strcmp(type, "BertNormalizer")) {
        tok_norm *nm = add_norm(ctx, tok, NORM_BERT);
        if (!nm)
            return XA_ENOMEM;
        int clean = jbool(j, "clean_text"), chinese = jbool(j, "handle_chinese_chars");
        int strip = jbool(j, "strip_accents"), lower = jbool(j, "lowercase");
        nm->clean_text = clean != 0;
        nm->chinese = chinese != 0;
        nm->lowercase = lower != 0;
        nm->strip_accents = strip < 0 ? nm->lowercase : strip; // unset follows lowercase
        return XA_OK;
    }
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const char *content = jstr(j, "content"), *re = jstr(pat, "Regex"), *str = jstr(pat, "String");
        if (!content || (!str && !(re && !strcmp(re, "\\s+"))))
            return unsupported(ctx, path, "Replace normalizer pattern", re ? re : "(unknown)");
        tok_norm *nm = add_norm(ctx, tok, str ? NORM_REPLACE : NORM_REPLACE_SPACES);
        if (!nm)
            return XA_ENOMEM;
        if (!utf8_to_cps(content, strlen(content), &nm->content, &nm->n_content) ||
            (str && !utf8_to_cps(str, strlen(str), &nm->pattern, &nm->n_pattern)))
            return xa_errorf(ctx, XA_ENOMEM, "out of memory building a normalizer");
        return XA_OK;
    }
    return unsupported(ctx, path, "normalizer", type);
}

static xa_status parse_pre_tokenizer(xa_ctx *ctx, const char *path, const cJSON *j,
                                     xa_tokenizer *tok) {
    if (!j || cJSON_IsNull(j))
        return XA_OK;
    const char *type = jstr(j, "type");
    if (!type)
        return unsupported(ctx, path, "pre_tokenizer", NULL);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next) {
            xa_status st = parse_pre_tokenizer(ctx, path, e, tok);
            if (st)
                return st;
        }
        return XA_OK;
    }
    if (!strcmp(type, "BertPreTokenizer"))
        return add_pre(ctx, tok, PRE_BERT) ? XA_OK : XA_ENOMEM;
    if (!strcmp(type, "WhitespaceSplit"))
        return add_pre(ctx, tok, PRE_WHITESPACE_SPLIT) ? XA_OK : XA_ENOMEM;
    if (!strcmp(type, "ByteLevel")) {
        tok_pre *p = add_pre(ctx, tok, PRE_BYTELEVEL);
        if (!p)
            return XA_ENOMEM;
        p->add_prefix_space = jbool(j, "add_prefix_space") == 1;
        p->use_regex = jbool(j, "use_regex") != 0;
        return XA_OK;
    }
    if (!strcmp(type, "Split")) {
        const char *re = jstr(cJSON_GetObjectItemCaseSensitive(j, "pattern"), "Regex");
        const char *behavior = jstr(j, "behavior");
        size_t sl = strlen(CLIP_SPLIT_SPECIALS);
        bool clip = re && (!strcmp(re, CLIP_SPLIT) ||
                           (!strncmp(re, CLIP_SPLIT_SPECIALS, sl) && !strcmp(re + sl, CLIP_SPLIT)));
        if (!clip || jbool(j, "invert") != 1 || !behavior || strcmp(behavior, "Removed"))
            return unsupported(ctx, path, "Split pre-tokenizer (only CLIP's is read)",
                               re ? re : "(no regex)");
        return add_pre(ctx, tok, PRE_CLIP) ? XA_OK : XA_ENOMEM;
    }
    return unsupported(ctx, path, "pre_tokenizer", type);
}

static int32_t special_id(const xa_tokenizer *tok, const cJSON *pair) {
    // ["[SEP]", 102]
    int32_t id;
    if (cJSON_GetArraySize(pair) == 2 && jint(cJSON_GetArrayItem(pair, 1), &id))
        return id;
    const char *s = cJSON_IsString(cJSON_GetArrayItem(pair, 0)) ? cJSON_GetArrayItem(pair, 0)->valuestring : NULL;
    return s ? xa_tok_vocab_find(&tok->vocab, s, strlen(s)) : -1;
}

static xa_status parse_template(xa_ctx *ctx, const char *path, const cJSON *items,
                                const cJSON *specials, tok_template *t) {
    memset(t, 0, sizeof *t);
    for (const cJSON *e = cJSON_IsArray(items) ? items->child : NULL; e; e = e->next) {
        if (t->n == TOK_TPL_MAX)
            return xa_errorf(ctx, XA_EFORMAT, "%s: post_processor template too long", path);
        tok_tpl_item *it = &t->items[t->n];
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
        int32_t type_id = 0;
        jint(cJSON_GetObjectItemCaseSensitive(sp ? sp : sq, "type_id"), &type_id);
        it->type_id = type_id;
        if (sq) {
            const char *id = jstr(sq, "id");
            it->seq = id && !strcmp(id, "B") ? 1 : 0;
        } else if (sp) {
            const char *name = jstr(sp, "id");
            const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
            it->seq = -1;
            for (const cJSON *x = cJSON_IsArray(ids) ? ids->child : NULL; x; x = x->next) {
                if (it->n_ids == TOK_TPL_IDS || !jint(x, &it->ids[it->n_ids]))
                    return xa_errorf(ctx, XA_EFORMAT, "%s: post_processor special token '%s' "
                                                      "has bad ids", path, name);
                it->n_ids++;
            }
            if (!it->n_ids)
                return xa_errorf(ctx, XA_EFORMAT, "%s: post_processor special token '%s' is not "
                                                  "in special_tokens", path, name ? name : "?");
        } else {
            return xa_errorf(ctx, XA_EFORMAT, "%s: post_processor template item is neither "
                                              "SpecialToken nor Sequence", path);
        }
        t->n++;
    }
    return XA_OK;
}

static xa_status parse_post_processor(xa_ctx *ctx, const char *path, const cJSON *j,
                                      xa_tokenizer *tok) {
    if (!j || cJSON_IsNull(j))
        return XA_OK;
    const char *type = jstr(j, "type");
    if (!type)
        return unsupported(ctx, path, "post_processor", NULL);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "processors");
        for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next) {
            xa_status st = parse_post_processor(ctx, path, e, tok);
            if (st)
                return st;
        }
        return XA_OK;
    }
    if (!strcmp(type, "ByteLevel"))
        return XA_OK; // offsets only
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        int32_t cls = special_id(tok, cJSON_GetObjectItemCaseSensitive(j, "cls"));
        int32_t sep = special_id(tok, cJSON_GetObjectItemCaseSensitive(j, "sep"));
        if (cls < 0 || sep < 0)
            return xa_errorf(ctx, XA_EFORMAT, "%s: post_processor %s needs cls and sep ids", path,
                             type);
        templates_for(tok, cls, sep, type[0] == 'R');
        return XA_OK;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
        xa_status st;
        if ((st = parse_template(ctx, path, cJSON_GetObjectItemCaseSensitive(j, "single"),
                                 specials, &tok->single)) ||
            (st = parse_template(ctx, path, cJSON_GetObjectItemCaseSensitive(j, "pair"), specials,
                                 &tok->pair)))
            return st;
        tok->has_template = true;
        return XA_OK;
    }
    return unsupported(ctx, path, "post_processor", type);
}

static xa_status parse_added_tokens(xa_ctx *ctx, const char *path, const cJSON *list,
                                    xa_tokenizer *tok) {
    int i = 0;
    for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next, i++) {
        const char *content = jstr(e, "content");
        int32_t id;
        if (!content || !content[0] || !jint(cJSON_GetObjectItemCaseSensitive(e, "id"), &id))
            return xa_errorf(ctx, XA_EFORMAT, "%s: added_tokens[%d]: expected an id and a "
                                              "non-empty content", path, i);
        xa_status st = add_added(ctx, tok, content, id, jbool(e, "special") == 1,
                                 jbool(e, "lstrip") == 1, jbool(e, "rstrip") == 1,
                                 jbool(e, "single_word") == 1, jbool(e, "normalized") != 0);
        if (st)
            return st;
    }
    return XA_OK;
}

static xa_status parse_model(xa_ctx *ctx, const char *path, const cJSON *m, xa_tokenizer *tok) {
    char where[600];
    snprintf(where, sizeof where, "%s: model.vocab", path);
    if (!cJSON_IsObject(m))
        return xa_errorf(ctx, XA_EFORMAT, "%s: expected a \"model\" object", path);
    const char *type = jstr(m, "type");
    if (!type) // older files leave the type out; HF tells the models apart by their fields
        type = cJSON_GetObjectItemCaseSensitive(m, "merges")                     ? "BPE"
               : cJSON_GetObjectItemCaseSensitive(m, "max_input_chars_per_word") ? "WordPiece"
                                                                                 : "(no type)";
    bool wp = !strcmp(type, "WordPiece"), bpe = !strcmp(type, "BPE");
    if (!wp && !bpe)
        return unsupported(ctx, path, "model type", type);
    xa_status st = read_vocab_object(ctx, where, cJSON_GetObjectItemCaseSensitive(m, "vocab"), tok);
    if (st)
        return st;
    const char *unk = jstr(m, "unk_token");
    if (unk) {
        tok->unk_id = xa_tok_vocab_find(&tok->vocab, unk, strlen(unk));
        if (tok->unk_id < 0)
            return xa_errorf(ctx, XA_EFORMAT, "%s: model.unk_token '%s' is not in model.vocab",
                             path, unk);
    }
    const char *prefix = jstr(m, "continuing_subword_prefix");
    if (wp) {
        tok->model = MODEL_WORDPIECE;
        if (!unk)
            return xa_errorf(ctx, XA_EFORMAT, "%s: a WordPiece model needs an unk_token", path);
        if (prefix) {
            if (strlen(prefix) >= sizeof tok->wp_prefix)
                return xa_errorf(ctx, XA_EFORMAT, "%s: continuing_subword_prefix too long", path);
            strcpy(tok->wp_prefix, prefix);
            tok->wp_prefix_len = strlen(prefix);
        }
        int32_t mc;
        if (jint(cJSON_GetObjectItemCaseSensitive(m, "max_input_chars_per_word"), &mc))
            tok->wp_max_chars = mc;
        return XA_OK;
    }
    tok->model = MODEL_BPE;
    const char *eow = jstr(m, "end_of_word_suffix");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (prefix && prefix[0])
        return unsupported(ctx, path, "BPE continuing_subword_prefix", prefix);
    if (jbool(m, "byte_fallback") == 1)
        return unsupported(ctx, path, "BPE option", "byte_fallback");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return unsupported(ctx, path, "BPE option", "dropout");
    if (eow) {
        if (strlen(eow) >= sizeof tok->eow)
            return xa_errorf(ctx, XA_EFORMAT, "%s: end_of_word_suffix too long", path);
        strcpy(tok->eow, eow);
        tok->eow_len = strlen(eow);
    }
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsArray(merges))
        return xa_errorf(ctx, XA_EFORMAT, "%s: model.merges: expected an array", path);
    int32_t rank = 0;
    for (const cJSON *e = merges->child; e; e = e->next, rank++) {
        snprintf(where, sizeof where, "%s: model.merges[%d]", path, (int)rank);
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if (cJSON_IsString(e)) { // "a b" (older files)
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (sp && sp != s && sp[1] && !strchr(sp + 1, ' ')) {
                a = s, na = (size_t)(sp - s), b = sp + 1, nb = strlen(sp + 1);
            }
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) { // ["a", "b"]
            a = e->child->valuestring, na = strlen(a);
            b = e->child->next->valuestring, nb = strlen(b);
        }
        if (!a || !na || !nb)
            return xa_errorf(ctx, XA_EFORMAT, "%s: expected two symbols (\"a b\" or [\"a\", \"b\"])",
                             where);
        if ((st = add_merge(ctx, tok, a, na, b, nb, rank, where, "model.vocab")))
            return st;
    }
    return XA_OK;
}

static xa_status load_json(xa_ctx *ctx, const char *path, const tok_config *cfg,
                           xa_tokenizer **out) {
    cJSON *root = NULL;
    xa_status st = parse_json(ctx, path, &root);
    if (st)
        return st;
    xa_tokenizer *tok = tok_new(ctx);
    if (!tok) {
        st = XA_ENOMEM;
        goto out_json;
    }
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if ((st = parse_model(ctx, path, cJSON_GetObjectItemCaseSensitive(root, "model"), tok)) ||
        (st = parse_normalizer(ctx, path, cJSON_GetObjectItemCaseSensitive(root, "normalizer"),
                               tok)) ||
        (st = parse_pre_tokenizer(ctx, path,
                                  cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), tok)) ||
        (st = parse_post_processor(ctx, path,
                                   cJSON_GetObjectItemCaseSensitive(root, "post_processor"), tok)) ||
        (st = parse_added_tokens(ctx, path, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"),
                                 tok)))
        goto out_tok;
    if (dec && jstr(dec, "type") && !strcmp(jstr(dec, "type"), "WordPiece"))
        tok->wp_cleanup = jbool(dec, "cleanup") != 0;
    bool bytelevel = tok->n_pres > 0 && tok->pres[tok->n_pres - 1].op == PRE_BYTELEVEL;
    for (int i = 0; i + 1 < tok->n_pres; i++)
        if (tok->pres[i].op == PRE_BYTELEVEL) {
            st = unsupported(ctx, path, "pre_tokenizer", "ByteLevel before another pre-tokenizer");
            goto out_tok;
        }
    if (tok->model == MODEL_BPE && !bytelevel) {
        st = unsupported(ctx, path, "BPE without a ByteLevel pre_tokenizer", "BPE");
        goto out_tok;
    }
    if (tok->model == MODEL_WORDPIECE && bytelevel) {
        st = unsupported(ctx, path, "WordPiece with a ByteLevel pre_tokenizer", "ByteLevel");
        goto out_tok;
    }
    tok_config c = *cfg;
    xa_tokenizer_kind found = tok->model == MODEL_WORDPIECE ? XA_TOKENIZER_BERT
                              : tok->eow_len || (tok->n_pres && tok->pres[0].op == PRE_CLIP)
                                  ? XA_TOKENIZER_CLIP
                                  : XA_TOKENIZER_ROBERTA;
    if (c.kind && (c.kind == XA_TOKENIZER_BERT) != (found == XA_TOKENIZER_BERT)) {
        st = xa_errorf(ctx, XA_EFORMAT, "%s: has a %s model but the model type is %s", path,
                       found == XA_TOKENIZER_BERT ? "WordPiece" : "BPE",
                       c.kind == XA_TOKENIZER_BERT ? "bert" : "roberta/clip");
        goto out_tok;
    }
    if (!c.kind)
        c.kind = found;
    if ((st = finish(ctx, tok, &c, path)))
        goto out_tok;
    *out = tok;
    tok = NULL;
out_tok:
    xa_tokenizer_free(tok);
out_json:
    cJSON_Delete(root);
    return st;
}

// --- public loaders ------------------------------------------------------------------------------------

xa_status xa_tokenizer_load_json(xa_ctx *ctx, const char *path, xa_tokenizer_kind kind,
                                 xa_tokenizer **out) {
    tok_config cfg;
    config_defaults(&cfg, kind);
    *out = NULL;
    return load_json(ctx, path, &cfg, out);
}

xa_status xa_tokenizer_load_vocab_txt(xa_ctx *ctx, const char *path, bool lowercase,
                                      xa_tokenizer **out) {
    tok_config cfg;
    config_defaults(&cfg, XA_TOKENIZER_BERT);
    cfg.lowercase = lowercase;
    *out = NULL;
    return load_vocab_txt(ctx, path, &cfg, out);
}

xa_status xa_tokenizer_load_bpe(xa_ctx *ctx, const char *vocab_json, const char *merges_txt,
                                xa_tokenizer_kind kind, xa_tokenizer **out) {
    tok_config cfg;
    *out = NULL;
    if (kind == XA_TOKENIZER_BERT)
        return xa_errorf(ctx, XA_EINVAL, "%s: a BPE vocabulary cannot be a BERT tokenizer",
                         vocab_json);
    config_defaults(&cfg, kind);
    return load_bpe_files(ctx, vocab_json, merges_txt, &cfg, out);
}

xa_status xa_tokenizer_load_dir(xa_ctx *ctx, const char *dir, xa_tokenizer **out) {
    tok_config cfg;
    config_defaults(&cfg, 0);
    *out = NULL;
    size_t dl = strlen(dir);
    if (dl > 3500)
        return xa_errorf(ctx, XA_EINVAL, "model directory path too long");
    char p1[4096], p2[4096];
    cJSON *j = NULL;
    xa_status st;
    snprintf(p1, sizeof p1, "%s/config.json", dir);
    if (file_exists(p1)) {
        if ((st = parse_json(ctx, p1, &j)))
            return st;
        read_model_config(j, &cfg);
        cJSON_Delete(j);
    }
    xa_tokenizer_kind kind = cfg.kind;
    snprintf(p1, sizeof p1, "%s/tokenizer_config.json", dir);
    if (file_exists(p1)) {
        if ((st = parse_json(ctx, p1, &j)))
            return st;
        read_tokenizer_config(j, &cfg);
        cJSON_Delete(j);
    }
    cfg.kind = kind;
    snprintf(p1, sizeof p1, "%s/tokenizer.json", dir);
    if (file_exists(p1))
        return load_json(ctx, p1, &cfg, out);
    snprintf(p1, sizeof p1, "%s/vocab.txt", dir);
    if (file_exists(p1)) {
        if (cfg.kind && cfg.kind != XA_TOKENIZER_BERT)
            return xa_errorf(ctx, XA_EFORMAT, "%s: a WordPiece vocab.txt, but config.json's "
                                              "model_type is not bert", p1);
        return load_vocab_txt(ctx, p1, &cfg, out);
    }
    snprintf(p1, sizeof p1, "%s/vocab.json", dir);
    snprintf(p2, sizeof p2, "%s/merges.txt", dir);
    if (file_exists(p1) && file_exists(p2)) {
        if (cfg.kind == XA_TOKENIZER_BERT)
            return xa_errorf(ctx, XA_EFORMAT, "%s: a BPE vocabulary, but config.json's model_type "
                                              "is bert", p1);
        return load_bpe_files(ctx, p1, p2, &cfg, out);
    }
    return xa_errorf(ctx, XA_ENOTFOUND, "%s: no tokenizer files (expected tokenizer.json, "
                                        "vocab.txt, or vocab.json with merges.txt)", dir);
}

const xa_tokenizer_info *xa_tokenizer_info_get(const xa_tokenizer *tok) { return &tok->info; }

int32_t xa_tokenizer_token_id(const xa_tokenizer *tok, const char *token) {
    for (int i = 0; i < tok->n_added; i++)
        if (!strcmp(tok->added[i].content, token))
            return tok->added[i].id;
    return xa_tok_vocab_find(&tok->vocab, token, strlen(token));
}

const char *xa_tokenizer_id_token(const xa_tokenizer *tok, int32_t id) {
    size_t n;
    const char *s = xa_tok_id_str(tok, id, &n);
    return n || xa_tok_vocab_str(&tok->vocab, id, NULL) ? s : NULL;
}

// --- the pipeline ------------------------------------------------------------------------------------

static bool replace_spaces(const tok_norm *nm, const tok_i32 *in, tok_i32 *out) {
    for (size_t i = 0; i < in->n;) {
        if (!xa_tok_is_whitespace(in->v[i])) {
            if (!xa_tok_i32_push(out, in->v[i++]))
                return false;
            continue;
        }
        while (i < in->n && xa_tok_is_whitespace(in->v[i]))
            i++;
        for (size_t k = 0; k < nm->n_content; k++)
            if (!xa_tok_i32_push(out, nm->content[k]))
                return false;
    }
    return true;
}

static bool replace_string(const tok_norm *nm, const tok_i32 *in, tok_i32 *out) {
    size_t np = nm->n_pattern;
    for (size_t i = 0; i < in->n;) {
        if (np && i + np <= in->n && !memcmp(in->v + i, nm->pattern, np * sizeof *nm->pattern)) {
            for (size_t k = 0; k < nm->n_content; k++)
                if (!xa_tok_i32_push(out, nm->content[k]))
                    return false;
            i += np;
        } else if (!xa_tok_i32_push(out, in->v[i++])) {
            return false;
        }
    }
    return true;
}

// Runs the normalizers over tok->cps; *res is tok->cps or tok->cps2.
static bool normalize(xa_tokenizer *tok, tok_i32 **res) {
    tok_i32 *cur = &tok->cps, *alt = &tok->cps2;
    for (int i = 0; i < tok->n_norms; i++) {
        const tok_norm *nm = &tok->norms[i];
        bool ok = true;
        alt->n = 0;
        switch (nm->op) {
        case NORM_BERT: ok = xa_tok_norm_bert(nm, cur->v, cur->n, alt, &tok->cps3, &tok->ubuf); break;
        case NORM_NFC:
        case NORM_NFD:
        case NORM_NFKC:
        case NORM_NFKD: ok = xa_tok_unicode_form(nm->op, cur->v, cur->n, alt, &tok->ubuf); break;
        case NORM_LOWERCASE:
            for (size_t k = 0; k < cur->n && ok; k++)
                ok = xa_tok_lower_push(alt, cur->v[k]);
            break;
        case NORM_STRIP_ACCENTS:
            for (size_t k = 0; k < cur->n && ok; k++)
                if (utf8proc_category(cur->v[k]) != UTF8PROC_CATEGORY_MN)
                    ok = xa_tok_i32_push(alt, cur->v[k]);
            break;
        case NORM_REPLACE_SPACES: ok = replace_spaces(nm, cur, alt); break;
        case NORM_REPLACE: ok = replace_string(nm, cur, alt); break;
        }
        if (!ok)
            return false;
        tok_i32 *t = cur;
        cur = alt;
        alt = t;
    }
    *res = cur;
    return true;
}

// Pre-tokenize cps[a, b) and run the model on every piece.
static bool encode_piece(xa_tokenizer *tok, const int32_t *cps, int32_t a, int32_t b, tok_i32 *ids) {
    tok_spans *cur = &tok->spans, *alt = &tok->spans2;
    cur->n = 0;
    if (b <= a)
        return true;
    if (!xa_tok_spans_push(cur, a, b, false))
        return false;
    for (int i = 0; i < tok->n_pres; i++) {
        const tok_pre *p = &tok->pres[i];
        bool ok = p->op == PRE_BERT       ? xa_tok_pre_bert(cps, cur, alt)
                  : p->op == PRE_CLIP     ? xa_tok_pre_clip(cps, cur, alt)
                  : p->op == PRE_BYTELEVEL ? xa_tok_pre_bytelevel(p, cps, cur, alt)
                                           : xa_tok_pre_whitespace(cps, cur, alt);
        if (!ok)
            return false;
        tok_spans *t = cur;
        cur = alt;
        alt = t;
    }
    for (size_t s = 0; s < cur->n; s++) {
        tok_bytes *w = &tok->word;
        w->n = 0;
        if (cur->v[s].space && !xa_tok_bytes_push(w, " ", 1))
            return false;
        for (int32_t k = cur->v[s].start; k < cur->v[s].end; k++)
            if (!xa_tok_bytes_push_cp(w, cps[k]))
                return false;
        if (w->n == 0)
            continue;
        bool ok = tok->model == MODEL_WORDPIECE ? xa_tok_wordpiece(tok, w->v, w->n, ids)
                                                : xa_tok_bpe(tok, w->v, w->n, ids);
        if (!ok)
            return false;
    }
    return true;
}

// Added tokens in code points (normalized) or bytes (raw): the leftmost match, longest first.
static int match_cps(const xa_tokenizer *tok, const int32_t *s, size_t n, size_t from,
                     size_t *start) {
    for (size_t i = from; i < n; i++) {
        int best = -1;
        for (int a = 0; a < tok->n_added; a++) {
            const tok_added *t = &tok->added[a];
            if (!t->normalized || t->n_norm > n - i || (best >= 0 && t->n_norm <= tok->added[best].n_norm))
                continue;
            if (!memcmp(s + i, t->norm, t->n_norm * sizeof *s))
                best = a;
        }
        if (best >= 0) {
            *start = i;
            return best;
        }
    }
    return -1;
}

static int match_bytes(const xa_tokenizer *tok, const char *s, size_t n, size_t from,
                       size_t *start) {
    for (size_t i = from; i < n; i++) {
        int best = -1;
        for (int a = 0; a < tok->n_added; a++) {
            const tok_added *t = &tok->added[a];
            if (t->normalized || t->len > n - i || (best >= 0 && t->len <= tok->added[best].len))
                continue;
            if (s[i] == t->content[0] && !memcmp(s + i, t->content, t->len))
                best = a;
        }
        if (best >= 0) {
            *start = i;
            return best;
        }
    }
    return -1;
}

static bool encode_normalized(xa_tokenizer *tok, const tok_i32 *cps, tok_i32 *ids) {
    if (!tok->any_norm_added)
        return encode_piece(tok, cps->v, 0, (int32_t)cps->n, ids);
    size_t done = 0, from = 0, p;
    int a;
    while ((a = match_cps(tok, cps->v, cps->n, from, &p)) >= 0) {
        const tok_added *t = &tok->added[a];
        size_t start = p, stop = p + t->n_norm;
        from = stop;
        if (t->single_word && ((start > 0 && is_word_char(cps->v[start - 1])) ||
                               (stop < cps->n && is_word_char(cps->v[stop]))))
            continue;
        if (t->lstrip)
            while (start > done && xa_tok_is_whitespace(cps->v[start - 1]))
                start--;
        if (t->rstrip)
            while (stop < cps->n && xa_tok_is_whitespace(cps->v[stop]))
                stop++;
        if (start < done)
            start = done;
        if (!encode_piece(tok, cps->v, (int32_t)done, (int32_t)start, ids) ||
            !xa_tok_i32_push(ids, t->id))
            return false;
        done = stop;
    }
    return encode_piece(tok, cps->v, (int32_t)done, (int32_t)cps->n, ids);
}

// Normalize and encode a raw piece of text that holds no raw added token.
static bool encode_raw(xa_tokenizer *tok, const char *s, size_t n, tok_i32 *ids) {
    if (n == 0)
        return true;
    tok_i32 *c = &tok->cps;
    c->n = 0;
    if (!xa_tok_i32_reserve(c, n))
        return false;
    for (size_t i = 0; i < n;) {
        size_t len;
        c->v[c->n++] = utf8_at(s, n, i, &len);
        i += len;
    }
    tok_i32 *res;
    return normalize(tok, &res) && encode_normalized(tok, res, ids);
}

static bool ws_before(const char *s, size_t i) {
    size_t p = utf8_prev(s, i), len;
    return xa_tok_is_whitespace(utf8_at(s, i, p, &len));
}

static xa_status encode_text(xa_ctx *ctx, xa_tokenizer *tok, const char *text, const char *what,
                             tok_i32 *ids) {
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t len;
        if (utf8_at(text, n, i, &len) < 0)
            return xa_errorf(ctx, XA_EINVAL, "%s is not valid UTF-8 (byte %zu)", what, i);
        i += len;
    }
    ids->n = 0;
    size_t done = 0, from = 0, p;
    int a;
    while (tok->any_raw_added && (a = match_bytes(tok, text, n, from, &p)) >= 0) {
        const tok_added *t = &tok->added[a];
        size_t start = p, stop = p + t->len, len;
        from = stop;
        if (t->single_word &&
            ((start > 0 && is_word_char(utf8_at(text, n, utf8_prev(text, start), &len))) ||
             (stop < n && is_word_char(utf8_at(text, n, stop, &len)))))
            continue;
        if (t->lstrip)
            while (start > done && ws_before(text, start))
                start = utf8_prev(text, start);
        if (t->rstrip)
            while (stop < n && xa_tok_is_whitespace(utf8_at(text, n, stop, &len)))
                stop += len;
        if (start < done)
            start = done;
        if (!encode_raw(tok, text + done, start - done, ids) || !xa_tok_i32_push(ids, t->id))
            return xa_errorf(ctx, XA_ENOMEM, "out of memory tokenizing %s", what);
        done = stop;
    }
    if (!encode_raw(tok, text + done, n - done, ids))
        return xa_errorf(ctx, XA_ENOMEM, "out of memory tokenizing %s", what);
    return XA_OK;
}

// HF's truncate_encodings, with max_length already reduced by the template's special tokens.
static xa_status truncate(xa_ctx *ctx, tok_i32 *a, tok_i32 *b, size_t target, xa_truncation how) {
    size_t total = a->n + (b ? b->n : 0);
    if (total <= target)
        return XA_OK;
    size_t remove = total - target;
    if (target == 0) { // every strategy empties both sides
        a->n = 0;
        if (b)
            b->n = 0;
        return XA_OK;
    }
    if (how == XA_TRUNCATE_LONGEST_FIRST && b) {
        size_t n1 = a->n, n2 = b->n;
        bool swap = n1 > n2;
        if (swap)
            n1 = b->n, n2 = a->n;
        n2 = n1 > target ? n1 : (n1 > target - n1 ? n1 : target - n1);
        if (n1 + n2 > target) {
            n1 = target / 2;
            n2 = n1 + target % 2;
        }
        if (swap) {
            size_t t = n1;
            n1 = n2;
            n2 = t;
        }
        if (a->n > n1)
            a->n = n1;
        if (b->n > n2)
            b->n = n2;
        return XA_OK;
    }
    tok_i32 *victim = how == XA_TRUNCATE_ONLY_SECOND ? b : a;
    if (!victim)
        return xa_errorf(ctx, XA_EINVAL, "truncation only_second needs a pair of texts");
    if (victim->n <= remove)
        return xa_errorf(ctx, XA_EINVAL, "the %s text has %zu tokens, too few to remove %zu and "
                                         "fit max_length", victim == a ? "first" : "second",
                         victim->n, remove);
    victim->n -= remove;
    return XA_OK;
}

static bool enc_reserve(xa_encoding *e, int64_t n) {
    if (n <= e->cap && e->ids)
        return true;
    int64_t cap = e->cap ? e->cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t **arrs[] = {&e->ids, &e->type_ids, &e->attention_mask, &e->special_mask};
    for (size_t i = 0; i < 4; i++) {
        int32_t *p = realloc(*arrs[i], (size_t)cap * sizeof *p);
        if (!p)
            return false;
        *arrs[i] = p;
    }
    e->cap = cap;
    return true;
}

static void enc_put(xa_encoding *e, int32_t id, int32_t type, int32_t mask, int32_t special) {
    e->ids[e->len] = id;
    e->type_ids[e->len] = type;
    e->attention_mask[e->len] = mask;
    e->special_mask[e->len] = special;
    e->len++;
}

void xa_encoding_deinit(xa_encoding *enc) {
    free(enc->ids);
    free(enc->type_ids);
    free(enc->attention_mask);
    free(enc->special_mask);
    memset(enc, 0, sizeof *enc);
}

static int64_t padded_length(const xa_encode_opts *o, int64_t len) {
    int64_t target = o->pad_to > 0 ? o->pad_to : len;
    if (target < len)
        target = len;
    if (o->pad_multiple > 0 && target % o->pad_multiple)
        target += o->pad_multiple - target % o->pad_multiple;
    return target;
}

xa_status xa_tokenizer_encode(xa_ctx *ctx, xa_tokenizer *tok, const char *text, const char *pair,
                              const xa_encode_opts *opts, xa_encoding *out) {
    xa_encode_opts o = {0};
    if (opts)
        o = *opts;
    xa_status st;
    if ((st = encode_text(ctx, tok, text, "the text", &tok->seq_a)) ||
        (pair && (st = encode_text(ctx, tok, pair, "the pair text", &tok->seq_b))))
        return st;
    tok_i32 *a = &tok->seq_a, *b = pair ? &tok->seq_b : NULL;
    bool specials = !o.no_special_tokens && tok->has_template;
    const tok_template *tpl = b ? &tok->pair : &tok->single;
    if (o.max_length > 0) {
        int ns = specials ? template_specials(tpl) : 0;
        if (o.max_length < ns)
            return xa_errorf(ctx, XA_EINVAL, "max_length %d is shorter than the template's %d "
                                             "special tokens", (int)o.max_length, ns);
        if ((st = truncate(ctx, a, b, (size_t)(o.max_length - ns), o.truncation)))
            return st;
    }
    int64_t len = (int64_t)a->n + (b ? (int64_t)b->n : 0) + (specials ? template_specials(tpl) : 0);
    int64_t total = padded_length(&o, len);
    if (o.pad_to <= 0 && o.pad_multiple <= 0)
        total = len;
    if (!enc_reserve(out, total))
        return xa_errorf(ctx, XA_ENOMEM, "out of memory for %lld token ids", (long long)total);
    out->len = 0;
    if (tok->has_template) {
        for (int i = 0; i < tpl->n; i++) {
            const tok_tpl_item *it = &tpl->items[i];
            if (it->seq < 0) {
                for (int k = 0; k < it->n_ids && specials; k++)
                    enc_put(out, it->ids[k], it->type_id, 1, 1);
            } else {
                const tok_i32 *s = it->seq == 0 ? a : b;
                for (size_t k = 0; s && k < s->n; k++)
                    enc_put(out, s->v[k], it->type_id, 1, 0);
            }
        }
    } else {
        for (size_t k = 0; k < a->n; k++)
            enc_put(out, a->v[k], 0, 1, 0);
        for (size_t k = 0; b && k < b->n; k++)
            enc_put(out, b->v[k], 1, 1, 0);
    }
    while (out->len < total)
        enc_put(out, tok->info.pad_id < 0 ? 0 : tok->info.pad_id, 0, 0, 1);
    return XA_OK;
}

void xa_token_batch_deinit(xa_token_batch *b) {
    free(b->input_ids);
    free(b->attention_mask);
    free(b->token_type_ids);
    free(b->lengths);
    memset(b, 0, sizeof *b);
}

xa_status xa_tokenizer_encode_batch(xa_ctx *ctx, xa_tokenizer *tok, const char *const *texts,
                                    const char *const *pairs, int64_t n, const xa_encode_opts *opts,
                                    xa_token_batch *out) {
    xa_encode_opts o = {0};
    if (opts)
        o = *opts;
    memset(out, 0, sizeof *out);
    if (n < 0)
        return xa_errorf(ctx, XA_EINVAL, "batch of %lld texts", (long long)n);
    if ((o.pad_to > 0 || o.pad_multiple > 0) && tok->info.pad_id < 0)
        return xa_errorf(ctx, XA_EINVAL, "the tokenizer has no pad token");
    xa_encode_opts one = o;
    one.pad_to = one.pad_multiple = 0;
    xa_encoding *encs = xa_calloc(ctx, (size_t)(n ? n : 1), sizeof *encs);
    if (!encs)
        return XA_ENOMEM;
    xa_status st = XA_OK;
    int64_t cols = 0;
    for (int64_t i = 0; i < n; i++) {
        if ((st = xa_tokenizer_encode(ctx, tok, texts[i], pairs ? pairs[i] : NULL, &one, &encs[i]))) {
            xa_error_wrap(ctx, "row %lld", (long long)i);
            goto out_encs;
        }
        if (encs[i].len > cols)
            cols = encs[i].len;
    }
    if (o.pad_to > 0 && cols > o.pad_to) {
        for (int64_t i = 0; i < n; i++)
            if (encs[i].len > o.pad_to) {
                st = xa_errorf(ctx, XA_ERANGE, "row %lld has %lld tokens, more than pad_to %d (set "
                                               "max_length to truncate)",
                               (long long)i, (long long)encs[i].len, (int)o.pad_to);
                goto out_encs;
            }
    }
    cols = padded_length(&o, cols);
    size_t cells = (size_t)(n * cols);
    out->rows = n;
    out->cols = cols;
    out->input_ids = xa_malloc(ctx, (cells ? cells : 1) * sizeof(int32_t));
    out->attention_mask = xa_malloc(ctx, (cells ? cells : 1) * sizeof(int32_t));
    out->token_type_ids = xa_malloc(ctx, (cells ? cells : 1) * sizeof(int32_t));
    out->lengths = xa_malloc(ctx, (size_t)(n ? n : 1) * sizeof(int64_t));
    if (!out->input_ids || !out->attention_mask || !out->token_type_ids || !out->lengths) {
        xa_token_batch_deinit(out);
        st = XA_ENOMEM;
        goto out_encs;
    }
    int32_t pad = tok->info.pad_id < 0 ? 0 : tok->info.pad_id;
    for (int64_t i = 0; i < n; i++) {
        int32_t *ids = out->input_ids + i * cols, *mask = out->attention_mask + i * cols;
        int32_t *types = out->token_type_ids + i * cols;
        int64_t len = encs[i].len;
        out->lengths[i] = len;
        memcpy(ids, encs[i].ids, (size_t)len * sizeof *ids);
        memcpy(types, encs[i].type_ids, (size_t)len * sizeof *types);
        for (int64_t k = 0; k < cols; k++)
            mask[k] = k < len;
        for (int64_t k = len; k < cols; k++)
            ids[k] = pad, types[k] = 0;
    }
out_encs:
    for (int64_t i = 0; i < n; i++)
        xa_encoding_deinit(&encs[i]);
    free(encs);
    return st;
}

// --- decoding -------------------------------------------------------------------------------------------

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
static bool utf8_lossy(const tok_bytes *in, tok_bytes *out) {
    const unsigned char *s = (const unsigned char *)in->v;
    size_t n = in->n;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t need = 0;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80)
            need = 0;
        else if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            if (!xa_tok_bytes_push(out, "\xEF\xBF\xBD", 3))
                return false;
            i++;
            continue;
        }
        size_t k = 1;
        for (; k <= need; k++) {
            if (i + k >= n)
                break;
            unsigned d = s[i + k];
            unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (d < l || d > h)
                break;
        }
        if (k == need + 1) {
            if (!xa_tok_bytes_push(out, (const char *)s + i, k))
                return false;
        } else if (!xa_tok_bytes_push(out, "\xEF\xBF\xBD", 3)) {
            return false;
        }
        i += k;
    }
    return true;
}

// transformers' CLIP decode: "</w>" -> " ", then Python's strip().
static bool clip_suffix(const xa_tokenizer *tok, const tok_bytes *in, tok_bytes *out) {
    size_t n = in->n, el = tok->eow_len;
    tok_bytes t = {0};
    bool ok = xa_tok_bytes_push(&t, "", 0);
    for (size_t i = 0; i < n && ok;) {
        if (i + el <= n && !memcmp(in->v + i, tok->eow, el)) {
            ok = xa_tok_bytes_push(&t, " ", 1);
            i += el;
        } else {
            ok = xa_tok_bytes_push(&t, in->v + i, 1);
            i++;
        }
    }
    size_t a = 0, b = t.n, len;
    while (ok && a < b && py_isspace(utf8_at(t.v, b, a, &len)))
        a += len;
    while (ok && b > a) {
        size_t p = utf8_prev(t.v, b);
        if (!py_isspace(utf8_at(t.v, b, p, &len)))
            break;
        b = p;
    }
    ok = ok && xa_tok_bytes_push(out, t.v + a, b - a);
    free(t.v);
    return ok;
}

xa_status xa_tokenizer_decode(xa_ctx *ctx, const xa_tokenizer *tok, const int32_t *ids, int64_t n,
                              bool skip_special, char **out) {
    *out = NULL;
    tok_i32 keep = {0};
    tok_bytes raw = {0}, text = {0};
    xa_status st = XA_OK;
    if (!xa_tok_i32_reserve(&keep, (size_t)(n > 0 ? n : 1)))
        return xa_errorf(ctx, XA_ENOMEM, "out of memory decoding %lld ids", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = xa_tok_id_str(tok, ids[i], &len);
        if (ids[i] < 0 || (!len && !xa_tok_vocab_str(&tok->vocab, ids[i], NULL))) {
            st = xa_errorf(ctx, XA_ERANGE, "id %d at position %lld is not in the vocabulary "
                                           "(size %d)", (int)ids[i], (long long)i,
                           (int)tok->info.vocab_size);
            goto out_free;
        }
        (void)s;
        bool special = false;
        for (int a = 0; a < tok->n_added && skip_special; a++)
            special |= tok->added[a].id == ids[i] && tok->added[a].special;
        if (!special)
            keep.v[keep.n++] = ids[i];
    }
    bool ok = xa_tok_bytes_push(&text, "", 0);
    if (tok->model == MODEL_WORDPIECE) {
        ok = ok && xa_tok_wordpiece_decode(tok, keep.v, keep.n, &text);
    } else {
        ok = ok && xa_tok_bytes_push(&raw, "", 0) &&
             xa_tok_bytelevel_decode(tok, keep.v, keep.n, &raw) && utf8_lossy(&raw, &text);
        if (ok && tok->eow_len) {
            raw.n = 0;
            ok = clip_suffix(tok, &text, &raw);
            tok_bytes t = text;
            text = raw;
            raw = t;
        }
    }
    if (!ok) {
        st = xa_errorf(ctx, XA_ENOMEM, "out of memory decoding %lld ids", (long long)n);
        goto out_free;
    }
    *out = text.v;
    text.v = NULL;
out_free:
    free(keep.v);
    free(raw.v);
    free(text.v);
    return st;
}
