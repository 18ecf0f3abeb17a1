// `xadapt inspect FILE.safetensors [--json]`: the tensor table and metadata of a safetensors
// file, as text or JSON. Validation is the library's (xa_st_open); this file only formats. It
// reads, never writes, and prints nothing to stdout until the whole file has been accepted.
#include "cli.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "xadapt/safetensors.h"

static void usage(FILE *out) {
    fprintf(out, "usage: xadapt inspect FILE.safetensors [--json]\n"
                 "\n"
                 "Validate a .safetensors file and print its tensors in file order (name, dtype,\n"
                 "shape, bytes) and its __metadata__. Exits 1 when the file is malformed.\n"
                 "\n"
                 "  --json   print the same as one JSON object\n"
                 "  --help   this text\n");
}

// Text mode: control bytes in names and values are shown escaped so a file cannot drive the
// terminal; everything else (UTF-8 included) is printed as it is.
static void put_text(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static int text_width(const char *s) {
    int n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            n += c == '\n' ? 2 : 4;
        else if ((c & 0xc0) != 0x80) // one column per code point, a fair guess for names
            n++;
    }
    return n;
}

static void put_padded(const char *s, int width) {
    put_text(s);
    for (int n = text_width(s); n < width; n++)
        putchar(' ');
}

static void put_json(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static unsigned long long entry_numel(const xa_st_entry *e) {
    // The reader has checked that the product fits; an empty dimension makes it 0.
    return (unsigned long long)xa_shape_numel(e->ndim, e->shape, NULL);
}

static void print_text(const xa_st_file *f) {
    size_t n = xa_st_count(f);
    unsigned long long params = 0;
    for (size_t i = 0; i < n; i++)
        params += entry_numel(xa_st_at(f, i));
    put_text(xa_st_path(f));
    printf(": %llu bytes, header %llu bytes, %zu tensor%s, %llu parameter%s\n",
           (unsigned long long)xa_st_file_size(f), (unsigned long long)xa_st_header_size(f), n,
           n == 1 ? "" : "s", params, params == 1 ? "" : "s");
    if (n) {
        int wname = 4, wshape = 5;
        char s[256];
        for (size_t i = 0; i < n; i++) {
            const xa_st_entry *e = xa_st_at(f, i);
            int a = text_width(e->name), b = (int)strlen(xa_shape_fmt(e->ndim, e->shape, s,
                                                                      sizeof s));
            wname = a > wname ? a : wname;
            wshape = b > wshape ? b : wshape;
        }
        printf("\n");
        put_padded("name", wname);
        printf("  dtype  %-*s  %12s\n", wshape, "shape", "bytes");
        for (size_t i = 0; i < n; i++) {
            const xa_st_entry *e = xa_st_at(f, i);
            put_padded(e->name, wname);
            printf("  %-5s  %-*s  %12llu\n", xa_dtype_name(e->dtype), wshape,
                   xa_shape_fmt(e->ndim, e->shape, s, sizeof s),
                   (unsigned long long)(e->end - e->begin));
        }
    }
    if (xa_st_meta_count(f)) {
        printf("\nmetadata:\n");
        for (size_t i = 0; i < xa_st_meta_count(f); i++) {
            printf("  ");
            put_text(xa_st_meta_key(f, i));
            printf(" = ");
            put_text(xa_st_meta_value(f, i));
            printf("\n");
        }
    }
}

static void print_json(const xa_st_file *f) {
    size_t n = xa_st_count(f);
    unsigned long long params = 0;
    for (size_t i = 0; i < n; i++)
        params += entry_numel(xa_st_at(f, i));
    printf("{\n  \"file\": ");
    put_json(xa_st_path(f));
    printf(",\n  \"size\": %llu,\n  \"header_size\": %llu,\n  \"tensor_count\": %zu,\n"
           "  \"parameters\": %llu,\n  \"tensors\": [",
           (unsigned long long)xa_st_file_size(f), (unsigned long long)xa_st_header_size(f), n,
           params);
    for (size_t i = 0; i < n; i++) {
        const xa_st_entry *e = xa_st_at(f, i);
        printf("%s\n    {\"name\": ", i ? "," : "");
        put_json(e->name);
        printf(", \"dtype\": \"%s\", \"shape\": [", xa_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++)
            printf(d ? ", %lld" : "%lld", (long long)e->shape[d]);
        printf("], \"bytes\": %llu, \"data_offsets\": [%llu, %llu]}",
               (unsigned long long)(e->end - e->begin), (unsigned long long)e->begin,
               (unsigned long long)e->end);
    }
    printf("%s],\n  \"metadata\": {", n ? "\n  " : "");
    for (size_t i = 0; i < xa_st_meta_count(f); i++) {
        printf("%s\n    ", i ? "," : "");
        put_json(xa_st_meta_key(f, i));
        printf(": ");
        put_json(xa_st_meta_value(f, i));
    }
    printf("%s}\n}\n", xa_st_meta_count(f) ? "\n  " : "");
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "xadapt inspect: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "xadapt inspect: one file at a time ('%s' and '%s')\n", path,
                    argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }

    xa_ctx *ctx = cli_ctx("inspect");
    if (!ctx)
        return 1;
    int rc = 0;
    xa_st_file *f = NULL;
    if (xa_st_open(ctx, path, &f) != XA_OK) {
        rc = cli_fail("inspect", ctx);
        goto out_ctx;
    }
    if (json)
        print_json(f);
    else
        print_text(f);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "xadapt inspect: cannot write the output\n");
        rc = 1;
    }
    xa_st_close(f);
out_ctx:
    xa_ctx_free(ctx);
    return rc;
}
