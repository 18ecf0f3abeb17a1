// Model subcommands: `info` (what a checkpoint directory holds), `make-random` (a random-weight
// checkpoint in Hugging Face layout) and `encode` (run the frozen encoders on texts, ids or
// images and write every output, named as Hugging Face names them, to a safetensors file).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "xadapt/image.h"
#include "xadapt/model.h"
#include "xadapt/safetensors.h"
#include "xadapt/tensor.h"
#include "xadapt/tokenizer.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void thousands(char *buf, size_t n, int64_t v) {
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", (long long)v);
    size_t len = strlen(raw), at = 0;
    for (size_t i = 0; i < len && at + 2 < n; i++) {
        buf[at++] = raw[i];
        if ((len - i - 1) % 3 == 0 && i + 1 < len)
            buf[at++] = ',';
    }
    buf[at] = '\0';
}

static void print_tower(const char *what, const xa_tower_config *t, bool vision) {
    printf("%-13s %lld layers, hidden %lld, %lld heads, intermediate %lld, %s", what,
           (long long)t->layers, (long long)t->hidden, (long long)t->heads,
           (long long)t->intermediate, xa_act_name(t->act));
    if (vision)
        printf(", image %lld, patch %lld\n", (long long)t->image_size, (long long)t->patch_size);
    else
        printf(", vocab %lld, %lld positions\n", (long long)t->vocab, (long long)t->max_positions);
}

int cmd_info(int argc, char **argv) {
    if (argc != 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc == 2 ? stdout : stderr,
                "usage: xadapt info DIR\n\nDescribe a Hugging Face checkpoint directory: "
                "architecture, sizes, heads, parameter count and the fingerprint of its "
                "weights.\n");
        return argc == 2 ? 0 : 2;
    }
    xa_ctx *ctx = cli_ctx("info");
    if (!ctx)
        return 1;
    xa_model *m;
    double t0 = now_ms();
    if (xa_model_load(ctx, argv[1], &m) != XA_OK) {
        int rc = cli_fail("info", ctx);
        xa_ctx_free(ctx);
        return rc;
    }
    double t1 = now_ms();
    const xa_model_config *c = xa_model_config_of(m);
    char params[32];
    thousands(params, sizeof params, xa_model_param_count(m));
    printf("%-13s %s\n", "model", argv[1]);
    printf("%-13s %s (model_type %s)\n", "architecture", xa_arch_name(c->arch), c->model_type);
    print_tower(c->arch == XA_ARCH_CLIP ? "text tower" : "encoder", &c->text, false);
    if (c->arch == XA_ARCH_CLIP) {
        print_tower("vision tower", &c->vision, true);
        printf("%-13s %lld\n", "projection", (long long)c->projection_dim);
    } else {
        printf("%-13s pooler %s, masked-LM %s\n", "heads", xa_model_has_pooler(m) ? "yes" : "no",
               xa_model_has_mlm_head(m) ? "yes" : "no");
    }
    printf("%-13s pad %lld, bos %lld, eos %lld\n", "special ids", (long long)c->pad_id,
           (long long)c->bos_id, (long long)c->eos_id);
    printf("%-13s %s\n", "parameters", params);
    printf("%-13s %.1f ms (weights mapped read-only)\n", "load time", t1 - t0);
    printf("%-13s %s\n", "fingerprint", xa_model_fingerprint(m));
    xa_model_free(m);
    xa_ctx_free(ctx);
    return 0;
}

// --- make-random -------------------------------------------------------------------------------

static char *slurp_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0)
        if ((len += got) == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb)
                free(buf);
            buf = nb, cap *= 2;
        }
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

int cmd_make_random(int argc, char **argv) {
    const char *arch = NULL, *out = NULL, *tokdir = NULL;
    xa_random_opts o = {.seed = 0, .dtype = XA_DTYPE_F32, .shards = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            printf(
                "usage: xadapt make-random --arch NAME|config.json --out DIR [--seed N]\n"
                "                          [--dtype f32|f16|bf16] [--shards N] [--prefix] "
                "[--no-heads]\n"
                "                          [--tokenizer DIR]\n\n"
                "Write a random-weight checkpoint in exact Hugging Face layout: config.json and\n"
                "the weights (weight files of the other layout left in DIR are removed).\n"
                "--tokenizer DIR copies a tokenizer's files (vocab.txt, tokenizer.json,\n"
                "vocab.json + merges.txt, ...; CLIP's bpe_simple_vocab_16e6.txt.gz is converted)\n"
                "so that DIR also tokenizes, e.g. ../shared/tokenizers/bert-base-uncased.\n"
                "presets: %s\n",
                xa_model_preset_names());
            return 0;
        } else if (!strcmp(a, "--arch") && v) {
            arch = v, i++;
        } else if (!strcmp(a, "--out") && v) {
            out = v, i++;
        } else if (!strcmp(a, "--tokenizer") && v) {
            tokdir = v, i++;
        } else if (!strcmp(a, "--seed") && v) {
            char *end;
            errno = 0;
            o.seed = strtoull(v, &end, 10), i++;
            if (!*v || *end || errno || *v == '-') {
                fprintf(stderr, "xadapt make-random: --seed takes a whole number >= 0, got '%s'\n",
                        v);
                return 2;
            }
        } else if (!strcmp(a, "--shards") && v) {
            long n;
            if (!cli_number("make-random", "--shards", v, 1, 99, &n))
                return 2;
            o.shards = (int)n, i++;
        } else if (!strcmp(a, "--dtype") && v) {
            o.dtype = !strcmp(v, "f16") ? XA_DTYPE_F16 : !strcmp(v, "bf16") ? XA_DTYPE_BF16
                    : !strcmp(v, "f32")  ? XA_DTYPE_F32 : XA_DTYPE_COUNT;
            i++;
        } else if (!strcmp(a, "--prefix")) {
            o.prefix = true;
        } else if (!strcmp(a, "--no-heads")) {
            o.no_heads = true;
        } else {
            fprintf(stderr, "xadapt make-random: unknown or incomplete option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!arch || !out) {
        fprintf(stderr, "xadapt make-random: --arch and --out are required (see --help)\n");
        return 2;
    }
    const char *json = xa_model_preset(arch);
    char *owned = NULL;
    if (!json) {
        if (!strstr(arch, ".json")) {
            fprintf(stderr, "xadapt make-random: unknown preset '%s' (presets: %s; or a "
                            "config.json path)\n", arch, xa_model_preset_names());
            return 2;
        }
        if (!(json = owned = slurp_text(arch))) {
            fprintf(stderr, "xadapt make-random: cannot read '%s'\n", arch);
            return 1;
        }
    }
    xa_ctx *ctx = cli_ctx("make-random");
    if (!ctx) {
        free(owned);
        return 1;
    }
    int rc = 0;
    char err[1024];
    if (xa_model_write_random(ctx, json, out, &o) != XA_OK) {
        rc = cli_fail("make-random", ctx);
    } else if (tokdir && !xl_copy_tokenizer(tokdir, out, err, sizeof err)) {
        fprintf(stderr, "xadapt make-random: %s\n", err);
        rc = 1;
    } else {
        printf("wrote %s (%s, seed %llu%s%s)\n", out, arch, (unsigned long long)o.seed,
               tokdir ? ", tokenizer from " : "", tokdir ? tokdir : "");
    }
    free(owned);
    xa_ctx_free(ctx);
    return rc;
}

// --- encode -------------------------------------------------------------------------------

typedef struct {
    const char *model, *out;
    const char **texts, **pairs, **ids, **images;
    int ntext, nimage;
    int max_length;
    bool logits;
} encode_args;

static void encode_usage(FILE *f) {
    fprintf(f,
            "usage: xadapt encode --model DIR (--text T [--pair T2] | --ids \"101 7592 102\" |\n"
            "                     --image FILE)... --out F.safetensors [--max-length N] "
            "[--logits]\n\n"
            "Run the frozen encoder on a batch (texts and ids padded to the longest with the "
            "tokenizer's pad id,\nor the config's pad_token_id when the directory has no "
            "tokenizer) and write, named as Hugging Face\nnames them: input_ids, attention_mask, "
            "last_hidden_state, hidden_states.<i>, pooler_output\n(and logits with --logits); "
            "for CLIP text_last_hidden_state, text_hidden_states.<i>,\n"
            "text_pooler_output, text_embeds, vision_last_hidden_state, "
            "vision_hidden_states.<i>,\nvision_pooler_output, image_embeds.\n");
}

static int64_t parse_ids(const char *s, int32_t *out, int64_t cap) {
    int64_t n = 0;
    char *end;
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\t')
            s++;
        if (!*s)
            break;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 0x7fffffff || n == cap)
            return -1;
        out[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

static int encode_text(xa_ctx *ctx, xa_model *m, const encode_args *a, xa_st_writer *w,
                       xa_text_out *out, xa_tensor **logits, int64_t **ids64, int64_t **mask64,
                       int64_t **types64) {
    const xa_model_config *c = xa_model_config_of(m);
    xa_tokenizer *tok = NULL;
    bool need_tok = false;
    for (int i = 0; i < a->ntext; i++)
        need_tok |= a->texts[i] != NULL;
    if (xa_tokenizer_load_dir(ctx, xa_model_dir(m), &tok) != XA_OK) {
        if (need_tok)
            return xa_error_wrap(ctx, "--text needs the model directory's tokenizer files"), -1;
        xa_error_clear(ctx);
    }
    int32_t pad = tok ? xa_tokenizer_info_get(tok)->pad_id : (int32_t)c->pad_id;
    int64_t B = a->ntext, T = 0;
    int32_t **rows = calloc((size_t)B, sizeof *rows), **types = calloc((size_t)B, sizeof *types);
    int64_t *lens = calloc((size_t)B, sizeof *lens);
    int rc = -1;
    bool texts = false;
    if (!rows || !types || !lens) {
        xa_errorf(ctx, XA_ENOMEM, "out of memory");
        B = 0;
        goto out;
    }
    for (int64_t i = 0; i < B; i++) {
        if (a->texts[i]) {
            texts = true;
            xa_encoding enc = {0};
            xa_encode_opts eo = {.max_length = a->max_length};
            if (xa_tokenizer_encode(ctx, tok, a->texts[i], a->pairs[i], &eo, &enc) != XA_OK)
                goto out;
            lens[i] = enc.len;
            rows[i] = malloc((size_t)(enc.len ? enc.len : 1) * sizeof(int32_t));
            types[i] = malloc((size_t)(enc.len ? enc.len : 1) * sizeof(int32_t));
            if (rows[i] && types[i]) { // a pair's second segment has type 1 (BERT)
                memcpy(rows[i], enc.ids, (size_t)lens[i] * sizeof(int32_t));
                for (int64_t t = 0; t < enc.len; t++)
                    types[i][t] = enc.type_ids ? enc.type_ids[t] : 0;
            }
            xa_encoding_deinit(&enc);
            if (!rows[i] || !types[i]) {
                xa_errorf(ctx, XA_ENOMEM, "out of memory");
                goto out;
            }
        } else {
            int64_t cap = (int64_t)strlen(a->ids[i]) / 2 + 1; // ids are separated
            int64_t n = (rows[i] = malloc((size_t)cap * sizeof(int32_t)))
                            ? parse_ids(a->ids[i], rows[i], cap)
                            : 0;
            if (n <= 0) {
                xa_errorf(ctx, XA_EINVAL, "--ids '%.60s%s': expected non-negative integers",
                          a->ids[i], strlen(a->ids[i]) > 60 ? "..." : "");
                goto out;
            }
            lens[i] = n;
        }
        T = lens[i] > T ? lens[i] : T;
    }
    int32_t *ids = calloc((size_t)(B * T), sizeof *ids), *tids = calloc((size_t)(B * T), sizeof *tids);
    float *mask = calloc((size_t)(B * T), sizeof *mask);
    *ids64 = calloc((size_t)(B * T), sizeof **ids64);
    *mask64 = calloc((size_t)(B * T), sizeof **mask64);
    *types64 = calloc((size_t)(B * T), sizeof **types64);
    if (!ids || !tids || !mask || !*ids64 || !*mask64 || !*types64) {
        xa_errorf(ctx, XA_ENOMEM, "out of memory");
        goto out_batch;
    }
    for (int64_t i = 0; i < B; i++)
        for (int64_t t = 0; t < T; t++) {
            bool real = t < lens[i];
            ids[i * T + t] = real ? rows[i][t] : pad;
            tids[i * T + t] = real && types[i] ? types[i][t] : 0;
            mask[i * T + t] = real ? 1.0f : 0.0f;
            (*ids64)[i * T + t] = ids[i * T + t];
            (*mask64)[i * T + t] = real;
            (*types64)[i * T + t] = tids[i * T + t];
        }
    bool typed = c->arch != XA_ARCH_CLIP; // CLIP's text tower has no token types
    xa_text_batch batch = {.ids = ids, .mask = mask, .type_ids = typed ? tids : NULL, .B = B, .T = T};
    xa_forward_opts fo = {.all_hidden = true};
    if (xa_text_forward(ctx, m, &batch, &fo, out) == XA_OK &&
        (!a->logits || (*logits = xa_mlm_logits(ctx, m, out->last)))) {
        int64_t shape[2] = {B, T};
        xa_st_writer_add(w, "input_ids", XA_DTYPE_I64, 2, shape, *ids64);
        xa_st_writer_add(w, "attention_mask", XA_DTYPE_I64, 2, shape, *mask64);
        if (typed)
            xa_st_writer_add(w, "token_type_ids", XA_DTYPE_I64, 2, shape, *types64);
        rc = 0;
    } else if (xa_errcode(ctx) == XA_ERANGE && texts && !a->max_length &&
               strstr(xa_errmsg(ctx), "longer than the model's")) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", xa_errmsg(ctx));
        int64_t usable = c->text.max_positions - (c->arch == XA_ARCH_ROBERTA ? c->pad_id + 1 : 0);
        xa_errorf(ctx, XA_ERANGE, "%s (--max-length %lld truncates --text)", msg,
                  (long long)usable);
    }
out_batch:
    free(ids);
    free(tids);
    free(mask);
out:
    for (int64_t i = 0; rows && types && i < B; i++)
        free(rows[i]), free(types[i]);
    free(rows);
    free(types);
    free(lens);
    xa_tokenizer_free(tok);
    return rc;
}

static int encode_images(xa_ctx *ctx, xa_model *m, const encode_args *a, xa_vision_out *out,
                         float **pixels) {
    const xa_model_config *c = xa_model_config_of(m);
    if (c->arch != XA_ARCH_CLIP) {
        xa_errorf(ctx, XA_EINVAL, "--image needs a CLIP model; %s is %s", xa_model_dir(m),
                  xa_arch_name(c->arch));
        return -1;
    }
    int64_t S = c->vision.image_size, per = 3 * S * S;
    *pixels = malloc((size_t)(a->nimage * per) * sizeof(float));
    for (int i = 0; i < a->nimage; i++)
        if (xa_clip_preprocess_file(ctx, a->images[i], (int)S, *pixels + i * per) != XA_OK)
            return -1;
    return xa_vision_forward(ctx, m, *pixels, a->nimage, out) == XA_OK ? 0 : -1;
}

int cmd_encode(int argc, char **argv) {
    encode_args a = {0};
    a.texts = calloc((size_t)argc, sizeof(char *));
    a.pairs = calloc((size_t)argc, sizeof(char *));
    a.ids = calloc((size_t)argc, sizeof(char *));
    a.images = calloc((size_t)argc, sizeof(char *));
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help")) {
            encode_usage(stdout);
            rc = 0;
            goto out_args;
        } else if (!strcmp(o, "--model") && v) {
            a.model = v, i++;
        } else if (!strcmp(o, "--out") && v) {
            a.out = v, i++;
        } else if (!strcmp(o, "--text") && v) {
            a.texts[a.ntext++] = v, i++;
        } else if (!strcmp(o, "--pair") && v && a.ntext && a.texts[a.ntext - 1]) {
            a.pairs[a.ntext - 1] = v, i++;
        } else if (!strcmp(o, "--ids") && v) {
            a.ids[a.ntext++] = v, i++;
        } else if (!strcmp(o, "--image") && v) {
            a.images[a.nimage++] = v, i++;
        } else if (!strcmp(o, "--max-length") && v) {
            long n;
            if (!cli_number("encode", "--max-length", v, 1, 1 << 30, &n))
                goto out_args;
            a.max_length = (int)n, i++;
        } else if (!strcmp(o, "--logits")) {
            a.logits = true;
        } else {
            fprintf(stderr, "xadapt encode: unknown or incomplete option '%s'\n\n", o);
            encode_usage(stderr);
            goto out_args;
        }
    }
    if (!a.model || !a.out || (a.ntext == 0 && a.nimage == 0)) {
        fprintf(stderr, "xadapt encode: --model, --out and at least one input are required\n\n");
        encode_usage(stderr);
        goto out_args;
    }
    xa_ctx *ctx = cli_ctx("encode");
    if (!ctx) {
        rc = 1;
        goto out_args;
    }
    xa_model *m = NULL;
    xa_st_writer *w = NULL;
    xa_text_out text;
    xa_vision_out vis;
    xa_tensor *logits = NULL;
    int64_t *ids64 = NULL, *mask64 = NULL, *types64 = NULL;
    float *pixels = NULL;
    rc = 1;
    if (xa_model_load(ctx, a.model, &m) != XA_OK || !(w = xa_st_writer_new(ctx)))
        goto out_fail;
    if (a.ntext && encode_text(ctx, m, &a, w, &text, &logits, &ids64, &mask64, &types64) != 0)
        goto out_fail;
    if (a.nimage && encode_images(ctx, m, &a, &vis, &pixels) != 0)
        goto out_fail;
    xa_named outs[128];
    int n = xa_named_outputs(m, a.ntext ? &text : NULL, logits, a.nimage ? &vis : NULL, outs, 128);
    for (int i = 0; i < n; i++)
        if (xa_st_writer_add_tensor(w, outs[i].name, outs[i].t) != XA_OK)
            goto out_fail;
    xa_st_writer_meta(w, "format", "pt");
    xa_st_writer_meta(w, "model_fingerprint", xa_model_fingerprint(m));
    if (xa_st_writer_write(w, a.out) != XA_OK)
        goto out_fail;
    int inputs = a.ntext ? (xa_model_config_of(m)->arch == XA_ARCH_CLIP ? 2 : 3) : 0;
    printf("wrote %d tensors to %s\n", n + inputs, a.out); // + input_ids, attention_mask (types)
    rc = 0;
    goto out_free;
out_fail:
    cli_fail("encode", ctx);
out_free:
    free(ids64);
    free(mask64);
    free(types64);
    free(pixels);
    xa_st_writer_free(w);
    xa_model_free(m);
    xa_ctx_free(ctx);
out_args:
    free(a.texts);
    free(a.pairs);
    free(a.ids);
    free(a.images);
    return rc;
}
