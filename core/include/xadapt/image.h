// Images for the vision encoders: JPEG/PNG decoding to 8-bit RGB, PIL-exact bicubic resize,
// center crop, and CLIP preprocessing that reproduces Hugging Face's CLIPImageProcessor bit for
// bit (see docs/images.md). Model code and tensors are elsewhere; this only produces pixels.
#ifndef XADAPT_IMAGE_H
#define XADAPT_IMAGE_H

#include "xadapt/core.h"

#ifdef __cplusplus
extern "C" {
#endif

// Largest image xa_image_load accepts, in pixels; larger files are refused before decoding.
#define XA_IMAGE_MAX_PIXELS 100000000LL

// OpenAI CLIP normalization (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
extern const float xa_clip_mean[3];
extern const float xa_clip_std[3];

// An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B; owns `data`.
typedef struct xa_image {
    int width, height;
    uint8_t *data; // 3 * width * height bytes
} xa_image;

// A zero-filled width x height image. EINVAL for non-positive or oversized dimensions, ENOMEM.
xa_status xa_image_new(xa_ctx *ctx, int width, int height, xa_image **out);
void xa_image_free(xa_image *img);

// Decode a JPEG or PNG file (recognized by content, not by name) and convert it to RGB exactly as
// PIL's Image.open(path).convert("RGB") does. The caller frees *out with xa_image_free.
// ENOTFOUND (missing), EIO (unreadable), EFORMAT (not an image, unsupported format, corrupt or
// truncated data), ERANGE (more than XA_IMAGE_MAX_PIXELS), ENOMEM.
xa_status xa_image_load(xa_ctx *ctx, const char *path, xa_image **out);

// Resize to out_w x out_h with PIL's Image.resize(..., resample=Image.BICUBIC) semantics,
// byte for byte: antialiased separable bicubic (a = -0.5), horizontal pass first, 8-bit rounding
// between the passes; a pass is skipped when that dimension does not change. New image in *dst.
xa_status xa_image_resize_bicubic(xa_ctx *ctx, const xa_image *src, int out_w, int out_h,
                                  xa_image **dst);

// The (w, h) that resizing the shortest edge to `shortest` gives, as transformers'
// get_resize_output_image_size(default_to_square=False): long side = int(shortest * long / short).
void xa_image_shortest_edge_size(int width, int height, int shortest, int *out_w, int *out_h);

// A crop_w x crop_h window from the center, as transformers' center_crop: top = (h - crop_h) // 2
// (floor), left likewise; when the image is smaller the missing border is black (zero).
xa_status xa_image_center_crop(xa_ctx *ctx, const xa_image *src, int crop_w, int crop_h,
                               xa_image **dst);

// CLIPImageProcessor on an RGB image: resize the shortest edge to image_size (bicubic), center
// crop image_size x image_size, scale by 1/255, normalize with mean/std. Writes
// 3 * image_size * image_size floats, channel-major (C,H,W), to out_chw. EINVAL, ENOMEM.
xa_status xa_clip_preprocess(xa_ctx *ctx, const xa_image *img, int image_size, const float mean[3],
                             const float std[3], float *out_chw);
// Load `path` and run xa_clip_preprocess with the OpenAI CLIP mean and std.
xa_status xa_clip_preprocess_file(xa_ctx *ctx, const char *path, int image_size, float *out_chw);

#ifdef __cplusplus
}
#endif
#endif
