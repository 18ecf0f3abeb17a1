// Loading tokenizers: a model directory (config.json, tokenizer_config.json), HF's tokenizer.json
// (model, normalizer, pre_tokenizer, post_processor, added_tokens), WordPiece vocab.txt and
// byte-level BPE vocab.json + merges.txt. Every refusal names the file and, for text files, the
// line. Encoding is in tokenizer.c.
#include "tok_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

// --- files and JSON ------------------------------------------------------------------------------

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

// --- configuration a directory gives beyond the vocabulary files ---------------------------------

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
    const char *s = cJSON_IsString(j)   ? j->valuestring
                    : cJSON_IsObject(j) ? jstr(j, "content")
                                        : NULL;
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

// --- building a tokenizer ------------------------------------------------------------------------

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
        int32_t cp = xa_tok_utf8_at(s, n, i, &len);
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

static xa_status add_special_by_name(xa_ctx *ctx, xa_tokenizer *tok, const char *name, bool lstrip,
                                     bool normalized) {
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
            if (!xa_tok_normalize(tok, &res))
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
        const tok_tpl_item *first = &tok->single.items[0],
                           *last = &tok->single.items[tok->single.n - 1];
        if (first->seq < 0 && first->n_ids > 0)
            info->bos_id = first->ids[0];
        if (last->seq < 0 && last->n_ids > 0)
            info->eos_id = last->ids[last->n_ids - 1];
    }
    // HF emits a post-processor's ids as written; one that names no token would give ids that
    // nothing downstream (embeddings, decode) can read.
    const tok_template *tpl[2] = {&tok->single, &tok->pair};
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < tpl[t]->n; i++)
            for (int k = 0; k < tpl[t]->items[i].n_ids; k++)
                if (!xa_tokenizer_id_token(tok, tpl[t]->items[i].ids[k]))
                    return xa_errorf(ctx, XA_EFORMAT,
                                     "%s: post_processor adds id %d, which is no token of the "
                                     "vocabulary (%d ids)",
                                     path, (int)tpl[t]->items[i].ids[k], (int)n_ids);
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

// --- vocab.txt -----------------------------------------------------------------------------------

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
    const char *names[] = {"[PAD]",  "[UNK]",  "[CLS]",  "[SEP]",  "[MASK]",
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
            if (xa_tok_utf8_at(data, e, k, &l) < 0) {
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

// --- vocab.json + merges.txt ---------------------------------------------------------------------

static xa_status read_vocab_object(xa_ctx *ctx, const char *where, const cJSON *vocab,
                                   xa_tokenizer *tok) {
    if (!cJSON_IsObject(vocab))
        return xa_errorf(ctx, XA_EFORMAT, "%s: expected an object of token -> id", where);
    int entries = cJSON_GetArraySize(vocab);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id;
        if (!jint(e, &id))
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: token '%s' has id %.17g, expected a non-negative integer", where,
                             e->string, cJSON_IsNumber(e) ? e->valuedouble : -1.0);
        // Ids number the tokens 0..n-1 (a few holes are tolerated): a wild id is a broken file,
        // not a reason to allocate a table for it.
        if ((int64_t)id >= 2 * (int64_t)entries + 1024)
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: token '%s' has id %d, far past the %d entries (ids number the "
                             "tokens from 0)",
                             where, e->string, (int)id, entries);
        if (xa_tok_vocab_add(&tok->vocab, e->string, strlen(e->string), id) < 0)
            return xa_errorf(ctx, XA_ENOMEM, "%s: out of memory", where);
    }
    return XA_OK;
}

static xa_status add_merge(xa_ctx *ctx, xa_tokenizer *tok, const char *a, size_t na, const char *b,
                           size_t nb, int32_t rank, const char *where, const char *vocab_name) {
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
            st = xa_errorf(ctx, XA_EFORMAT,
                           "%s: expected two symbols separated by a space, found "
                           "'%.*s'",
                           where, (int)(n > 60 ? 60 : n), s);
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
        tok_norm *nm; // valid until the next add_norm (which may move the array)
        if (!add_norm(ctx, tok, NORM_NFC) || !(nm = add_norm(ctx, tok, NORM_REPLACE_SPACES)))
            return XA_ENOMEM;
        nm->content = malloc(sizeof *nm->content);
        if (!nm->content)
            return xa_errorf(ctx, XA_ENOMEM, "out of memory building a normalizer");
        nm->content[0] = ' ';
        nm->n_content = 1;
        if (!add_norm(ctx, tok, NORM_LOWERCASE) || !add_pre(ctx, tok, PRE_CLIP) ||
            !add_pre(ctx, tok, PRE_BYTELEVEL))
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

// --- tokenizer.json ------------------------------------------------------------------------------

static const char *const CLIP_SPLIT =
    "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
static const char *const CLIP_SPLIT_SPECIALS = "<\\|startoftext\\|>|<\\|endoftext\\|>|";

static xa_status unsupported(xa_ctx *ctx, const char *path, const char *what, const char *type) {
    return xa_errorf(ctx, XA_EFORMAT,
                     "%s: %s '%s' is not supported (xadapt reads BERT WordPiece, "
                     "RoBERTa and CLIP byte-level BPE tokenizers)",
                     path, what, type ? type : "(no type)");
}

typedef xa_status (*component_fn)(xa_ctx *ctx, const char *path, const cJSON *j,
                                  const char *type, xa_tokenizer *tok);

// A tokenizer.json component (normalizer, pre_tokenizer, post_processor): null is none, a
// "Sequence" applies the members listed under `members` in order, anything else goes to `one`.
static xa_status parse_component(xa_ctx *ctx, const char *path, const cJSON *j, const char *what,
                                 const char *members, component_fn one, xa_tokenizer *tok) {
    if (!j || cJSON_IsNull(j))
        return XA_OK;
    const char *type = jstr(j, "type");
    if (!type)
        return unsupported(ctx, path, what, NULL);
    if (strcmp(type, "Sequence"))
        return one(ctx, path, j, type, tok);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, members);
    for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next) {
        xa_status st = parse_component(ctx, path, e, what, members, one, tok);
        if (st)
            return st;
    }
    return XA_OK;
}

// One normalizer (not a Sequence; parse_component handles those).
static xa_status normalizer_one(xa_ctx *ctx, const char *path, const cJSON *j,
                                const char *type, xa_tokenizer *tok) {
    static const struct {
        const char *name;
        tok_norm_op op;
    } simple[] = {{"NFC", NORM_NFC},
                  {"NFD", NORM_NFD},
                  {"NFKC", NORM_NFKC},
                  {"NFKD", NORM_NFKD},
                  {"Lowercase", NORM_LOWERCASE},
                  {"StripAccents", NORM_STRIP_ACCENTS}};
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
        const char *content = jstr(j, "content"), *re = jstr(pat, "Regex"),
                   *str = jstr(pat, "String");
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

// One pre_tokenizer (not a Sequence; parse_component handles those).
static xa_status pre_tokenizer_one(xa_ctx *ctx, const char *path, const cJSON *j,
                                   const char *type, xa_tokenizer *tok) {
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
    const char *s = cJSON_IsString(cJSON_GetArrayItem(pair, 0))
                        ? cJSON_GetArrayItem(pair, 0)->valuestring
                        : NULL;
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
            if (!id || (strcmp(id, "A") && strcmp(id, "B")))
                return xa_errorf(ctx, XA_EFORMAT,
                                 "%s: post_processor template sequence '%s' is neither A nor B",
                                 path, id ? id : "?");
            it->seq = !strcmp(id, "B");
        } else if (sp) {
            const char *name = jstr(sp, "id");
            const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
            it->seq = -1;
            for (const cJSON *x = cJSON_IsArray(ids) ? ids->child : NULL; x; x = x->next) {
                if (it->n_ids == TOK_TPL_IDS || !jint(x, &it->ids[it->n_ids]))
                    return xa_errorf(ctx, XA_EFORMAT,
                                     "%s: post_processor special token '%s' "
                                     "has bad ids",
                                     path, name);
                it->n_ids++;
            }
            if (!it->n_ids)
                return xa_errorf(ctx, XA_EFORMAT,
                                 "%s: post_processor special token '%s' is not "
                                 "in special_tokens",
                                 path, name ? name : "?");
        } else {
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: post_processor template item is neither "
                             "SpecialToken nor Sequence",
                             path);
        }
        t->n++;
    }
    return XA_OK;
}

// HF's own rule: the single template uses the sequence A once and no B, the pair template A and B
// once each.
static xa_status check_template(xa_ctx *ctx, const char *path, const tok_template *t,
                                const char *name, int want_b) {
    int uses[2] = {0, 0};
    for (int i = 0; i < t->n; i++)
        if (t->items[i].seq >= 0)
            uses[t->items[i].seq]++;
    if (uses[0] != 1 || uses[1] != want_b)
        return xa_errorf(ctx, XA_EFORMAT,
                         "%s: post_processor template '%s' must use %s (it uses A %d times, B "
                         "%d times)",
                         path, name,
                         want_b ? "the sequences A and B once each" : "the sequence A once, no B",
                         uses[0], uses[1]);
    return XA_OK;
}

// One post_processor (not a Sequence; parse_component handles those).
static xa_status post_processor_one(xa_ctx *ctx, const char *path, const cJSON *j,
                                    const char *type, xa_tokenizer *tok) {
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
        if ((st = parse_template(ctx, path, cJSON_GetObjectItemCaseSensitive(j, "single"), specials,
                                 &tok->single)) ||
            (st = parse_template(ctx, path, cJSON_GetObjectItemCaseSensitive(j, "pair"), specials,
                                 &tok->pair)) ||
            (st = check_template(ctx, path, &tok->single, "single", 0)) ||
            (st = check_template(ctx, path, &tok->pair, "pair", 1)))
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
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: added_tokens[%d]: expected an id and a "
                             "non-empty content",
                             path, i);
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
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) { // ["a", "b"]
            a = e->child->valuestring, na = strlen(a);
            b = e->child->next->valuestring, nb = strlen(b);
        }
        if (!a || !na || !nb)
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: expected two symbols (\"a b\" or [\"a\", \"b\"])", where);
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
        (st = parse_component(ctx, path, cJSON_GetObjectItemCaseSensitive(root, "normalizer"),
                              "normalizer", "normalizers", normalizer_one, tok)) ||
        (st = parse_component(ctx, path, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                              "pre_tokenizer", "pretokenizers", pre_tokenizer_one, tok)) ||
        (st = parse_component(ctx, path, cJSON_GetObjectItemCaseSensitive(root, "post_processor"),
                              "post_processor", "processors", post_processor_one, tok)) ||
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

// --- public loaders ------------------------------------------------------------------------------

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
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: a WordPiece vocab.txt, but config.json's "
                             "model_type is not bert",
                             p1);
        return load_vocab_txt(ctx, p1, &cfg, out);
    }
    snprintf(p1, sizeof p1, "%s/vocab.json", dir);
    snprintf(p2, sizeof p2, "%s/merges.txt", dir);
    if (file_exists(p1) && file_exists(p2)) {
        if (cfg.kind == XA_TOKENIZER_BERT)
            return xa_errorf(ctx, XA_EFORMAT,
                             "%s: a BPE vocabulary, but config.json's model_type "
                             "is bert",
                             p1);
        return load_bpe_files(ctx, p1, p2, &cfg, out);
    }
    return xa_errorf(ctx, XA_ENOTFOUND,
                     "%s: no tokenizer files (expected tokenizer.json, "
                     "vocab.txt, or vocab.json with merges.txt)",
                     dir);
}
