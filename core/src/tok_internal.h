// Private to the tokenizer files: the tokenizer's layout, the vocabulary hash, growable arrays and
// the stages each file implements. tok_load.c reads the files; tokenizer.c owns added tokens,
// templates, the pipeline and Unicode helpers; tok_wordpiece.c the BERT normalizer,
// pre-tokenizer and WordPiece; tok_bpe.c the byte-level and CLIP splitters and BPE. Not installed.
#ifndef XADAPT_TOK_INTERNAL_H
#define XADAPT_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "xadapt/tokenizer.h"

// --- growable arrays (false when memory is exhausted; callers report XA_ENOMEM) ------------------

typedef struct tok_i32 {
    int32_t *v;
    size_t n, cap;
} tok_i32;

typedef struct tok_bytes {
    char *v;
    size_t n, cap;
} tok_bytes;

// A piece of the normalized code points [start, end); `space` asks for a leading " " that the
// byte-level pre-tokenizer's add_prefix_space added.
typedef struct tok_span {
    int32_t start, end;
    bool space;
} tok_span;

typedef struct tok_spans {
    tok_span *v;
    size_t n, cap;
} tok_spans;

bool xa_tok_i32_reserve(tok_i32 *a, size_t n);
bool xa_tok_i32_push(tok_i32 *a, int32_t x);
bool xa_tok_bytes_reserve(tok_bytes *b, size_t n);
bool xa_tok_bytes_push(tok_bytes *b, const char *s, size_t n);
bool xa_tok_bytes_push_cp(tok_bytes *b, int32_t cp); // UTF-8 encode one code point
bool xa_tok_spans_push(tok_spans *s, int32_t start, int32_t end, bool space);

// --- vocabulary: token string <-> id, open addressing over a string pool -------------------------

typedef struct tok_vocab {
    char *pool; // NUL-terminated strings back to back
    size_t pool_len, pool_cap;
    uint32_t *off, *len; // by id; off == UINT32_MAX for an id without a token
    int32_t n_ids;       // 1 + the largest id
    size_t ids_cap;
    int32_t *slots; // id or -1, n_slots a power of two
    size_t n_slots, count;
    size_t max_len; // longest token in bytes (bounds WordPiece's search)
} tok_vocab;

// 0 ok, -1 out of memory. A repeated string now maps to the new id (the last one wins, as in
// Python dicts and HF's maps).
int xa_tok_vocab_add(tok_vocab *v, const char *s, size_t n, int32_t id);
int32_t xa_tok_vocab_find(const tok_vocab *v, const char *s, size_t n);
const char *xa_tok_vocab_str(const tok_vocab *v, int32_t id, size_t *n);
void xa_tok_vocab_deinit(tok_vocab *v);

// --- pipeline stages -----------------------------------------------------------------------------

typedef enum tok_norm_op {
    NORM_BERT, // BertNormalizer (tok_wordpiece.c)
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_LOWERCASE,
    NORM_STRIP_ACCENTS,  // drop Mn (HF's StripAccents; used after NFD)
    NORM_REPLACE_SPACES, // Replace(Regex \s+ -> content)
    NORM_REPLACE,        // Replace(String pattern -> content)
} tok_norm_op;

typedef struct tok_norm {
    tok_norm_op op;
    bool clean_text, chinese, strip_accents, lowercase; // NORM_BERT
    int32_t *pattern, *content;                         // NORM_REPLACE*, code points
    size_t n_pattern, n_content;
} tok_norm;

typedef enum tok_pre_op {
    PRE_BERT,      // split on whitespace, isolate punctuation (tok_wordpiece.c)
    PRE_CLIP,      // CLIP's Split regex, matches kept, whitespace removed (tok_bpe.c)
    PRE_BYTELEVEL, // GPT-2 regex (use_regex), add_prefix_space; bytes map at the model (tok_bpe.c)
    PRE_WHITESPACE_SPLIT, // split on whitespace only
} tok_pre_op;

typedef struct tok_pre {
    tok_pre_op op;
    bool use_regex, add_prefix_space;
} tok_pre;

// An added token (HF AddedToken): matched in the raw text (normalized == false) or in the
// normalized text (normalized == true, against `norm`, its content run through the normalizer).
typedef struct tok_added {
    char *content;
    size_t len;
    int32_t *norm;
    size_t n_norm;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tok_added;

#define TOK_TPL_MAX 16
#define TOK_TPL_IDS 8

typedef struct tok_tpl_item {
    int seq; // -1: special ids, 0: sequence A, 1: sequence B
    int type_id;
    int n_ids;
    int32_t ids[TOK_TPL_IDS];
} tok_tpl_item;

typedef struct tok_template {
    int n;
    tok_tpl_item items[TOK_TPL_MAX];
} tok_template;

typedef enum tok_model { MODEL_WORDPIECE = 1, MODEL_BPE = 2 } tok_model;

typedef struct tok_bpe_cache {
    uint32_t *slots; // entry index + 1, 0 empty
    size_t n_slots, count;
    tok_bytes keys;  // key bytes back to back
    tok_i32 vals;    // ids back to back
    uint32_t *entry; // per entry: key off, key len, val off, val len
    size_t n_entry, entry_cap;
} tok_bpe_cache;

typedef struct tok_merges {
    uint64_t *keys; // (a << 32 | b) + 1, 0 empty
    int32_t *rank, *merged;
    size_t n_slots, count;
} tok_merges;

struct xa_tokenizer {
    xa_tokenizer_info info;
    tok_model model;
    tok_vocab vocab;
    tok_norm *norms;
    int n_norms;
    tok_pre *pres;
    int n_pres;
    tok_added *added;
    int n_added;
    bool any_raw_added, any_norm_added;
    tok_template single, pair;
    bool has_template;
    int32_t unk_id; // the model's unk token, -1 when none (BPE may have none)
    // WordPiece
    char wp_prefix[32];
    size_t wp_prefix_len;
    int32_t wp_max_chars;
    bool wp_cleanup; // WordPiece decoder clean-up of spaces before punctuation
    // BPE
    tok_merges merges;
    char eow[32]; // end_of_word_suffix ("</w>" for CLIP)
    size_t eow_len;
    int32_t byte_id[256], byte_eow_id[256]; // ids of the byte symbols, without/with eow
    tok_bpe_cache cache;
    // scratch reused across calls
    tok_i32 cps, cps2, cps3, seq_a, seq_b;
    tok_spans spans, spans2;
    tok_bytes word, word2, ubuf;
    tok_i32 sym, heap; // BPE work arrays
};

// The string of an id: the model's vocabulary, then the added tokens; "" when neither has it.
const char *xa_tok_id_str(const xa_tokenizer *tok, int32_t id, size_t *len);

// Runs the normalizers over tok->cps; *res is tok->cps or tok->cps2 (tokenizer.c).
bool xa_tok_normalize(xa_tokenizer *tok, tok_i32 **res);

// --- Unicode helpers (tokenizer.c) ---------------------------------------------------------------

bool xa_tok_is_whitespace(int32_t c); // White_Space: Rust char::is_whitespace, Oniguruma \s
bool xa_tok_is_letter(int32_t c);     // \p{L}
bool xa_tok_is_number(int32_t c);     // \p{N}
// Append c lowercased as Rust's char::to_lowercase does (U+0130 becomes two code points).
bool xa_tok_lower_push(tok_i32 *out, int32_t c);
// The code point at byte i of s[0..n) (-1 when invalid); *len its length in bytes (1 if invalid).
int32_t xa_tok_utf8_at(const char *s, size_t n, size_t i, size_t *len);
// NFC/NFD/NFKC/NFKD of in[0..n) appended to out; false when memory is exhausted.
bool xa_tok_unicode_form(tok_norm_op form, const int32_t *in, size_t n, tok_i32 *out,
                         tok_bytes *scratch);

// --- stages implemented by the model files -------------------------------------------------------

// tok_wordpiece.c
bool xa_tok_norm_bert(const tok_norm *nm, const int32_t *in, size_t n, tok_i32 *out, tok_i32 *tmp,
                      tok_bytes *scratch);
bool xa_tok_pre_bert(const int32_t *cps, const tok_spans *in, tok_spans *out);
bool xa_tok_pre_whitespace(const int32_t *cps, const tok_spans *in, tok_spans *out);
// Append the WordPiece ids of one word (UTF-8) to out.
bool xa_tok_wordpiece(xa_tokenizer *tok, const char *w, size_t n, tok_i32 *out);
// Append the decoded text of tokens ids[0..n) (HF WordPiece decoder).
bool xa_tok_wordpiece_decode(const xa_tokenizer *tok, const int32_t *ids, size_t n, tok_bytes *out);

// tok_bpe.c
bool xa_tok_pre_bytelevel(const tok_pre *p, const int32_t *cps, const tok_spans *in,
                          tok_spans *out);
bool xa_tok_pre_clip(const int32_t *cps, const tok_spans *in, tok_spans *out);
// Append the BPE ids of one pre-token (raw UTF-8 bytes, mapped to byte symbols here) to out.
bool xa_tok_bpe(xa_tokenizer *tok, const char *w, size_t n, tok_i32 *out);
// Build byte_id/byte_eow_id from the vocabulary (after vocab and eow are set).
void xa_tok_bpe_bytes_init(xa_tokenizer *tok);
// 0 ok, -1 out of memory. A pair seen again keeps the later rank (HF's map does the same).
int xa_tok_merges_add(tok_merges *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
void xa_tok_merges_deinit(tok_merges *m);
void xa_tok_bpe_cache_deinit(tok_bpe_cache *c);
// The UTF-8 of the byte symbol for byte b (bytes_to_unicode); returns its length (1 or 2).
int xa_tok_byte_symbol(uint8_t b, char out[4]);
// Byte-level decode of ids[0..n) (HF ByteLevel decoder), appended as raw bytes.
bool xa_tok_bytelevel_decode(const xa_tokenizer *tok, const int32_t *ids, size_t n, tok_bytes *out);

#endif
