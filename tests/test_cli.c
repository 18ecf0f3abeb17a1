// The `xadapt` subcommands end to end, through the built executable: make-random, info,
// tokenize, encode and inspect on one random checkpoint with the real bert-base-uncased
// vocabulary, and the refusals of bad arguments (exit status 2) and bad inputs (status 1).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"
#include "xadapt/model.h"
#include "xadapt/safetensors.h"
#include "xadapt/tokenizer.h"

// A bert-tiny checkpoint with the real tokenizer, made once per test by the CLI itself.
static const char *checkpoint(void) {
    static char dir[4200];
    snprintf(dir, sizeof dir, "%s/bert", make_tmpdir());
    const char *vocab = shared_path("tokenizers/bert-base-uncased");
    const char *args[] = {"make-random", "--arch", "bert-tiny",   "--out", dir,
                          "--seed",      "3",      "--tokenizer", vocab,   NULL};
    run_result r = run_xadapt(args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "tokenizer from"), "%s", r.out);
    run_free(&r);
    return dir;
}

// Run and expect `status`, with `needle` in stdout (status 0) or stderr.
static void expect_run(const char *const *args, int status, const char *needle) {
    run_result r = run_xadapt(args);
    cr_expect_eq(r.status, status, "%s %s: status %d\n%s%s", args[0], args[1] ? args[1] : "",
                 r.status, r.out, r.err);
    const char *text = status == 0 ? r.out : r.err;
    cr_expect(strstr(text, needle), "%s: '%s' not in:\n%s", args[0], needle, text);
    run_free(&r);
}

Test(cli, make_random_info_tokenize_encode_inspect_on_one_folder) {
    const char *dir = checkpoint();
    expect_run((const char *[]){"info", dir, NULL}, 0, "fingerprint");
    // the ids Hugging Face's tokenizer gives for bert-base-uncased
    expect_run((const char *[]){"tokenize", "--model", dir, "Hello world", NULL}, 0,
               "101 7592 2088 102\n");
    char out[4300];
    snprintf(out, sizeof out, "%s/out.safetensors", make_tmpdir());
    expect_run((const char *[]){"encode", "--model", dir, "--text", "Hello world", "--ids",
                                "101 102", "--out", out, NULL},
               0, "wrote");
    expect_run((const char *[]){"inspect", out, NULL}, 0, "last_hidden_state");
    expect_run((const char *[]){"inspect", out, NULL}, 0, "model_fingerprint");
}

// A BERT pair's second segment has token type 1: encode writes token_type_ids and computes with
// them (it dropped them, which moved last_hidden_state by 2.35 against Hugging Face's).
Test(cli, encode_gives_a_pairs_second_segment_its_token_type) {
    const char *dir = checkpoint();
    char out[4300];
    snprintf(out, sizeof out, "%s/pair.safetensors", make_tmpdir());
    expect_run((const char *[]){"encode", "--model", dir, "--text", "How old are you?", "--pair",
                                "I am six.", "--out", out, NULL},
               0, "wrote 8 tensors");
    xa_ctx *ctx = xa_ctx_new();
    xa_model *m;
    xa_tokenizer *tok;
    xa_st_file *f;
    cr_assert_eq(xa_model_load(ctx, dir, &m), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_tokenizer_load_dir(ctx, dir, &tok), XA_OK, "%s", xa_errmsg(ctx));
    xa_encoding enc = {0};
    cr_assert_eq(xa_tokenizer_encode(ctx, tok, "How old are you?", "I am six.", NULL, &enc), XA_OK);
    cr_assert_eq(enc.type_ids[enc.len - 1], 1, "the tokenizer marks the pair");
    float *ones = malloc((size_t)enc.len * sizeof *ones);
    for (int64_t t = 0; t < enc.len; t++)
        ones[t] = 1.0f;
    xa_text_batch b = {.ids = enc.ids, .type_ids = enc.type_ids, .mask = ones, .B = 1, .T = enc.len};
    xa_text_out ref;
    cr_assert_eq(xa_text_forward(ctx, m, &b, NULL, &ref), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_st_open(ctx, out, &f), XA_OK, "%s", xa_errmsg(ctx));
    const xa_st_entry *te = xa_st_find(f, "token_type_ids");
    cr_assert(te && te->dtype == XA_DTYPE_I64, "token_type_ids written as int64");
    const int64_t *types = xa_st_bytes(f, te);
    for (int64_t t = 0; t < enc.len; t++)
        cr_expect_eq(types[t], enc.type_ids[t], "type of token %lld", (long long)t);
    xa_tensor *last;
    cr_assert_eq(xa_st_tensor(ctx, f, "last_hidden_state", &last), XA_OK);
    cr_assert_eq(last->numel, ref.last->numel);
    float worst = 0;
    for (int64_t i = 0; i < last->numel; i++)
        worst = fmaxf(worst, fabsf(last->data[i] - ref.last->data[i]));
    cr_expect_lt(worst, 1e-5f, "encode --pair vs the forward with type ids: %g", worst);
    xa_tensor_release(last);
    xa_st_close(f);
    free(ones);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
    xa_model_free(m);
    xa_ctx_free(ctx);
}

// CLIP's tokenizer comes from OpenAI's bpe_simple_vocab_16e6.txt.gz; writing the same folder
// again converts it again (the second run found its own vocab.json and copied nothing).
Test(cli, make_random_writes_over_its_own_clip_folder) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/clip", make_tmpdir());
    const char *vocab = shared_path("tokenizers/clip");
    const char *args[] = {"make-random", "--arch",      "clip-tiny", "--out",
                          dir,           "--tokenizer", vocab,       NULL};
    expect_run(args, 0, "tokenizer from");
    expect_run(args, 0, "tokenizer from");
    expect_run((const char *[]){"tokenize", "--model", dir, "a photo of a cat", NULL}, 0,
               "49406 320 1125 539 320 2368 49407\n");
}

Test(cli, bad_arguments_exit_2_and_say_which) {
    const char *dir = checkpoint();
    char out[4300];
    snprintf(out, sizeof out, "%s/out.safetensors", make_tmpdir());
    expect_run((const char *[]){"encode", "--model", dir, "--text", "hi", "--max-length", "abc",
                                "--out", out, NULL},
               2, "--max-length takes a whole number");
    expect_run((const char *[]){"tokenize", "--model", dir, "--max-length", "-5", "hi", NULL}, 2,
               "--max-length takes a whole number");
    expect_run(
        (const char *[]){"make-random", "--arch", "bert-tiny", "--out", out, "--seed", "abc", NULL},
        2, "--seed takes a whole number");
    expect_run(
        (const char *[]){"make-random", "--arch", "bert-tiny", "--out", out, "--shards", "0", NULL},
        2, "--shards takes a whole number in 1..99");
    expect_run((const char *[]){"--threads", NULL}, 2, "--threads takes a whole number");
}

Test(cli, bad_inputs_exit_1_with_the_problem) {
    const char *dir = checkpoint();
    char out[4300], *text = malloc(6 * 700 + 1);
    snprintf(out, sizeof out, "%s/out.safetensors", make_tmpdir());
    expect_run((const char *[]){"info", "", NULL}, 1, "no model directory given");
    expect_run(
        (const char *[]){"encode", "--model", dir, "--ids", "101 99999 102", "--out", out, NULL}, 1,
        "id 99999 at position 1 is outside the table");
    // too long for the model: the hint names --max-length only where it helps (--text)
    text[0] = '\0';
    for (int i = 0; i < 700; i++)
        strcat(text, "word ");
    expect_run((const char *[]){"encode", "--model", dir, "--text", text, "--out", out, NULL}, 1,
               "sequence of 702 tokens is longer than the model's 512 positions (--max-length 512 "
               "truncates --text)");
    free(text);
}
