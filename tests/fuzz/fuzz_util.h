// What every harness in tests/fuzz needs: a check that aborts with the harness's name (libFuzzer
// reports the abort as a finding) and memfds standing in for files, so nothing touches the disk.
#ifndef XADAPT_FUZZ_UTIL_H
#define XADAPT_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE // memfd_create
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "xadapt/core.h"

// Set by each harness: its name, and the context whose last error a broken check shows.
static const char *fuzz_name = "fuzz";
static xa_ctx *fuzz_ctx;

static inline void check(int ok, const char *what) {
    if (!ok) {
        const char *detail = fuzz_ctx ? xa_errmsg(fuzz_ctx) : "";
        fprintf(stderr, "%s: invariant broken: %s%s%s%s\n", fuzz_name, what, *detail ? " (" : "",
                detail, *detail ? ")" : "");
        abort();
    }
}

// A memfd and the path that opens it (/proc/self/fd/N); path needs 32 bytes.
static inline int fuzz_memfd(const char *name, char *path) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    check(fd >= 0, "memfd_create");
    snprintf(path, 32, "/proc/self/fd/%d", fd);
    return fd;
}

// Make the file behind fd hold exactly data[0..size).
static inline void fuzz_put(int fd, const uint8_t *data, size_t size) {
    check(ftruncate(fd, 0) == 0, "ftruncate");
    check(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size, "pwrite");
}

#endif
