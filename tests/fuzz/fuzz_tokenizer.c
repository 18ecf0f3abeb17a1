// libFuzzer harness for the tokenizer loaders and the encode/decode paths behind them. An input
// is: one byte choosing the loader, the file(s) it reads, then the text to encode, with NUL
// bytes between the parts:
//   0  tokenizer.json, kind inferred       2  vocab.json NUL merges.txt (kind inferred)
//   1  vocab.txt (lowercase when byte & 4)  3  tokenizer.json loaded as BERT, RoBERTa or CLIP
// Files are memfds (nothing touches the disk). Refusals are the expected outcome; a crash, a
// sanitizer report, a leak or a broken promise of an accepted tokenizer (ids in the vocabulary,
// masks and lengths consistent, every id decodable) is a finding. Built by tests/fuzz/meson.build.
#include "fuzz_util.h"

#include <string.h>

#include "xadapt/tokenizer.h"

static int fds[2] = {-1, -1};
static char paths[2][32];
static xa_ctx *ctx;

// Split [*p, end) at the next NUL: returns the part, advances *p past the NUL.
static size_t part(const uint8_t **p, const uint8_t *end) {
    const uint8_t *z = memchr(*p, 0, (size_t)(end - *p));
    size_t n = (size_t)((z ? z : end) - *p);
    *p = z ? z + 1 : end;
    return n;
}

static void check_encoding(const xa_tokenizer *tok, const xa_encoding *e, int32_t max_length) {
    int32_t V = xa_tokenizer_info_get(tok)->vocab_size;
    check(max_length <= 0 || e->len <= max_length, "truncated to max_length");
    for (int64_t i = 0; i < e->len; i++) {
        check(e->ids[i] >= 0 && e->ids[i] < V, "id inside the vocabulary");
        check(e->attention_mask[i] == 1, "no padding without pad_to");
        check(e->special_mask[i] == 0 || e->special_mask[i] == 1, "special mask is 0/1");
    }
    char *text = NULL;
    check(xa_tokenizer_decode(ctx, tok, e->ids, e->len, true, &text) == XA_OK && text,
          "every encoded id decodes");
    free(text);
}

static void exercise(xa_tokenizer *tok, const char *text) {
    xa_encoding e = {0};
    if (xa_tokenizer_encode(ctx, tok, text, NULL, NULL, &e) == XA_OK)
        check_encoding(tok, &e, 0);
    xa_encode_opts o = {.max_length = 12, .truncation = XA_TRUNCATE_LONGEST_FIRST};
    if (xa_tokenizer_encode(ctx, tok, text, text, &o, &e) == XA_OK)
        check_encoding(tok, &e, o.max_length);
    xa_encoding_deinit(&e);
    xa_error_clear(ctx);

    const char *texts[2] = {text, ""};
    xa_token_batch b = {0};
    xa_encode_opts bo = {.max_length = 16, .pad_multiple = 8};
    if (xa_tokenizer_encode_batch(ctx, tok, texts, NULL, 2, &bo, &b) == XA_OK) {
        check(b.rows == 2 && b.cols % 8 == 0, "batch shape");
        for (int64_t r = 0; r < b.rows; r++) {
            check(b.lengths[r] >= 0 && b.lengths[r] <= b.cols && b.lengths[r] <= 16, "row length");
            for (int64_t c = 0; c < b.cols; c++)
                check(b.attention_mask[r * b.cols + c] == (c < b.lengths[r]), "mask = length");
        }
    }
    xa_token_batch_deinit(&b);
    xa_error_clear(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (fds[0] < 0) {
        fuzz_name = "fuzz_tokenizer";
        ctx = xa_ctx_new();
        check(ctx != NULL, "setup");
        fuzz_ctx = ctx;
        for (int i = 0; i < 2; i++)
            fds[i] = fuzz_memfd(i ? "fuzz.merges" : "fuzz.vocab", paths[i]);
    }
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const uint8_t *p = data + 1, *end = data + size, *f0 = p;
    size_t n0 = part(&p, end), n1 = 0;
    const uint8_t *f1 = p;
    if ((mode & 3) == 2)
        n1 = part(&p, end);
    const uint8_t *t0 = p;
    char *text = strndup((const char *)t0, part(&p, end));
    check(text != NULL, "strndup");

    fuzz_put(fds[0], f0, n0);
    fuzz_put(fds[1], f1, n1);
    xa_tokenizer *tok = NULL;
    xa_status st;
    switch (mode & 3) {
    case 0:
        st = xa_tokenizer_load_json(ctx, paths[0], 0, &tok);
        break;
    case 1:
        st = xa_tokenizer_load_vocab_txt(ctx, paths[0], mode & 4, &tok);
        break;
    case 2:
        st = xa_tokenizer_load_bpe(ctx, paths[0], paths[1], 0, &tok);
        break;
    default:
        st = xa_tokenizer_load_json(ctx, paths[0], (xa_tokenizer_kind)(1 + (mode >> 2) % 3), &tok);
        break;
    }
    if (st == XA_OK) {
        check(tok != NULL, "a tokenizer on success");
        exercise(tok, text);
        xa_tokenizer_free(tok);
    } else {
        check(tok == NULL, "no tokenizer on failure");
        check(xa_errmsg(ctx)[0] != '\0', "a refusal says why");
    }
    xa_error_clear(ctx);
    free(text);
    return 0;
}
