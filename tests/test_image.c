// Image decoding and CLIP preprocessing against PIL: expected crops in tests/golden/images come
// from make_image_golden.py (PIL + numpy, never this code) and must match byte for byte. Also the
// refusals: missing, empty, truncated, mislabeled, corrupt and oversized files.
#include "support.h"

#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xadapt/image.h"

#define GOLDEN "tests/golden/images/"

static xa_image *load_ok(xa_ctx *ctx, const char *path) {
    xa_image *img = NULL;
    xa_status st = xa_image_load(ctx, path, &img);
    cr_assert_eq(st, XA_OK, "loading %s: %s", path, xa_errmsg(ctx));
    return img;
}

// Shortest edge -> image_size, then the center crop, as the CLIP processor does it.
static xa_image *clip_crop(xa_ctx *ctx, const xa_image *src, int image_size, int *rw, int *rh) {
    xa_image *resized = NULL, *crop = NULL;
    xa_image_shortest_edge_size(src->width, src->height, image_size, rw, rh);
    cr_assert_eq(xa_image_resize_bicubic(ctx, src, *rw, *rh, &resized), XA_OK, "%s",
                 xa_errmsg(ctx));
    cr_assert_eq(xa_image_center_crop(ctx, resized, image_size, image_size, &crop), XA_OK, "%s",
                 xa_errmsg(ctx));
    xa_image_free(resized);
    return crop;
}

static cJSON *golden_entries(cJSON **doc) {
    char *text = read_file(src_path(GOLDEN "golden.json"), NULL);
    cr_assert_not_null(text, "tests/golden/images/golden.json is missing");
    *doc = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(*doc, "golden.json does not parse");
    cJSON *entries = cJSON_GetObjectItem(*doc, "entries");
    cr_assert(cJSON_IsArray(entries));
    return entries;
}

// Every entry whose source lives under `root` ("repo" or "shared"); returns how many ran.
static int check_golden(const char *root) {
    xa_ctx *ctx = xa_ctx_new();
    cJSON *doc = NULL, *e;
    int ran = 0;
    cJSON *entries = golden_entries(&doc); // cJSON_ArrayForEach expands its list twice
    cJSON_ArrayForEach(e, entries) {
        if (strcmp(cJSON_GetObjectItem(e, "root")->valuestring, root) != 0)
            continue;
        const char *rel = cJSON_GetObjectItem(e, "source")->valuestring;
        const char *src = strcmp(root, "repo") == 0 ? src_path(rel) : shared_path(rel);
        if (!src)
            continue; // the shared folder is absent
        char expected_path[4096] = "";
        cJSON *expected = cJSON_GetObjectItem(e, "expected");
        if (expected)
            snprintf(expected_path, sizeof expected_path, "%s%s", src_path(GOLDEN),
                     expected->valuestring);
        int size = cJSON_GetObjectItem(e, "image_size")->valueint;
        cJSON *rs = cJSON_GetObjectItem(e, "resized"), *os = cJSON_GetObjectItem(e, "size");

        xa_image *img = load_ok(ctx, src);
        cr_assert_eq(img->width, cJSON_GetArrayItem(os, 0)->valueint, "%s width", rel);
        cr_assert_eq(img->height, cJSON_GetArrayItem(os, 1)->valueint, "%s height", rel);
        int rw, rh;
        xa_image *crop = clip_crop(ctx, img, size, &rw, &rh);
        cr_expect_eq(rw, cJSON_GetArrayItem(rs, 0)->valueint, "%s@%d: resized width", rel, size);
        cr_expect_eq(rh, cJSON_GetArrayItem(rs, 1)->valueint, "%s@%d: resized height", rel, size);
        size_t n = (size_t)size * (size_t)size * 3;
        cJSON *hash = cJSON_GetObjectItem(e, "fnv1a64");
        if (hash) { // shared photos: only a hash of PIL's crop is committed, not the crop
            uint64_t h = 0xcbf29ce484222325ull;
            for (size_t i = 0; i < n; i++)
                h = (h ^ crop->data[i]) * 0x100000001b3ull;
            char got[17];
            snprintf(got, sizeof got, "%016llx", (unsigned long long)h);
            cr_expect_str_eq(got, hash->valuestring, "%s@%d: crop differs from PIL's", rel, size);
        } else {
            xa_image *want = load_ok(ctx, expected_path);
            cr_assert_eq(want->width, size);
            cr_assert_eq(want->height, size);
            size_t differ = 0;
            int maxdiff = 0;
            for (size_t i = 0; i < n; i++) {
                int d = abs((int)crop->data[i] - (int)want->data[i]);
                differ += d != 0;
                maxdiff = d > maxdiff ? d : maxdiff;
            }
            cr_expect_eq(differ, 0, "%s@%d vs PIL: %zu of %zu bytes differ, max difference %d",
                         rel, size, differ, n, maxdiff);
            xa_image_free(want);
        }
        xa_image_free(crop);
        xa_image_free(img);
        ran++;
    }
    cJSON_Delete(doc);
    xa_ctx_free(ctx);
    return ran;
}

Test(image, synthetic_sources_match_pil_crops_byte_for_byte) {
    cr_expect_eq(check_golden("repo"), 13, "every synthetic golden entry runs");
}

Test(image, flickr_photos_match_pil_crops_byte_for_byte) {
    if (!shared_path("data/flickr8k_1k/images"))
        cr_skip_test("../shared/data/flickr8k_1k is absent");
    cr_expect_eq(check_golden("shared"), 6);
}

Test(image, rgba_png_drops_alpha_like_pil_convert) {
    xa_ctx *ctx = xa_ctx_new();
    xa_image *rgba = load_ok(ctx, src_path(GOLDEN "synth_rgba.png"));
    xa_image *rgb = load_ok(ctx, src_path(GOLDEN "synth_rgb.png"));
    cr_assert_eq(rgba->width, rgb->width);
    cr_assert_eq(rgba->height, rgb->height);
    cr_expect_eq(memcmp(rgba->data, rgb->data, (size_t)rgb->width * (size_t)rgb->height * 3), 0,
                 "alpha must be dropped, not composited");
    xa_image_free(rgba);
    xa_image_free(rgb);
    xa_ctx_free(ctx);
}

// Expected floats from numpy: ((float32)(v * (1/255)) - float32(mean)) / float32(std).
Test(image, normalization_matches_transformers_float32_arithmetic) {
    static const uint8_t px[4][3] = {{0, 128, 255}, {1, 200, 37}, {255, 0, 128}, {64, 64, 64}};
    static const float want[4][3] = {
        {-0x1.cad1b8p+0f, 0x1.59e6d6p-3f, 0x1.12acc0p+1f},
        {-0x1.c714fep+0f, 0x1.3fdc62p+0f, -0x1.e87cd0p-1f},
        {0x1.ee2a82p+0f, -0x1.c08970p+0f, 0x1.5c1b88p-2f},
        {-0x1.b746f4p-1f, -0x1.954c94p-1f, -0x1.23e8cep-1f},
    };
    xa_ctx *ctx = xa_ctx_new();
    xa_image *img = NULL;
    cr_assert_eq(xa_image_new(ctx, 2, 2, &img), XA_OK);
    memcpy(img->data, px, sizeof px);
    float out[3 * 4];
    // 2x2 at image_size 2: no resize, no crop, only rescale and normalize.
    cr_assert_eq(xa_clip_preprocess(ctx, img, 2, xa_clip_mean, xa_clip_std, out), XA_OK);
    for (int p = 0; p < 4; p++)
        for (int c = 0; c < 3; c++)
            cr_expect_eq(out[c * 4 + p], want[p][c], "pixel %d channel %d: %.9g, want %.9g", p, c,
                         (double)out[c * 4 + p], (double)want[p][c]);
    xa_image_free(img);
    xa_ctx_free(ctx);
}

Test(image, preprocess_file_is_load_crop_normalize_in_chw) {
    xa_ctx *ctx = xa_ctx_new();
    const char *path = src_path(GOLDEN "synth_palette.png");
    float *out = malloc(sizeof *out * 3 * 32 * 32);
    cr_assert_eq(xa_clip_preprocess_file(ctx, path, 32, out), XA_OK, "%s", xa_errmsg(ctx));
    xa_image *want = load_ok(ctx, src_path(GOLDEN "expected/synth_palette_s32.png"));
    int bad = 0;
    for (int i = 0; i < 32 * 32; i++)
        for (int c = 0; c < 3; c++) {
            float x = (float)((double)want->data[i * 3 + c] * (1.0 / 255.0));
            bad += out[c * 32 * 32 + i] != (x - xa_clip_mean[c]) / xa_clip_std[c];
        }
    cr_expect_eq(bad, 0, "%d values differ from the normalized PIL crop", bad);
    xa_image_free(want);
    free(out);
    xa_ctx_free(ctx);
}

// --- sizes --------------------------------------------------------------------------------

Test(image, shortest_edge_size_truncates_like_python_int) {
    int w, h;
    xa_image_shortest_edge_size(500, 375, 224, &w, &h);
    cr_expect(w == 298 && h == 224, "500x375 -> %dx%d", w, h); // 298.67 -> 298, not 299
    xa_image_shortest_edge_size(333, 500, 224, &w, &h);
    cr_expect(w == 224 && h == 336, "333x500 -> %dx%d", w, h);
    xa_image_shortest_edge_size(7, 3, 224, &w, &h);
    cr_expect(w == 522 && h == 224, "7x3 -> %dx%d", w, h); // 522.67
    xa_image_shortest_edge_size(10, 10, 224, &w, &h);
    cr_expect(w == 224 && h == 224, "square -> %dx%d", w, h);
    xa_image_shortest_edge_size(50, 37, 37, &w, &h);
    cr_expect(w == 50 && h == 37, "already at size -> %dx%d", w, h);
}

Test(image, resize_to_the_same_size_is_an_exact_copy) {
    xa_ctx *ctx = xa_ctx_new();
    xa_image *img = load_ok(ctx, src_path(GOLDEN "synth_rgb.png")), *out = NULL;
    cr_assert_eq(xa_image_resize_bicubic(ctx, img, img->width, img->height, &out), XA_OK);
    cr_assert_neq(out->data, img->data);
    cr_expect_eq(memcmp(out->data, img->data, (size_t)img->width * (size_t)img->height * 3), 0);
    xa_image_free(out);
    xa_image_free(img);
    xa_ctx_free(ctx);
}

Test(image, image_at_image_size_is_only_normalized) {
    xa_ctx *ctx = xa_ctx_new();
    xa_image *img = NULL;
    cr_assert_eq(xa_image_new(ctx, 32, 32, &img), XA_OK);
    for (int i = 0; i < 32 * 32 * 3; i++)
        img->data[i] = (uint8_t)(i * 37 + (i >> 5));
    float *out = malloc(sizeof *out * 3 * 32 * 32);
    cr_assert_eq(xa_clip_preprocess(ctx, img, 32, xa_clip_mean, xa_clip_std, out), XA_OK);
    int bad = 0;
    for (int i = 0; i < 32 * 32; i++)
        for (int c = 0; c < 3; c++) {
            float x = (float)((double)img->data[i * 3 + c] * (1.0 / 255.0));
            bad += out[c * 32 * 32 + i] != (x - xa_clip_mean[c]) / xa_clip_std[c];
        }
    cr_expect_eq(bad, 0);
    free(out);
    xa_image_free(img);
    xa_ctx_free(ctx);
}

Test(image, center_crop_floors_offsets_and_pads_like_transformers) {
    xa_ctx *ctx = xa_ctx_new();
    xa_image *img = NULL, *crop = NULL;
    cr_assert_eq(xa_image_new(ctx, 7, 6, &img), XA_OK);
    for (int i = 0; i < 7 * 6; i++)
        img->data[i * 3] = (uint8_t)(i + 1); // red = 1 + y*7 + x
    // 7x6 -> 4x4: top = (6-4)//2 = 1, left = (7-4)//2 = 1.
    cr_assert_eq(xa_image_center_crop(ctx, img, 4, 4, &crop), XA_OK);
    cr_expect_eq(crop->data[0], 1 + 1 * 7 + 1);
    cr_expect_eq(crop->data[(3 * 4 + 3) * 3], 1 + 4 * 7 + 4);
    xa_image_free(crop);
    // 7x6 -> 10x9: ceil((10-7)/2) = 2 columns and ceil((9-6)/2) = 2 rows of zeros before.
    cr_assert_eq(xa_image_center_crop(ctx, img, 10, 9, &crop), XA_OK);
    cr_expect_eq(crop->data[(1 * 10 + 1) * 3], 0);
    cr_expect_eq(crop->data[(2 * 10 + 2) * 3], 1);
    cr_expect_eq(crop->data[(7 * 10 + 8) * 3], 7 * 6);
    cr_expect_eq(crop->data[(8 * 10 + 9) * 3], 0);
    xa_image_free(crop);
    xa_image_free(img);
    xa_ctx_free(ctx);
}

// --- refusals -------------------------------------------------------------------------------

static char tmp_file[4096];

static const char *write_tmp(const char *name, const void *data, size_t n) {
    const char *dir = make_tmpdir();
    cr_assert_not_null(dir);
    snprintf(tmp_file, sizeof tmp_file, "%s/%s", dir, name);
    cr_assert(write_file(tmp_file, data, n));
    return tmp_file;
}

static void remove_tmp(const char *path) {
    unlink(path);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    rmdir(dir);
}

// Loading must fail with `code` and a message naming the file and containing `what`.
static void expect_refused(const char *path, xa_status code, const char *what) {
    xa_ctx *ctx = xa_ctx_new();
    static xa_image sentinel;
    xa_image *img = &sentinel; // must come back NULL
    xa_status st = xa_image_load(ctx, path, &img);
    cr_expect_eq(st, code, "%s: got %s (%s), want %s", path, xa_status_name(st), xa_errmsg(ctx),
                 xa_status_name(code));
    cr_expect_null(img);
    cr_expect(strstr(xa_errmsg(ctx), path) != NULL, "message names the file: %s", xa_errmsg(ctx));
    cr_expect(strstr(xa_errmsg(ctx), what) != NULL, "message says '%s': %s", what, xa_errmsg(ctx));
    xa_ctx_free(ctx);
}

static char *golden_bytes(const char *name, size_t *n) {
    char *buf = read_file(src_path(name), n);
    cr_assert_not_null(buf, "%s missing", name);
    return buf;
}

Test(image, missing_file_is_not_found) {
    expect_refused("/nonexistent/xadapt/photo.jpg", XA_ENOTFOUND, "no such file");
}

Test(image, zero_byte_file_is_refused) {
    const char *p = write_tmp("empty.png", "", 0);
    expect_refused(p, XA_EFORMAT, "empty");
    remove_tmp(p);
}

Test(image, text_file_named_jpg_is_not_an_image) {
    const char *text = "a dog runs on the grass\n";
    const char *p = write_tmp("caption.jpg", text, strlen(text));
    expect_refused(p, XA_EFORMAT, "not an image");
    remove_tmp(p);
}

Test(image, gif_is_refused_as_unsupported) {
    static const char gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    const char *p = write_tmp("anim.gif", gif, sizeof gif - 1);
    expect_refused(p, XA_EFORMAT, "GIF is not supported");
    remove_tmp(p);
}

Test(image, directory_is_refused) {
    const char *dir = make_tmpdir();
    expect_refused(dir, XA_EIO, "not a regular file");
    rmdir(dir);
}

Test(image, jpeg_cut_in_its_header_is_refused_without_exiting) {
    size_t n;
    char *buf = golden_bytes(GOLDEN "synth_jpeg_rgb.jpg", &n);
    cr_assert_gt(n, 500);
    const char *p = write_tmp("head.jpg", buf, 500);
    expect_refused(p, XA_EFORMAT, "JPEG");
    remove_tmp(p);
    free(buf);
}

Test(image, jpeg_cut_in_its_scan_is_truncated) {
    size_t n;
    char *buf = golden_bytes(GOLDEN "synth_jpeg_rgb.jpg", &n);
    const char *p = write_tmp("half.jpg", buf, n - 300);
    expect_refused(p, XA_EFORMAT, "truncated JPEG");
    remove_tmp(p);
    free(buf);
}

// libjpeg reads ahead into the EOI marker to finish the last MCU row, so without it PIL sees
// "image file is truncated"; libjpeg alone would pad with zeros and say nothing.
Test(image, jpeg_missing_its_eoi_is_truncated_as_in_pil) {
    size_t n;
    char *buf = golden_bytes(GOLDEN "synth_jpeg_rgb.jpg", &n);
    cr_assert((unsigned char)buf[n - 2] == 0xff && (unsigned char)buf[n - 1] == 0xd9);
    const char *p = write_tmp("noeoi.jpg", buf, n - 2);
    expect_refused(p, XA_EFORMAT, "truncated JPEG");
    remove_tmp(p);
    free(buf);
}

Test(image, real_jpeg_cut_at_500_bytes_is_refused) {
    const char *src = shared_path("data/flickr8k_1k/images/1798215547_ef7ad95be8.jpg");
    if (!src)
        cr_skip_test("../shared/data/flickr8k_1k is absent");
    size_t n;
    char *buf = read_file(src, &n);
    cr_assert_not_null(buf);
    const char *p = write_tmp("cut.jpg", buf, 500);
    expect_refused(p, XA_EFORMAT, "JPEG");
    remove_tmp(p);
    free(buf);
}

// Offset of a PNG chunk's type field, or 0.
static size_t png_chunk(const unsigned char *b, size_t n, const char *type) {
    for (size_t at = 8; at + 12 <= n;) {
        size_t len =
            (size_t)b[at] << 24 | (size_t)b[at + 1] << 16 | (size_t)b[at + 2] << 8 | b[at + 3];
        if (memcmp(b + at + 4, type, 4) == 0)
            return at + 4;
        at += 12 + len;
    }
    return 0;
}

// PIL checks the CRC of every chunk before the pixels (here IHDR) and refuses a mismatch...
Test(image, png_with_bad_header_crc_is_corrupt) {
    size_t n;
    unsigned char *buf = (unsigned char *)golden_bytes(GOLDEN "synth_rgb.png", &n);
    size_t ihdr = png_chunk(buf, n, "IHDR");
    cr_assert_eq(ihdr, 12);
    buf[ihdr + 4 + 13] ^= 0xff; // first CRC byte
    const char *p = write_tmp("badcrc.png", buf, n);
    expect_refused(p, XA_EFORMAT, "corrupt PNG");
    remove_tmp(p);
    free(buf);
}

// ...but never looks at an IDAT CRC, so neither may we.
Test(image, png_idat_crc_is_ignored_like_pil) {
    xa_ctx *ctx = xa_ctx_new();
    size_t n;
    unsigned char *buf = (unsigned char *)golden_bytes(GOLDEN "synth_rgb.png", &n);
    size_t idat = png_chunk(buf, n, "IDAT");
    cr_assert_gt(idat, 0);
    size_t len = (size_t)buf[idat - 4] << 24 | (size_t)buf[idat - 3] << 16 |
                 (size_t)buf[idat - 2] << 8 | buf[idat - 1];
    buf[idat + 4 + len] ^= 0xff;
    const char *p = write_tmp("idatcrc.png", buf, n);
    xa_image *got = load_ok(ctx, p), *want = load_ok(ctx, src_path(GOLDEN "synth_rgb.png"));
    cr_expect_eq(memcmp(got->data, want->data, (size_t)want->width * (size_t)want->height * 3), 0);
    xa_image_free(got);
    xa_image_free(want);
    remove_tmp(p);
    free(buf);
    xa_ctx_free(ctx);
}

// PIL stops once every row is decoded: a file that loses only its IEND still loads.
Test(image, png_missing_only_its_iend_loads_like_pil) {
    xa_ctx *ctx = xa_ctx_new();
    size_t n;
    char *buf = golden_bytes(GOLDEN "synth_rgb.png", &n);
    const char *p = write_tmp("noiend.png", buf, n - 12);
    xa_image *got = load_ok(ctx, p), *want = load_ok(ctx, src_path(GOLDEN "synth_rgb.png"));
    cr_expect_eq(memcmp(got->data, want->data, (size_t)want->width * (size_t)want->height * 3), 0);
    xa_image_free(got);
    xa_image_free(want);
    remove_tmp(p);
    free(buf);
    xa_ctx_free(ctx);
}

Test(image, png_cut_short_is_truncated) {
    size_t n;
    char *buf = golden_bytes(GOLDEN "synth_rgb.png", &n);
    const char *p = write_tmp("short.png", buf, n / 2);
    expect_refused(p, XA_EFORMAT, "truncated PNG");
    remove_tmp(p);
    free(buf);
}

static uint32_t crc32_of(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

Test(image, png_over_100_megapixels_is_refused_before_decoding) {
    size_t n;
    unsigned char *buf = (unsigned char *)golden_bytes(GOLDEN "synth_rgb.png", &n);
    size_t ihdr = png_chunk(buf, n, "IHDR");
    cr_assert_eq(ihdr, 12);
    static const unsigned char dims[8] = {0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20}; // 20000 x 20000
    memcpy(buf + ihdr + 4, dims, 8);
    uint32_t crc = crc32_of(buf + ihdr, 4 + 13);
    unsigned char *c = buf + ihdr + 4 + 13;
    c[0] = (unsigned char)(crc >> 24), c[1] = (unsigned char)(crc >> 16);
    c[2] = (unsigned char)(crc >> 8), c[3] = (unsigned char)crc;
    const char *p = write_tmp("bomb.png", buf, n);
    expect_refused(p, XA_ERANGE, "megapixel");
    remove_tmp(p);
    free(buf);
}

Test(image, jpeg_over_100_megapixels_is_refused_before_decoding) {
    size_t n;
    unsigned char *buf = (unsigned char *)golden_bytes(GOLDEN "synth_jpeg_rgb.jpg", &n);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if (buf[i] == 0xff && buf[i + 1] == 0xc0) {
            sof = i;
            break;
        }
    cr_assert_gt(sof, 0, "no SOF0 marker");
    // FF C0, length (2), precision (1), height (2), width (2): 30000 x 30000.
    buf[sof + 5] = 0x75, buf[sof + 6] = 0x30, buf[sof + 7] = 0x75, buf[sof + 8] = 0x30;
    const char *p = write_tmp("bomb.jpg", buf, n);
    expect_refused(p, XA_ERANGE, "megapixel");
    remove_tmp(p);
    free(buf);
}

Test(image, preprocess_rejects_a_nonpositive_image_size) {
    xa_ctx *ctx = xa_ctx_new();
    xa_image *img = NULL;
    cr_assert_eq(xa_image_new(ctx, 4, 4, &img), XA_OK);
    float out[3];
    cr_expect_eq(xa_clip_preprocess(ctx, img, 0, xa_clip_mean, xa_clip_std, out), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(ctx), "image_size") != NULL, "%s", xa_errmsg(ctx));
    xa_image_free(img);
    xa_ctx_free(ctx);
}
