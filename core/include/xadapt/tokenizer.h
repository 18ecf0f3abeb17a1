// Text tokenizers that give the same ids as Hugging Face's fast (Rust `tokenizers`) ones for
// BERT (WordPiece), RoBERTa (byte-level BPE) and CLIP (byte-level BPE with "</w>"). Loading reads a
// model directory (tokenizer.json, or vocab.txt, or vocab.json + merges.txt); encoding applies the
// special-token template, truncation and padding. Tensors and models live elsewhere.
#ifndef XADAPT_TOKENIZER_H
#define XADAPT_TOKENIZER_H

#include <stdbool.h>
#include <stdint.h>

#include "xadapt/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xa_tokenizer xa_tokenizer;

typedef enum xa_tokenizer_kind {
    XA_TOKENIZER_BERT = 1,    // BertNormalizer, BertPreTokenizer, WordPiece; [CLS] A [SEP] B [SEP]
    XA_TOKENIZER_ROBERTA = 2, // ByteLevel (GPT-2 regex), BPE; <s> A </s></s> B </s>
    XA_TOKENIZER_CLIP = 3,    // NFC, \s+ -> " ", lowercase, CLIP regex, ByteLevel, BPE "</w>"
} xa_tokenizer_kind;

typedef struct xa_tokenizer_info {
    xa_tokenizer_kind kind;
    int32_t vocab_size;       // 1 + the largest id, added tokens included
    int32_t model_max_length; // positions the encoder takes (512 for BERT/RoBERTa, 77 for CLIP)
    // Special ids looked up in the vocabulary; -1 when the vocabulary has none.
    int32_t unk_id, pad_id, bos_id, eos_id, mask_id; // bos = [CLS]/<s>, eos = [SEP]/</s>
    bool type_ids; // the model takes token_type_ids (BERT); RoBERTa and CLIP ignore them
} xa_tokenizer_info;

// Load the tokenizer of a model directory. config.json's model_type (bert, roberta, clip,
// clip_text_model) picks the kind when present; tokenizer.json is preferred, else vocab.txt
// (with tokenizer_config.json's do_lower_case), else vocab.json + merges.txt. Errors name the
// file and, for text files, the line: XA_EIO, XA_EFORMAT, XA_ENOTFOUND (no tokenizer files).
XA_NODISCARD xa_status xa_tokenizer_load_dir(xa_ctx *ctx, const char *dir, xa_tokenizer **out);
// One tokenizer.json. `kind` 0 infers the kind from the file's model and pre-tokenizer.
XA_NODISCARD xa_status xa_tokenizer_load_json(xa_ctx *ctx, const char *path, xa_tokenizer_kind kind,
                                              xa_tokenizer **out);
// A WordPiece vocab.txt (id = line number) with BERT's defaults and the given lowercasing.
XA_NODISCARD xa_status xa_tokenizer_load_vocab_txt(xa_ctx *ctx, const char *path, bool lowercase,
                                                   xa_tokenizer **out);
// A byte-level BPE from vocab.json + merges.txt; `kind` is XA_TOKENIZER_ROBERTA or
// XA_TOKENIZER_CLIP, or 0 to pick CLIP when the vocabulary has <|startoftext|>.
XA_NODISCARD xa_status xa_tokenizer_load_bpe(xa_ctx *ctx, const char *vocab_json,
                                             const char *merges_txt, xa_tokenizer_kind kind,
                                             xa_tokenizer **out);
void xa_tokenizer_free(xa_tokenizer *tok);

const xa_tokenizer_info *xa_tokenizer_info_get(const xa_tokenizer *tok);
// id of a token string (model vocabulary or added token), -1 when absent.
int32_t xa_tokenizer_token_id(const xa_tokenizer *tok, const char *token);
// The token string of an id, NULL when out of range; owned by the tokenizer.
const char *xa_tokenizer_id_token(const xa_tokenizer *tok, int32_t id);

typedef enum xa_truncation {
    XA_TRUNCATE_LONGEST_FIRST = 0, // a pair loses tokens from its longer side first (HF default)
    XA_TRUNCATE_ONLY_FIRST = 1,
    XA_TRUNCATE_ONLY_SECOND = 2,
} xa_truncation;

// Zero-initialized options are HF's defaults: special tokens, no truncation, no padding.
typedef struct xa_encode_opts {
    int32_t max_length;       // > 0: truncate to this many ids, special tokens included
    xa_truncation truncation; // how a pair is cut to max_length
    int32_t pad_to;           // > 0: pad to this length (batch: every row); 0: no padding
                              // (batch: pad to the longest row)
    int32_t pad_multiple;     // > 0: round the padded length up to a multiple of this
    bool no_special_tokens;   // leave out [CLS]/[SEP] (<s>, </s>, BOS/EOS)
} xa_encode_opts;

// One encoded text or pair. Zero-initialize; encoding into it again reuses its buffers.
typedef struct xa_encoding {
    int32_t *ids, *type_ids, *attention_mask, *special_mask; // len entries each
    int64_t len, cap;
} xa_encoding;
void xa_encoding_deinit(xa_encoding *enc);

// Encode `text` (and `pair` unless NULL): UTF-8 in, ids out. Special tokens written literally in
// the text ("[MASK]", "<mask>") become their ids as in HF. XA_EINVAL for invalid UTF-8 or a
// max_length shorter than the template's special tokens. The tokenizer keeps a word cache, so
// concurrent calls on one tokenizer need a lock (or one tokenizer per thread).
XA_NODISCARD xa_status xa_tokenizer_encode(xa_ctx *ctx, xa_tokenizer *tok, const char *text,
                                           const char *pair, const xa_encode_opts *opts,
                                           xa_encoding *out);

// A padded batch: rows * cols int32 matrices in row-major order, owned by the batch.
typedef struct xa_token_batch {
    int64_t rows, cols;
    int32_t *input_ids, *attention_mask, *token_type_ids;
    int32_t *special_mask; // 1 for template tokens, added special tokens and padding
    int64_t *lengths; // unpadded length of each row
} xa_token_batch;
void xa_token_batch_deinit(xa_token_batch *b);

// Encode n texts (pairs[i] is the second text of row i when `pairs` is not NULL) into one padded
// batch (right padding with the pad id, mask 0, type id 0). XA_ERANGE when a row is longer than
// opts->pad_to (set max_length to truncate); XA_EINVAL names the row of a bad text.
XA_NODISCARD xa_status xa_tokenizer_encode_batch(xa_ctx *ctx, xa_tokenizer *tok,
                                                 const char *const *texts, const char *const *pairs,
                                                 int64_t n, const xa_encode_opts *opts,
                                                 xa_token_batch *out);

// ids -> text as HF decodes: WordPiece joins with spaces and glues "##" pieces (with HF's
// clean-up of spaces before punctuation); byte-level BPE maps the symbols back to bytes (invalid
// UTF-8 becomes U+FFFD); CLIP turns "</w>" into spaces and strips. *out is malloc'ed, caller
// frees. XA_ERANGE for an id outside the vocabulary.
XA_NODISCARD xa_status xa_tokenizer_decode(xa_ctx *ctx, const xa_tokenizer *tok, const int32_t *ids,
                                           int64_t n, bool skip_special, char **out);

#ifdef __cplusplus
}
#endif
#endif
