// `xadapt tokenize --model DIR [--pair] [--max-length N] TEXT...`: the token ids of each text
// (or of each line of standard input) with the model directory's tokenizer, one line of
// space-separated ids per text, special tokens included. Tokenizing is the library's
// (xadapt/tokenizer.h); this file parses arguments and prints.
#include "cli.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: xadapt tokenize --model DIR [--pair] [--max-length N] [--no-special] TEXT...\n"
            "\n"
            "Print the token ids of each TEXT with the tokenizer of model directory DIR\n"
            "(tokenizer.json, vocab.txt, or vocab.json + merges.txt), one line of\n"
            "space-separated ids per text, special tokens included. Without TEXT, each line\n"
            "of standard input is a text.\n"
            "\n"
            "  --model DIR      the model directory (required)\n"
            "  --pair           take the texts two at a time as (first, second) pairs; on\n"
            "                   standard input a line is split at its first tab\n"
            "  --max-length N   truncate to N ids, special tokens included (longest first)\n"
            "  --no-special     leave out [CLS]/[SEP], <s>/</s>, BOS/EOS\n"
            "  --help           this text\n");
}

static int print_ids(xa_ctx *ctx, xa_tokenizer *tok, const char *a, const char *b,
                     const xa_encode_opts *opts, xa_encoding *enc) {
    if (xa_tokenizer_encode(ctx, tok, a, b, opts, enc) != XA_OK)
        return cli_fail("tokenize", ctx);
    for (int64_t i = 0; i < enc->len; i++)
        printf(i ? " %d" : "%d", (int)enc->ids[i]);
    putchar('\n');
    return 0;
}

static int from_stdin(xa_ctx *ctx, xa_tokenizer *tok, bool pair, const xa_encode_opts *opts,
                      xa_encoding *enc) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        if (n > 0 && line[n - 1] == '\r')
            line[--n] = '\0';
        char *second = NULL;
        if (pair && (second = strchr(line, '\t')))
            *second++ = '\0';
        rc = print_ids(ctx, tok, line, second ? second : (pair ? "" : NULL), opts, enc);
    }
    free(line);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL;
    bool pair = false;
    xa_encode_opts opts = {0};
    int first = argc;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--pair")) {
            pair = true;
        } else if (!strcmp(argv[i], "--no-special")) {
            opts.no_special_tokens = true;
        } else if (!strcmp(argv[i], "--max-length") && i + 1 < argc) {
            long v;
            if (!cli_number("tokenize", "--max-length", argv[++i], 1, 1 << 30, &v))
                return 2;
            opts.max_length = (int32_t)v;
        } else if (!strcmp(argv[i], "--")) {
            first = i + 1;
            break;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "xadapt tokenize: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if (!model) {
        fprintf(stderr, "xadapt tokenize: --model DIR is required\n\n");
        usage(stderr);
        return 2;
    }
    int ntexts = argc - first;
    if (pair && ntexts % 2) {
        fprintf(stderr, "xadapt tokenize: --pair needs an even number of texts, got %d\n", ntexts);
        return 2;
    }
    xa_ctx *ctx = cli_ctx("tokenize");
    if (!ctx)
        return 1;
    xa_tokenizer *tok = NULL;
    xa_encoding enc = {0};
    int rc = 0;
    if (xa_tokenizer_load_dir(ctx, model, &tok) != XA_OK) {
        rc = cli_fail("tokenize", ctx);
        goto out_ctx;
    }
    if (ntexts == 0)
        rc = from_stdin(ctx, tok, pair, &opts, &enc);
    for (int i = first; i < argc && !rc; i += pair ? 2 : 1)
        rc = print_ids(ctx, tok, argv[i], pair ? argv[i + 1] : NULL, &opts, &enc);
    xa_encoding_deinit(&enc);
    xa_tokenizer_free(tok);
out_ctx:
    xa_ctx_free(ctx);
    return rc;
}
