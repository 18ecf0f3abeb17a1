// Tokenizers at work: added tokens matched in the text as HF's AddedVocabulary does, the
// normalize -> pre-tokenize -> model pipeline, templates, truncation, padding, batches and
// decoding, plus the vocabulary hash and Unicode helpers. Loading is in tok_load.c, the BERT
// stages in tok_wordpiece.c, the byte-level and CLIP ones in tok_bpe.c.
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

// --- growable arrays -----------------------------------------------------------------------------

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

// --- vocabulary ----------------------------------------------------------------------------------

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

// --- Unicode helpers -----------------------------------------------------------------------------

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
    return xa_tok_i32_push(out,
                           c < 128 ? ((c >= 'A' && c <= 'Z') ? c + 32 : c) : utf8proc_tolower(c));
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
        utf8proc_ssize_t k = utf8proc_decompose(
            (const utf8proc_uint8_t *)scratch->v, (utf8proc_ssize_t)scratch->n,
            out->v ? out->v + out->n : NULL, (utf8proc_ssize_t)room, (utf8proc_option_t)opts);
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
static bool py_isspace(int32_t c) {
    return xa_tok_is_whitespace(c) || (c >= 0x1C && c <= 0x1F);
}

// \w as the regex crate has it, near enough for single_word tokens (none of BERT, RoBERTa and
// CLIP's tokens use single_word).
static bool is_word_char(int32_t c) {
    if (c == '_' || xa_tok_is_letter(c))
        return true;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_MN ||
           k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_PC;
}

int32_t xa_tok_utf8_at(const char *s, size_t n, size_t i, size_t *len) {
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

// --- the tokenizer object ------------------------------------------------------------------------

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
    tok_i32 *arrs[] = {&tok->cps,   &tok->cps2, &tok->cps3, &tok->seq_a,
                       &tok->seq_b, &tok->sym,  &tok->heap};
    for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++)
        free(arrs[i]->v);
    free(tok->spans.v);
    free(tok->spans2.v);
    free(tok->word.v);
    free(tok->word2.v);
    free(tok->ubuf.v);
    free(tok);
}

const xa_tokenizer_info *xa_tokenizer_info_get(const xa_tokenizer *tok) {
    return &tok->info;
}

int32_t xa_tokenizer_token_id(const xa_tokenizer *tok, const char *token) {
    for (int i = 0; i < tok->n_added; i++)
        if (!strcmp(tok->added[i].content, token))
            return tok->added[i].id;
    return xa_tok_vocab_find(&tok->vocab, token, strlen(token));
}

static bool known_id(const xa_tokenizer *tok, int32_t id) {
    if (xa_tok_vocab_str(&tok->vocab, id, NULL))
        return true;
    for (int a = 0; a < tok->n_added; a++)
        if (tok->added[a].id == id)
            return true;
    return false;
}

const char *xa_tokenizer_id_token(const xa_tokenizer *tok, int32_t id) {
    size_t n;
    return known_id(tok, id) ? xa_tok_id_str(tok, id, &n) : NULL;
}

static int template_specials(const tok_template *t) {
    int k = 0;
    for (int i = 0; i < t->n; i++)
        if (t->items[i].seq < 0)
            k += t->items[i].n_ids;
    return k;
}

// --- the pipeline --------------------------------------------------------------------------------

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

bool xa_tok_normalize(xa_tokenizer *tok, tok_i32 **res) {
    tok_i32 *cur = &tok->cps, *alt = &tok->cps2;
    for (int i = 0; i < tok->n_norms; i++) {
        const tok_norm *nm = &tok->norms[i];
        bool ok = true;
        alt->n = 0;
        switch (nm->op) {
        case NORM_BERT:
            ok = xa_tok_norm_bert(nm, cur->v, cur->n, alt, &tok->cps3, &tok->ubuf);
            break;
        case NORM_NFC:
        case NORM_NFD:
        case NORM_NFKC:
        case NORM_NFKD:
            ok = xa_tok_unicode_form(nm->op, cur->v, cur->n, alt, &tok->ubuf);
            break;
        case NORM_LOWERCASE:
            for (size_t k = 0; k < cur->n && ok; k++)
                ok = xa_tok_lower_push(alt, cur->v[k]);
            break;
        case NORM_STRIP_ACCENTS:
            for (size_t k = 0; k < cur->n && ok; k++)
                if (utf8proc_category(cur->v[k]) != UTF8PROC_CATEGORY_MN)
                    ok = xa_tok_i32_push(alt, cur->v[k]);
            break;
        case NORM_REPLACE_SPACES:
            ok = replace_spaces(nm, cur, alt);
            break;
        case NORM_REPLACE:
            ok = replace_string(nm, cur, alt);
            break;
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
static bool encode_piece(xa_tokenizer *tok, const int32_t *cps, int32_t a, int32_t b,
                         tok_i32 *ids) {
    tok_spans *cur = &tok->spans, *alt = &tok->spans2;
    cur->n = 0;
    if (b <= a)
        return true;
    if (!xa_tok_spans_push(cur, a, b, false))
        return false;
    for (int i = 0; i < tok->n_pres; i++) {
        const tok_pre *p = &tok->pres[i];
        bool ok = p->op == PRE_BERT        ? xa_tok_pre_bert(cps, cur, alt)
                  : p->op == PRE_CLIP      ? xa_tok_pre_clip(cps, cur, alt)
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
            if (!t->normalized || t->n_norm > n - i ||
                (best >= 0 && t->n_norm <= tok->added[best].n_norm))
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
        c->v[c->n++] = xa_tok_utf8_at(s, n, i, &len);
        i += len;
    }
    tok_i32 *res;
    return xa_tok_normalize(tok, &res) && encode_normalized(tok, res, ids);
}

static bool ws_before(const char *s, size_t i) {
    size_t p = utf8_prev(s, i), len;
    return xa_tok_is_whitespace(xa_tok_utf8_at(s, i, p, &len));
}

static xa_status encode_text(xa_ctx *ctx, xa_tokenizer *tok, const char *text, const char *what,
                             tok_i32 *ids) {
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        size_t len;
        if (xa_tok_utf8_at(text, n, i, &len) < 0)
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
            ((start > 0 && is_word_char(xa_tok_utf8_at(text, n, utf8_prev(text, start), &len))) ||
             (stop < n && is_word_char(xa_tok_utf8_at(text, n, stop, &len)))))
            continue;
        if (t->lstrip)
            while (start > done && ws_before(text, start))
                start = utf8_prev(text, start);
        if (t->rstrip)
            while (stop < n && xa_tok_is_whitespace(xa_tok_utf8_at(text, n, stop, &len)))
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
        return xa_errorf(ctx, XA_EINVAL,
                         "the %s text has %zu tokens, too few to remove %zu and "
                         "fit max_length",
                         victim == a ? "first" : "second", victim->n, remove);
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
            return xa_errorf(ctx, XA_EINVAL,
                             "max_length %d is shorter than the template's %d "
                             "special tokens",
                             (int)o.max_length, ns);
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
    free(b->special_mask);
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
        if ((st = xa_tokenizer_encode(ctx, tok, texts[i], pairs ? pairs[i] : NULL, &one,
                                      &encs[i]))) {
            xa_error_wrap(ctx, "row %lld", (long long)i);
            goto out_encs;
        }
        if (encs[i].len > cols)
            cols = encs[i].len;
    }
    if (o.pad_to > 0 && cols > o.pad_to) {
        for (int64_t i = 0; i < n; i++)
            if (encs[i].len > o.pad_to) {
                st = xa_errorf(ctx, XA_ERANGE,
                               "row %lld has %lld tokens, more than pad_to %d (set "
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
    out->special_mask = xa_malloc(ctx, (cells ? cells : 1) * sizeof(int32_t));
    out->lengths = xa_malloc(ctx, (size_t)(n ? n : 1) * sizeof(int64_t));
    if (!out->input_ids || !out->attention_mask || !out->token_type_ids || !out->special_mask ||
        !out->lengths) {
        xa_token_batch_deinit(out);
        st = XA_ENOMEM;
        goto out_encs;
    }
    int32_t pad = tok->info.pad_id < 0 ? 0 : tok->info.pad_id;
    for (int64_t i = 0; i < n; i++) {
        int32_t *ids = out->input_ids + i * cols, *mask = out->attention_mask + i * cols;
        int32_t *types = out->token_type_ids + i * cols, *special = out->special_mask + i * cols;
        int64_t len = encs[i].len;
        out->lengths[i] = len;
        memcpy(ids, encs[i].ids, (size_t)len * sizeof *ids);
        memcpy(types, encs[i].type_ids, (size_t)len * sizeof *types);
        memcpy(special, encs[i].special_mask, (size_t)len * sizeof *special);
        for (int64_t k = 0; k < cols; k++)
            mask[k] = k < len;
        for (int64_t k = len; k < cols; k++)
            ids[k] = pad, types[k] = 0, special[k] = 1; // padding is special (never masked)
    }
out_encs:
    for (int64_t i = 0; i < n; i++)
        xa_encoding_deinit(&encs[i]);
    free(encs);
    return st;
}

// --- decoding ------------------------------------------------------------------------------------

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
    while (ok && a < b && py_isspace(xa_tok_utf8_at(t.v, b, a, &len)))
        a += len;
    while (ok && b > a) {
        size_t p = utf8_prev(t.v, b);
        if (!py_isspace(xa_tok_utf8_at(t.v, b, p, &len)))
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
        if (!known_id(tok, ids[i])) {
            st = xa_errorf(ctx, XA_ERANGE,
                           "id %d at position %lld is not in the vocabulary (size %d)", (int)ids[i],
                           (long long)i, (int)tok->info.vocab_size);
            goto out_free;
        }
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
