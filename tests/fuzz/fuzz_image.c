// libFuzzer harness for image decoding (JPEG and PNG through libjpeg and libpng, converted to RGB
// as PIL does) and the CLIP preprocessing behind it. Each input is a file (a memfd). Refusals are
// the expected outcome and must say why; a decoded image must have sane dimensions and
// preprocess to finite values. A crash, a sanitizer report or a broken promise is a finding.
#include "fuzz_util.h"

#include <math.h>

#include "xadapt/image.h"

static int fd = -1;
static char path[32];
static xa_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (fd < 0) {
        fuzz_name = "fuzz_image";
        fd = fuzz_memfd("fuzz.image", path);
        ctx = xa_ctx_new();
        check(ctx != NULL, "setup");
        fuzz_ctx = ctx;
    }
    fuzz_put(fd, data, size);
    xa_image *img = NULL;
    if (xa_image_load(ctx, path, &img) == XA_OK) {
        check(img && img->width > 0 && img->height > 0 && img->data, "a decoded image");
        enum { S = 24 };
        static float chw[3 * S * S];
        check(xa_clip_preprocess(ctx, img, S, xa_clip_mean, xa_clip_std, chw) == XA_OK,
              "a decoded image preprocesses");
        for (int i = 0; i < 3 * S * S; i++)
            check(isfinite(chw[i]) && fabsf(chw[i]) < 3.0f, "normalised pixels in range");
        xa_image_free(img);
    } else {
        check(img == NULL, "no image on failure");
        check(xa_errmsg(ctx)[0] != '\0', "a refusal says why");
    }
    xa_error_clear(ctx);
    return 0;
}
