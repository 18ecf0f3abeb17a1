// The `xadapt` executable: global flags (--version, --help, --threads) and dispatch to the
// subcommands in cli_*.c. Scripts run through `xadapt run` (the Lua runner).
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/blas.h"
#include "xadapt/core.h"

static void version(void);
static int cmd_version(int argc, char **argv);

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"version", cmd_version, "print the version and the BLAS kernels in use (same as --version)"},
    {"inspect", cmd_inspect, "print the tensor table and metadata of a .safetensors file"},
    {"info", cmd_info, "describe a Hugging Face checkpoint directory"},
    {"make-random", cmd_make_random, "write a random-weight checkpoint in Hugging Face layout"},
    {"encode", cmd_encode, "run the frozen encoder on texts, ids or images; write the outputs"},
    {"tokenize", cmd_tokenize, "print token ids for texts with a model directory's tokenizer"},
    {"run", cmd_run, "run a Lua experiment script (xadapt run script.lua key=value ...)"},
    {"plugins", cmd_plugins, "list adapter plugins found on the search path, and any refused"},
    {"bench", cmd_bench, "time a workload (sgemm, forward, training steps); see bench/run.py"},
    // one line per subcommand, in the order --help lists them
};

static void usage(FILE *out) {
    fprintf(out, "usage: xadapt [--threads N] <command> [args...]\n"
                 "       xadapt --version | --help\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nenvironment:\n"
                 "  XADAPT_THREADS=N          threads for every pool (default: all cores)\n"
                 "  XADAPT_BLAS_CORETYPE=X    auto (default), keep, or an OpenBLAS core name\n"
                 "  XADAPT_BLAS_LIBRARY=PATH  OpenBLAS to load instead of libopenblas.so.0\n"
                 "\n`xadapt <command> --help` describes each command.\n");
}

static int cmd_version(int argc, char **argv) {
    (void)argc, (void)argv;
    version();
    return 0;
}

static void version(void) {
    const xa_blas_info *b = xa_blas_info_get();
    printf("xadapt %s\n", XA_VERSION_STRING);
    printf("blas: %s kernels (%s), %d thread%s\n", b->coretype, b->library, b->threads,
           b->threads == 1 ? "" : "s");
    printf("blas choice: %s\n", b->reason);
    printf("element-wise kernels: %s\n", b->simd);
    if (b->config[0])
        printf("blas config: %s\n", b->config);
}

int cli_fail(const char *cmd, xa_ctx *ctx) {
    fprintf(stderr, "xadapt %s: %s\n", cmd, xa_errmsg(ctx));
    return 1;
}

bool cli_number(const char *cmd, const char *opt, const char *text, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || !*text || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "xadapt%s%s: %s takes a whole number in %ld..%ld, got %s%s%s\n",
                *cmd ? " " : "", cmd, opt, lo, hi, text ? "'" : "nothing", text ? text : "",
                text ? "'" : "");
        return false;
    }
    *out = v;
    return true;
}

xa_ctx *cli_ctx(const char *cmd) {
    xa_ctx *ctx = xa_ctx_new();
    if (!ctx)
        fprintf(stderr, "xadapt %s: out of memory\n", cmd);
    return ctx;
}

int main(int argc, char **argv) {
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
            version();
            return 0;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--threads")) {
            long n;
            if (!cli_number("", "--threads", i + 1 < argc ? argv[i + 1] : NULL, 1, 1 << 20, &n))
                return 2;
            i++;
            xa_set_threads((int)n);
            if (xa_threads() < n)
                fprintf(stderr, "xadapt: --threads %ld: using %d threads\n", n, xa_threads());
        } else {
            fprintf(stderr, "xadapt: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t c = 0; c < sizeof commands / sizeof *commands; c++)
        if (!strcmp(argv[i], commands[c].name))
            return commands[c].run(argc - i, argv + i);
    fprintf(stderr, "xadapt: unknown command '%s' (try xadapt --help)\n", argv[i]);
    return 2;
}
