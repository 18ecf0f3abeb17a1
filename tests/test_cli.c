// The `xadapt` subcommands end to end, through the built executable: make-random, info,
// tokenize, encode and inspect on one random checkpoint with the real bert-base-uncased
// vocabulary, and the refusals of bad arguments (exit status 2) and bad inputs (status 1).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

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
