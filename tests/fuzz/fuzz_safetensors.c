// libFuzzer harness for the safetensors reader. Each input becomes a file (a memfd, so nothing
// touches the disk) that is opened, walked entry by entry (bytes, lookup, f32 tensor) and closed.
// Refusals are the expected outcome; a crash, a sanitizer report, a leak or a broken invariant
// of an accepted file (checked below with abort) is a finding. Built by tests/fuzz/meson.build.
#include "fuzz_util.h"

#include <string.h>

#include "xadapt/safetensors.h"

static int fd = -1;
static char path[32];
static xa_ctx *ctx;

// Everything an accepted file promises: entries in offset order tiling the data section,
// lookups that agree, bytes that can be read, tensors that match their entry.
static void walk(xa_st_file *f) {
    uint64_t data_size = xa_st_file_size(f) - 8 - xa_st_header_size(f), at = 0;
    volatile unsigned sum = 0;
    for (size_t i = 0; i < xa_st_count(f); i++) {
        const xa_st_entry *e = xa_st_at(f, i);
        check(e->begin == at && e->begin <= e->end && e->end <= data_size, "tiling");
        check(e->ndim >= 0 && e->ndim <= 8, "rank");
        at = e->end;
        check(xa_st_find(f, e->name) == e, "find returns the entry");
        const unsigned char *b = xa_st_bytes(f, e);
        for (uint64_t k = 0; k < e->end - e->begin; k++)
            sum += b[k];
        xa_tensor *t = NULL;
        if (xa_st_tensor(ctx, f, e->name, &t) == XA_OK) {
            check(t->ndim == e->ndim, "tensor rank");
            check((uint64_t)t->numel * xa_dtype_size(e->dtype) == e->end - e->begin, "numel");
            for (int64_t k = 0; k < t->numel; k++) {
                uint32_t u;
                memcpy(&u, &t->data[k], 4);
                sum += u;
            }
            xa_tensor_release(t);
        } else {
            check(t == NULL && xa_errmsg(ctx)[0] != '\0', "refusal leaves a message, no tensor");
        }
    }
    check(at == data_size, "data section fully indexed");
    for (size_t i = 0; i < xa_st_meta_count(f); i++)
        check(xa_st_meta_get(f, xa_st_meta_key(f, i)) != NULL, "metadata lookup");
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (fd < 0) {
        fuzz_name = "fuzz_safetensors";
        fd = fuzz_memfd("fuzz.safetensors", path);
        ctx = xa_ctx_new();
        check(ctx != NULL, "setup");
    }
    fuzz_put(fd, data, size);

    xa_st_file *f = NULL;
    xa_status st = xa_st_open(ctx, path, &f);
    if (st == XA_OK) {
        walk(f);
        xa_st_close(f);
    } else {
        const char *msg = xa_errmsg(ctx);
        check(f == NULL, "no file on failure");
        check(strncmp(msg, path, strlen(path)) == 0, "message names the file");
        check(st == XA_EFORMAT || st == XA_ERANGE || st == XA_ENOMEM, "status of a bad file");
    }
    xa_error_clear(ctx);
    return 0;
}
