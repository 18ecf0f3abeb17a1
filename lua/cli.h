// The `xadapt` command's subcommands. Each takes its own argv (argv[0] is the subcommand name),
// prints its own output and errors, and returns the process exit status (0 ok, 1 failure,
// 2 usage). main.c only dispatches.
#ifndef XADAPT_CLI_H
#define XADAPT_CLI_H

#include <stdbool.h>
#include <stddef.h>

typedef struct xa_ctx xa_ctx;

// one prototype per subcommand (cli_<name>.c)
int cmd_info(int argc, char **argv);
int cmd_make_random(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plugins(int argc, char **argv);

// Print "xadapt <cmd>: <message>" to stderr for the context's current error; returns 1.
int cli_fail(const char *cmd, xa_ctx *ctx);
// Parse option OPT's value as a whole number in lo..hi; false after printing why not.
bool cli_number(const char *cmd, const char *opt, const char *text, long lo, long hi, long *out);
// A new context, or NULL after printing "xadapt CMD: out of memory".
xa_ctx *cli_ctx(const char *cmd);
// Copy a tokenizer directory's files into `dir` (lua/lua_random.c, shared with xa.make_random);
// false with a message in err.
bool xl_copy_tokenizer(const char *from, const char *dir, char *err, size_t n);

#endif
