// BERT's tokenizer stages as HF's Rust `tokenizers` runs them: BertNormalizer (clean text, space
// around CJK ideographs, strip accents, lowercase), BertPreTokenizer (whitespace, punctuation),
// the WordPiece model (greedy longest match with "##") and its decoder. Loading, added tokens
// and templates are in tokenizer.c; byte-level BPE is in tok_bpe.c.
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tok_bert_unicode.h"
#include "tok_internal.h"

// --- BertNormalizer ------------------------------------------------------------------------------

// The category HF's BERT stages see: utf8proc's, except where HF's older tables differ
// (tok_bert_unicode.h, generated from HF's own tokenizer over every code point).
static utf8proc_category_t bert_category(int32_t c) {
    size_t lo = 0, hi = sizeof bert_hf_categories / sizeof *bert_hf_categories;
    if (c < bert_hf_categories[0].lo)
        return utf8proc_category(c);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < bert_hf_categories[mid].lo)
            hi = mid;
        else if (c > bert_hf_categories[mid].hi)
            lo = mid + 1;
        else
            return bert_hf_categories[mid].category;
    }
    return utf8proc_category(c);
}

// HF's is_control: categories Cc, Cf, Co, Cs (not Cn), except the three whitespace controls.
static bool is_control(int32_t c) {
    if (c == '\t' || c == '\n' || c == '\r')
        return false;
    switch (bert_category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
        return true;
    default:
        return false;
    }
}

// The ranges HF hard-codes (tokenizers' bert normalizer; note 0x2B920, where Python's BERT has
// 0x2B820): ideographs only, not all of CJK (Hangul and kana are not split out).
static bool is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool xa_tok_norm_bert(const tok_norm *nm, const int32_t *in, size_t n, tok_i32 *out, tok_i32 *tmp,
                      tok_bytes *scratch) {
    tmp->n = 0;
    if (!xa_tok_i32_reserve(tmp, n))
        return false;
    for (size_t i = 0; i < n; i++) {
        int32_t c = in[i];
        if (nm->clean_text) {
            if (c == 0 || c == 0xFFFD || is_control(c))
                continue;
            if (xa_tok_is_whitespace(c))
                c = ' ';
        }
        if (nm->chinese && is_chinese(c)) {
            if (!xa_tok_i32_push(tmp, ' ') || !xa_tok_i32_push(tmp, c) ||
                !xa_tok_i32_push(tmp, ' '))
                return false;
            continue;
        }
        if (!xa_tok_i32_push(tmp, c))
            return false;
    }
    tok_i32 *cur = tmp;
    if (nm->strip_accents) {
        out->n = 0;
        if (!xa_tok_unicode_form(NORM_NFD, tmp->v, tmp->n, out, scratch))
            return false;
        size_t k = 0;
        for (size_t i = 0; i < out->n; i++)
            if (bert_category(out->v[i]) != UTF8PROC_CATEGORY_MN)
                out->v[k++] = out->v[i];
        out->n = k;
        cur = out;
    }
    if (nm->lowercase) {
        tok_i32 *dst = cur == out ? tmp : out;
        dst->n = 0;
        for (size_t i = 0; i < cur->n; i++)
            if (!xa_tok_lower_push(dst, cur->v[i]))
                return false;
        cur = dst;
    }
    if (cur != out) {
        out->n = 0;
        if (!xa_tok_i32_reserve(out, cur->n))
            return false;
        memcpy(out->v, cur->v, cur->n * sizeof *cur->v);
        out->n = cur->n;
    }
    return true;
}

// --- BertPreTokenizer ----------------------------------------------------------------------------

// ASCII punctuation (Rust's is_ascii_punctuation) or any Unicode P* category.
static bool is_bert_punct(int32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return true;
    switch (bert_category(c)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return true;
    default:
        return false;
    }
}

bool xa_tok_pre_bert(const int32_t *cps, const tok_spans *in, tok_spans *out) {
    out->n = 0;
    for (size_t s = 0; s < in->n; s++) {
        int32_t start = in->v[s].start;
        for (int32_t i = in->v[s].start; i < in->v[s].end; i++) {
            bool ws = xa_tok_is_whitespace(cps[i]);
            if (!ws && !is_bert_punct(cps[i]))
                continue;
            if (i > start && !xa_tok_spans_push(out, start, i, false))
                return false;
            if (!ws && !xa_tok_spans_push(out, i, i + 1, false))
                return false;
            start = i + 1;
        }
        if (in->v[s].end > start && !xa_tok_spans_push(out, start, in->v[s].end, false))
            return false;
    }
    return true;
}

bool xa_tok_pre_whitespace(const int32_t *cps, const tok_spans *in, tok_spans *out) {
    out->n = 0;
    for (size_t s = 0; s < in->n; s++) {
        int32_t start = in->v[s].start;
        for (int32_t i = in->v[s].start; i < in->v[s].end; i++) {
            if (!xa_tok_is_whitespace(cps[i]))
                continue;
            if (i > start && !xa_tok_spans_push(out, start, i, false))
                return false;
            start = i + 1;
        }
        if (in->v[s].end > start && !xa_tok_spans_push(out, start, in->v[s].end, false))
            return false;
    }
    return true;
}

// --- WordPiece -----------------------------------------------------------------------------------

static size_t utf8_chars(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static bool push_unk(xa_tokenizer *tok, tok_i32 *out) {
    return tok->unk_id < 0 || xa_tok_i32_push(out, tok->unk_id);
}

bool xa_tok_wordpiece(xa_tokenizer *tok, const char *w, size_t n, tok_i32 *out) {
    if (utf8_chars(w, n) > (size_t)tok->wp_max_chars)
        return push_unk(tok, out);
    size_t first = out->n;
    tok_bytes *sub = &tok->word2;
    size_t start = 0;
    while (start < n) {
        size_t plen = start > 0 ? tok->wp_prefix_len : 0;
        // No vocabulary entry is longer than max_len bytes: only shorter ends can match.
        size_t end = n;
        if (end - start + plen > tok->vocab.max_len) {
            end = start + (tok->vocab.max_len > plen ? tok->vocab.max_len - plen : 0);
            while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80)
                end--;
        }
        int32_t id = -1;
        while (end > start) {
            sub->n = 0;
            if (!xa_tok_bytes_push(sub, tok->wp_prefix, plen) ||
                !xa_tok_bytes_push(sub, w + start, end - start))
                return false;
            id = xa_tok_vocab_find(&tok->vocab, sub->v, sub->n);
            if (id >= 0)
                break;
            do
                end--;
            while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80);
        }
        if (id < 0) {
            out->n = first; // one unmatched piece makes the whole word [UNK]
            return push_unk(tok, out);
        }
        if (!xa_tok_i32_push(out, id))
            return false;
        start = end;
    }
    return true;
}

// --- WordPiece decoder ---------------------------------------------------------------------------

// Replace every `from` in s by `to`, left to right without rescanning (Rust's str::replace).
static bool replace_all(tok_bytes *s, const char *from, const char *to, tok_bytes *tmp) {
    size_t fl = strlen(from), tl = strlen(to);
    if (s->n < fl)
        return true;
    tmp->n = 0;
    size_t i = 0;
    bool changed = false;
    while (i < s->n) {
        if (i + fl <= s->n && !memcmp(s->v + i, from, fl)) {
            if (!xa_tok_bytes_push(tmp, to, tl))
                return false;
            i += fl;
            changed = true;
        } else {
            if (!xa_tok_bytes_push(tmp, s->v + i, 1))
                return false;
            i++;
        }
    }
    if (!changed)
        return true;
    tok_bytes t = *s;
    *s = *tmp;
    *tmp = t;
    return true;
}

static bool cleanup(tok_bytes *s, tok_bytes *tmp) {
    static const char *const pairs[][2] = {
        {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},
        {" ' ", "'"},  {" n't", "n't"}, {" 'm", "'m"},   {" do not", " don't"},
        {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        if (!replace_all(s, pairs[i][0], pairs[i][1], tmp))
            return false;
    return true;
}

bool xa_tok_wordpiece_decode(const xa_tokenizer *tok, const int32_t *ids, size_t n,
                             tok_bytes *out) {
    tok_bytes t = {0}, tmp = {0};
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        size_t len;
        const char *s = xa_tok_id_str(tok, ids[i], &len);
        t.n = 0;
        if (i > 0 && len >= tok->wp_prefix_len && !memcmp(s, tok->wp_prefix, tok->wp_prefix_len))
            ok = xa_tok_bytes_push(&t, s + tok->wp_prefix_len, len - tok->wp_prefix_len);
        else
            ok = (i == 0 || xa_tok_bytes_push(&t, " ", 1)) && xa_tok_bytes_push(&t, s, len);
        if (ok && tok->wp_cleanup)
            ok = cleanup(&t, &tmp);
        if (ok)
            ok = xa_tok_bytes_push(out, t.v, t.n);
    }
    free(t.v);
    free(tmp.v);
    return ok;
}
