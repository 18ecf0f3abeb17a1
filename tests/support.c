// Implementation of tests/support.h: small POSIX helpers, no dependency on libxadapt internals.
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *ring_slot(void) {
    static char ring[8][4096];
    static int at;
    return ring[at++ % 8];
}

const char *src_path(const char *rel) {
    const char *root = getenv("XADAPT_SOURCE_ROOT");
    char *buf = ring_slot();
    snprintf(buf, 4096, "%s/%s", root ? root : ".", rel);
    return buf;
}

const char *shared_path(const char *rel) {
    const char *root = getenv("XADAPT_SHARED");
    char *buf = ring_slot();
    snprintf(buf, 4096, "%s/%s", root ? root : "../shared", rel);
    struct stat st;
    return stat(buf, &st) == 0 ? buf : NULL;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0; // go on: remove what can be removed
}

void remove_tree(const char *dir) {
    if (dir && *dir)
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// Directories made by this process (Criterion runs each test in its own worker process).
static struct {
    char **dirs;
    size_t n;
    pid_t owner;
} made;

static void remove_made(void) {
    bool keep = getenv("XADAPT_KEEP_TMP") && *getenv("XADAPT_KEEP_TMP");
    for (size_t i = 0; i < made.n; i++) {
        if (!keep && made.owner == getpid())
            remove_tree(made.dirs[i]);
        free(made.dirs[i]);
    }
    free(made.dirs);
    made.dirs = NULL;
    made.n = 0;
}

const char *make_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char *buf = ring_slot();
    snprintf(buf, 4096, "%s/xadapt-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(buf))
        return NULL;
    if (made.owner != getpid()) { // first directory of this process (a fork inherits none)
        made.dirs = NULL;
        made.n = 0;
        made.owner = getpid();
        atexit(remove_made);
    }
    char **grown = realloc(made.dirs, (made.n + 1) * sizeof *grown);
    char *copy = strdup(buf);
    if (grown && copy) {
        made.dirs = grown;
        made.dirs[made.n++] = copy;
    } else {
        if (grown)
            made.dirs = grown;
        free(copy);
    }
    return buf;
}

bool write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *nb = realloc(buf, (cap *= 2) + 1);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    if (n)
        *n = len;
    return buf;
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            return strdup("(out of memory reading the output)");
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
            continue;
        }
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return buf;
}

run_result run_xadapt(const char *const *args) {
    run_result r = {.status = -1};
    const char *exe = getenv("XADAPT_EXE");
    char outp[] = "/tmp/xadapt-out-XXXXXX", errp[] = "/tmp/xadapt-err-XXXXXX";
    int ofd = mkstemp(outp), efd = mkstemp(errp);
    unlink(outp);
    unlink(errp);
    pid_t pid = fork();
    if (pid == 0) {
        const char *argv[64] = {exe ? exe : "xadapt"};
        int n = 1;
        for (; args[n - 1] && n < 63; n++)
            argv[n] = args[n - 1];
        argv[n] = NULL;
        dup2(ofd, 1);
        dup2(efd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    r.out = slurp_fd(ofd);
    r.err = slurp_fd(efd);
    close(ofd);
    close(efd);
    return r;
}

void run_free(run_result *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}
