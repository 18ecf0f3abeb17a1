// Byte-level BPE as HF's Rust `tokenizers` runs it for RoBERTa and CLIP: the GPT-2 and CLIP split
// regexes written out by hand over utf8proc categories, GPT-2's bytes_to_unicode table, BPE merges
// by rank (HF's heap order) with an end-of-word suffix, a word cache, and the byte-level decoder.
// Loading and templates are in tokenizer.c; WordPiece is in tok_wordpiece.c.
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tok_internal.h"

// --- bytes_to_unicode ----------------------------------------------------------------------------

// GPT-2 keeps the printable Latin-1 bytes as themselves and moves the other 68 bytes, in order,
// to U+0100.. so that every byte has a visible, non-space symbol.
static bool byte_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static int32_t byte_to_cp(uint8_t b) {
    if (byte_printable(b))
        return b;
    int32_t k = 0;
    for (int x = 0; x < b; x++)
        k += !byte_printable(x);
    return 256 + k;
}

// -1 when cp is no byte symbol.
static int cp_to_byte(int32_t cp) {
    if (cp < 256)
        return byte_printable(cp) ? cp : -1;
    if (cp > 256 + 67)
        return -1;
    int32_t k = cp - 256;
    for (int x = 0; x < 256; x++)
        if (!byte_printable(x) && k-- == 0)
            return x;
    return -1;
}

int xa_tok_byte_symbol(uint8_t b, char out[4]) {
    return (int)utf8proc_encode_char(byte_to_cp(b), (utf8proc_uint8_t *)out);
}

void xa_tok_bpe_bytes_init(xa_tokenizer *tok) {
    char buf[40];
    for (int b = 0; b < 256; b++) {
        int n = xa_tok_byte_symbol((uint8_t)b, buf);
        tok->byte_id[b] = xa_tok_vocab_find(&tok->vocab, buf, (size_t)n);
        memcpy(buf + n, tok->eow, tok->eow_len);
        tok->byte_eow_id[b] =
            tok->eow_len ? xa_tok_vocab_find(&tok->vocab, buf, n + tok->eow_len) : tok->byte_id[b];
    }
}

// --- the GPT-2 regex -----------------------------------------------------------------------------
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Leftmost-first alternation at each position, on one piece at a time (the lookahead sees the
// piece's end, as the regex does on HF's split strings).

enum { CLS_SPACE, CLS_LETTER, CLS_NUMBER, CLS_OTHER };

static int classify(int32_t c) {
    if (xa_tok_is_whitespace(c))
        return CLS_SPACE;
    if (xa_tok_is_letter(c))
        return CLS_LETTER;
    if (xa_tok_is_number(c))
        return CLS_NUMBER;
    return CLS_OTHER;
}

// A piece [lo, end) whose first position is a virtual " " when `virt` (add_prefix_space).
typedef struct piece {
    const int32_t *cps;
    int32_t lo, end;
    bool virt;
} piece;

static inline int32_t at(const piece *p, int32_t k) {
    return p->virt && k == p->lo ? ' ' : p->cps[k];
}

static bool is_contraction(const piece *p, int32_t i, int32_t *len) {
    if (at(p, i) != '\'' || i + 1 >= p->end)
        return false;
    int32_t d = at(p, i + 1);
    if (d == 's' || d == 't' || d == 'm' || d == 'd') {
        *len = 2;
        return true;
    }
    if (i + 2 >= p->end)
        return false;
    int32_t e = at(p, i + 2);
    if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) {
        *len = 3;
        return true;
    }
    return false;
}

static int32_t gpt2_match(const piece *p, int32_t i) {
    int32_t n = p->end, len;
    if (is_contraction(p, i, &len))
        return i + len;
    int32_t c = at(p, i);
    int32_t b = c == ' ' && i + 1 < n ? i + 1 : i; // " ?" takes the space when it can
    int cls = classify(at(p, b));
    if (cls != CLS_SPACE) {
        int32_t j = b + 1;
        while (j < n && classify(at(p, j)) == cls)
            j++;
        return j;
    }
    int32_t k = i;
    while (k < n && xa_tok_is_whitespace(at(p, k)))
        k++;
    if (k == n)
        return n;
    return k - i >= 2 ? k - 1 : k; // \s+(?!\S) leaves the last space to the next word
}

bool xa_tok_pre_bytelevel(const tok_pre *pre, const int32_t *cps, const tok_spans *in,
                          tok_spans *out) {
    out->n = 0;
    for (size_t s = 0; s < in->n; s++) {
        tok_span sp = in->v[s];
        bool virt = pre->add_prefix_space && !sp.space && cps[sp.start] != ' ';
        piece p = {cps, virt ? sp.start - 1 : sp.start, sp.end, virt};
        bool space = sp.space || virt;
        if (!pre->use_regex) {
            if (!xa_tok_spans_push(out, sp.start, sp.end, space))
                return false;
            continue;
        }
        for (int32_t i = p.lo; i < p.end;) {
            int32_t j = gpt2_match(&p, i);
            bool lead = virt && i == p.lo;
            int32_t a = lead ? i + 1 : i;
            if (j > a || lead)
                if (!xa_tok_spans_push(out, a, j, lead || (sp.space && i == sp.start)))
                    return false;
            i = j;
        }
    }
    return true;
}

// --- the CLIP regex ------------------------------------------------------------------------------
// <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// Matches are kept as pieces, what lies between (whitespace) is removed (Split, invert, Removed).

static bool match_ascii(const int32_t *cps, int32_t i, int32_t n, const char *lit) {
    for (int32_t k = 0; lit[k]; k++)
        if (i + k >= n || cps[i + k] != (unsigned char)lit[k])
            return false;
    return true;
}

// End of the match at i, or -1 when none starts there.
static int32_t clip_match(const int32_t *cps, int32_t i, int32_t n) {
    if (match_ascii(cps, i, n, "<|startoftext|>"))
        return i + 15;
    if (match_ascii(cps, i, n, "<|endoftext|>"))
        return i + 13;
    piece p = {cps, i, n, false};
    int32_t len;
    if (is_contraction(&p, i, &len))
        return i + len;
    int cls = classify(cps[i]);
    if (cls == CLS_SPACE)
        return -1;
    if (cls == CLS_NUMBER)
        return i + 1;
    int32_t j = i + 1;
    while (j < n && classify(cps[j]) == cls)
        j++;
    return j;
}

bool xa_tok_pre_clip(const int32_t *cps, const tok_spans *in, tok_spans *out) {
    out->n = 0;
    for (size_t s = 0; s < in->n; s++) {
        for (int32_t i = in->v[s].start; i < in->v[s].end;) {
            int32_t j = clip_match(cps, i, in->v[s].end);
            if (j < 0) {
                i++;
                continue;
            }
            if (!xa_tok_spans_push(out, i, j, in->v[s].space && i == in->v[s].start))
                return false;
            i = j;
        }
    }
    return true;
}

// --- merges: (left id, right id) -> rank and merged id -------------------------------------------

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t pair_key(int32_t a, int32_t b) {
    return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static bool merges_find(const tok_merges *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!m->n_slots)
        return false;
    uint64_t key = pair_key(a, b);
    for (size_t i = mix64(key) & (m->n_slots - 1);; i = (i + 1) & (m->n_slots - 1)) {
        if (m->keys[i] == 0)
            return false;
        if (m->keys[i] == key) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
    }
}

static int merges_grow(tok_merges *m) {
    size_t n = m->n_slots ? m->n_slots * 2 : 1024;
    uint64_t *keys = calloc(n, sizeof *keys);
    int32_t *rank = malloc(n * sizeof *rank), *merged = malloc(n * sizeof *merged);
    if (!keys || !rank || !merged) {
        free(keys);
        free(rank);
        free(merged);
        return -1;
    }
    for (size_t i = 0; i < m->n_slots; i++) {
        if (!m->keys[i])
            continue;
        size_t j = mix64(m->keys[i]) & (n - 1);
        while (keys[j])
            j = (j + 1) & (n - 1);
        keys[j] = m->keys[i];
        rank[j] = m->rank[i];
        merged[j] = m->merged[i];
    }
    xa_tok_merges_deinit(m);
    m->keys = keys;
    m->rank = rank;
    m->merged = merged;
    m->n_slots = n;
    return 0;
}

int xa_tok_merges_add(tok_merges *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((m->count + 1) * 2 > m->n_slots && merges_grow(m) < 0)
        return -1;
    uint64_t key = pair_key(a, b);
    size_t i = mix64(key) & (m->n_slots - 1);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->n_slots - 1);
    if (!m->keys[i])
        m->count++;
    m->keys[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
    return 0;
}

void xa_tok_merges_deinit(tok_merges *m) {
    free(m->keys);
    free(m->rank);
    free(m->merged);
    m->keys = NULL;
    m->rank = m->merged = NULL;
    m->n_slots = m->count = 0;
}

// --- the word cache ------------------------------------------------------------------------------

#define CACHE_MAX_ENTRIES (1u << 17)
#define CACHE_MAX_WORD    256 // longer words are rare; HF does not cache them either

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static const int32_t *cache_find(const tok_bpe_cache *c, const char *w, size_t n, size_t *len) {
    if (!c->n_slots)
        return NULL;
    for (size_t i = hash_bytes(w, n) & (c->n_slots - 1);; i = (i + 1) & (c->n_slots - 1)) {
        uint32_t e = c->slots[i];
        if (!e)
            return NULL;
        const uint32_t *ent = c->entry + 4 * (e - 1);
        if (ent[1] == n && !memcmp(c->keys.v + ent[0], w, n)) {
            *len = ent[3];
            return c->vals.v + ent[2];
        }
    }
}

static void cache_clear(tok_bpe_cache *c) {
    if (c->slots)
        memset(c->slots, 0, c->n_slots * sizeof *c->slots);
    c->count = c->n_entry = 0;
    c->keys.n = c->vals.n = 0;
}

// Best effort: a failed allocation only means the word is not cached.
static void cache_put(tok_bpe_cache *c, const char *w, size_t n, const int32_t *ids, size_t k) {
    if (n > CACHE_MAX_WORD)
        return;
    if (c->count >= CACHE_MAX_ENTRIES)
        cache_clear(c);
    if (!c->n_slots) {
        c->slots = calloc(2 * CACHE_MAX_ENTRIES, sizeof *c->slots);
        if (!c->slots)
            return;
        c->n_slots = 2 * CACHE_MAX_ENTRIES;
    }
    if (c->n_entry == c->entry_cap) {
        size_t cap = c->entry_cap ? c->entry_cap * 2 : 1024;
        uint32_t *e = realloc(c->entry, cap * 4 * sizeof *e);
        if (!e)
            return;
        c->entry = e;
        c->entry_cap = cap;
    }
    size_t koff = c->keys.n, voff = c->vals.n;
    if (!xa_tok_bytes_push(&c->keys, w, n) || !xa_tok_i32_reserve(&c->vals, c->vals.n + k)) {
        c->keys.n = koff;
        return;
    }
    memcpy(c->vals.v + voff, ids, k * sizeof *ids);
    c->vals.n += k;
    uint32_t *ent = c->entry + 4 * c->n_entry;
    ent[0] = (uint32_t)koff;
    ent[1] = (uint32_t)n;
    ent[2] = (uint32_t)voff;
    ent[3] = (uint32_t)k;
    c->n_entry++;
    size_t i = hash_bytes(w, n) & (c->n_slots - 1);
    while (c->slots[i])
        i = (i + 1) & (c->n_slots - 1);
    c->slots[i] = (uint32_t)c->n_entry;
    c->count++;
}

void xa_tok_bpe_cache_deinit(tok_bpe_cache *c) {
    free(c->slots);
    free(c->keys.v);
    free(c->vals.v);
    free(c->entry);
    memset(c, 0, sizeof *c);
}

// --- BPE -----------------------------------------------------------------------------------------
// HF's Word::merge_all: a heap of candidate merges ordered by (rank, position); a popped entry
// that no longer matches its symbols is skipped.

enum { SYM_ID, SYM_PREV, SYM_NEXT, SYM_ALIVE, SYM_W };
enum { H_RANK, H_POS, H_NEW, H_W };

static bool heap_less(const int32_t *a, const int32_t *b) {
    return a[H_RANK] != b[H_RANK] ? a[H_RANK] < b[H_RANK] : a[H_POS] < b[H_POS];
}

static bool heap_push(tok_i32 *h, int32_t rank, int32_t pos, int32_t merged) {
    if (!xa_tok_i32_reserve(h, h->n + H_W))
        return false;
    int32_t *v = h->v;
    size_t k = h->n / H_W;
    h->n += H_W;
    int32_t e[H_W] = {rank, pos, merged};
    while (k > 0) {
        size_t parent = (k - 1) / 2;
        if (!heap_less(e, v + parent * H_W))
            break;
        memcpy(v + k * H_W, v + parent * H_W, sizeof e);
        k = parent;
    }
    memcpy(v + k * H_W, e, sizeof e);
    return true;
}

static void heap_pop(tok_i32 *h, int32_t top[H_W]) {
    int32_t *v = h->v;
    memcpy(top, v, H_W * sizeof *v);
    h->n -= H_W;
    size_t n = h->n / H_W, k = 0;
    if (n == 0)
        return;
    int32_t last[H_W];
    memcpy(last, v + n * H_W, sizeof last);
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(v + (c + 1) * H_W, v + c * H_W))
            c++;
        if (!heap_less(v + c * H_W, last))
            break;
        memcpy(v + k * H_W, v + c * H_W, sizeof last);
        k = c;
    }
    memcpy(v + k * H_W, last, sizeof last);
}

static bool push_pair(xa_tokenizer *tok, int32_t pos, int32_t a, int32_t b) {
    int32_t rank, merged;
    if (!merges_find(&tok->merges, a, b, &rank, &merged))
        return true;
    return heap_push(&tok->heap, rank, pos, merged);
}

bool xa_tok_bpe(xa_tokenizer *tok, const char *w, size_t n, tok_i32 *out) {
    if (n == 0)
        return true;
    size_t cached;
    const int32_t *hit = cache_find(&tok->cache, w, n, &cached);
    if (hit) {
        if (!xa_tok_i32_reserve(out, out->n + cached))
            return false;
        memcpy(out->v + out->n, hit, cached * sizeof *hit);
        out->n += cached;
        return true;
    }
    tok_i32 *sym = &tok->sym;
    sym->n = 0;
    if (!xa_tok_i32_reserve(sym, n * SYM_W))
        return false;
    int32_t ns = 0;
    for (size_t k = 0; k < n; k++) {
        uint8_t b = (uint8_t)w[k];
        int32_t id = k + 1 == n ? tok->byte_eow_id[b] : tok->byte_id[b];
        if (id < 0 && (id = tok->unk_id) < 0)
            continue; // no unk token: HF drops the symbol
        int32_t *s = sym->v + ns * SYM_W;
        s[SYM_ID] = id;
        s[SYM_PREV] = ns - 1;
        s[SYM_NEXT] = ns + 1;
        s[SYM_ALIVE] = 1;
        ns++;
    }
    if (ns == 0)
        return true;
    sym->v[(ns - 1) * SYM_W + SYM_NEXT] = -1;
    tok_i32 *h = &tok->heap;
    h->n = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (!push_pair(tok, i, sym->v[i * SYM_W], sym->v[(i + 1) * SYM_W]))
            return false;
    while (h->n) {
        int32_t top[H_W];
        heap_pop(h, top);
        int32_t *s = sym->v + top[H_POS] * SYM_W;
        if (!s[SYM_ALIVE] || s[SYM_NEXT] < 0)
            continue;
        int32_t *r = sym->v + s[SYM_NEXT] * SYM_W, rank, merged;
        if (!merges_find(&tok->merges, s[SYM_ID], r[SYM_ID], &rank, &merged) ||
            merged != top[H_NEW])
            continue;
        s[SYM_ID] = merged;
        s[SYM_NEXT] = r[SYM_NEXT];
        r[SYM_ALIVE] = 0;
        if (s[SYM_NEXT] >= 0)
            sym->v[s[SYM_NEXT] * SYM_W + SYM_PREV] = top[H_POS];
        if (s[SYM_PREV] >= 0 &&
            !push_pair(tok, s[SYM_PREV], sym->v[s[SYM_PREV] * SYM_W + SYM_ID], s[SYM_ID]))
            return false;
        if (s[SYM_NEXT] >= 0 &&
            !push_pair(tok, top[H_POS], s[SYM_ID], sym->v[s[SYM_NEXT] * SYM_W + SYM_ID]))
            return false;
    }
    size_t first = out->n;
    for (int32_t i = 0; i < ns; i++)
        if (sym->v[i * SYM_W + SYM_ALIVE] && !xa_tok_i32_push(out, sym->v[i * SYM_W + SYM_ID]))
            return false;
    cache_put(&tok->cache, w, n, out->v + first, out->n - first);
    return true;
}

// --- the byte-level decoder ----------------------------------------------------------------------

bool xa_tok_bytelevel_decode(const xa_tokenizer *tok, const int32_t *ids, size_t n,
                             tok_bytes *out) {
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = xa_tok_id_str(tok, ids[i], &len);
        size_t mark = out->n;
        bool mapped = true;
        for (utf8proc_ssize_t k = 0; k < (utf8proc_ssize_t)len && mapped;) {
            utf8proc_int32_t cp;
            utf8proc_ssize_t r =
                utf8proc_iterate((const utf8proc_uint8_t *)s + k, (utf8proc_ssize_t)len - k, &cp);
            int b = r > 0 ? cp_to_byte(cp) : -1;
            if (b < 0) {
                mapped = false;
                break;
            }
            char c = (char)b;
            if (!xa_tok_bytes_push(out, &c, 1))
                return false;
            k += r;
        }
        if (!mapped) { // a token that is no byte-level string (an added token) stays as written
            out->n = mark;
            if (!xa_tok_bytes_push(out, s, len))
                return false;
        }
    }
    return true;
}
