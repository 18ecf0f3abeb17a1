// Image decoding (libjpeg-turbo, libpng) to 8-bit RGB, and CLIP preprocessing that reproduces
// transformers' CLIPImageProcessor on top of PIL byte for byte: PIL's convert("RGB") rules, PIL's
// fixed-point antialiased bicubic resize (libImaging/Resample.c), transformers' center crop,
// rescale and normalize. Why each step looks the way it does is in docs/images.md.
#include "xadapt/image.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h> // needs stdio.h first
#include <jerror.h>
#include <png.h>

// Mean and std go through double on their way to float, as numpy's np.array(list, float32) does
// (decimal -> double -> float); a float literal would round decimal -> float directly.
const float xa_clip_mean[3] = {(float)0.48145466, (float)0.4578275, (float)0.40821073};
const float xa_clip_std[3] = {(float)0.26862954, (float)0.26130258, (float)0.27577711};

// --- images ---------------------------------------------------------------------------------

static xa_status image_check_size(xa_ctx *ctx, long long width, long long height) {
    if (width <= 0 || height <= 0)
        return xa_errorf(ctx, XA_EINVAL, "image size %lldx%lld: both sides must be positive", width,
                         height);
    if (width * height > XA_IMAGE_MAX_PIXELS)
        return xa_errorf(ctx, XA_ERANGE,
                         "image size %lldx%lld is %.1f megapixels, over the %lld megapixel limit "
                         "(decompression bomb guard)",
                         width, height, (double)(width * height) / 1e6,
                         XA_IMAGE_MAX_PIXELS / 1000000);
    return XA_OK;
}

xa_status xa_image_new(xa_ctx *ctx, int width, int height, xa_image **out) {
    *out = NULL;
    xa_status st = image_check_size(ctx, width, height);
    if (st)
        return st;
    xa_image *img = xa_malloc(ctx, sizeof *img);
    if (!img)
        return XA_ENOMEM;
    img->width = width;
    img->height = height;
    img->data = xa_calloc(ctx, (size_t)width * (size_t)height, 3);
    if (!img->data) {
        free(img);
        return XA_ENOMEM;
    }
    *out = img;
    return XA_OK;
}

void xa_image_free(xa_image *img) {
    if (!img)
        return;
    free(img->data);
    free(img);
}

// --- JPEG -----------------------------------------------------------------------------------
// PIL decodes with libjpeg's defaults (JDCT_ISLOW, fancy upsampling) unless draft() is used,
// asks libjpeg for RGB, L or CMYK, and assumes Adobe's inverted CMYK ("CMYK;I").

typedef struct jpeg_fail {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
    int truncated;
    int tail; // every scanline is in; only the trailing markers are left
} jpeg_fail;

static void jpeg_fail_exit(j_common_ptr cinfo) {
    jpeg_fail *f = (jpeg_fail *)cinfo->err;
    f->pub.format_message(cinfo, f->msg);
    longjmp(f->jmp, 1);
}

// Warnings are ignored as PIL ignores them, except running out of data before the last scanline:
// libjpeg would pad the image with gray, where PIL raises "image file is truncated". A file that
// ends after its last scanline (no EOI) is fine for PIL, so it is fine here.
static void jpeg_emit(j_common_ptr cinfo, int level) {
    jpeg_fail *f = (jpeg_fail *)cinfo->err;
    if (level < 0 && f->pub.msg_code == JWRN_JPEG_EOF && !f->tail) {
        f->truncated = 1;
        snprintf(f->msg, sizeof f->msg, "data ends early");
        longjmp(f->jmp, 1);
    }
}

static void jpeg_silent(j_common_ptr cinfo) {
    (void)cinfo;
}

// PIL's MULDIV255: a*b/255 rounded, without a division.
static inline int muldiv255(int a, int b) {
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

static inline uint8_t clip8i(int v) {
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
}

// Convert.c cmyk2rgb on "CMYK;I" data, i.e. after inverting what libjpeg returns.
static void cmyk_row_to_rgb(uint8_t *out, const uint8_t *in, int n) {
    for (int x = 0; x < n; x++, in += 4, out += 3) {
        int nk = in[3]; // 255 - (255 - raw k)
        for (int c = 0; c < 3; c++)
            out[c] = clip8i(nk - muldiv255(255 - in[c], nk));
    }
}

static xa_status decode_jpeg(xa_ctx *ctx, const char *path, const uint8_t *buf, size_t n,
                             xa_image **out) {
    struct jpeg_decompress_struct cinfo;
    jpeg_fail err;
    xa_image *volatile img = NULL;
    volatile xa_status st = XA_OK;

    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_fail_exit;
    err.pub.emit_message = jpeg_emit;
    err.pub.output_message = jpeg_silent;
    err.truncated = err.tail = 0;
    err.msg[0] = '\0';
    if (setjmp(err.jmp)) {
        if (err.truncated)
            st = xa_errorf(ctx, XA_EFORMAT, "image '%s': truncated JPEG (%s)", path, err.msg);
        else
            st = xa_errorf(ctx, XA_EFORMAT, "image '%s': corrupt JPEG: %s", path, err.msg);
        goto out_destroy;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);

    st = image_check_size(ctx, cinfo.image_width, cinfo.image_height);
    if (st) {
        xa_error_wrap(ctx, "image '%s'", path);
        goto out_destroy;
    }
    int comps = cinfo.num_components;
    if (comps == 1)
        cinfo.out_color_space = JCS_GRAYSCALE;
    else if (comps == 3)
        cinfo.out_color_space = JCS_RGB;
    else if (comps == 4)
        cinfo.out_color_space = JCS_CMYK; // libjpeg turns YCCK into CMYK
    else {
        st = xa_errorf(ctx, XA_EFORMAT,
                       "image '%s': JPEG with %d components is not supported "
                       "(expected 1, 3 or 4)",
                       path, comps);
        goto out_destroy;
    }
    jpeg_start_decompress(&cinfo);

    xa_image *im = NULL;
    st = xa_image_new(ctx, (int)cinfo.output_width, (int)cinfo.output_height, &im);
    if (st)
        goto out_destroy;
    img = im;
    int w = (int)cinfo.output_width;
    JSAMPARRAY row = NULL;
    if (comps != 3)
        row = (*cinfo.mem->alloc_sarray)((j_common_ptr)&cinfo, JPOOL_IMAGE, (JDIMENSION)(w * comps),
                                         1);
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *dst = img->data + (size_t)cinfo.output_scanline * (size_t)w * 3;
        if (comps == 3) {
            JSAMPROW r = dst;
            jpeg_read_scanlines(&cinfo, &r, 1);
            continue;
        }
        jpeg_read_scanlines(&cinfo, row, 1);
        if (comps == 1) {
            for (int x = 0; x < w; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[0][x];
        } else {
            cmyk_row_to_rgb(dst, row[0], w);
        }
    }
    err.tail = 1;
    jpeg_finish_decompress(&cinfo);

out_destroy:
    jpeg_destroy_decompress(&cinfo);
    if (st) {
        xa_image_free(img);
        return st;
    }
    *out = img;
    return XA_OK;
}

// --- PNG ------------------------------------------------------------------------------------
// PIL keeps 16-bit gray as mode "I" and clips it to 0..255 in convert("RGB"); other 16-bit
// modes keep the high byte; alpha is dropped, not composited; tRNS and gamma are ignored.
// libpng's progressive reader is used because PIL's notion of "done" is "every row decoded":
// PIL never checks IDAT CRCs or the zlib trailer, and only minds a cut in the chunks that follow.

typedef struct png_state {
    xa_ctx *ctx;
    const char *path;
    xa_status st; // set when a callback refused the image (size, memory)
    xa_image *img;
    uint8_t *rgb; // one converted row, for interlaced passes
    int ctype, depth, interlaced;
    long rows_done, rows_expected;
    uint8_t pal[256][3];
    char msg[256];
} png_state;

static void png_fail(png_structp png, png_const_charp msg) {
    png_state *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_row_to_rgb(uint8_t *dst, const uint8_t *src, int w, int ctype, int depth,
                           const uint8_t pal[256][3]) {
    switch (ctype) {
    case PNG_COLOR_TYPE_GRAY:
        if (depth == 16) {
            for (int x = 0; x < w; x++) {
                int v = (src[2 * x] << 8) | src[2 * x + 1];
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = v > 255 ? 255 : (uint8_t)v;
            }
        } else {
            int scale = depth == 1 ? 255 : depth == 2 ? 85 : depth == 4 ? 17 : 1;
            for (int x = 0; x < w; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = (uint8_t)(src[x] * scale);
        }
        break;
    case PNG_COLOR_TYPE_PALETTE:
        for (int x = 0; x < w; x++)
            memcpy(dst + 3 * x, pal[src[x]], 3);
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        for (int x = 0; x < w; x++)
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[2 * x];
        break;
    case PNG_COLOR_TYPE_RGB:
        memcpy(dst, src, (size_t)w * 3);
        break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
        for (int x = 0; x < w; x++)
            memcpy(dst + 3 * x, src + 4 * x, 3);
        break;
    }
}

static void png_on_info(png_structp png, png_infop info) {
    png_state *s = png_get_progressive_ptr(png);
    png_uint_32 w32, h32;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w32, &h32, &depth, &ctype, &interlace, NULL, NULL);
    s->st = image_check_size(s->ctx, w32, h32);
    if (s->st)
        png_error(png, "refused");
    int w = (int)w32, h = (int)h32;
    s->ctype = ctype;
    s->depth = depth;
    s->interlaced = interlace != PNG_INTERLACE_NONE;
    // PIL's palette starts as a gray ramp and the PLTE entries overwrite its head, so an index
    // past the end of PLTE maps to (i, i, i).
    for (int i = 0; i < 256; i++)
        s->pal[i][0] = s->pal[i][1] = s->pal[i][2] = (uint8_t)i;
    png_colorp plte = NULL;
    int nplte = 0;
    if (ctype == PNG_COLOR_TYPE_PALETTE && (png_get_PLTE(png, info, &plte, &nplte) & PNG_INFO_PLTE))
        for (int i = 0; i < nplte && i < 256; i++) {
            s->pal[i][0] = plte[i].red;
            s->pal[i][1] = plte[i].green;
            s->pal[i][2] = plte[i].blue;
        }
    if (depth < 8)
        png_set_packing(png); // one byte per sample, values unscaled
    if (depth == 16 && ctype != PNG_COLOR_TYPE_GRAY)
        png_set_strip_16(png); // keeps the high byte, as PIL's ";16B" unpackers
    // Header chunks were CRC-checked (PIL does too); from the first IDAT on, PIL checks nothing.
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_ERROR_QUIT);
    png_read_update_info(png, info);

    // Adam7 passes are placed by hand; libpng skips the passes that hold no pixel.
    s->rows_expected = 0;
    for (int pass = 0; pass < (s->interlaced ? 7 : 1); pass++) {
        long rows = s->interlaced ? (long)PNG_PASS_ROWS(h32, pass) : h;
        long cols = s->interlaced ? (long)PNG_PASS_COLS(w32, pass) : w;
        if (rows > 0 && cols > 0)
            s->rows_expected += rows;
    }
    s->st = xa_image_new(s->ctx, w, h, &s->img);
    if (!s->st && s->interlaced && !(s->rgb = xa_malloc(s->ctx, (size_t)w * 3)))
        s->st = XA_ENOMEM;
    if (s->st)
        png_error(png, "refused");
}

static void png_on_row(png_structp png, png_bytep row, png_uint_32 row_num, int pass) {
    png_state *s = png_get_progressive_ptr(png);
    if (!row || s->rows_done >= s->rows_expected)
        return;
    int w = s->img->width;
    if (!s->interlaced) {
        png_row_to_rgb(s->img->data + (size_t)row_num * (size_t)w * 3, row, w, s->ctype, s->depth,
                       (const uint8_t(*)[3])s->pal);
    } else {
        int pw = (int)PNG_PASS_COLS((png_uint_32)w, pass);
        png_row_to_rgb(s->rgb, row, pw, s->ctype, s->depth, (const uint8_t(*)[3])s->pal);
        uint8_t *dst = s->img->data + (size_t)PNG_ROW_FROM_PASS_ROW(row_num, pass) * (size_t)w * 3;
        for (int i = 0; i < pw; i++)
            memcpy(dst + (size_t)PNG_COL_FROM_PASS_COL((png_uint_32)i, pass) * 3, s->rgb + 3 * i,
                   3);
    }
    s->rows_done++;
}

// PIL reads the chunks that follow the image data and fails when one of them has its data cut
// short; a cut in a chunk header, a name that is not a chunk name, or IEND ends its walk quietly.
// (Approximation: PIL starts after the IDAT where its decoder finished, this after the last IDAT.)
// Returns 1 and the offending chunk's name in `cid` when PIL would refuse the trailer.
static int png_trailer_cut(const uint8_t *b, size_t n, char cid[5]) {
    size_t at = 8;
    int after_idat = 0;
    while (n - at >= 8) {
        size_t len =
            (size_t)b[at] << 24 | (size_t)b[at + 1] << 16 | (size_t)b[at + 2] << 8 | b[at + 3];
        const uint8_t *name = b + at + 4;
        for (int i = 0; i < 4; i++) {
            int c = name[i], lc = c | 0x20;
            if (!(c == '_' || (c >= '0' && c <= '9') || (lc >= 'a' && lc <= 'z')))
                return 0;
        }
        int idat = memcmp(name, "IDAT", 4) == 0;
        if (after_idat && !idat && memcmp(name, "IEND", 4) == 0)
            return 0;
        if (len > n - at - 8) {
            if (!after_idat || idat)
                return 0;
            memcpy(cid, name, 4);
            cid[4] = '\0';
            return 1;
        }
        after_idat |= idat;
        at += 8 + len;
        if (n - at < 4)
            return 0;
        at += 4; // the CRC, which PIL does not check there
    }
    return 0;
}

static xa_status decode_png(xa_ctx *ctx, const char *path, uint8_t *buf, size_t n, xa_image **out) {
    // Heap state: callbacks change it between setjmp and longjmp.
    png_state *s = xa_calloc(ctx, 1, sizeof *s);
    if (!s)
        return XA_ENOMEM;
    s->ctx = ctx;
    s->path = path;
    xa_status st = XA_OK;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, s, png_fail, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        st = xa_errorf(ctx, XA_ENOMEM, "image '%s': out of memory starting libpng", path);
        goto out_destroy;
    }
    if (setjmp(png_jmpbuf(png))) {
        // An error after the last row is damage PIL never reads: the image stands.
        if (s->st)
            st = xa_error_wrap(ctx, "image '%s'", path);
        else if (s->rows_expected == 0 || s->rows_done < s->rows_expected)
            st = xa_errorf(ctx, XA_EFORMAT, "image '%s': corrupt PNG: %s", path, s->msg);
        goto out_trailer;
    }
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_set_progressive_read_fn(png, s, png_on_info, png_on_row, NULL);
    png_process_data(png, info, buf, n);
    if (s->rows_expected == 0)
        st = xa_errorf(ctx, XA_EFORMAT, "image '%s': truncated PNG (data ends before the pixels)",
                       path);
    else if (s->rows_done < s->rows_expected)
        st = xa_errorf(ctx, XA_EFORMAT,
                       "image '%s': truncated PNG (data ends after %ld of %ld rows)", path,
                       s->rows_done, s->rows_expected);

out_trailer:;
    char cid[5];
    if (!st && png_trailer_cut(buf, n, cid))
        st = xa_errorf(ctx, XA_EFORMAT,
                       "image '%s': truncated PNG (chunk '%s' after the pixels is cut short)", path,
                       cid);
out_destroy:
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    free(s->rgb);
    if (st)
        xa_image_free(s->img);
    else
        *out = s->img;
    free(s);
    return st;
}

// --- loading --------------------------------------------------------------------------------

static xa_status read_whole(xa_ctx *ctx, const char *path, uint8_t **out, size_t *n) {
    xa_status st = XA_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return xa_errorf(ctx, XA_ENOTFOUND, "image '%s': no such file", path);
        return xa_errorf(ctx, XA_EIO, "image '%s': cannot open: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = xa_errorf(ctx, XA_EIO, "image '%s': not a regular file", path);
        goto out_close;
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        st = xa_errorf(ctx, XA_EFORMAT, "image '%s': empty file (0 bytes), not an image", path);
        goto out_close;
    }
    uint8_t *buf = xa_malloc(ctx, size);
    if (!buf) {
        st = XA_ENOMEM;
        goto out_close;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            st = xa_errorf(ctx, XA_EIO, "image '%s': read failed after %zu of %zu bytes: %s", path,
                           got, size, r < 0 ? strerror(errno) : "file shrank");
            free(buf);
            goto out_close;
        }
        got += (size_t)r;
    }
    *out = buf;
    *n = size;
out_close:
    close(fd);
    return st;
}

// The format other than JPEG/PNG a file's first bytes announce, for a helpful refusal.
static const char *other_format(const uint8_t *b, size_t n) {
    if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6)))
        return "GIF";
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        return "WebP";
    if (n >= 2 && b[0] == 'B' && b[1] == 'M')
        return "BMP";
    if (n >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4)))
        return "TIFF";
    if (n >= 12 && !memcmp(b + 4, "ftyp", 4))
        return "HEIF/AVIF";
    return NULL;
}

xa_status xa_image_load(xa_ctx *ctx, const char *path, xa_image **out) {
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    *out = NULL;
    uint8_t *buf = NULL;
    size_t n = 0;
    xa_status st = read_whole(ctx, path, &buf, &n);
    if (st)
        return st;
    if (n >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff) {
        st = decode_jpeg(ctx, path, buf, n, out);
    } else if (n >= 8 && !memcmp(buf, png_magic, 8)) {
        st = decode_png(ctx, path, buf, n, out);
    } else {
        const char *fmt = other_format(buf, n);
        if (fmt)
            st = xa_errorf(ctx, XA_EFORMAT,
                           "image '%s': %s is not supported (only JPEG and PNG); "
                           "convert it to PNG first",
                           path, fmt);
        else
            st = xa_errorf(ctx, XA_EFORMAT,
                           "image '%s': not an image (expected a JPEG or PNG "
                           "signature in the first bytes, whatever the file name says)",
                           path);
    }
    free(buf);
    return st;
}

// --- PIL's bicubic resize (libImaging/Resample.c, 8 bits per channel) -------------------------

#define PRECISION_BITS (32 - 8 - 2)

typedef struct coeffs {
    int ksize;   // coefficients per output pixel
    int *bounds; // per output pixel: first input index, count
    int32_t *kk; // out_size * ksize fixed-point weights
} coeffs;

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

// precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size), statement for statement:
// the same double expressions in the same order, so the same rounding.
static xa_status precompute(xa_ctx *ctx, int in_size, int out_size, coeffs *c) {
    const float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size, filterscale = scale;
    if (filterscale < 1.0)
        filterscale = 1.0;
    double support = 2.0 * filterscale; // bicubic support is 2
    int ksize = (int)ceil(support) * 2 + 1;
    double *pre = xa_malloc(ctx, sizeof *pre * (size_t)out_size * (size_t)ksize);
    c->kk = xa_malloc(ctx, sizeof *c->kk * (size_t)out_size * (size_t)ksize);
    c->bounds = xa_malloc(ctx, sizeof *c->bounds * (size_t)out_size * 2);
    c->ksize = ksize;
    if (!pre || !c->kk || !c->bounds) {
        free(pre);
        return XA_ENOMEM;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double *k = pre + (size_t)xx * (size_t)ksize;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bicubic_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0)
                k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0;
        c->bounds[xx * 2 + 0] = xmin;
        c->bounds[xx * 2 + 1] = xmax;
    }
    for (size_t i = 0; i < (size_t)out_size * (size_t)ksize; i++)
        c->kk[i] = pre[i] < 0 ? (int32_t)(-0.5 + pre[i] * (1 << PRECISION_BITS))
                              : (int32_t)(0.5 + pre[i] * (1 << PRECISION_BITS));
    free(pre);
    return XA_OK;
}

static void coeffs_free(coeffs *c) {
    free(c->kk);
    free(c->bounds);
}

static inline uint8_t clip8(int in) {
    if (in >= (1 << PRECISION_BITS << 8))
        return 255;
    if (in <= 0)
        return 0;
    return (uint8_t)(in >> PRECISION_BITS);
}

// Rows [y0, y0 + out->height) of `in`, resampled horizontally into `out`.
static void resample_horizontal(xa_image *out, const xa_image *in, int y0, const coeffs *c) {
    for (int yy = 0; yy < out->height; yy++) {
        const uint8_t *src = in->data + (size_t)(yy + y0) * (size_t)in->width * 3;
        uint8_t *dst = out->data + (size_t)yy * (size_t)out->width * 3;
        for (int xx = 0; xx < out->width; xx++) {
            int xmin = c->bounds[xx * 2], xmax = c->bounds[xx * 2 + 1];
            const int32_t *k = c->kk + (size_t)xx * (size_t)c->ksize;
            int ss0 = 1 << (PRECISION_BITS - 1), ss1 = ss0, ss2 = ss0;
            for (int x = 0; x < xmax; x++) {
                const uint8_t *p = src + (size_t)(x + xmin) * 3;
                ss0 += p[0] * k[x];
                ss1 += p[1] * k[x];
                ss2 += p[2] * k[x];
            }
            dst[3 * xx + 0] = clip8(ss0);
            dst[3 * xx + 1] = clip8(ss1);
            dst[3 * xx + 2] = clip8(ss2);
        }
    }
}

// `bounds` are relative to the first row of `in`.
static void resample_vertical(xa_image *out, const xa_image *in, const coeffs *c) {
    size_t stride = (size_t)in->width * 3;
    for (int yy = 0; yy < out->height; yy++) {
        int ymin = c->bounds[yy * 2], ymax = c->bounds[yy * 2 + 1];
        const int32_t *k = c->kk + (size_t)yy * (size_t)c->ksize;
        uint8_t *dst = out->data + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++)
                ss += in->data[(size_t)(y + ymin) * stride + i] * k[y];
            dst[i] = clip8(ss);
        }
    }
}

static xa_status image_copy(xa_ctx *ctx, const xa_image *src, xa_image **dst) {
    xa_status st = xa_image_new(ctx, src->width, src->height, dst);
    if (!st)
        memcpy((*dst)->data, src->data, (size_t)src->width * (size_t)src->height * 3);
    return st;
}

xa_status xa_image_resize_bicubic(xa_ctx *ctx, const xa_image *src, int out_w, int out_h,
                                  xa_image **dst) {
    *dst = NULL;
    xa_status st = image_check_size(ctx, out_w, out_h);
    if (st)
        return xa_error_wrap(ctx, "resizing %dx%d", src->width, src->height);
    // ImagingResampleInner: a pass runs only when its dimension changes; neither means a copy.
    int need_h = out_w != src->width, need_v = out_h != src->height;
    if (!need_h && !need_v)
        return image_copy(ctx, src, dst);

    coeffs ch = {0}, cv = {0};
    xa_image *tmp = NULL, *res = NULL;
    if ((st = precompute(ctx, src->width, out_w, &ch)) ||
        (st = precompute(ctx, src->height, out_h, &cv)))
        goto out_coeffs;
    const xa_image *cur = src;
    if (need_h) {
        // Only the rows the vertical pass reads are resampled horizontally.
        int first = cv.bounds[0];
        int last = cv.bounds[out_h * 2 - 2] + cv.bounds[out_h * 2 - 1];
        for (int i = 0; i < out_h; i++)
            cv.bounds[i * 2] -= first;
        if ((st = xa_image_new(ctx, out_w, last - first, &tmp)))
            goto out_coeffs;
        resample_horizontal(tmp, src, first, &ch);
        cur = tmp;
    }
    if (need_v) {
        if ((st = xa_image_new(ctx, cur->width, out_h, &res)))
            goto out_tmp;
        resample_vertical(res, cur, &cv);
    } else {
        res = tmp;
        tmp = NULL;
    }
    *dst = res;
out_tmp:
    xa_image_free(tmp);
out_coeffs:
    coeffs_free(&ch);
    coeffs_free(&cv);
    return st;
}

void xa_image_shortest_edge_size(int width, int height, int shortest, int *out_w, int *out_h) {
    // transformers' get_resize_output_image_size(default_to_square=False):
    //   short, long = (width, height) if width <= height else (height, width)
    //   new_short, new_long = size, int(size * long / short)
    // Python's `/` is a double division and int() truncates toward zero; both are mirrored here.
    int shrt = width <= height ? width : height, lng = width <= height ? height : width;
    int new_long = (int)((double)shortest * (double)lng / (double)shrt);
    if (width <= height) {
        *out_w = shortest;
        *out_h = new_long;
    } else {
        *out_w = new_long;
        *out_h = shortest;
    }
}

xa_status xa_image_center_crop(xa_ctx *ctx, const xa_image *src, int crop_w, int crop_h,
                               xa_image **dst) {
    // transformers' center_crop: top = (h - crop_h) // 2 when the image is tall enough; otherwise
    // the image is padded with zeros, ceil((crop_h - h) / 2) rows above it. Same for columns.
    xa_status st = xa_image_new(ctx, crop_w, crop_h, dst);
    if (st)
        return xa_error_wrap(ctx, "center crop");
    int w = src->width, h = src->height;
    int src_top = h >= crop_h ? (h - crop_h) / 2 : 0,
        dst_top = h >= crop_h ? 0 : (crop_h - h + 1) / 2;
    int src_left = w >= crop_w ? (w - crop_w) / 2 : 0,
        dst_left = w >= crop_w ? 0 : (crop_w - w + 1) / 2;
    int rows = h < crop_h ? h : crop_h, cols = w < crop_w ? w : crop_w;
    for (int y = 0; y < rows; y++)
        memcpy((*dst)->data + ((size_t)(y + dst_top) * (size_t)crop_w + (size_t)dst_left) * 3,
               src->data + ((size_t)(y + src_top) * (size_t)w + (size_t)src_left) * 3,
               (size_t)cols * 3);
    return XA_OK;
}

// --- CLIP -----------------------------------------------------------------------------------

xa_status xa_clip_preprocess(xa_ctx *ctx, const xa_image *img, int image_size, const float mean[3],
                             const float std[3], float *out_chw) {
    if (image_size <= 0)
        return xa_errorf(ctx, XA_EINVAL, "CLIP preprocessing: image_size must be positive, got %d",
                         image_size);
    int rw, rh;
    xa_image_shortest_edge_size(img->width, img->height, image_size, &rw, &rh);
    xa_image *resized = NULL, *crop = NULL;
    xa_status st = xa_image_resize_bicubic(ctx, img, rw, rh, &resized);
    if (st)
        return xa_error_wrap(ctx, "CLIP preprocessing");
    st = xa_image_center_crop(ctx, resized, image_size, image_size, &crop);
    if (st)
        goto out_resized;
    // transformers: rescale computes uint8 * (1/255) in float64 and casts to float32; normalize
    // is (x - mean) / std in float32. The same operations in C give the same bits.
    size_t plane = (size_t)image_size * (size_t)image_size;
    const double scale = 1.0 / 255.0;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) {
            float x = (float)((double)crop->data[i * 3 + (size_t)c] * scale);
            out_chw[(size_t)c * plane + i] = (x - mean[c]) / std[c];
        }
    xa_image_free(crop);
out_resized:
    xa_image_free(resized);
    return st;
}

xa_status xa_clip_preprocess_file(xa_ctx *ctx, const char *path, int image_size, float *out_chw) {
    xa_image *img = NULL;
    xa_status st = xa_image_load(ctx, path, &img);
    if (st)
        return st;
    st = xa_clip_preprocess(ctx, img, image_size, xa_clip_mean, xa_clip_std, out_chw);
    xa_image_free(img);
    if (st != XA_OK && !strstr(xa_errmsg(ctx), path))
        xa_error_wrap(ctx, "%s", path);
    return st;
}
