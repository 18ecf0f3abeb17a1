// safetensors reader, writer and `xadapt inspect`. Malformed files are crafted here byte by byte
// (never committed); expected headers, messages and conversions are written out by hand from the
// format description and IEEE 754, not produced by the code under test.
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support.h"
#include "xadapt/safetensors.h"

static xa_ctx *ctx;
static char dir[4096];

static void setup(void) {
    ctx = xa_ctx_new();
    const char *d = make_tmpdir();
    cr_assert_not_null(ctx);
    cr_assert_not_null(d);
    snprintf(dir, sizeof dir, "%s", d);
}

static void teardown(void) {
    xa_ctx_free(ctx);
    remove_tree(dir);
}

TestSuite(safetensors, .init = setup, .fini = teardown);

static const char *tpath(const char *name) {
    static char ring[8][8192];
    static int at;
    char *p = ring[at++ % 8];
    snprintf(p, 8192, "%s/%s", dir, name);
    return p;
}

static size_t count_files(void) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return n;
}

// u64 LE `hlen`, the header text, then `ndata` bytes of `data` (zeros when NULL).
static const char *craft_len(const char *name, unsigned long long hlen, const char *header,
                             size_t nheader, const void *data, size_t ndata) {
    size_t n = 8 + nheader + ndata;
    unsigned char *buf = calloc(1, n);
    cr_assert_not_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, nheader);
    if (data)
        memcpy(buf + 8 + nheader, data, ndata);
    const char *p = tpath(name);
    cr_assert(write_file(p, buf, n));
    free(buf);
    return p;
}

static const char *craft(const char *name, const char *header, const void *data, size_t ndata) {
    return craft_len(name, strlen(header), header, strlen(header), data, ndata);
}

static unsigned char *slurp(const char *path, size_t *n) {
    unsigned char *b = (unsigned char *)read_file(path, n);
    cr_assert_not_null(b, "cannot read %s", path);
    return b;
}

// --- malformed files: one table, one test per case, and the CLI checks every case ----------

typedef struct bad_case {
    const char *id;     // file name is <id>.safetensors unless `file` is set
    const char *header; // JSON text; its length is the header length unless hlen is set
    unsigned long long hlen;
    size_t ndata;       // zero bytes after the header
    const char *raw;    // when set, the file is exactly these nraw bytes
    size_t nraw;
    xa_status code;
    const char *msg;    // expected substring after "<path>: "
    const char *file;
} bad_case;

// One header entry: E("a", "F32", "[2]", "[0,8]").
#define E(n, dt, shape, offs)                                                                      \
    "\"" n "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static const bad_case bad[] = {
    {"short", .raw = "\x05\0\0\0\0", .nraw = 5, .code = XA_EFORMAT,
     .msg = "file is 5 bytes, too short for the 8-byte header length"},
    {"empty", .raw = "", .nraw = 0, .code = XA_EFORMAT, .msg = "file is empty"},
    {"header_past_eof", "{}", .hlen = 1000, .code = XA_EFORMAT,
     .msg = "header length 1000 runs past the end of the file (10 bytes; at most 2 fit)"},
    {"header_over_cap", "{}", .hlen = 100000001, .code = XA_EFORMAT,
     .msg = "header length 100000001 exceeds the limit of 100000000 bytes"},
    {"no_brace", "x{}", .code = XA_EFORMAT, .msg = "header does not start with '{'"},
    {"zero_header", "", .code = XA_EFORMAT,
     .msg = "header does not start with '{' (header length is 0)"},
    {"top_level_array", "[{\"a\":1}]", .code = XA_EFORMAT, .msg = "header does not start with '{'"},
    {"invalid_json", "{\"a\":{\"dtype\":\"F32\",}}", .code = XA_EFORMAT,
     .msg = "header is not valid JSON (error near file offset"},
    {"trailing_garbage", "{} x", .code = XA_EFORMAT,
     .msg = "header has data after the JSON object at file offset 11"},
    {"not_utf8", "{\"\xff\":1}", .code = XA_EFORMAT,
     .msg = "header is not valid UTF-8 (byte 0xff at file offset 10)"},
    {"control_byte", "{\"a\x01\":1}", .code = XA_EFORMAT,
     .msg = "header contains control byte 0x01 at file offset 11"},
    {"escaped_nul", "{\"a\\u0000b\":1}", .code = XA_EFORMAT,
     .msg = "header contains an escaped NUL (\\u0000) at file offset 11"},
    {"entry_not_object", "{\"a\":\"F32\"}", .code = XA_EFORMAT,
     .msg = "tensor 'a': entry is a string, expected an object"},
    {"missing_dtype", "{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", .ndata = 4,
     .code = XA_EFORMAT, .msg = "tensor 'a': missing 'dtype'"},
    {"missing_shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", .ndata = 4,
     .code = XA_EFORMAT, .msg = "tensor 'a': missing 'shape'"},
    {"missing_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", .ndata = 4,
     .code = XA_EFORMAT, .msg = "tensor 'a': missing 'data_offsets'"},
    {"extra_key", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}",
     .ndata = 4, .code = XA_EFORMAT, .msg = "tensor 'a': unexpected key 'x'"},
    {"key_twice",
     "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
     .ndata = 4, .code = XA_EFORMAT, .msg = "tensor 'a': key 'dtype' appears twice"},
    {"dtype_not_string", "{\"a\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", .ndata = 4,
     .code = XA_EFORMAT, .msg = "tensor 'a': dtype is a number, expected a string"},
    {"unknown_dtype", "{" E("a", "F33", "[]", "[0,4]") "}", .ndata = 4, .code = XA_EFORMAT,
     .msg = "tensor 'a': unknown dtype 'F33'"},
    {"unsupported_dtype", "{" E("a", "F8_E4M3", "[]", "[0,1]") "}", .ndata = 1,
     .code = XA_EFORMAT, .msg = "tensor 'a': unsupported dtype 'F8_E4M3'"},
    {"shape_not_array", "{" E("a", "F32", "2", "[0,8]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': shape is a number, expected an array of integers"},
    {"negative_dim", "{" E("a", "F32", "[-1,2]", "[0,8]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': shape[0] is -1, expected a non-negative integer"},
    {"fractional_dim", "{" E("a", "F32", "[2.5]", "[0,8]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': shape[0] is 2.5, expected a non-negative integer"},
    {"string_dim", "{" E("a", "F32", "[1,\"2\"]", "[0,8]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': shape[1] is a string, expected a non-negative integer"},
    {"dim_too_large", "{" E("a", "U8", "[9007199254740992]", "[0,1]") "}", .ndata = 1,
     .code = XA_ERANGE, .msg = "tensor 'a': shape[0] is 9.0072e+15, too large"},
    {"product_overflow", "{" E("a", "U8", "[4294967296,4294967296]", "[0,1]") "}", .ndata = 1,
     .code = XA_ERANGE,
     .msg = "tensor 'a': shape (4294967296,4294967296) has more elements than fit in 64 bits"},
    {"bytes_overflow", "{" E("a", "F64", "[2147483648,2147483648]", "[0,1]") "}", .ndata = 1,
     .code = XA_ERANGE,
     .msg = "tensor 'a': shape (2147483648,2147483648) of F64 needs more than 2^63 bytes"},
    {"span_mismatch", "{" E("a.weight", "F32", "[2,3]", "[0,12]") "}", .ndata = 12,
     .code = XA_EFORMAT, .file = "model.safetensors",
     .msg = "tensor 'a.weight': data_offsets [0, 12] span 12 bytes but shape (2,3) of F32 needs "
            "24"},
    {"past_end", "{" E("a", "F32", "[4]", "[0,16]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': data_offsets [0, 16] end past the data section (8 bytes)"},
    {"begin_after_end", "{" E("a", "F32", "[1]", "[8,4]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': data_offsets [8, 4] begin after end"},
    {"negative_offset", "{" E("a", "F32", "[1]", "[-4,0]") "}", .ndata = 4, .code = XA_EFORMAT,
     .msg = "tensor 'a': data_offsets[0] is -4, expected a non-negative integer"},
    {"offsets_3", "{" E("a", "F32", "[1]", "[0,4,8]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': data_offsets has 3 elements, expected 2"},
    {"rank_9", "{" E("a", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", .ndata = 4,
     .code = XA_EFORMAT, .msg = "tensor 'a': shape has more than 8 dimensions"},
    {"overlap", "{" E("a", "F32", "[2]", "[0,8]") "," E("b", "F32", "[2]", "[4,12]") "}",
     .ndata = 12, .code = XA_EFORMAT,
     .msg = "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]"},
    {"hole", "{" E("b", "F32", "[1]", "[8,12]") "," E("a", "F32", "[1]", "[0,4]") "}",
     .ndata = 12, .code = XA_EFORMAT,
     .msg = "tensor 'b': data_offsets [8, 12] leave a gap of 4 bytes after tensor 'a' (which "
            "ends at 4)"},
    {"hole_at_start", "{" E("a", "F32", "[1]", "[4,8]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensor 'a': data_offsets [4, 8] leave a gap: the first 4 bytes of the data section "
            "are not indexed"},
    {"unindexed_tail", "{" E("a", "F32", "[1]", "[0,4]") "}", .ndata = 8, .code = XA_EFORMAT,
     .msg = "tensors cover 4 of the 8 bytes in the data section; the last 4 bytes are not "
            "indexed"},
    {"duplicate_name", "{" E("a", "F32", "[1]", "[0,4]") "," E("a", "F32", "[1]", "[4,8]") "}",
     .ndata = 8, .code = XA_EFORMAT, .msg = "tensor 'a': appears twice in the header"},
    {"meta_not_object", "{\"__metadata__\":\"x\"}", .code = XA_EFORMAT,
     .msg = "__metadata__ is a string, expected an object of strings"},
    {"meta_non_string", "{\"__metadata__\":{\"k\":1}}", .code = XA_EFORMAT,
     .msg = "__metadata__ key 'k': value is a number, expected a string"},
    {"meta_key_twice", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", .code = XA_EFORMAT,
     .msg = "__metadata__ key 'k' appears twice"},
    {"meta_twice", "{\"__metadata__\":{},\"__metadata__\":{}}", .code = XA_EFORMAT,
     .msg = "__metadata__ appears twice"},
    {"control_name", "{" E("a\\u001b[31m", "F33", "[]", "[0,4]") "}", .ndata = 4,
     .code = XA_EFORMAT, .msg = "tensor 'a\\x1b[31m': unknown dtype 'F33'"},
};

static const bad_case *find_case(const char *id) {
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (!strcmp(bad[i].id, id))
            return &bad[i];
    cr_assert_fail("no case '%s'", id);
    return NULL;
}

static const char *make_case(const bad_case *c) {
    char name[256];
    snprintf(name, sizeof name, "%s.safetensors", c->id);
    if (c->file)
        snprintf(name, sizeof name, "%s", c->file);
    if (c->raw) {
        const char *p = tpath(name);
        cr_assert(write_file(p, c->raw, c->nraw));
        return p;
    }
    size_t n = strlen(c->header);
    return craft_len(name, c->hlen ? c->hlen : n, c->header, n, NULL, c->ndata);
}

static void refuse(const char *id) {
    const bad_case *c = find_case(id);
    const char *path = make_case(c);
    xa_st_file *f = (xa_st_file *)&f; // must be reset to NULL
    xa_status st = xa_st_open(ctx, path, &f);
    cr_assert_eq(st, c->code, "%s: got %s (%s)", id, xa_status_name(st), xa_errmsg(ctx));
    cr_assert_null(f);
    char want[4096];
    snprintf(want, sizeof want, "%s: %s", path, c->msg);
    cr_assert(strstr(xa_errmsg(ctx), want), "%s:\n  message: %s\n  expected: %s", id,
              xa_errmsg(ctx), want);
}

Test(safetensors, rejects_a_file_shorter_than_8_bytes) { refuse("short"); }
Test(safetensors, rejects_an_empty_file) { refuse("empty"); }
Test(safetensors, rejects_a_header_length_past_the_end_of_the_file) { refuse("header_past_eof"); }
Test(safetensors, rejects_a_header_length_over_the_100MB_cap) { refuse("header_over_cap"); }
Test(safetensors, rejects_a_header_not_starting_with_a_brace) { refuse("no_brace"); }
Test(safetensors, rejects_a_zero_length_header) { refuse("zero_header"); }
Test(safetensors, rejects_a_top_level_array) { refuse("top_level_array"); }
Test(safetensors, rejects_invalid_json) { refuse("invalid_json"); }
Test(safetensors, rejects_non_space_bytes_after_the_json) { refuse("trailing_garbage"); }
Test(safetensors, rejects_a_header_that_is_not_utf8) { refuse("not_utf8"); }
Test(safetensors, rejects_a_raw_control_byte_in_the_header) { refuse("control_byte"); }
Test(safetensors, rejects_an_escaped_nul_in_a_name) { refuse("escaped_nul"); }
Test(safetensors, rejects_an_entry_that_is_not_an_object) { refuse("entry_not_object"); }
Test(safetensors, rejects_an_entry_without_dtype) { refuse("missing_dtype"); }
Test(safetensors, rejects_an_entry_without_shape) { refuse("missing_shape"); }
Test(safetensors, rejects_an_entry_without_data_offsets) { refuse("missing_offsets"); }
Test(safetensors, rejects_an_unexpected_key_in_an_entry) { refuse("extra_key"); }
Test(safetensors, rejects_a_key_repeated_inside_an_entry) { refuse("key_twice"); }
Test(safetensors, rejects_a_dtype_that_is_not_a_string) { refuse("dtype_not_string"); }
Test(safetensors, rejects_an_unknown_dtype) { refuse("unknown_dtype"); }
Test(safetensors, rejects_a_spec_dtype_xadapt_does_not_read) { refuse("unsupported_dtype"); }
Test(safetensors, rejects_a_shape_that_is_not_an_array) { refuse("shape_not_array"); }
Test(safetensors, rejects_a_negative_dimension) { refuse("negative_dim"); }
Test(safetensors, rejects_a_fractional_dimension) { refuse("fractional_dim"); }
Test(safetensors, rejects_a_string_dimension) { refuse("string_dim"); }
Test(safetensors, rejects_a_dimension_of_2_pow_53_or_more) { refuse("dim_too_large"); }
Test(safetensors, rejects_dimensions_whose_product_overflows_int64) { refuse("product_overflow"); }
Test(safetensors, rejects_a_byte_size_that_overflows) { refuse("bytes_overflow"); }
Test(safetensors, rejects_a_span_that_disagrees_with_shape_and_dtype) { refuse("span_mismatch"); }
Test(safetensors, rejects_offsets_past_end_of_file) { refuse("past_end"); }
Test(safetensors, rejects_begin_after_end) { refuse("begin_after_end"); }
Test(safetensors, rejects_a_negative_offset) { refuse("negative_offset"); }
Test(safetensors, rejects_data_offsets_with_3_elements) { refuse("offsets_3"); }
Test(safetensors, rejects_rank_above_8) { refuse("rank_9"); }
Test(safetensors, rejects_overlapping_entries) { refuse("overlap"); }
Test(safetensors, rejects_a_hole_between_entries) { refuse("hole"); }
Test(safetensors, rejects_a_hole_at_the_start_of_the_data) { refuse("hole_at_start"); }
Test(safetensors, rejects_unindexed_trailing_bytes) { refuse("unindexed_tail"); }
Test(safetensors, rejects_a_duplicate_tensor_name) { refuse("duplicate_name"); }
Test(safetensors, rejects_metadata_that_is_not_an_object) { refuse("meta_not_object"); }
Test(safetensors, rejects_a_non_string_metadata_value) { refuse("meta_non_string"); }
Test(safetensors, rejects_a_duplicate_metadata_key) { refuse("meta_key_twice"); }
Test(safetensors, rejects_two_metadata_objects) { refuse("meta_twice"); }
Test(safetensors, escapes_control_bytes_of_names_in_messages) { refuse("control_name"); }

Test(safetensors, rejects_a_missing_file_with_the_os_reason) {
    xa_st_file *f;
    const char *p = tpath("nope.safetensors");
    cr_assert_eq(xa_st_open(ctx, p, &f), XA_EIO);
    char want[8192];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", p);
    cr_assert_str_eq(xa_errmsg(ctx), want);
}

Test(safetensors, rejects_a_directory) {
    xa_st_file *f;
    cr_assert_eq(xa_st_open(ctx, dir, &f), XA_EIO);
    cr_assert(strstr(xa_errmsg(ctx), "not a regular file"), "%s", xa_errmsg(ctx));
}

// --- valid files ----------------------------------------------------------------------------

Test(safetensors, accepts_an_empty_object_with_no_data) {
    xa_st_file *f;
    cr_assert_eq(xa_st_open(ctx, craft("e.safetensors", "{}", NULL, 0), &f), XA_OK, "%s",
                 xa_errmsg(ctx));
    cr_assert_eq(xa_st_count(f), 0);
    cr_assert_eq(xa_st_meta_count(f), 0);
    cr_assert_null(xa_st_at(f, 0));
    xa_st_close(f);
}

Test(safetensors, accepts_json_whitespace_padding_after_the_header) {
    xa_st_file *f;
    const char *p =
        craft("pad.safetensors", "{" E("a", "U8", "[1]", "[0,1]") "}  \n \t\r ", "\x07", 1);
    cr_assert_eq(xa_st_open(ctx, p, &f), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_st_count(f), 1);
    cr_assert_eq(*(const unsigned char *)xa_st_bytes(f, xa_st_at(f, 0)), 7);
    xa_st_close(f);
}

Test(safetensors, lists_entries_in_offset_order_and_finds_them_by_name) {
    // Header order differs from offset order; empty tensors share an offset with their neighbour.
    const char *p = craft("order.safetensors",
                          "{" E("z", "U8", "[2]", "[1,3]") "," E("e2", "F32", "[0]", "[3,3]") ","
                          E("y", "U8", "[1]", "[0,1]") "," E("e1", "F32", "[4,0]", "[3,3]") "}",
                          "abc", 3);
    xa_st_file *f;
    cr_assert_eq(xa_st_open(ctx, p, &f), XA_OK, "%s", xa_errmsg(ctx));
    const char *want[] = {"y", "z", "e2", "e1"}; // ties on offset keep header order
    cr_assert_eq(xa_st_count(f), 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(xa_st_at(f, i)->name, want[i]);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(xa_st_find(f, want[i]), xa_st_at(f, i));
    cr_assert_null(xa_st_find(f, "x"));
    cr_assert_eq(memcmp(xa_st_bytes(f, xa_st_find(f, "z")), "bc", 2), 0);
    cr_assert_eq(xa_st_find(f, "e1")->ndim, 2);
    cr_assert_eq(xa_st_find(f, "e1")->shape[0], 4);
    xa_st_close(f);
}

static const uint16_t f16_bits[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0200, 0x0400,
                                    0x3c00, 0xc000, 0x7bff, 0x3555, 0x7c00, 0xfc00, 0x7e00};
static const uint32_t f16_as_f32[] = {0x00000000, 0x80000000, 0x33800000, 0xb3800000, 0x387fc000,
                                      0x38000000, 0x38800000, 0x3f800000, 0xc0000000, 0x477fe000,
                                      0x3eaaa000, 0x7f800000, 0xff800000, 0x7fc00000};

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static xa_tensor *read_one(const char *path, const char *name) {
    xa_st_file *f;
    xa_tensor *t;
    cr_assert_eq(xa_st_open(ctx, path, &f), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_st_tensor(ctx, f, name, &t), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_close(f);
    return t;
}

static const char *write_one(const char *file, const char *name, xa_dtype dt, int ndim,
                             const int64_t *shape, const void *data) {
    xa_st_writer *w = xa_st_writer_new(ctx);
    cr_assert_not_null(w);
    cr_assert_eq(xa_st_writer_add(w, name, dt, ndim, shape, data), XA_OK, "%s", xa_errmsg(ctx));
    const char *p = tpath(file);
    cr_assert_eq(xa_st_writer_write(w, p), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);
    return p;
}

Test(safetensors, converts_f16_exactly_including_subnormals_inf_and_nan) {
    int64_t n = sizeof f16_bits / sizeof *f16_bits;
    xa_tensor *t = read_one(write_one("h.safetensors", "h", XA_DTYPE_F16, 1, &n, f16_bits), "h");
    cr_assert_eq(t->numel, n);
    cr_assert_not(t->buf->readonly, "a converted tensor is a heap copy");
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(bits_of(t->data[i]), f16_as_f32[i], "f16 0x%04x -> 0x%08x, want 0x%08x",
                     f16_bits[i], bits_of(t->data[i]), f16_as_f32[i]);
    cr_assert_eq(t->data[2], 0x1p-24f);
    cr_assert_eq(t->data[9], 65504.0f);
    xa_tensor_release(t);

    uint16_t snan = 0x7c01; // signalling NaN: still a NaN, never an infinity
    int64_t one = 1;
    t = read_one(write_one("s.safetensors", "s", XA_DTYPE_F16, 1, &one, &snan), "s");
    cr_assert(isnan(t->data[0]));
    xa_tensor_release(t);
}

Test(safetensors, converts_bf16_exactly_including_subnormals_inf_and_nan) {
    const uint16_t in[] = {0x3f80, 0x0001, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x4049, 0x807f};
    const uint32_t want[] = {0x3f800000, 0x00010000, 0x80000000, 0x7f800000,
                             0xff800000, 0x7fc00000, 0x40490000, 0x807f0000};
    int64_t n = 8;
    xa_tensor *t = read_one(write_one("b.safetensors", "b", XA_DTYPE_BF16, 1, &n, in), "b");
    for (int i = 0; i < 8; i++)
        cr_assert_eq(bits_of(t->data[i]), want[i], "bf16 0x%04x -> 0x%08x", in[i],
                     bits_of(t->data[i]));
    cr_assert_eq(t->data[6], 3.140625f);
    xa_tensor_release(t);
}

Test(safetensors, converts_f64_to_the_nearest_f32) {
    const double in[] = {1.0 / 3.0, -0.0, 1e300, 1e-50, -2.5};
    const uint32_t want[] = {0x3eaaaaab, 0x80000000, 0x7f800000, 0x00000000, 0xc0200000};
    int64_t n = 5;
    xa_tensor *t = read_one(write_one("d.safetensors", "d", XA_DTYPE_F64, 1, &n, in), "d");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(bits_of(t->data[i]), want[i], "%g -> 0x%08x", in[i], bits_of(t->data[i]));
    xa_tensor_release(t);
}

Test(safetensors, gives_a_read_only_zero_copy_view_that_outlives_the_file) {
    const float v[6] = {1, 2, 3, 4, 5, 6};
    const char *p = write_one("v.safetensors", "w", XA_DTYPE_F32, 2, (int64_t[]){2, 3}, v);
    xa_st_file *f;
    xa_tensor *t;
    cr_assert_eq(xa_st_open(ctx, p, &f), XA_OK);
    cr_assert_eq(xa_st_tensor(ctx, f, "w", &t), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq((const void *)t->data, xa_st_bytes(f, xa_st_find(f, "w")), "not zero-copy");
    cr_assert(t->buf->readonly);
    cr_assert(t->flags & XA_TENSOR_READONLY);
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 2);
    cr_assert_eq(t->shape[1], 3);
    xa_tensor *t2;
    cr_assert_eq(xa_st_tensor(ctx, f, "w", &t2), XA_OK);
    xa_st_close(f);
    unlink(p); // the mapping, not the name, keeps the bytes
    cr_assert_eq(memcmp(t->data, v, sizeof v), 0);
    xa_tensor_release(t);
    cr_assert_eq(t2->data[5], 6.0f); // one view released, the other still maps the file
    xa_tensor_release(t2);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN true // ASan turns SIGSEGV into its own report and exit status
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN true
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN false
#endif

Test(safetensors, writing_through_a_view_is_a_crash_not_a_silent_change, .signal = SIGSEGV,
     .disabled = UNDER_ASAN) {
    const float v[2] = {1, 2};
    const char *p = write_one("ro.safetensors", "w", XA_DTYPE_F32, 1, (int64_t[]){2}, v);
    xa_tensor *t = read_one(p, "w");
    unlink(p); // .fini does not run after the crash: leave nothing behind
    rmdir(dir);
    volatile float *d = t->data;
    d[0] = 42.0f;
}

Test(safetensors, copies_misaligned_f32_data) {
    // Header length chosen so the data section starts 2 bytes past a 4-byte boundary.
    char hdr[128] = "{" E("a", "F32", "[2]", "[0,8]") "}";
    while ((8 + strlen(hdr)) % 4 != 2)
        strcat(hdr, " ");
    const float v[2] = {1.5f, -7.25f};
    xa_tensor *t = read_one(craft("mis.safetensors", hdr, v, sizeof v), "a");
    cr_assert_not(t->buf->readonly);
    cr_assert_eq(t->data[0], 1.5f);
    cr_assert_eq(t->data[1], -7.25f);
    xa_tensor_release(t);
}

Test(safetensors, reads_scalars_and_empty_tensors) {
    const float x = 3.5f;
    xa_st_writer *w = xa_st_writer_new(ctx);
    cr_assert_eq(xa_st_writer_add(w, "scalar", XA_DTYPE_F32, 0, NULL, &x), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "empty", XA_DTYPE_F32, 2, (int64_t[]){0, 3}, NULL), XA_OK);
    const char *p = tpath("se.safetensors");
    cr_assert_eq(xa_st_writer_write(w, p), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);

    xa_st_file *f;
    cr_assert_eq(xa_st_open(ctx, p, &f), XA_OK, "%s", xa_errmsg(ctx));
    const xa_st_entry *s = xa_st_find(f, "scalar"), *e = xa_st_find(f, "empty");
    cr_assert_eq(s->ndim, 0);
    cr_assert_eq(s->end - s->begin, 4);
    cr_assert_eq(e->ndim, 2);
    cr_assert_eq(e->begin, e->end);
    xa_tensor *ts, *te;
    cr_assert_eq(xa_st_tensor(ctx, f, "scalar", &ts), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_st_tensor(ctx, f, "empty", &te), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(ts->ndim, 0);
    cr_assert_eq(ts->numel, 1);
    cr_assert_eq(ts->data[0], 3.5f);
    cr_assert_eq(te->numel, 0);
    xa_tensor_release(ts);
    xa_tensor_release(te);
    xa_st_close(f);
}

Test(safetensors, refuses_integer_rank_5_and_missing_tensors_as_f32) {
    const char *p = craft("ints.safetensors",
                          "{" E("i", "I64", "[1]", "[0,8]") ","
                          E("r5", "U8", "[1,1,1,1,2]", "[8,10]") "}",
                          NULL, 10);
    xa_st_file *f;
    xa_tensor *t = (xa_tensor *)&t;
    cr_assert_eq(xa_st_open(ctx, p, &f), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_st_tensor(ctx, f, "i", &t), XA_EFORMAT);
    cr_assert_null(t);
    cr_assert(strstr(xa_errmsg(ctx), "tensor 'i': dtype I64 does not convert to f32"), "%s",
              xa_errmsg(ctx));
    cr_assert_eq(xa_st_tensor(ctx, f, "r5", &t), XA_ERANGE);
    cr_assert(strstr(xa_errmsg(ctx), "tensor 'r5': shape (1,1,1,1,2) has 5 dimensions; xadapt "
                                     "tensors have at most 4"), "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_st_find(f, "r5")->ndim, 5);
    cr_assert_eq(xa_st_tensor(ctx, f, "nope", &t), XA_ENOTFOUND);
    cr_assert(strstr(xa_errmsg(ctx), "ints.safetensors: tensor 'nope': no such tensor"), "%s",
              xa_errmsg(ctx));
    xa_st_close(f);
}

Test(safetensors, accepts_every_fuzz_seed) {
    const char *corpus = src_path("tests/fuzz/corpus_safetensors");
    DIR *d = opendir(corpus);
    cr_assert_not_null(d, "%s", corpus);
    struct dirent *de;
    int n = 0;
    char p[8192];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", corpus, de->d_name);
        xa_st_file *f;
        cr_assert_eq(xa_st_open(ctx, p, &f), XA_OK, "%s", xa_errmsg(ctx));
        for (size_t i = 0; i < xa_st_count(f); i++) {
            xa_tensor *t = NULL;
            xa_st_tensor(ctx, f, xa_st_at(f, i)->name, &t);
            xa_tensor_release(t);
        }
        xa_st_close(f);
        n++;
    }
    closedir(d);
    cr_assert_geq(n, 5, "seeds in %s", corpus);
}

// --- the writer -----------------------------------------------------------------------------

Test(safetensors, writes_the_header_as_the_reference_writer_does) {
    // Reference order: dtype descending (I64 > F32 > F16), then name; __metadata__ first; compact
    // JSON; spaces up to a multiple of 8.
    const int64_t one = 1;
    const int64_t i64 = 0x0102030405060708;
    const float fa = 1.0f, fb = 2.0f;
    const uint16_t h = 0x3c00;
    xa_st_writer *w = xa_st_writer_new(ctx);
    cr_assert_eq(xa_st_writer_add(w, "b", XA_DTYPE_F32, 1, &one, &fb), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "h", XA_DTYPE_F16, 1, &one, &h), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "a", XA_DTYPE_F32, 1, &one, &fa), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "c", XA_DTYPE_I64, 1, &one, &i64), XA_OK);
    cr_assert_eq(xa_st_writer_meta(w, "format", "pt"), XA_OK);
    const char *p = tpath("ref.safetensors");
    cr_assert_eq(xa_st_writer_write(w, p), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);

    const char want_hdr[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[16,18]}}";
    size_t hn = sizeof want_hdr - 1, padded = (hn + 7) / 8 * 8;
    unsigned char want[512] = {(unsigned char)padded, (unsigned char)(padded >> 8)};
    memcpy(want + 8, want_hdr, hn);
    memset(want + 8 + hn, ' ', padded - hn);
    unsigned char *d = want + 8 + padded;
    memcpy(d, "\x08\x07\x06\x05\x04\x03\x02\x01\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x3c", 18);
    size_t n;
    unsigned char *got = slurp(p, &n);
    cr_assert_eq(n, 8 + padded + 18);
    cr_assert_eq(memcmp(got, want, n), 0, "file differs from the reference layout:\n%.*s", (int)n,
                 (const char *)got + 8);
    free(got);
    cr_assert_eq(count_files(), 1, "the temporary file is gone");
}

Test(safetensors, round_trips_bit_identically_and_rewrites_identically) {
    const float f32[6] = {1.0f, -0.0f, 3.25f, 1e-40f, -INFINITY, 0x1.fffffep127f};
    const uint16_t f16[4] = {0x3c00, 0x0001, 0x7c00, 0x7e01};
    const uint16_t bf16[3] = {0x3f80, 0x0001, 0xffc1};
    const int64_t i64[2] = {-1, INT64_MAX};
    xa_st_writer *w = xa_st_writer_new(ctx);
    cr_assert_eq(xa_st_writer_add(w, "enc.w", XA_DTYPE_F32, 2, (int64_t[]){2, 3}, f32), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "enc.h", XA_DTYPE_F16, 1, (int64_t[]){4}, f16), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "enc.b", XA_DTYPE_BF16, 1, (int64_t[]){3}, bf16), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "ids \"q\"\n", XA_DTYPE_I64, 1, (int64_t[]){2}, i64), XA_OK);
    cr_assert_eq(xa_st_writer_meta(w, "format", "pt"), XA_OK);
    cr_assert_eq(xa_st_writer_meta(w, "adapter.type", "lora"), XA_OK);
    cr_assert_eq(xa_st_writer_meta(w, "note", "line\none \xc3\xa9 \"q\" \\"), XA_OK);
    cr_assert_eq(xa_st_writer_meta(w, "adapter.type", "bottleneck"), XA_OK); // replaces
    const char *p1 = tpath("rt1.safetensors"), *p2 = tpath("rt2.safetensors");
    cr_assert_eq(xa_st_writer_write(w, p1), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);

    xa_st_file *f;
    cr_assert_eq(xa_st_open(ctx, p1, &f), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_st_header_size(f) % 8, 0);
    struct {
        const char *name;
        xa_dtype dt;
        const void *data;
        size_t n;
    } want[] = {{"ids \"q\"\n", XA_DTYPE_I64, i64, sizeof i64},
                {"enc.w", XA_DTYPE_F32, f32, sizeof f32},
                {"enc.b", XA_DTYPE_BF16, bf16, sizeof bf16},
                {"enc.h", XA_DTYPE_F16, f16, sizeof f16}};
    cr_assert_eq(xa_st_count(f), 4);
    for (size_t i = 0; i < 4; i++) {
        const xa_st_entry *e = xa_st_at(f, i);
        cr_assert_str_eq(e->name, want[i].name);
        cr_assert_eq(e->dtype, want[i].dt);
        cr_assert_eq(e->end - e->begin, want[i].n);
        cr_assert_eq(memcmp(xa_st_bytes(f, e), want[i].data, want[i].n), 0, "%s", e->name);
    }
    cr_assert_eq(xa_st_meta_count(f), 3);
    cr_assert_str_eq(xa_st_meta_key(f, 0), "format");
    cr_assert_str_eq(xa_st_meta_value(f, 1), "bottleneck");
    cr_assert_str_eq(xa_st_meta_get(f, "note"), "line\none \xc3\xa9 \"q\" \\");
    cr_assert_null(xa_st_meta_get(f, "absent"));

    w = xa_st_writer_new(ctx);
    for (size_t i = xa_st_count(f); i-- > 0;) { // reverse order: the writer sorts on its own
        const xa_st_entry *e = xa_st_at(f, i);
        cr_assert_eq(xa_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, xa_st_bytes(f, e)),
                     XA_OK);
    }
    for (size_t i = 0; i < xa_st_meta_count(f); i++)
        cr_assert_eq(xa_st_writer_meta(w, xa_st_meta_key(f, i), xa_st_meta_value(f, i)), XA_OK);
    cr_assert_eq(xa_st_writer_write(w, p2), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);
    xa_st_close(f);

    size_t n1, n2;
    unsigned char *b1 = slurp(p1, &n1), *b2 = slurp(p2, &n2);
    cr_assert_eq(n1, n2);
    cr_assert_eq(memcmp(b1, b2, n1), 0, "rewritten file differs");
    free(b1);
    free(b2);
}

// tests/golden/st_io.py (an independent Python writer of the reference layout) wrote these.
static int rewrite_identically(const char *path) {
    xa_st_file *f;
    cr_assert_eq(xa_st_open(ctx, path, &f), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer *w = xa_st_writer_new(ctx);
    for (size_t i = 0; i < xa_st_count(f); i++) {
        const xa_st_entry *e = xa_st_at(f, i);
        cr_assert_eq(xa_st_writer_add(w, e->name, e->dtype, e->ndim, e->shape, xa_st_bytes(f, e)),
                     XA_OK, "%s", xa_errmsg(ctx));
    }
    for (size_t i = 0; i < xa_st_meta_count(f); i++)
        cr_assert_eq(xa_st_writer_meta(w, xa_st_meta_key(f, i), xa_st_meta_value(f, i)), XA_OK);
    const char *out = tpath("rewritten.safetensors");
    cr_assert_eq(xa_st_writer_write(w, out), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);
    xa_st_close(f);
    size_t n1, n2;
    unsigned char *a = slurp(path, &n1), *b = slurp(out, &n2);
    cr_assert(n1 == n2 && memcmp(a, b, n1) == 0, "%s: rewritten file differs", path);
    free(a);
    free(b);
    return 1;
}

Test(safetensors, rewrites_the_golden_fixtures_byte_identically) {
    const char *root = src_path("tests/golden/fixtures");
    DIR *d = opendir(root);
    if (!d)
        cr_skip_test("no fixtures in %s", root);
    int n = 0;
    struct dirent *de;
    char sub[4096], p[4096 + 512];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof sub, "%s/%s", root, de->d_name);
        DIR *s = opendir(sub);
        struct dirent *fe;
        while (s && (fe = readdir(s))) {
            size_t len = strlen(fe->d_name);
            if (len > 12 && !strcmp(fe->d_name + len - 12, ".safetensors")) {
                snprintf(p, sizeof p, "%s/%s", sub, fe->d_name);
                n += rewrite_identically(p);
            }
        }
        if (s)
            closedir(s);
    }
    closedir(d);
    cr_assert_gt(n, 0);
}

Test(safetensors, writes_tensors_from_memory_as_f32) {
    xa_tensor *t = xa_tensor_new_nd(ctx, 2, 2, 0, 0);
    for (int i = 0; i < 4; i++)
        t->data[i] = (float)i - 1.5f;
    xa_st_writer *w = xa_st_writer_new(ctx);
    cr_assert_eq(xa_st_writer_add_tensor(w, "t", t), XA_OK);
    const char *p = tpath("t.safetensors");
    cr_assert_eq(xa_st_writer_write(w, p), XA_OK, "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);
    xa_tensor *r = read_one(p, "t");
    cr_assert(xa_shape_equal(r, t));
    cr_assert_eq(memcmp(r->data, t->data, 16), 0);
    xa_tensor_release(r);
    xa_tensor_release(t);
}

Test(safetensors, writer_refuses_duplicate_and_reserved_names) {
    const float x = 1;
    xa_st_writer *w = xa_st_writer_new(ctx);
    cr_assert_eq(xa_st_writer_add(w, "__metadata__", XA_DTYPE_F32, 0, NULL, &x), XA_EINVAL);
    cr_assert_eq(xa_st_writer_add(w, "bad \xff", XA_DTYPE_F32, 0, NULL, &x), XA_EINVAL);
    cr_assert_eq(xa_st_writer_add(w, "neg", XA_DTYPE_F32, 1, (int64_t[]){-1}, &x), XA_ERANGE);
    cr_assert_eq(xa_st_writer_add(w, "nul", XA_DTYPE_F32, 1, (int64_t[]){2}, NULL), XA_EINVAL);
    cr_assert_eq(xa_st_writer_add(w, "a", XA_DTYPE_F32, 0, NULL, &x), XA_OK);
    cr_assert_eq(xa_st_writer_add(w, "a", XA_DTYPE_U8, 0, NULL, &x), XA_OK);
    const char *p = tpath("dup.safetensors");
    cr_assert_eq(xa_st_writer_write(w, p), XA_EINVAL);
    cr_assert(strstr(xa_errmsg(ctx), "tensor 'a' was added twice"), "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);
    cr_assert_eq(count_files(), 0);
}

Test(safetensors, a_failed_write_leaves_no_temporary_file_and_keeps_the_target) {
    const float x = 1;
    const char *target = tpath("target");
    cr_assert_eq(mkdir(target, 0755), 0); // rename() over a directory fails after the data is out
    xa_st_writer *w = xa_st_writer_new(ctx);
    cr_assert_eq(xa_st_writer_add(w, "x", XA_DTYPE_F32, 0, NULL, &x), XA_OK);
    cr_assert_eq(xa_st_writer_write(w, target), XA_EIO);
    cr_assert(strstr(xa_errmsg(ctx), "cannot rename"), "%s", xa_errmsg(ctx));
    cr_assert_eq(count_files(), 1, "only the directory is left");
    struct stat sb;
    cr_assert(stat(target, &sb) == 0 && S_ISDIR(sb.st_mode));
    rmdir(target);

    cr_assert_eq(xa_st_writer_write(w, tpath("no/such/dir/x.safetensors")), XA_EIO);
    cr_assert(strstr(xa_errmsg(ctx), "cannot create"), "%s", xa_errmsg(ctx));
    xa_st_writer_free(w);
}

// --- xadapt inspect -------------------------------------------------------------------------

static const char inspect_header[] =
    "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"two words\"},"
    "\"encoder.layer.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,768],\"data_offsets\":[31,31]},"
    "\"bias\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[24,30]},"
    "\"step\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[30,31]}}";

Test(safetensors, inspect_prints_the_tensor_table_and_metadata) {
    const char *p = craft("good.safetensors", inspect_header, NULL, 31);
    size_t hn = sizeof inspect_header - 1;
    char want[4096];
    snprintf(want, sizeof want,
             "%s: %zu bytes, header %zu bytes, 4 tensors, 10 parameters\n"
             "\n"
             "name                    dtype  shape           bytes\n"
             "encoder.layer.0.weight  F32    (2,3)              24\n"
             "bias                    BF16   (3)                 6\n"
             "step                    U8     ()                  1\n"
             "empty                   F32    (0,768)             0\n"
             "\n"
             "metadata:\n"
             "  format = pt\n"
             "  note = two words\n",
             p, 8 + hn + 31, hn);
    run_result r = run_xadapt((const char *[]){"inspect", p, NULL});
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, want);
    cr_assert_str_eq(r.err, "");
    run_free(&r);
}

Test(safetensors, inspect_prints_json_with_the_same_content) {
    const char *p = craft("good.safetensors", inspect_header, NULL, 31);
    size_t hn = sizeof inspect_header - 1;
    char want[4096];
    snprintf(want, sizeof want,
             "{\n"
             "  \"file\": \"%s\",\n"
             "  \"size\": %zu,\n"
             "  \"header_size\": %zu,\n"
             "  \"tensor_count\": 4,\n"
             "  \"parameters\": 10,\n"
             "  \"tensors\": [\n"
             "    {\"name\": \"encoder.layer.0.weight\", \"dtype\": \"F32\", \"shape\": [2, 3], "
             "\"bytes\": 24, \"data_offsets\": [0, 24]},\n"
             "    {\"name\": \"bias\", \"dtype\": \"BF16\", \"shape\": [3], \"bytes\": 6, "
             "\"data_offsets\": [24, 30]},\n"
             "    {\"name\": \"step\", \"dtype\": \"U8\", \"shape\": [], \"bytes\": 1, "
             "\"data_offsets\": [30, 31]},\n"
             "    {\"name\": \"empty\", \"dtype\": \"F32\", \"shape\": [0, 768], \"bytes\": 0, "
             "\"data_offsets\": [31, 31]}\n"
             "  ],\n"
             "  \"metadata\": {\n"
             "    \"format\": \"pt\",\n"
             "    \"note\": \"two words\"\n"
             "  }\n"
             "}\n",
             p, 8 + hn + 31, hn);
    run_result r = run_xadapt((const char *[]){"inspect", p, "--json", NULL});
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, want);
    run_free(&r);
}

Test(safetensors, inspect_of_a_file_without_tensors_prints_only_the_summary) {
    const char *p = craft("none.safetensors", "{}      ", NULL, 0);
    char want[4096];
    snprintf(want, sizeof want, "%s: 16 bytes, header 8 bytes, 0 tensors, 0 parameters\n", p);
    run_result r = run_xadapt((const char *[]){"inspect", p, NULL});
    cr_assert_eq(r.status, 0);
    cr_assert_str_eq(r.out, want);
    run_free(&r);
    r = run_xadapt((const char *[]){"inspect", "--json", p, NULL});
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "\"tensors\": [],\n  \"metadata\": {}\n}\n"), "%s", r.out);
    run_free(&r);
}

Test(safetensors, inspect_refuses_every_bad_file_with_exit_1_and_empty_stdout) {
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = make_case(&bad[i]);
        size_t before = count_files();
        run_result r = run_xadapt((const char *[]){"inspect", p, NULL});
        char want[4096];
        snprintf(want, sizeof want, "xadapt inspect: %s: %s", p, bad[i].msg);
        cr_assert_eq(r.status, 1, "%s: exit %d, stderr: %s", bad[i].id, r.status, r.err);
        cr_assert_str_eq(r.out, "", "%s: stdout must stay empty", bad[i].id);
        cr_assert_eq(strncmp(r.err, want, strlen(want)), 0, "%s:\n  stderr: %s  expected: %s",
                     bad[i].id, r.err, want);
        cr_assert_eq(count_files(), before, "%s: inspect wrote a file", bad[i].id);
        run_free(&r);
    }
}

Test(safetensors, inspect_reports_a_missing_file) {
    const char *p = tpath("missing.safetensors");
    run_result r = run_xadapt((const char *[]){"inspect", p, "--json", NULL});
    char want[8192];
    snprintf(want, sizeof want, "xadapt inspect: %s: cannot open: No such file or directory\n", p);
    cr_assert_eq(r.status, 1);
    cr_assert_str_eq(r.out, "");
    cr_assert_str_eq(r.err, want);
    run_free(&r);
}

Test(safetensors, inspect_usage_errors_exit_2_and_help_exits_0) {
    run_result r = run_xadapt((const char *[]){"inspect", NULL});
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "usage: xadapt inspect FILE.safetensors [--json]"), "%s", r.err);
    run_free(&r);
    r = run_xadapt((const char *[]){"inspect", "a", "b", NULL});
    cr_assert_eq(r.status, 2);
    run_free(&r);
    r = run_xadapt((const char *[]){"inspect", "--frob", "a", NULL});
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "unknown option '--frob'"), "%s", r.err);
    run_free(&r);
    r = run_xadapt((const char *[]){"inspect", "--help", NULL});
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "usage: xadapt inspect"), "%s", r.out);
    cr_assert_str_eq(r.err, "");
    run_free(&r);
    r = run_xadapt((const char *[]){"--help", NULL});
    cr_assert(strstr(r.out, "  inspect      print the tensor table and metadata of a "
                            ".safetensors file\n"), "%s", r.out);
    run_free(&r);
}
