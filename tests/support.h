// Helpers shared by the Criterion tests: paths to the source tree, shared data and the built
// executable, temporary directories, running the CLI and capturing its output.
#ifndef XADAPT_TEST_SUPPORT_H
#define XADAPT_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>

// $XADAPT_SOURCE_ROOT / rel (static buffer rotation: valid for a few calls).
const char *src_path(const char *rel);
// ../shared / rel, or NULL when the shared folder is absent (tests then skip).
const char *shared_path(const char *rel);
// A fresh empty directory under $TMPDIR (NULL on failure), removed with everything in it when
// the process exits normally. XADAPT_KEEP_TMP=1 keeps what is left at exit: a failed assertion
// skips a test's own remove_tree, so its files stay for a look.
const char *make_tmpdir(void);
// Remove a directory tree (or a file); what cannot be removed is left.
void remove_tree(const char *dir);
// Write `n` bytes to `path`; false on failure.
bool write_file(const char *path, const void *data, size_t n);
// Read a whole file (caller frees); NULL on failure.
char *read_file(const char *path, size_t *n);

typedef struct {
    int status; // exit status, or 128+signal when killed
    char *out;  // captured stdout (caller frees with run_free)
    char *err;  // captured stderr
} run_result;

// Run the built xadapt executable with argv (NULL-terminated, without argv[0]).
run_result run_xadapt(const char *const *args);
void run_free(run_result *r);

#endif
