// Tokenizers against Hugging Face's Rust `tokenizers`: every corpus line's ids for BERT, RoBERTa
// and CLIP (expected files written by tests/golden/tokenizer/make_golden.js), every loader format
// against the others, templates, truncation, padding, decoding, malformed files and the CLI.
// Real vocabularies come from ../shared/tokenizers; tests that need them skip when it is absent.
#include <criterion/criterion.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support.h"
#include "xadapt/tokenizer.h"

// --- helpers -------------------------------------------------------------------------------------

static char *tmpdir(void) {
    const char *d = make_tmpdir();
    cr_assert(d, "cannot make a temporary directory");
    return strdup(d);
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void put(const char *dir, const char *name, const char *text) {
    char *p = join(dir, name);
    cr_assert(write_file(p, text, strlen(text)), "cannot write %s", p);
    free(p);
}

static const char *shared_or_skip(const char *rel) {
    const char *p = shared_path(rel);
    if (!p)
        cr_skip_test("../shared/%s is absent: the real tokenizer files are needed", rel);
    return p;
}

// The CLIP files HF derives from bpe_simple_vocab_16e6.txt.gz, made by tools/clip-vocab.py.
static char *clip_dir(bool tokenizer_json) {
    const char *gz = shared_or_skip("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz");
    char *dir = tmpdir(), cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' --source '%s'%s", src_path("tools/clip-vocab.py"),
             dir, gz, tokenizer_json ? " --tokenizer-json" : "");
    int rc = system(cmd);
    if (rc != 0)
        cr_skip_test("python3 tools/clip-vocab.py failed (status %d): python3 is needed", rc);
    return dir;
}

typedef struct golden {
    char **corpus;
    int n_corpus;
    cJSON **lines; // expected file, meta line dropped
    int n_lines;
} golden;

static golden golden_load(const char *name) {
    golden g = {0};
    char rel[256];
    size_t n;
    char *text = read_file(src_path("tests/golden/tokenizer/corpus.jsonl"), &n);
    cr_assert(text, "cannot read tests/golden/tokenizer/corpus.jsonl");
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cr_assert(cJSON_IsString(j), "corpus.jsonl: line %d is not a JSON string", g.n_corpus + 1);
        g.corpus = realloc(g.corpus, (size_t)(g.n_corpus + 1) * sizeof *g.corpus);
        g.corpus[g.n_corpus++] = strdup(j->valuestring);
        cJSON_Delete(j);
    }
    free(text);
    snprintf(rel, sizeof rel, "tests/golden/tokenizer/expected_%s.jsonl", name);
    text = read_file(src_path(rel), &n);
    cr_assert(text, "cannot read %s", rel);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cr_assert(j, "%s: bad line %d", rel, g.n_lines + 1);
        if (cJSON_GetObjectItem(j, "meta")) {
            cJSON_Delete(j);
            continue;
        }
        g.lines = realloc(g.lines, (size_t)(g.n_lines + 1) * sizeof *g.lines);
        g.lines[g.n_lines++] = j;
    }
    free(text);
    return g;
}

static void golden_free(golden *g) {
    for (int i = 0; i < g->n_corpus; i++)
        free(g->corpus[i]);
    for (int i = 0; i < g->n_lines; i++)
        cJSON_Delete(g->lines[i]);
    free(g->corpus);
    free(g->lines);
}

static bool same_ids(const cJSON *want, const int32_t *got, int64_t n) {
    if (cJSON_GetArraySize(want) != n)
        return false;
    int64_t i = 0;
    for (const cJSON *e = want->child; e; e = e->next, i++)
        if ((int32_t)e->valuedouble != got[i])
            return false;
    return true;
}

static void show_ids(char *buf, size_t cap, const int32_t *ids, int64_t n) {
    size_t at = 0;
    buf[0] = '\0';
    for (int64_t i = 0; i < n && at + 16 < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, i ? " %d" : "%d", (int)ids[i]);
}

// Encode every corpus line and compare all ids (and the decoded text) with HF's.
static void check_corpus(xa_tokenizer *tok, const char *name) {
    golden g = golden_load(name);
    xa_ctx *ctx = xa_ctx_new();
    xa_encoding enc = {0};
    int checked = 0, id_bad = 0, text_bad = 0;
    for (int k = 0; k < g.n_lines; k++) {
        const cJSON *line = cJSON_GetObjectItem(g.lines[k], "line");
        if (!line)
            continue;
        int i = (int)line->valuedouble;
        cr_assert(i >= 0 && i < g.n_corpus);
        const cJSON *want = cJSON_GetObjectItem(g.lines[k], "ids");
        checked++;
        xa_status st = xa_tokenizer_encode(ctx, tok, g.corpus[i], NULL, NULL, &enc);
        cr_assert_eq(st, XA_OK, "%s: corpus line %d: %s", name, i + 1, xa_errmsg(ctx));
        if (!same_ids(want, enc.ids, enc.len)) {
            char got[2048], *exp = cJSON_PrintUnformatted(want);
            show_ids(got, sizeof got, enc.ids, enc.len);
            if (++id_bad <= 10)
                cr_log_error("%s: corpus line %d %s:\n  want [%s]\n  got  [%s]", name, i + 1,
                             cJSON_PrintUnformatted(cJSON_CreateString(g.corpus[i])), exp, got);
            free(exp);
            continue;
        }
        char *text = NULL;
        st = xa_tokenizer_decode(ctx, tok, enc.ids, enc.len, true, &text);
        cr_assert_eq(st, XA_OK, "%s: decoding line %d: %s", name, i + 1, xa_errmsg(ctx));
        const char *dec = cJSON_GetObjectItem(g.lines[k], "decoded")->valuestring;
        if (strcmp(text, dec) && ++text_bad <= 10)
            cr_log_error("%s: corpus line %d decodes to '%s', HF gives '%s'", name, i + 1, text,
                         dec);
        free(text);
    }
    cr_log_info("%s: %d of %d corpus lines give HF's ids; %d decode as HF does", name,
                checked - id_bad, checked, checked - id_bad - text_bad);
    cr_expect_eq(id_bad, 0, "%s: %d of %d corpus lines differ from HF's ids", name, id_bad,
                 checked);
    cr_expect_eq(text_bad, 0, "%s: %d corpus lines decode differently", name, text_bad);
    cr_expect_gt(checked, 500, "%s: the expected file covers only %d lines", name, checked);
    xa_encoding_deinit(&enc);
    xa_ctx_free(ctx);
    golden_free(&g);
}

static xa_encode_opts case_opts(const cJSON *c) {
    xa_encode_opts o = {0};
    const char *how = cJSON_GetObjectItem(c, "truncation")->valuestring;
    o.max_length = (int32_t)cJSON_GetObjectItem(c, "max_length")->valuedouble;
    o.pad_to = (int32_t)cJSON_GetObjectItem(c, "pad_to")->valuedouble;
    o.pad_multiple = (int32_t)cJSON_GetObjectItem(c, "pad_multiple")->valuedouble;
    o.no_special_tokens = cJSON_IsTrue(cJSON_GetObjectItem(c, "no_special"));
    o.truncation = !strcmp(how, "only_first")    ? XA_TRUNCATE_ONLY_FIRST
                   : !strcmp(how, "only_second") ? XA_TRUNCATE_ONLY_SECOND
                                                 : XA_TRUNCATE_LONGEST_FIRST;
    return o;
}

// Pairs, truncation, padding and batches, each compared with HF's ids, type ids and mask.
static void check_cases(xa_tokenizer *tok, const char *name) {
    golden g = golden_load(name);
    xa_ctx *ctx = xa_ctx_new();
    xa_encoding enc = {0};
    int n = 0;
    for (int k = 0; k < g.n_lines; k++) {
        const cJSON *c = g.lines[k], *kind = cJSON_GetObjectItem(c, "case");
        if (!kind)
            continue;
        n++;
        xa_encode_opts o = case_opts(c);
        char *what = cJSON_PrintUnformatted(c);
        if (strlen(what) > 300)
            strcpy(what + 297, "...");
        if (!strcmp(kind->valuestring, "encode")) {
            const cJSON *b = cJSON_GetObjectItem(c, "b");
            xa_status st = xa_tokenizer_encode(ctx, tok, cJSON_GetObjectItem(c, "a")->valuestring,
                                               cJSON_IsString(b) ? b->valuestring : NULL, &o, &enc);
            if (cJSON_GetObjectItem(c, "error")) {
                cr_expect_neq(st, XA_OK, "%s: HF refuses %s, xadapt accepts it", name, what);
            } else {
                cr_assert_eq(st, XA_OK, "%s: %s: %s", name, what, xa_errmsg(ctx));
                cr_expect(same_ids(cJSON_GetObjectItem(c, "ids"), enc.ids, enc.len),
                          "%s: ids differ for %s", name, what);
                cr_expect(same_ids(cJSON_GetObjectItem(c, "type_ids"), enc.type_ids, enc.len),
                          "%s: type ids differ for %s", name, what);
                cr_expect(
                    same_ids(cJSON_GetObjectItem(c, "attention_mask"), enc.attention_mask, enc.len),
                    "%s: attention mask differs for %s", name, what);
            }
        } else {
            const cJSON *texts = cJSON_GetObjectItem(c, "texts");
            int rows = cJSON_GetArraySize(texts);
            const char **a = calloc((size_t)rows, sizeof *a), **b = calloc((size_t)rows, sizeof *b);
            bool pairs = false;
            for (int r = 0; r < rows; r++) {
                const cJSON *t = cJSON_GetArrayItem(texts, r);
                pairs |= cJSON_IsArray(t);
                a[r] = cJSON_IsArray(t) ? cJSON_GetArrayItem(t, 0)->valuestring : t->valuestring;
                b[r] = cJSON_IsArray(t) ? cJSON_GetArrayItem(t, 1)->valuestring : NULL;
            }
            xa_token_batch batch;
            xa_status st =
                xa_tokenizer_encode_batch(ctx, tok, a, pairs ? b : NULL, rows, &o, &batch);
            cr_assert_eq(st, XA_OK, "%s: %s: %s", name, what, xa_errmsg(ctx));
            cr_assert_eq(batch.rows, rows);
            for (int r = 0; r < rows; r++) {
                int64_t off = r * batch.cols;
                cr_expect(same_ids(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "ids"), r),
                                   batch.input_ids + off, batch.cols),
                          "%s: batch row %d ids differ for %s", name, r, what);
                cr_expect(same_ids(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "type_ids"), r),
                                   batch.token_type_ids + off, batch.cols),
                          "%s: batch row %d type ids differ for %s", name, r, what);
                cr_expect(same_ids(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "attention_mask"), r),
                                   batch.attention_mask + off, batch.cols),
                          "%s: batch row %d mask differs for %s", name, r, what);
            }
            xa_token_batch_deinit(&batch);
            free(a);
            free(b);
        }
        free(what);
    }
    cr_expect_gt(n, 20, "%s: only %d cases in the expected file", name, n);
    xa_encoding_deinit(&enc);
    xa_ctx_free(ctx);
    golden_free(&g);
}

static xa_tokenizer *load_dir_ok(xa_ctx *ctx, const char *dir) {
    xa_tokenizer *tok = NULL;
    xa_status st = xa_tokenizer_load_dir(ctx, dir, &tok);
    cr_assert_eq(st, XA_OK, "loading %s: %s", dir, xa_errmsg(ctx));
    return tok;
}

// --- BERT ----------------------------------------------------------------------------------------

Test(tokenizer_bert, matches_hf_on_every_corpus_line) {
    const char *dir = shared_or_skip("tokenizers/bert-base-uncased");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    const xa_tokenizer_info *info = xa_tokenizer_info_get(tok);
    cr_expect_eq(info->kind, XA_TOKENIZER_BERT);
    cr_expect_eq(info->vocab_size, 30522);
    cr_expect_eq(info->pad_id, 0);
    cr_expect_eq(info->unk_id, 100);
    cr_expect_eq(info->bos_id, 101);
    cr_expect_eq(info->eos_id, 102);
    cr_expect_eq(info->mask_id, 103);
    cr_expect_eq(info->model_max_length, 512);
    cr_expect(info->type_ids);
    check_corpus(tok, "bert");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

Test(tokenizer_bert, vocab_txt_gives_the_same_ids_as_tokenizer_json) {
    const char *vocab = shared_or_skip("tokenizers/bert-base-uncased/vocab.txt");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = NULL;
    cr_assert_eq(xa_tokenizer_load_vocab_txt(ctx, vocab, true, &tok), XA_OK, "%s", xa_errmsg(ctx));
    check_corpus(tok, "bert");
    xa_tokenizer_free(tok);
    // A directory with only vocab.txt and tokenizer_config.json takes the same path.
    char *dir = tmpdir(), *copy = join(dir, "vocab.txt");
    size_t n;
    char *data = read_file(vocab, &n);
    cr_assert(write_file(copy, data, n));
    put(dir, "tokenizer_config.json", "{\"do_lower_case\": true, \"model_max_length\": 512}");
    tok = load_dir_ok(ctx, dir);
    check_cases(tok, "bert");
    xa_tokenizer_free(tok);
    free(data);
    free(copy);
    remove_tree(dir);
    free(dir);
    xa_ctx_free(ctx);
}

Test(tokenizer_bert, pairs_truncation_and_padding_match_hf) {
    const char *dir = shared_or_skip("tokenizers/bert-base-uncased");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    check_cases(tok, "bert");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

Test(tokenizer_bert, cased_vocab_txt_keeps_case_and_accents) {
    // bert-base-uncased's vocabulary has no "Hello"; a cased tokenizer must not find "hello".
    const char *vocab = shared_or_skip("tokenizers/bert-base-uncased/vocab.txt");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = NULL;
    xa_encoding enc = {0};
    cr_assert_eq(xa_tokenizer_load_vocab_txt(ctx, vocab, false, &tok), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, "hello Hello", NULL, NULL, &enc), XA_OK);
    cr_assert_geq(enc.len, 4);
    cr_expect_eq(enc.ids[1], 7592); // hello
    cr_expect_neq(enc.ids[2], 7592);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

// --- RoBERTa -------------------------------------------------------------------------------------

Test(tokenizer_roberta, matches_hf_on_every_corpus_line) {
    const char *dir = shared_or_skip("tokenizers/roberta-base");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    const xa_tokenizer_info *info = xa_tokenizer_info_get(tok);
    cr_expect_eq(info->kind, XA_TOKENIZER_ROBERTA);
    cr_expect_eq(info->vocab_size, 50265);
    cr_expect_eq(info->bos_id, 0);
    cr_expect_eq(info->pad_id, 1);
    cr_expect_eq(info->eos_id, 2);
    cr_expect_eq(info->unk_id, 3);
    cr_expect_eq(info->mask_id, 50264);
    cr_expect(!info->type_ids);
    check_corpus(tok, "roberta");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

Test(tokenizer_roberta, vocab_json_and_merges_txt_give_the_same_ids) {
    const char *vocab = shared_or_skip("tokenizers/roberta-base/vocab.json");
    char merges[4096];
    snprintf(merges, sizeof merges, "%s", shared_or_skip("tokenizers/roberta-base/merges.txt"));
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = NULL;
    cr_assert_eq(xa_tokenizer_load_bpe(ctx, vocab, merges, XA_TOKENIZER_ROBERTA, &tok), XA_OK, "%s",
                 xa_errmsg(ctx));
    check_corpus(tok, "roberta");
    check_cases(tok, "roberta");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

Test(tokenizer_roberta, pairs_truncation_and_padding_match_hf) {
    const char *dir = shared_or_skip("tokenizers/roberta-base");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    check_cases(tok, "roberta");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

static void expect_decode(xa_ctx *ctx, xa_tokenizer *tok, const int32_t *ids, int64_t n, bool skip,
                          const char *want) {
    char *text = NULL;
    cr_assert_eq(xa_tokenizer_decode(ctx, tok, ids, n, skip, &text), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_str_eq(text, want);
    free(text);
}

Test(tokenizer_roberta, decodes_broken_utf8_and_specials_as_hf_does) {
    // Expected strings from HF's Tokenizer.decode on roberta-base (tokenizers 0.23.2): bytes that
    // are no valid UTF-8 become one U+FFFD per maximal invalid sequence (Rust's from_utf8_lossy).
    const char *dir = shared_or_skip("tokenizers/roberta-base");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    expect_decode(ctx, tok, (int32_t[]){3849}, 1, false, "\xef\xbf\xbd");         // C3
    expect_decode(ctx, tok, (int32_t[]){48753, 18537}, 2, false, "\xef\xbf\xbd"); // E4 B8
    expect_decode(ctx, tok, (int32_t[]){48753, 18537, 102}, 3, false,
                  "\xef\xbf\xbd"
                  "a");
    expect_decode(ctx, tok, (int32_t[]){49585, 4333, 102}, 3, false,
                  "\xef\xbf\xbd"
                  "a");
    expect_decode(ctx, tok, (int32_t[]){1437, 50264, 102}, 3, false, " <mask>a");
    expect_decode(ctx, tok, (int32_t[]){1437, 50264, 102}, 3, true, " a");
    expect_decode(ctx, tok, (int32_t[]){0, 102, 2}, 3, false, "<s>a</s>");
    expect_decode(ctx, tok, (int32_t[]){0, 102, 2}, 3, true, "a");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

Test(tokenizer_roberta, merges_as_pairs_read_like_merges_as_strings) {
    // Newer `tokenizers` writes merges as ["a", "b"]; rewrite roberta-base's file that way.
    const char *path = shared_or_skip("tokenizers/roberta-base/tokenizer.json");
    size_t n;
    char *text = read_file(path, &n);
    cJSON *root = cJSON_Parse(text);
    cr_assert(root);
    cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "merges");
    cJSON *pairs = cJSON_CreateArray();
    for (cJSON *m = merges->child; m; m = m->next) {
        char *s = strdup(m->valuestring), *sp = strchr(s, ' ');
        cr_assert(sp);
        *sp = '\0';
        cJSON *p = cJSON_CreateArray();
        cJSON_AddItemToArray(p, cJSON_CreateString(s));
        cJSON_AddItemToArray(p, cJSON_CreateString(sp + 1));
        cJSON_AddItemToArray(pairs, p);
        free(s);
    }
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "model"), "merges", pairs);
    char *dir = tmpdir(), *out = cJSON_PrintUnformatted(root);
    put(dir, "tokenizer.json", out);
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    check_corpus(tok, "roberta");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
    free(out);
    free(text);
    cJSON_Delete(root);
    remove_tree(dir);
    free(dir);
}

// --- CLIP ----------------------------------------------------------------------------------------

Test(tokenizer_clip, matches_hf_on_every_corpus_line) {
    char *dir = clip_dir(false); // vocab.json + merges.txt only, as HF's CLIPTokenizer reads them
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    const xa_tokenizer_info *info = xa_tokenizer_info_get(tok);
    cr_expect_eq(info->kind, XA_TOKENIZER_CLIP);
    cr_expect_eq(info->vocab_size, 49408);
    cr_expect_eq(info->bos_id, 49406);
    cr_expect_eq(info->eos_id, 49407);
    cr_expect_eq(info->pad_id, 49407);
    cr_expect_eq(info->model_max_length, 77);
    check_corpus(tok, "clip");
    check_cases(tok, "clip");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_clip, tokenizer_json_gives_the_same_ids) {
    char *dir = clip_dir(true);
    char *path = join(dir, "tokenizer.json");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = NULL;
    cr_assert_eq(xa_tokenizer_load_json(ctx, path, 0, &tok), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_eq(xa_tokenizer_info_get(tok)->kind, XA_TOKENIZER_CLIP);
    check_corpus(tok, "clip");
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
    free(path);
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_clip, a_model_config_names_the_kind) {
    char *dir = clip_dir(false);
    put(dir, "config.json",
        "{\"model_type\": \"clip\", \"text_config\": "
        "{\"max_position_embeddings\": 77}}");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    xa_encoding enc = {0};
    cr_expect_eq(xa_tokenizer_info_get(tok)->kind, XA_TOKENIZER_CLIP);
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, "a photo of a cat", NULL, NULL, &enc), XA_OK);
    // openai/clip-vit-base-patch32's well-known ids for this prompt
    int32_t want[] = {49406, 320, 1125, 539, 320, 2368, 49407};
    cr_assert_eq(enc.len, 7);
    cr_expect_arr_eq(enc.ids, want, sizeof want);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    // a BERT config beside BPE files is a contradiction, reported as such
    put(dir, "config.json", "{\"model_type\": \"bert\"}");
    tok = NULL;
    cr_expect_eq(xa_tokenizer_load_dir(ctx, dir, &tok), XA_EFORMAT);
    cr_expect(strstr(xa_errmsg(ctx), "vocab.json"), "message: %s", xa_errmsg(ctx));
    cr_expect_null(tok);
    xa_ctx_free(ctx);
    remove_tree(dir);
    free(dir);
}

// --- small hand-made vocabularies (no shared files needed) ---------------------------------------

static const char *const WP_VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\nhello\n"
                                    "!\n,\n##s\nworld\n";

static void expect_ids(xa_ctx *ctx, xa_tokenizer *tok, const char *text, const char *pair,
                       const int32_t *want, int64_t n) {
    xa_encoding enc = {0};
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, text, pair, NULL, &enc), XA_OK, "%s",
                 xa_errmsg(ctx));
    char got[512];
    show_ids(got, sizeof got, enc.ids, enc.len);
    cr_expect(enc.len == n && !memcmp(enc.ids, want, (size_t)n * sizeof *want), "'%s': got [%s]",
              text, got);
    xa_encoding_deinit(&enc);
}

Test(tokenizer_wordpiece, greedy_longest_match_with_continuations) {
    char *dir = tmpdir();
    put(dir, "vocab.txt", WP_VOCAB);
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    expect_ids(ctx, tok, "UnAffable hello!", NULL, (int32_t[]){2, 5, 6, 7, 8, 9, 3}, 7);
    // a word with a piece outside the vocabulary is [UNK] as a whole
    expect_ids(ctx, tok, "unaffablex world", NULL, (int32_t[]){2, 1, 12, 3}, 4);
    // the literal [MASK] is an added token, [mask] is not
    expect_ids(ctx, tok, "hello[MASK]", NULL, (int32_t[]){2, 8, 4, 3}, 4);
    // pair template: [CLS] A [SEP] B [SEP]
    xa_encoding enc = {0};
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, "hello", "world", NULL, &enc), XA_OK);
    int32_t ids[] = {2, 8, 3, 12, 3}, types[] = {0, 0, 0, 1, 1};
    cr_assert_eq(enc.len, 5);
    cr_expect_arr_eq(enc.ids, ids, sizeof ids);
    cr_expect_arr_eq(enc.type_ids, types, sizeof types);
    char *text = NULL;
    cr_assert_eq(
        xa_tokenizer_decode(ctx, tok, (int32_t[]){2, 5, 6, 7, 10, 12, 9, 3}, 8, true, &text),
        XA_OK);
    cr_expect_str_eq(text, "unaffable, world!");
    free(text);
    cr_expect_eq(xa_tokenizer_decode(ctx, tok, (int32_t[]){99}, 1, true, &text), XA_ERANGE);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_wordpiece, words_over_max_input_chars_are_unk) {
    char *dir = tmpdir();
    put(dir, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n##a\n");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    char word[102];
    memset(word, 'a', 101);
    word[100] = '\0';
    xa_encoding enc = {0};
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, word, NULL, NULL, &enc), XA_OK);
    cr_expect_eq(enc.len, 102, "100 characters are still split, got %lld ids", (long long)enc.len);
    word[100] = 'a';
    word[101] = '\0';
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, word, NULL, NULL, &enc), XA_OK);
    int32_t want[] = {2, 1, 3};
    cr_assert_eq(enc.len, 3);
    cr_expect_arr_eq(enc.ids, want, sizeof want);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
    remove_tree(dir);
    free(dir);
}

// A byte-level BPE small enough to work out by hand: "lower" -> l o w e r -> lo w e r -> low e r
// -> low er; " low" -> Ġ l o w -> Ġ lo w -> Ġ low -> Ġlow.
static const char *const BPE_VOCAB =
    "{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"l\": 4, \"o\": 5, \"w\": 6, \"e\": 7, "
    "\"r\": 8, \"\\u0120\": 9, \"lo\": 10, \"low\": 11, \"er\": 12, \"\\u0120low\": 13, "
    "\"\\u0120l\": 14, \"<mask>\": 15}";

static void write_tiny_bpe(const char *dir, bool pairs) {
    put(dir, "vocab.json", BPE_VOCAB);
    put(dir, "merges.txt", "#version: 0.2\nl o\nlo w\ne r\n\xc4\xa0 low\n");
    char json[4096];
    const char *merges = pairs ? "[[\"l\", \"o\"], [\"lo\", \"w\"], [\"e\", \"r\"], "
                                 "[\"\\u0120\", \"low\"]]"
                               : "[\"l o\", \"lo w\", \"e r\", \"\\u0120 low\"]";
    snprintf(json, sizeof json,
             "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 0, \"content\": \"<s>\", "
             "\"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}, "
             "{\"id\": 15, \"content\": \"<mask>\", \"lstrip\": true, \"special\": true}], "
             "\"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\", "
             "\"add_prefix_space\": false}, \"post_processor\": {\"type\": \"RobertaProcessing\", "
             "\"sep\": [\"</s>\", 2], \"cls\": [\"<s>\", 0]}, \"model\": {\"type\": \"BPE\", "
             "\"vocab\": %s, \"merges\": %s}}",
             BPE_VOCAB, merges);
    put(dir, "tokenizer.json", json);
}

Test(tokenizer_bpe, merges_in_string_and_pair_form_and_merges_txt_agree) {
    xa_ctx *ctx = xa_ctx_new();
    for (int form = 0; form < 3; form++) {
        char *dir = tmpdir();
        write_tiny_bpe(dir, form == 1);
        xa_tokenizer *tok = NULL;
        if (form < 2) {
            char *p = join(dir, "tokenizer.json");
            cr_assert_eq(xa_tokenizer_load_json(ctx, p, 0, &tok), XA_OK, "%s", xa_errmsg(ctx));
            free(p);
        } else {
            char *v = join(dir, "vocab.json"), *m = join(dir, "merges.txt");
            cr_assert_eq(xa_tokenizer_load_bpe(ctx, v, m, 0, &tok), XA_OK, "%s", xa_errmsg(ctx));
            free(v);
            free(m);
        }
        // "lower low" -> <s> low er Ġlow </s>; "<mask>" takes the space before it (lstrip)
        expect_ids(ctx, tok, "lower low", NULL, (int32_t[]){0, 11, 12, 13, 2}, 5);
        expect_ids(ctx, tok, "low <mask>", NULL, (int32_t[]){0, 11, 15, 2}, 4);
        expect_ids(ctx, tok, "low", "er", (int32_t[]){0, 11, 2, 2, 12, 2}, 6);
        char *text = NULL;
        cr_assert_eq(xa_tokenizer_decode(ctx, tok, (int32_t[]){0, 11, 12, 13, 2}, 5, true, &text),
                     XA_OK);
        cr_expect_str_eq(text, "lower low");
        free(text);
        xa_tokenizer_free(tok);
        remove_tree(dir);
        free(dir);
    }
    xa_ctx_free(ctx);
}

// --- malformed files -----------------------------------------------------------------------------

static void expect_load_error(const char *dir, xa_status code, const char *needle1,
                              const char *needle2) {
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = NULL;
    xa_status st = xa_tokenizer_load_dir(ctx, dir, &tok);
    cr_expect_eq(st, code, "status %s, message: %s", xa_status_name(st), xa_errmsg(ctx));
    cr_expect_null(tok);
    cr_expect(strstr(xa_errmsg(ctx), needle1), "message lacks '%s': %s", needle1, xa_errmsg(ctx));
    if (needle2)
        cr_expect(strstr(xa_errmsg(ctx), needle2), "message lacks '%s': %s", needle2,
                  xa_errmsg(ctx));
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
}

Test(tokenizer_errors, a_directory_without_tokenizer_files_is_not_found) {
    char *dir = tmpdir();
    expect_load_error(dir, XA_ENOTFOUND, dir, "tokenizer.json");
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = NULL;
    char *missing = join(dir, "vocab.txt");
    cr_expect_eq(xa_tokenizer_load_vocab_txt(ctx, missing, true, &tok), XA_ENOTFOUND);
    cr_expect(strstr(xa_errmsg(ctx), missing), "message: %s", xa_errmsg(ctx));
    free(missing);
    xa_ctx_free(ctx);
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_errors, bad_json_names_the_file_and_line) {
    char *dir = tmpdir();
    put(dir, "tokenizer.json", "{\n  \"model\": {\n    \"type\": \"BPE\",,\n  }\n}\n");
    expect_load_error(dir, XA_EFORMAT, "tokenizer.json:3:", NULL);
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_errors, a_merges_line_with_one_symbol_names_the_line) {
    char *dir = tmpdir();
    write_tiny_bpe(dir, false);
    char *p = join(dir, "tokenizer.json");
    remove(p);
    free(p);
    put(dir, "merges.txt", "#version: 0.2\nl o\nlo\ne r\n");
    expect_load_error(dir, XA_EFORMAT, "merges.txt:3:", "two symbols");
    put(dir, "merges.txt", "#version: 0.2\nl o\nx y\n");
    expect_load_error(dir, XA_EFORMAT, "merges.txt:3:", "'x'");
    remove_tree(dir);
    free(dir);
}

// The tiny BPE's tokenizer.json with its first `from` replaced by `to`: the load must fail with
// both needles in the message.
static void expect_tiny_bpe_json_error(const char *from, const char *to, const char *needle) {
    char *dir = tmpdir();
    write_tiny_bpe(dir, false);
    char *p = join(dir, "tokenizer.json");
    size_t n;
    char *text = read_file(p, &n);
    char *at = strstr(text, from), *bad = malloc(n + strlen(to) + 1);
    cr_assert(at && bad, "'%s' is not in the tiny tokenizer.json", from);
    sprintf(bad, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    put(dir, "tokenizer.json", bad);
    expect_load_error(dir, XA_EFORMAT, "tokenizer.json", needle);
    free(bad);
    free(text);
    free(p);
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_errors, merges_in_tokenizer_json_are_checked) {
    expect_tiny_bpe_json_error("\"lo w\"", "\"low \"", "model.merges[1]");
}

Test(tokenizer_errors, a_post_processor_id_that_names_no_token_is_refused) {
    // "<s>" is id 0; 9999 is past the vocabulary, and HF would emit it as written
    expect_tiny_bpe_json_error("[\"<s>\", 0]", "[\"<s>\", 9999]", "post_processor adds id 9999");
}

Test(tokenizer_errors, a_template_without_its_sequences_is_refused) {
    // a "single" template with no $A would count the text's tokens and place none of them
    expect_tiny_bpe_json_error(
        "{\"type\": \"RobertaProcessing\", \"sep\": [\"</s>\", 2], \"cls\": [\"<s>\", 0]}",
        "{\"type\": \"TemplateProcessing\", "
        "\"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}], "
        "\"pair\": [{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, "
        "{\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], "
        "\"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [0], \"tokens\": [\"<s>\"]}}}",
        "template 'single' must use the sequence A once, no B (it uses A 0 times");
}

Test(tokenizer_errors, a_vocabulary_id_far_past_its_entries_is_refused) {
    char *dir = tmpdir();
    put(dir, "vocab.json", "{\"<unk>\": 0, \"a\": 1, \"b\": 505230689}");
    put(dir, "merges.txt", "#version: 0.2\na b\n");
    expect_load_error(dir, XA_EFORMAT, "vocab.json", "'b' has id 505230689, far past the 3");
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_errors, a_vocabulary_without_unk_is_refused) {
    char *dir = tmpdir();
    put(dir, "vocab.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
    expect_load_error(dir, XA_EFORMAT, "vocab.txt", "[UNK]");
    remove_tree(dir);
    free(dir);
}

Test(tokenizer_errors, invalid_utf8_and_short_max_length_are_refused) {
    char *dir = tmpdir();
    put(dir, "vocab.txt", WP_VOCAB);
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    xa_encoding enc = {0};
    cr_expect_eq(xa_tokenizer_encode(ctx, tok, "ok \xff no", NULL, NULL, &enc), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(ctx), "UTF-8"), "message: %s", xa_errmsg(ctx));
    xa_encode_opts o = {.max_length = 1};
    cr_expect_eq(xa_tokenizer_encode(ctx, tok, "hello", NULL, &o, &enc), XA_EINVAL);
    xa_token_batch b;
    o = (xa_encode_opts){.pad_to = 3};
    const char *texts[] = {"hello", "hello hello world"};
    cr_expect_eq(xa_tokenizer_encode_batch(ctx, tok, texts, NULL, 2, &o, &b), XA_ERANGE);
    cr_expect(strstr(xa_errmsg(ctx), "row 1"), "message: %s", xa_errmsg(ctx));
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
    remove_tree(dir);
    free(dir);
}

// --- CLI and speed -------------------------------------------------------------------------------

Test(tokenizer_cli, prints_one_line_of_ids_per_text) {
    const char *dir = shared_or_skip("tokenizers/bert-base-uncased");
    run_result r =
        run_xadapt((const char *[]){"tokenize", "--model", dir, "Hello world!", "[MASK]", NULL});
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_str_eq(r.out, "101 7592 2088 999 102\n101 103 102\n");
    run_free(&r);
    r = run_xadapt((const char *[]){"tokenize", "--model", dir, "--pair", "--max-length", "6",
                                    "a b c d", "e f g", NULL});
    cr_expect_eq(r.status, 0, "stderr: %s", r.err);
    cr_expect_str_eq(r.out, "101 1037 1038 102 1041 102\n");
    run_free(&r);
    r = run_xadapt((const char *[]){"tokenize", "--model", "/nonexistent/model", "x", NULL});
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "/nonexistent/model"), "stderr: %s", r.err);
    run_free(&r);
    r = run_xadapt((const char *[]){"tokenize", "x", NULL});
    cr_expect_eq(r.status, 2);
    run_free(&r);
    r = run_xadapt((const char *[]){"tokenize", "--help", NULL});
    cr_expect_eq(r.status, 0);
    cr_expect(strstr(r.out, "--max-length"));
    run_free(&r);
}

Test(tokenizer_speed, sst2_train_sentences_in_a_few_seconds) {
    const char *tsv = shared_path("data/glue_sst2/train.tsv");
    if (!tsv)
        cr_skip_test("../shared/data/glue_sst2/train.tsv is absent");
    const char *dir = shared_or_skip("tokenizers/roberta-base");
    size_t n;
    char *text = read_file(tsv, &n);
    cr_assert(text);
    xa_ctx *ctx = xa_ctx_new();
    xa_tokenizer *tok = load_dir_ok(ctx, dir);
    xa_encoding enc = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long rows = 0, ids = 0;
    char *save = NULL;
    strtok_r(text, "\n", &save); // header
    for (char *line = strtok_r(NULL, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *tab = strchr(line, '\t');
        if (tab)
            *tab = '\0';
        cr_assert_eq(xa_tokenizer_encode(ctx, tok, line, NULL, NULL, &enc), XA_OK);
        rows++;
        ids += enc.len;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_log_info("roberta: %ld SST-2 sentences, %ld ids in %.2f s", rows, ids, s);
    cr_expect_gt(rows, 60000);
    // generous: sanitizer builds are several times slower than release ones
    cr_expect_lt(s, 30.0, "tokenizing SST-2 took %.1f s", s);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    xa_ctx_free(ctx);
    free(text);
}
