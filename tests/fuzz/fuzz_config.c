// libFuzzer harness for checkpoint directories: config.json as users' files have it, beside real
// weights. At start, random-weight bert-tiny, roberta-tiny and clip-tiny checkpoints are written
// to temporary directories; an input is one byte choosing one, then the config.json that
// replaces its own. Loading must either refuse with a message or give a model whose text
// forward runs and is finite; a crash, a sanitizer report or a silent refusal is a finding.
// The core sources are compiled into the harness (see meson.build).
#include "fuzz_util.h"

#include <ftw.h>
#include <math.h>
#include <string.h>

#include "xadapt/model.h"

static const char *const presets[] = {"bert-tiny", "roberta-tiny", "clip-tiny"};
#define NPRESETS (sizeof presets / sizeof *presets)
static char dirs[NPRESETS][4096];
static xa_ctx *ctx;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void) {
    for (size_t i = 0; i < NPRESETS; i++)
        if (dirs[i][0])
            nftw(dirs[i], remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void setup(void) {
    fuzz_name = "fuzz_config";
    atexit(cleanup);
    ctx = xa_ctx_new();
    check(ctx != NULL, "context");
    fuzz_ctx = ctx;
    const char *tmp = getenv("TMPDIR");
    for (size_t i = 0; i < NPRESETS; i++) {
        // mkdtemp replaces the XXXXXX of its template
        int n = snprintf(dirs[i], sizeof dirs[i], "%s/xadapt-fuzz-config-XXXXXX",
                         tmp && *tmp ? tmp : "/tmp");
        check(n > 0 && (size_t)n < sizeof dirs[i] && mkdtemp(dirs[i]) != NULL, "mkdtemp");
        xa_random_opts o = {.seed = 1};
        check(xa_model_write_random(ctx, xa_model_preset(presets[i]), dirs[i], &o) == XA_OK,
              "random checkpoint");
    }
}

static void forward(xa_model *m) {
    const xa_model_config *c = xa_model_config_of(m);
    if (c->text.vocab <= 4 || c->text.max_positions < 8)
        return;
    int32_t ids[2 * 5];
    float mask[2 * 5];
    for (int i = 0; i < 10; i++) {
        ids[i] = (int32_t)(1 + i % 3);
        mask[i] = i == 9 ? 0.0f : 1.0f;
    }
    xa_text_batch b = {.ids = ids, .mask = mask, .B = 2, .T = 5};
    xa_text_out out;
    if (xa_text_forward(ctx, m, &b, NULL, &out) == XA_OK) {
        for (int64_t i = 0; i < out.last->numel; i++)
            check(isfinite(out.last->data[i]), "a finite forward");
    } else {
        check(xa_errmsg(ctx)[0] != '\0', "a refused forward says why");
    }
    xa_arena_reset(ctx);
    xa_error_clear(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx)
        setup();
    if (size < 1)
        return 0;
    size_t k = data[0] % NPRESETS;
    char config[4200];
    snprintf(config, sizeof config, "%s/config.json", dirs[k]);
    FILE *f = fopen(config, "wb");
    check(f && fwrite(data + 1, 1, size - 1, f) == size - 1 && fclose(f) == 0, "write config");
    xa_model *m = NULL;
    if (xa_model_load(ctx, dirs[k], &m) == XA_OK) {
        check(m != NULL, "a model on success");
        forward(m);
        xa_model_free(m);
    } else {
        check(m == NULL, "no model on failure");
        check(xa_errmsg(ctx)[0] != '\0', "a refusal says why");
    }
    xa_error_clear(ctx);
    return 0;
}
