// safetensors files. The reader maps the whole file PROT_READ, validates every byte of the header
// before handing anything out, and shares the mapping with tensor views through a refcounted
// xa_buffer. The writer formats the header itself (integers never pass through a double) and
// replaces the target atomically. Checkpoint naming rules (prefixes, gamma/beta) live elsewhere.
#include "xadapt/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; zero-copy views assume a little-endian host"
#endif

#define ST_MAX_RANK 8
// cJSON keeps numbers as doubles: from 2^53 on, neighbouring integers read the same.
#define ST_MAX_INT 9007199254740992.0

struct xa_st_file {
    char *path;
    xa_buffer *map;             // the whole file; tensor views retain it
    unsigned char *data;        // the byte buffer after the header (inside map)
    uint64_t file_size, header_size, data_size;
    xa_st_entry *entries;       // offset order
    size_t count;
    size_t *by_name;            // indices into entries, sorted by name
    char **meta;                // key0, value0, key1, value1, ... in file order
    size_t meta_count;
};

// --- messages -------------------------------------------------------------------------------

// Names come from untrusted files: control bytes are shown escaped and long names shortened, so
// a message can always be printed to a terminal as it is.
static const char *quoted(const char *s, char *buf, size_t n) {
    size_t at = 0, i = 0;
    while (s[i]) {
        unsigned char c = (unsigned char)s[i];
        size_t len = 1;
        while (c >= 0x80 && len < 4 && ((unsigned char)s[i + len] & 0xc0) == 0x80)
            len++; // keep a UTF-8 sequence whole
        if (at + len + 8 >= n)
            break;
        if (c < 0x20 || c == 0x7f)
            at += (size_t)snprintf(buf + at, n - at, "\\x%02x", c);
        else
            memcpy(buf + at, s + i, len), at += len;
        i += len;
    }
    if (s[i])
        memcpy(buf + at, "...", 3), at += 3;
    buf[at] = '\0';
    return buf;
}

// "<path>: tensor '<name>': <problem>", or "<path>: <problem>" when name is NULL.
XA_PRINTF(5, 6)
static xa_status fail(xa_ctx *ctx, xa_status code, const char *path, const char *name,
                      const char *fmt, ...) {
    char problem[1024], q[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    if (name)
        return xa_errorf(ctx, code, "%s: tensor '%s': %s", path, quoted(name, q, sizeof q),
                         problem);
    return xa_errorf(ctx, code, "%s: %s", path, problem);
}

static const char *json_kind(const cJSON *j) {
    if (cJSON_IsObject(j))
        return "an object";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsBool(j))
        return "a boolean";
    return "null";
}

// Spec dtypes that xadapt knows of but does not read (refused by name, not as "unknown").
static bool dtype_unsupported(const char *s) {
    static const char *const names[] = {"F4",      "F6_E2M3",     "F6_E3M2",     "F8_E5M2",
                                        "F8_E4M3", "F8_E8M0",     "F8_E4M3FNUZ", "F8_E5M2FNUZ",
                                        "U16",     "U32",         "U64",         "C64"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i]))
            return true;
    return false;
}

// Position of the first byte that is not valid UTF-8, or n when all are.
static size_t utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07;
        } else {
            return i;
        }
        if (n - i < len)
            return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += len;
    }
    return n;
}

// --- reading --------------------------------------------------------------------------------

static void release_map(xa_buffer *b) { munmap(b->data, b->size); }

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static xa_status map_file(xa_ctx *ctx, xa_st_file *f) {
    xa_status st;
    // O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file.
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fail(ctx, XA_EIO, f->path, NULL, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = fail(ctx, XA_EIO, f->path, NULL, "cannot stat: %s", strerror(errno));
        goto out_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = fail(ctx, XA_EIO, f->path, NULL, "not a regular file");
        goto out_close;
    }
    if (sb.st_size == 0) {
        st = fail(ctx, XA_EFORMAT, f->path, NULL,
                  "file is empty (a safetensors file starts with an 8-byte header length)");
        goto out_close;
    }
    if (sb.st_size < 8) {
        st = fail(ctx, XA_EFORMAT, f->path, NULL,
                  "file is %lld bytes, too short for the 8-byte header length",
                  (long long)sb.st_size);
        goto out_close;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = fail(ctx, XA_ERANGE, f->path, NULL, "file is too large to map");
        goto out_close;
    }
    xa_buffer *b = xa_calloc(ctx, 1, sizeof *b);
    if (!b) {
        st = XA_ENOMEM;
        goto out_close;
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        st = fail(ctx, XA_EIO, f->path, NULL, "cannot map %lld bytes: %s", (long long)sb.st_size,
                  strerror(errno));
        goto out_free;
    }
    b->data = p;
    b->size = (size_t)sb.st_size;
    b->readonly = true;
    b->refcount = 1;
    b->release = release_map;
    f->map = b;
    f->file_size = (uint64_t)sb.st_size;
    close(fd); // the mapping stays valid without the descriptor
    return XA_OK;

out_free:
    free(b);
out_close:
    close(fd);
    return st;
}

// A JSON number that must be a non-negative integer below 2^53.
static xa_status json_uint(xa_ctx *ctx, const xa_st_file *f, const char *name, const cJSON *j,
                           const char *what, uint64_t *out) {
    if (!cJSON_IsNumber(j))
        return fail(ctx, XA_EFORMAT, f->path, name, "%s is %s, expected a non-negative integer",
                    what, json_kind(j));
    double v = j->valuedouble;
    if (!(v >= 0))
        return fail(ctx, XA_EFORMAT, f->path, name, "%s is %g, expected a non-negative integer",
                    what, v);
    if (v >= ST_MAX_INT)
        return fail(ctx, XA_ERANGE, f->path, name, "%s is %g, too large (the limit is 2^53)",
                    what, v);
    uint64_t u = (uint64_t)v;
    if ((double)u != v)
        return fail(ctx, XA_EFORMAT, f->path, name, "%s is %g, expected a non-negative integer",
                    what, v);
    *out = u;
    return XA_OK;
}

static xa_status read_entry(xa_ctx *ctx, const xa_st_file *f, const cJSON *j, xa_st_entry *e) {
    const char *name = j->string;
    xa_status st;
    char q[128], s[256];
    if (!cJSON_IsObject(j))
        return fail(ctx, XA_EFORMAT, f->path, name, "entry is %s, expected an object",
                    json_kind(j));
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *k = j->child; k; k = k->next) {
        const cJSON **slot = !strcmp(k->string, "dtype")          ? &dtype
                             : !strcmp(k->string, "shape")        ? &shape
                             : !strcmp(k->string, "data_offsets") ? &offs
                                                                  : NULL;
        if (!slot)
            return fail(ctx, XA_EFORMAT, f->path, name,
                        "unexpected key '%s' (an entry has exactly dtype, shape and data_offsets)",
                        quoted(k->string, q, sizeof q));
        if (*slot)
            return fail(ctx, XA_EFORMAT, f->path, name, "key '%s' appears twice", k->string);
        *slot = k;
    }
    if (!dtype || !shape || !offs)
        return fail(ctx, XA_EFORMAT, f->path, name, "missing '%s'",
                    !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

    if (!cJSON_IsString(dtype))
        return fail(ctx, XA_EFORMAT, f->path, name, "dtype is %s, expected a string",
                    json_kind(dtype));
    if (!xa_dtype_parse(dtype->valuestring, &e->dtype)) {
        if (dtype_unsupported(dtype->valuestring))
            return fail(ctx, XA_EFORMAT, f->path, name,
                        "unsupported dtype '%s' (xadapt reads F32 F16 BF16 F64 I64 I32 I16 I8 U8 "
                        "BOOL)",
                        dtype->valuestring);
        return fail(ctx, XA_EFORMAT, f->path, name, "unknown dtype '%s'",
                    quoted(dtype->valuestring, q, sizeof q));
    }

    if (!cJSON_IsArray(shape))
        return fail(ctx, XA_EFORMAT, f->path, name, "shape is %s, expected an array of integers",
                    json_kind(shape));
    int rank = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        if (rank == ST_MAX_RANK)
            return fail(ctx, XA_EFORMAT, f->path, name, "shape has more than %d dimensions",
                        ST_MAX_RANK);
        char what[32];
        snprintf(what, sizeof what, "shape[%d]", rank);
        uint64_t v;
        if ((st = json_uint(ctx, f, name, d, what, &v)))
            return st;
        e->shape[rank++] = (int64_t)v;
    }
    e->ndim = rank;

    int64_t numel = 1;
    for (int i = 0; i < rank; i++) {
        if (e->shape[i] && numel > INT64_MAX / e->shape[i])
            return fail(ctx, XA_ERANGE, f->path, name,
                        "shape %s has more elements than fit in 64 bits",
                        xa_shape_fmt(rank, e->shape, s, sizeof s));
        numel *= e->shape[i];
    }
    int64_t size = (int64_t)xa_dtype_size(e->dtype);
    if (numel > INT64_MAX / size)
        return fail(ctx, XA_ERANGE, f->path, name, "shape %s of %s needs more than 2^63 bytes",
                    xa_shape_fmt(rank, e->shape, s, sizeof s), xa_dtype_name(e->dtype));
    uint64_t need = (uint64_t)(numel * size);

    if (!cJSON_IsArray(offs))
        return fail(ctx, XA_EFORMAT, f->path, name,
                    "data_offsets is %s, expected an array of 2 integers", json_kind(offs));
    int n = cJSON_GetArraySize(offs);
    if (n != 2)
        return fail(ctx, XA_EFORMAT, f->path, name,
                    "data_offsets has %d elements, expected 2 ([begin, end])", n);
    if ((st = json_uint(ctx, f, name, offs->child, "data_offsets[0]", &e->begin)) ||
        (st = json_uint(ctx, f, name, offs->child->next, "data_offsets[1]", &e->end)))
        return st;
    unsigned long long b = e->begin, en = e->end;
    if (b > en)
        return fail(ctx, XA_EFORMAT, f->path, name, "data_offsets [%llu, %llu] begin after end",
                    b, en);
    if (en - b != need)
        return fail(ctx, XA_EFORMAT, f->path, name,
                    "data_offsets [%llu, %llu] span %llu bytes but shape %s of %s needs %llu", b,
                    en, en - b, xa_shape_fmt(rank, e->shape, s, sizeof s),
                    xa_dtype_name(e->dtype), (unsigned long long)need);
    if (en > f->data_size)
        return fail(ctx, XA_EFORMAT, f->path, name,
                    "data_offsets [%llu, %llu] end past the data section (%llu bytes)", b, en,
                    (unsigned long long)f->data_size);
    return XA_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static xa_status read_meta(xa_ctx *ctx, xa_st_file *f, const cJSON *j) {
    char q[256];
    if (!cJSON_IsObject(j))
        return fail(ctx, XA_EFORMAT, f->path, NULL,
                    "__metadata__ is %s, expected an object of strings", json_kind(j));
    size_t n = 0;
    for (const cJSON *k = j->child; k; k = k->next)
        n++;
    f->meta = xa_calloc(ctx, n ? 2 * n : 1, sizeof *f->meta);
    if (!f->meta)
        return XA_ENOMEM;
    for (const cJSON *k = j->child; k; k = k->next) {
        if (!cJSON_IsString(k))
            return fail(ctx, XA_EFORMAT, f->path, NULL,
                        "__metadata__ key '%s': value is %s, expected a string",
                        quoted(k->string, q, sizeof q), json_kind(k));
        char **kv = f->meta + 2 * f->meta_count;
        if (!(kv[0] = xa_strdup(ctx, k->string)) || !(kv[1] = xa_strdup(ctx, k->valuestring)))
            return XA_ENOMEM;
        f->meta_count++;
    }
    // Keys are unique: cJSON keeps duplicates in its list, so look for them in a sorted copy.
    const char **keys = xa_malloc(ctx, (n ? n : 1) * sizeof *keys);
    if (!keys)
        return XA_ENOMEM;
    for (size_t i = 0; i < n; i++)
        keys[i] = f->meta[2 * i];
    qsort(keys, n, sizeof *keys, cmp_str);
    xa_status st = XA_OK;
    for (size_t i = 1; i < n && !st; i++)
        if (!strcmp(keys[i - 1], keys[i]))
            st = fail(ctx, XA_EFORMAT, f->path, NULL, "__metadata__ key '%s' appears twice",
                      quoted(keys[i], q, sizeof q));
    free(keys);
    return st;
}

static int cmp_offset(const void *pa, const void *pb, void *arg) {
    const xa_st_entry *e = arg;
    size_t ia = *(const size_t *)pa, ib = *(const size_t *)pb;
    const xa_st_entry *a = &e[ia], *b = &e[ib];
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return ia < ib ? -1 : ia > ib; // header order among empty tensors at one offset
}

static int cmp_name(const void *pa, const void *pb, void *arg) {
    const xa_st_entry *e = arg;
    return strcmp(e[*(const size_t *)pa].name, e[*(const size_t *)pb].name);
}

// Sorted by offset the tensors must tile the data section exactly: no overlap, no gap, nothing
// left over at the end (the reference reader's rule).
static xa_status check_tiling(xa_ctx *ctx, const xa_st_file *f) {
    uint64_t at = 0;
    const xa_st_entry *prev = NULL;
    char q[256];
    for (size_t i = 0; i < f->count; i++) {
        const xa_st_entry *e = &f->entries[i];
        unsigned long long b = e->begin, en = e->end;
        if (e->begin < at)
            return fail(ctx, XA_EFORMAT, f->path, e->name,
                        "data_offsets [%llu, %llu] overlap tensor '%s' [%llu, %llu]", b, en,
                        quoted(prev->name, q, sizeof q), (unsigned long long)prev->begin,
                        (unsigned long long)prev->end);
        if (e->begin > at && prev)
            return fail(ctx, XA_EFORMAT, f->path, e->name,
                        "data_offsets [%llu, %llu] leave a gap of %llu bytes after tensor '%s' "
                        "(which ends at %llu)",
                        b, en, (unsigned long long)(e->begin - at), quoted(prev->name, q, sizeof q),
                        (unsigned long long)at);
        if (e->begin > at)
            return fail(ctx, XA_EFORMAT, f->path, e->name,
                        "data_offsets [%llu, %llu] leave a gap: the first %llu bytes of the data "
                        "section are not indexed",
                        b, en, b);
        at = e->end;
        prev = e;
    }
    if (at != f->data_size)
        return fail(ctx, XA_EFORMAT, f->path, NULL,
                    "tensors cover %llu of the %llu bytes in the data section; the last %llu "
                    "bytes are not indexed",
                    (unsigned long long)at, (unsigned long long)f->data_size,
                    (unsigned long long)(f->data_size - at));
    return XA_OK;
}

static xa_status read_tensors(xa_ctx *ctx, xa_st_file *f, const cJSON *root) {
    xa_status st;
    size_t n = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") != 0) {
            n++;
        } else if (meta) {
            return fail(ctx, XA_EFORMAT, f->path, NULL, "__metadata__ appears twice");
        } else {
            meta = c;
        }
    }
    if (meta && (st = read_meta(ctx, f, meta)))
        return st;

    xa_st_entry *hdr = xa_calloc(ctx, n, sizeof *hdr); // header order
    size_t *perm = xa_calloc(ctx, n, sizeof *perm);
    f->by_name = xa_calloc(ctx, n, sizeof *f->by_name);
    if (!hdr || !perm || !f->by_name) {
        st = XA_ENOMEM;
        goto out_free;
    }
    size_t i = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c == meta)
            continue;
        if ((st = read_entry(ctx, f, c, &hdr[i])))
            goto out_free;
        if (!(hdr[i].name = xa_strdup(ctx, c->string))) {
            st = XA_ENOMEM;
            goto out_free;
        }
        i++;
    }
    XA_ASSERT(i == n);

    for (i = 0; i < n; i++)
        perm[i] = i;
    qsort_r(perm, n, sizeof *perm, cmp_offset, hdr);
    f->entries = xa_calloc(ctx, n, sizeof *f->entries);
    if (!f->entries) {
        st = XA_ENOMEM;
        goto out_free;
    }
    for (i = 0; i < n; i++) {
        f->entries[i] = hdr[perm[i]];
        hdr[perm[i]].name = NULL; // moved
    }
    f->count = n;

    for (i = 0; i < n; i++)
        f->by_name[i] = i;
    qsort_r(f->by_name, n, sizeof *f->by_name, cmp_name, f->entries);
    for (i = 1; i < n; i++) {
        const char *a = f->entries[f->by_name[i - 1]].name;
        if (!strcmp(a, f->entries[f->by_name[i]].name)) {
            st = fail(ctx, XA_EFORMAT, f->path, a, "appears twice in the header");
            goto out_free;
        }
    }
    st = check_tiling(ctx, f);

out_free:
    if (hdr)
        for (i = 0; i < n; i++)
            free((char *)hdr[i].name);
    free(hdr);
    free(perm);
    return st;
}

// Raw bytes the JSON parser must never see: control bytes (legal only as whitespace) and
// invalid UTF-8; "\u0000" escapes, which cJSON would turn into a silently shortened name.
static xa_status check_header_bytes(xa_ctx *ctx, const xa_st_file *f, const unsigned char *h,
                                    size_t n) {
    size_t bad = utf8_invalid_at(h, n);
    if (bad < n)
        return fail(ctx, XA_EFORMAT, f->path, NULL,
                    "header is not valid UTF-8 (byte 0x%02x at file offset %zu)", h[bad],
                    bad + 8);
    for (size_t i = 0; i < n; i++) {
        if (h[i] < 0x20 && h[i] != '\t' && h[i] != '\n' && h[i] != '\r')
            return fail(ctx, XA_EFORMAT, f->path, NULL,
                        "header contains control byte 0x%02x at file offset %zu", h[i], i + 8);
        if (h[i] == '\\') {
            if (i + 5 < n && !memcmp(h + i + 1, "u0000", 5))
                return fail(ctx, XA_EFORMAT, f->path, NULL,
                            "header contains an escaped NUL (\\u0000) at file offset %zu", i + 8);
            i++; // skip the escaped character, so "\\u0000" is not mistaken for one
        }
    }
    return XA_OK;
}

static xa_status parse_header(xa_ctx *ctx, xa_st_file *f) {
    xa_status st;
    const unsigned char *base = f->map->data;
    uint64_t n = load_le64(base);
    if (n > XA_ST_MAX_HEADER)
        return fail(ctx, XA_EFORMAT, f->path, NULL,
                    "header length %llu exceeds the limit of %llu bytes (not a safetensors file?)",
                    (unsigned long long)n, XA_ST_MAX_HEADER);
    if (n > f->file_size - 8)
        return fail(ctx, XA_EFORMAT, f->path, NULL,
                    "header length %llu runs past the end of the file (%llu bytes; at most %llu "
                    "fit); the file may be truncated",
                    (unsigned long long)n, (unsigned long long)f->file_size,
                    (unsigned long long)(f->file_size - 8));
    if (n == 0 || base[8] != '{')
        return fail(ctx, XA_EFORMAT, f->path, NULL, "header does not start with '{'%s",
                    n == 0 ? " (header length is 0)" : "");
    f->header_size = n;
    f->data = (unsigned char *)f->map->data + 8 + n;
    f->data_size = f->file_size - 8 - n;
    if ((st = check_header_bytes(ctx, f, base + 8, (size_t)n)))
        return st;

    char *text = xa_malloc(ctx, (size_t)n + 1); // cJSON gets a NUL-terminated copy
    if (!text)
        return XA_ENOMEM;
    memcpy(text, base + 8, (size_t)n);
    text[n] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - text) : 0;
        st = fail(ctx, XA_EFORMAT, f->path, NULL,
                  "header is not valid JSON (error near file offset %zu)", at + 8);
        goto out_text;
    }
    // cJSON stops after the first value; only whitespace padding may follow it.
    for (const char *p = end; p < text + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = fail(ctx, XA_EFORMAT, f->path, NULL,
                      "header has data after the JSON object at file offset %zu (only spaces may "
                      "pad it)",
                      (size_t)(p - text) + 8);
            goto out_json;
        }
    if (!cJSON_IsObject(root)) {
        st = fail(ctx, XA_EFORMAT, f->path, NULL, "header is %s, expected a JSON object",
                  json_kind(root));
        goto out_json;
    }
    st = read_tensors(ctx, f, root);

out_json:
    cJSON_Delete(root);
out_text:
    free(text);
    return st;
}

xa_status xa_st_open(xa_ctx *ctx, const char *path, xa_st_file **out) {
    xa_status st;
    *out = NULL;
    xa_st_file *f = xa_calloc(ctx, 1, sizeof *f);
    if (!f)
        return XA_ENOMEM;
    if (!(f->path = xa_strdup(ctx, path))) {
        st = XA_ENOMEM;
        goto out_close;
    }
    if ((st = map_file(ctx, f)) || (st = parse_header(ctx, f)))
        goto out_close;
    *out = f;
    return XA_OK;

out_close:
    xa_st_close(f); // takes a partly filled file apart
    return st;
}

void xa_st_close(xa_st_file *f) {
    if (!f)
        return;
    for (size_t i = 0; i < f->count; i++)
        free((char *)f->entries[i].name);
    for (size_t i = 0; i < 2 * f->meta_count; i++)
        free(f->meta[i]);
    free(f->meta);
    free(f->entries);
    free(f->by_name);
    xa_buffer_release(f->map); // views made by xa_st_tensor keep the mapping until released
    free(f->path);
    free(f);
}

const char *xa_st_path(const xa_st_file *f) { return f->path; }
size_t xa_st_count(const xa_st_file *f) { return f->count; }
uint64_t xa_st_file_size(const xa_st_file *f) { return f->file_size; }
uint64_t xa_st_header_size(const xa_st_file *f) { return f->header_size; }

const xa_st_entry *xa_st_at(const xa_st_file *f, size_t i) {
    return i < f->count ? &f->entries[i] : NULL;
}

const xa_st_entry *xa_st_find(const xa_st_file *f, const char *name) {
    size_t lo = 0, hi = f->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const xa_st_entry *e = &f->entries[f->by_name[mid]];
        int c = strcmp(name, e->name);
        if (c == 0)
            return e;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const void *xa_st_bytes(const xa_st_file *f, const xa_st_entry *e) { return f->data + e->begin; }

size_t xa_st_meta_count(const xa_st_file *f) { return f->meta_count; }

const char *xa_st_meta_key(const xa_st_file *f, size_t i) {
    return i < f->meta_count ? f->meta[2 * i] : NULL;
}

const char *xa_st_meta_value(const xa_st_file *f, size_t i) {
    return i < f->meta_count ? f->meta[2 * i + 1] : NULL;
}

const char *xa_st_meta_get(const xa_st_file *f, const char *key) {
    for (size_t i = 0; i < f->meta_count; i++)
        if (!strcmp(f->meta[2 * i], key))
            return f->meta[2 * i + 1];
    return NULL;
}

// --- conversion to f32 ----------------------------------------------------------------------

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// Exact: every f16 value (subnormals, infinities, NaN payloads) is representable in f32.
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f)
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp != 0)
        return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    float v = (float)mant * 0x1p-24f; // subnormal (or zero): exact, the result is a normal f32
    return sign ? -v : v;
}

static float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static void convert(float *dst, const unsigned char *src, xa_dtype dtype, size_t n) {
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case XA_DTYPE_F32: memcpy(&dst[i], src + 4 * i, 4); break;
        case XA_DTYPE_F16: dst[i] = f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8)); break;
        case XA_DTYPE_BF16:
            dst[i] = bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
            break;
        case XA_DTYPE_F64: {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
            break;
        }
        default: XA_ASSERT(!"convert: not a float dtype");
        }
    }
}

xa_status xa_st_tensor(xa_ctx *ctx, xa_st_file *f, const char *name, xa_tensor **out) {
    *out = NULL;
    char s[256];
    const xa_st_entry *e = xa_st_find(f, name);
    if (!e)
        return fail(ctx, XA_ENOTFOUND, f->path, name, "no such tensor in the file");
    if (e->ndim > XA_MAX_DIMS)
        return fail(ctx, XA_ERANGE, f->path, name,
                    "shape %s has %d dimensions; xadapt tensors have at most %d",
                    xa_shape_fmt(e->ndim, e->shape, s, sizeof s), e->ndim, XA_MAX_DIMS);
    if (e->dtype != XA_DTYPE_F32 && e->dtype != XA_DTYPE_F16 && e->dtype != XA_DTYPE_BF16 &&
        e->dtype != XA_DTYPE_F64)
        return fail(ctx, XA_EFORMAT, f->path, name,
                    "dtype %s does not convert to f32 (F32, F16, BF16 and F64 do; read integer "
                    "data with xa_st_bytes)",
                    xa_dtype_name(e->dtype));
    unsigned char *src = f->data + e->begin;
    xa_tensor *t;
    if (e->dtype == XA_DTYPE_F32 && (uintptr_t)src % _Alignof(float) == 0) {
        t = xa_tensor_view(ctx, f->map, (float *)(void *)src, e->ndim, e->shape);
    } else {
        t = xa_tensor_new(ctx, e->ndim, e->shape);
        if (t)
            convert(t->data, src, e->dtype, (size_t)t->numel);
    }
    if (!t)
        return xa_error_wrap(ctx, "%s: tensor '%s'", f->path, quoted(name, s, sizeof s));
    *out = t;
    return XA_OK;
}

// --- writing --------------------------------------------------------------------------------

typedef struct st_item {
    char *name;
    xa_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_RANK];
    const void *data;
    uint64_t nbytes;
} st_item;

struct xa_st_writer {
    xa_ctx *ctx;
    st_item *items;
    size_t count, cap;
    char **meta; // key0, value0, ...
    size_t meta_count, meta_cap;
};

xa_st_writer *xa_st_writer_new(xa_ctx *ctx) {
    xa_st_writer *w = xa_calloc(ctx, 1, sizeof *w);
    if (w)
        w->ctx = ctx;
    return w;
}

void xa_st_writer_free(xa_st_writer *w) {
    if (!w)
        return;
    for (size_t i = 0; i < w->count; i++)
        free(w->items[i].name);
    for (size_t i = 0; i < 2 * w->meta_count; i++)
        free(w->meta[i]);
    free(w->items);
    free(w->meta);
    free(w);
}

static bool utf8_ok(const char *s) {
    size_t n = strlen(s);
    return utf8_invalid_at((const unsigned char *)s, n) == n;
}

xa_status xa_st_writer_add(xa_st_writer *w, const char *name, xa_dtype dtype, int ndim,
                           const int64_t *shape, const void *data) {
    xa_ctx *ctx = w->ctx;
    const char *who = "safetensors writer";
    char s[256], q[256];
    if (!name || !utf8_ok(name) || !strcmp(name, "__metadata__"))
        return xa_errorf(ctx, XA_EINVAL, "%s: tensor name '%s' is not allowed (NULL, not UTF-8, "
                         "or __metadata__)", who, name ? quoted(name, q, sizeof q) : "(null)");
    quoted(name, q, sizeof q);
    if ((unsigned)dtype >= XA_DTYPE_COUNT)
        return xa_errorf(ctx, XA_EINVAL, "%s: tensor '%s': unknown dtype %d", who, q, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_RANK || (ndim && !shape))
        return xa_errorf(ctx, XA_EINVAL, "%s: tensor '%s': rank %d is outside 0..%d", who, q, ndim,
                         ST_MAX_RANK);
    bool over = false;
    for (int i = 0; i < ndim; i++)
        over |= shape[i] < 0 || (double)shape[i] >= ST_MAX_INT;
    int64_t numel = over ? -1 : xa_shape_numel(ndim, shape, &over);
    int64_t size = (int64_t)xa_dtype_size(dtype);
    if (over || numel > INT64_MAX / size || (double)(numel * size) >= ST_MAX_INT)
        return xa_errorf(ctx, XA_ERANGE, "%s: tensor '%s': shape %s is negative or too large", who,
                         q, xa_shape_fmt(ndim, shape, s, sizeof s));
    if (!data && numel > 0)
        return xa_errorf(ctx, XA_EINVAL, "%s: tensor '%s': data is NULL", who, q);
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        st_item *items = realloc(w->items, cap * sizeof *items);
        if (!items)
            return xa_errorf(ctx, XA_ENOMEM, "out of memory adding tensor '%s'", q);
        w->items = items;
        w->cap = cap;
    }
    st_item *it = &w->items[w->count];
    memset(it, 0, sizeof *it);
    if (!(it->name = xa_strdup(ctx, name)))
        return XA_ENOMEM;
    it->dtype = dtype;
    it->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        it->shape[i] = shape[i];
    it->data = data;
    it->nbytes = (uint64_t)(numel * size);
    w->count++;
    return XA_OK;
}

xa_status xa_st_writer_add_tensor(xa_st_writer *w, const char *name, const xa_tensor *t) {
    return xa_st_writer_add(w, name, XA_DTYPE_F32, t->ndim, t->shape, t->data);
}

xa_status xa_st_writer_meta(xa_st_writer *w, const char *key, const char *value) {
    xa_ctx *ctx = w->ctx;
    if (!key || !value || !utf8_ok(key) || !utf8_ok(value))
        return xa_errorf(ctx, XA_EINVAL,
                         "safetensors writer: metadata keys and values must be UTF-8 strings");
    char *v = xa_strdup(ctx, value);
    if (!v)
        return XA_ENOMEM;
    for (size_t i = 0; i < w->meta_count; i++)
        if (!strcmp(w->meta[2 * i], key)) { // set, not append: keys are unique in the header
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return XA_OK;
        }
    if (w->meta_count == w->meta_cap) {
        size_t cap = w->meta_cap ? 2 * w->meta_cap : 8;
        char **m = realloc(w->meta, 2 * cap * sizeof *m);
        if (!m) {
            free(v);
            return xa_errorf(ctx, XA_ENOMEM, "out of memory adding metadata");
        }
        w->meta = m;
        w->meta_cap = cap;
    }
    char *k = xa_strdup(ctx, key);
    if (!k) {
        free(v);
        return XA_ENOMEM;
    }
    w->meta[2 * w->meta_count] = k;
    w->meta[2 * w->meta_count + 1] = v;
    w->meta_count++;
    return XA_OK;
}

// The reference writer orders tensors by its Dtype enum, descending, then by name. That enum
// lists types by size, so the data of every tensor lands naturally aligned.
static int dtype_rank(xa_dtype t) {
    switch (t) {
    case XA_DTYPE_BOOL: return 0;
    case XA_DTYPE_U8: return 4;
    case XA_DTYPE_I8: return 5;
    case XA_DTYPE_I16: return 11;
    case XA_DTYPE_F16: return 13;
    case XA_DTYPE_BF16: return 14;
    case XA_DTYPE_I32: return 15;
    case XA_DTYPE_F32: return 17;
    case XA_DTYPE_F64: return 19;
    case XA_DTYPE_I64: return 20;
    default: return -1;
    }
}

static int cmp_item(const void *pa, const void *pb) {
    const st_item *a = pa, *b = pb;
    int ra = dtype_rank(a->dtype), rb = dtype_rank(b->dtype);
    if (ra != rb)
        return rb - ra;
    return strcmp(a->name, b->name);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

XA_PRINTF(2, 3)
static void sb_fmt(sbuf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    XA_ASSERT(n >= 0 && (size_t)n < sizeof tmp);
    sb_put(b, tmp, (size_t)n);
}

// A JSON string as serde_json writes it (the reference writer's serializer).
static void sb_json(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"': sb_str(b, "\\\""); break;
        case '\\': sb_str(b, "\\\\"); break;
        case '\b': sb_str(b, "\\b"); break;
        case '\f': sb_str(b, "\\f"); break;
        case '\n': sb_str(b, "\\n"); break;
        case '\r': sb_str(b, "\\r"); break;
        case '\t': sb_str(b, "\\t"); break;
        default:
            if (c < 0x20)
                sb_fmt(b, "\\u%04x", c);
            else
                sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static bool write_all(int fd, const void *data, uint64_t n) {
    const unsigned char *p = data;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : (size_t)n;
        ssize_t r = write(fd, p, chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;
            return false;
        }
        p += r;
        n -= (uint64_t)r;
    }
    return true;
}

// Build the whole header, padded with spaces to a multiple of 8 so the data starts aligned.
static xa_status build_header(xa_st_writer *w, sbuf *h) {
    sb_put(h, "{", 1);
    if (w->meta_count) {
        sb_str(h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->meta_count; i++) {
            if (i)
                sb_put(h, ",", 1);
            sb_json(h, w->meta[2 * i]);
            sb_put(h, ":", 1);
            sb_json(h, w->meta[2 * i + 1]);
        }
        sb_put(h, "}", 1);
    }
    uint64_t at = 0;
    for (size_t i = 0; i < w->count; i++) {
        const st_item *it = &w->items[i];
        if (w->meta_count || i)
            sb_put(h, ",", 1);
        sb_json(h, it->name);
        sb_fmt(h, ":{\"dtype\":\"%s\",\"shape\":[", xa_dtype_name(it->dtype));
        for (int d = 0; d < it->ndim; d++)
            sb_fmt(h, d ? ",%lld" : "%lld", (long long)it->shape[d]);
        sb_fmt(h, "],\"data_offsets\":[%llu,", (unsigned long long)at);
        at += it->nbytes;
        sb_fmt(h, "%llu]}", (unsigned long long)at);
        if ((double)at >= ST_MAX_INT)
            return xa_errorf(w->ctx, XA_ERANGE, "safetensors writer: data is larger than 2^53 "
                             "bytes");
    }
    sb_put(h, "}", 1);
    while (h->len % 8)
        sb_put(h, " ", 1);
    if (h->oom)
        return xa_errorf(w->ctx, XA_ENOMEM, "out of memory building a safetensors header");
    if (h->len > XA_ST_MAX_HEADER)
        return xa_errorf(w->ctx, XA_ERANGE, "safetensors writer: header of %zu bytes exceeds "
                         "the limit of %llu", h->len, XA_ST_MAX_HEADER);
    return XA_OK;
}

// fsync the directory holding `path`, so the rename itself survives a crash.
static int sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    if (r != 0 && errno == EINVAL) // some file systems cannot sync a directory; nothing to do
        r = 0;
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

xa_status xa_st_writer_write(xa_st_writer *w, const char *path) {
    xa_ctx *ctx = w->ctx;
    xa_status st = XA_OK;
    sbuf h = {0};
    char *tmp = NULL, q[256];
    int fd = -1;

    if (w->count) // qsort(NULL, 0, ...) is undefined
        qsort(w->items, w->count, sizeof *w->items, cmp_item);
    const char **names = xa_malloc(ctx, (w->count ? w->count : 1) * sizeof *names);
    if (!names)
        return XA_ENOMEM;
    for (size_t i = 0; i < w->count; i++)
        names[i] = w->items[i].name;
    qsort(names, w->count, sizeof *names, cmp_str);
    for (size_t i = 1; i < w->count && !st; i++)
        if (!strcmp(names[i - 1], names[i]))
            st = xa_errorf(ctx, XA_EINVAL, "%s: tensor '%s' was added twice", path,
                           quoted(names[i], q, sizeof q));
    free(names);
    if (st || (st = build_header(w, &h)))
        goto out_header;

    size_t tlen = strlen(path) + 32;
    if (!(tmp = xa_malloc(ctx, tlen))) {
        st = XA_ENOMEM;
        goto out_header;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) {
        st = xa_errorf(ctx, XA_EIO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto out_tmp;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    bool ok = write_all(fd, len8, 8) && write_all(fd, h.p, h.len);
    for (size_t i = 0; ok && i < w->count; i++)
        ok = write_all(fd, w->items[i].data, w->items[i].nbytes);
    if (!ok) {
        st = xa_errorf(ctx, XA_EIO, "%s: writing %s: %s", path, tmp, strerror(errno));
        goto out_unlink;
    }
    if (fsync(fd) != 0) {
        st = xa_errorf(ctx, XA_EIO, "%s: fsync of %s: %s", path, tmp, strerror(errno));
        goto out_unlink;
    }
    int r = close(fd);
    fd = -1;
    if (r != 0) {
        st = xa_errorf(ctx, XA_EIO, "%s: closing %s: %s", path, tmp, strerror(errno));
        goto out_unlink;
    }
    if (rename(tmp, path) != 0) {
        st = xa_errorf(ctx, XA_EIO, "%s: cannot rename %s into place: %s", path, tmp,
                       strerror(errno));
        goto out_unlink;
    }
    if (sync_dir(path) != 0) // the file is complete and in place; only durability is in doubt
        st = xa_errorf(ctx, XA_EIO, "%s: fsync of its directory: %s", path, strerror(errno));
    goto out_tmp;

out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out_tmp:
    free(tmp);
out_header:
    free(h.p);
    return st;
}
