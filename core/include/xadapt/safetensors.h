// safetensors files: a reader that maps the file read-only and trusts nothing in it, and an
// atomic writer (temp file, fsync, rename). Format: u64 LE header length N, N bytes of JSON,
// then the byte buffer; offsets in the JSON are relative to the buffer start, END exclusive.
#ifndef XADAPT_SAFETENSORS_H
#define XADAPT_SAFETENSORS_H

#include "xadapt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// Header larger than this is refused (the reference implementation's MAX_HEADER_SIZE).
#define XA_ST_MAX_HEADER 100000000ull

typedef struct xa_st_entry {
    const char *name;
    xa_dtype dtype;
    int ndim; // 0 for a scalar
    int64_t shape[8];
    uint64_t begin, end; // byte offsets relative to the data buffer, end exclusive
} xa_st_entry;

typedef struct xa_st_file xa_st_file;

// Map `path` PROT_READ and validate the whole header. Each refusal names the file, the tensor and
// the problem (XA_EIO, XA_EFORMAT, XA_ERANGE). The file owns everything it returns.
xa_status xa_st_open(xa_ctx *ctx, const char *path, xa_st_file **out);
void xa_st_close(xa_st_file *f);

const char *xa_st_path(const xa_st_file *f);
size_t xa_st_count(const xa_st_file *f);
const xa_st_entry *xa_st_at(const xa_st_file *f, size_t i); // in file (offset) order
const xa_st_entry *xa_st_find(const xa_st_file *f, const char *name);
const void *xa_st_bytes(const xa_st_file *f, const xa_st_entry *e); // read-only mapped bytes
uint64_t xa_st_file_size(const xa_st_file *f);
uint64_t xa_st_header_size(const xa_st_file *f);

// __metadata__ (string -> string), in file order.
size_t xa_st_meta_count(const xa_st_file *f);
const char *xa_st_meta_key(const xa_st_file *f, size_t i);
const char *xa_st_meta_value(const xa_st_file *f, size_t i);
const char *xa_st_meta_get(const xa_st_file *f, const char *key); // NULL when absent

// An f32 tensor for entry `name`. Aligned F32 data is a zero-copy read-only view of the mapping
// (the tensor keeps the mapping alive); F16/BF16/F64 and misaligned data are converted into a
// heap copy. Integer dtypes are refused here (use xa_st_bytes). XA_ENOTFOUND when absent.
xa_status xa_st_tensor(xa_ctx *ctx, xa_st_file *f, const char *name, xa_tensor **out);

// Writer: collect tensors (f32 from memory, or raw bytes of any dtype) and metadata, then write
// atomically. Names must be unique. Data is copied only at write time: pointers must stay valid
// until xa_st_writer_write returns.
typedef struct xa_st_writer xa_st_writer;
xa_st_writer *xa_st_writer_new(xa_ctx *ctx);
void xa_st_writer_free(xa_st_writer *w);
xa_status xa_st_writer_add(xa_st_writer *w, const char *name, xa_dtype dtype, int ndim,
                           const int64_t *shape, const void *data);
xa_status xa_st_writer_add_tensor(xa_st_writer *w, const char *name, const xa_tensor *t);
xa_status xa_st_writer_meta(xa_st_writer *w, const char *key, const char *value);
// Writes `path` via `path.tmp.<pid>`, fsync, rename, fsync of the directory. On failure nothing
// is left at `path` that was not there before.
xa_status xa_st_writer_write(xa_st_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif
