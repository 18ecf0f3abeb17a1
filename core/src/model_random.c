// Random-weight checkpoints in exact Hugging Face layout, so anyone can try xadapt without
// downloading weights: built-in presets of the real architectures' configs, transformers'
// initialisation, optional f16/bf16 storage, prefixes and sharding. Names and shapes come from
// the same table the loader binds through (model_spec.c).
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_internal.h"

#define BERT_COMMON                                                                                \
    "\"attention_probs_dropout_prob\": 0.1, \"hidden_dropout_prob\": 0.1, \"hidden_act\": "       \
    "\"gelu\", \"initializer_range\": 0.02, \"position_embedding_type\": \"absolute\", "          \
    "\"use_cache\": true, "

static const struct {
    const char *name, *json;
} presets[] = {
    {"bert-base", "{\"architectures\": [\"BertForMaskedLM\"], \"model_type\": \"bert\", " BERT_COMMON
                  "\"hidden_size\": 768, \"intermediate_size\": 3072, \"layer_norm_eps\": 1e-12, "
                  "\"max_position_embeddings\": 512, \"num_attention_heads\": 12, "
                  "\"num_hidden_layers\": 12, \"pad_token_id\": 0, \"type_vocab_size\": 2, "
                  "\"vocab_size\": 30522}"},
    {"bert-mini", "{\"architectures\": [\"BertForMaskedLM\"], \"model_type\": \"bert\", " BERT_COMMON
                  "\"hidden_size\": 256, \"intermediate_size\": 1024, \"layer_norm_eps\": 1e-12, "
                  "\"max_position_embeddings\": 512, \"num_attention_heads\": 4, "
                  "\"num_hidden_layers\": 4, \"pad_token_id\": 0, \"type_vocab_size\": 2, "
                  "\"vocab_size\": 30522}"},
    {"bert-tiny", "{\"architectures\": [\"BertForMaskedLM\"], \"model_type\": \"bert\", " BERT_COMMON
                  "\"hidden_size\": 128, \"intermediate_size\": 512, \"layer_norm_eps\": 1e-12, "
                  "\"max_position_embeddings\": 512, \"num_attention_heads\": 2, "
                  "\"num_hidden_layers\": 2, \"pad_token_id\": 0, \"type_vocab_size\": 2, "
                  "\"vocab_size\": 30522}"},
    {"roberta-base", "{\"architectures\": [\"RobertaForMaskedLM\"], \"model_type\": \"roberta\", "
                     BERT_COMMON "\"bos_token_id\": 0, \"eos_token_id\": 2, \"hidden_size\": 768, "
                     "\"intermediate_size\": 3072, \"layer_norm_eps\": 1e-05, "
                     "\"max_position_embeddings\": 514, \"num_attention_heads\": 12, "
                     "\"num_hidden_layers\": 12, \"pad_token_id\": 1, \"type_vocab_size\": 1, "
                     "\"vocab_size\": 50265}"},
    {"roberta-tiny", "{\"architectures\": [\"RobertaForMaskedLM\"], \"model_type\": \"roberta\", "
                     BERT_COMMON "\"bos_token_id\": 0, \"eos_token_id\": 2, \"hidden_size\": 128, "
                     "\"intermediate_size\": 512, \"layer_norm_eps\": 1e-05, "
                     "\"max_position_embeddings\": 514, \"num_attention_heads\": 2, "
                     "\"num_hidden_layers\": 2, \"pad_token_id\": 1, \"type_vocab_size\": 1, "
                     "\"vocab_size\": 50265}"},
    {"clip-vit-base-patch32",
     "{\"architectures\": [\"CLIPModel\"], \"model_type\": \"clip\", \"initializer_factor\": 1.0, "
     "\"logit_scale_init_value\": 2.6592, \"projection_dim\": 512, \"text_config\": "
     "{\"model_type\": \"clip_text_model\", \"vocab_size\": 49408, \"hidden_size\": 512, "
     "\"intermediate_size\": 2048, \"num_attention_heads\": 8, \"num_hidden_layers\": 12, "
     "\"max_position_embeddings\": 77, \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, "
     "\"bos_token_id\": 49406, \"eos_token_id\": 49407, \"pad_token_id\": 1, "
     "\"projection_dim\": 512}, \"vision_config\": {\"model_type\": \"clip_vision_model\", "
     "\"hidden_size\": 768, \"intermediate_size\": 3072, \"num_attention_heads\": 12, "
     "\"num_hidden_layers\": 12, \"image_size\": 224, \"patch_size\": 32, \"num_channels\": 3, "
     "\"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, \"projection_dim\": 512}}"},
    {"clip-tiny",
     "{\"architectures\": [\"CLIPModel\"], \"model_type\": \"clip\", \"initializer_factor\": 1.0, "
     "\"logit_scale_init_value\": 2.6592, \"projection_dim\": 64, \"text_config\": "
     "{\"model_type\": \"clip_text_model\", \"vocab_size\": 49408, \"hidden_size\": 64, "
     "\"intermediate_size\": 256, \"num_attention_heads\": 2, \"num_hidden_layers\": 2, "
     "\"max_position_embeddings\": 77, \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, "
     "\"bos_token_id\": 49406, \"eos_token_id\": 49407, \"pad_token_id\": 1, "
     "\"projection_dim\": 64}, \"vision_config\": {\"model_type\": \"clip_vision_model\", "
     "\"hidden_size\": 64, \"intermediate_size\": 256, \"num_attention_heads\": 2, "
     "\"num_hidden_layers\": 2, \"image_size\": 224, \"patch_size\": 32, \"num_channels\": 3, "
     "\"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, \"projection_dim\": 64}}"},
};

const char *xa_model_preset(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
        if (!strcmp(name, presets[i].name))
            return presets[i].json;
    return NULL;
}

const char *xa_model_preset_names(void) {
    return "bert-base, bert-mini, bert-tiny, roberta-base, roberta-tiny, clip-vit-base-patch32, "
           "clip-tiny";
}

// transformers' _init_weights: Linear and Embedding ~ N(0, initializer_range), LayerNorm 1/0,
// biases 0, CLIP's logit_scale at its init value.
static void fill(xa_ctx *ctx, const xa_tspec *s, float *v, int64_t n, float std) {
    size_t len = strlen(s->name);
    bool bias = len > 5 && !strcmp(s->name + len - 5, ".bias");
    bool norm = strstr(s->name, "LayerNorm") || strstr(s->name, "layer_norm") ||
                strstr(s->name, "layrnorm") || strstr(s->name, "layernorm");
    if (!strcmp(s->name, "logit_scale")) {
        v[0] = 2.6592f;
    } else if (bias) {
        memset(v, 0, (size_t)n * sizeof *v);
    } else if (norm) {
        for (int64_t i = 0; i < n; i++)
            v[i] = 1.0f;
    } else { // Box-Muller, both values of each pair: weights for bert-base are 110M normals
        for (int64_t i = 0; i < n; i += 2) {
            float u1 = ((float)(xa_rng_next(ctx) >> 40) + 1.0f) * 0x1.0p-24f;
            float u2 = (float)(xa_rng_next(ctx) >> 40) * 0x1.0p-24f;
            float r = std * sqrtf(-2.0f * logf(u1)), a = 6.2831853f * u2;
            v[i] = r * cosf(a);
            if (i + 1 < n)
                v[i + 1] = r * sinf(a);
        }
    }
}

static uint16_t to_half(float f) { // round to nearest even, with subnormals and inf/nan
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xffu, m = x & 0x7fffffu;
    if (e == 0xff)
        return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
    int ne = (int)e - 127 + 15;
    if (ne >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (ne <= 0) {
        if (ne < -10)
            return (uint16_t)sign;
        m |= 0x800000u;
        int shift = 14 - ne;
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = (uint32_t)(ne << 10) | (m >> 13), rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1)))
        half++;
    return (uint16_t)(sign | half);
}

static uint16_t to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static xa_status write_index(xa_ctx *ctx, const char *dir, const xa_tspec *spec, size_t n,
                             const int *shard_of, int shards, const char *prefix,
                             uint64_t total_bytes) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total_bytes);
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    for (size_t i = 0; i < n; i++) {
        if (shard_of[i] < 0)
            continue;
        char name[200], file[64];
        snprintf(name, sizeof name, "%s%s", prefix, spec[i].name);
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard_of[i] + 1, shards);
        cJSON_AddStringToObject(map, name, file);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = text ? fopen(path, "w") : NULL;
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    free(text);
    return ok ? XA_OK : xa_errorf(ctx, XA_EIO, "%s: cannot write (%s)", path, strerror(errno));
}

// Weight files of the other layout left in `dir` by an earlier write would be loaded instead of
// (model.safetensors wins over an index, as in transformers) or beside the new ones: remove them.
static xa_status remove_stale_weights(xa_ctx *ctx, const char *dir, int shards) {
    char path[4096], keep[64] = "";
    if (shards > 1)
        snprintf(keep, sizeof keep, "-of-%05d.safetensors", shards);
    snprintf(path, sizeof path,
             "%s/model-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"
             ".safetensors",
             dir);
    glob_t g;
    int rc = glob(path, 0, NULL, &g);
    xa_status st = XA_OK;
    for (size_t i = 0; rc == 0 && i < g.gl_pathc && st == XA_OK; i++) {
        size_t len = strlen(g.gl_pathv[i]), kl = strlen(keep);
        bool ours = kl && len >= kl && !strcmp(g.gl_pathv[i] + len - kl, keep);
        if (!ours && unlink(g.gl_pathv[i]) != 0)
            st = xa_errorf(ctx, XA_EIO, "%s: cannot remove (%s)", g.gl_pathv[i], strerror(errno));
    }
    if (rc == 0)
        globfree(&g);
    const char *other = shards > 1 ? "model.safetensors" : "model.safetensors.index.json";
    snprintf(path, sizeof path, "%s/%s", dir, other);
    if (st == XA_OK && unlink(path) != 0 && errno != ENOENT)
        st = xa_errorf(ctx, XA_EIO, "%s: cannot remove (%s)", path, strerror(errno));
    return st;
}

// mkdir -p
static bool mkdir_p(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0777) != 0 && errno != EEXIST)
                return false;
            *p = '/';
        }
    return mkdir(path, 0777) == 0 || errno == EEXIST;
}

xa_status xa_model_write_random(xa_ctx *ctx, const char *config_json, const char *dir,
                                const xa_random_opts *opts) {
    xa_random_opts o = opts ? *opts : (xa_random_opts){0};
    if (o.dtype != XA_DTYPE_F32 && o.dtype != XA_DTYPE_F16 && o.dtype != XA_DTYPE_BF16)
        return xa_errorf(ctx, XA_EINVAL, "make-random: dtype must be F32, F16 or BF16");
    if (o.shards < 1)
        o.shards = 1;
    if (o.shards > 99) // transformers' shards hold whole tensors, a few GB each
        return xa_errorf(ctx, XA_EINVAL, "make-random: %d shards; at most 99", o.shards);
    cJSON *j = cJSON_Parse(config_json);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return xa_errorf(ctx, XA_EFORMAT, "make-random: the config is not a JSON object");
    }
    xa_model shell = {0};
    shell.dir = (char *)dir;
    xa_status st = xa_config_parse(ctx, "config.json", j, &shell.cfg);
    const cJSON *ir = cJSON_GetObjectItemCaseSensitive(j, "initializer_range");
    bool std_ok = !cJSON_IsNumber(ir) || (ir->valuedouble >= 0 && ir->valuedouble <= 1e3);
    float std = cJSON_IsNumber(ir) && std_ok ? (float)ir->valuedouble : 0.02f;
    cJSON_Delete(j);
    if (st)
        return st;
    if (!std_ok)
        return xa_errorf(ctx, XA_EFORMAT, "config.json: 'initializer_range' must be a standard "
                                          "deviation in [0, 1000]");
    if (!mkdir_p(dir))
        return xa_errorf(ctx, XA_EIO, "%s: cannot create directory (%s)", dir, strerror(errno));
    xa_tspec *spec = NULL;
    size_t n = 0;
    int *shard_of = NULL;
    float *buf = NULL;
    xa_st_writer **w = NULL;
    if ((st = xa_model_alloc_blocks(ctx, &shell)) != XA_OK ||
        (st = xa_model_spec(ctx, &shell, &spec, &n)) != XA_OK)
        goto out;
    // config.json, pretty-printed as transformers writes it
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    {
        cJSON *cj = cJSON_Parse(config_json);
        char *text = cJSON_Print(cj);
        cJSON_Delete(cj);
        FILE *f = text ? fopen(path, "w") : NULL;
        bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        if (f && fclose(f) != 0)
            ok = false;
        free(text);
        if (!ok) {
            st = xa_errorf(ctx, XA_EIO, "%s: cannot write (%s)", path, strerror(errno));
            goto out;
        }
    }
    const char *prefix = "";
    if (o.prefix && shell.cfg.arch != XA_ARCH_CLIP)
        prefix = shell.cfg.arch == XA_ARCH_ROBERTA ? "roberta." : "bert.";
    bool roberta = shell.cfg.arch == XA_ARCH_ROBERTA;
    shard_of = xa_calloc(ctx, n, sizeof *shard_of);
    w = xa_calloc(ctx, (size_t)o.shards, sizeof *w);
    if (!shard_of || !w) {
        st = XA_ENOMEM;
        goto out;
    }
    // values are generated for every tensor in table order, so the seed fixes them all;
    // kept tensors are spread over shards by size
    int64_t total = 0, kept_numel = 0;
    for (size_t i = 0; i < n; i++) {
        xa_tspec *s = &spec[i];
        bool skip = s->group == XA_GROUP_MLM_DECODER || // tied to the word embeddings
                    (o.no_heads && (s->group == XA_GROUP_MLM || s->group == XA_GROUP_POOLER)) ||
                    (roberta && s->group == XA_GROUP_POOLER); // as roberta-base has none
        shard_of[i] = skip ? -1 : 0;
        if (!skip)
            total += xa_shape_numel(s->ndim, s->shape, NULL);
    }
    for (int k = 0; k < o.shards; k++)
        if (!(w[k] = xa_st_writer_new(ctx))) {
            st = XA_ENOMEM;
            goto out;
        }
    // Data pointers must outlive the writers, so each tensor gets its own buffer, freed at the end.
    void **keep = xa_calloc(ctx, n, sizeof *keep);
    if (!keep) {
        st = XA_ENOMEM;
        goto out;
    }
    xa_ctx_seed(ctx, o.seed);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n && st == XA_OK; i++) {
        xa_tspec *s = &spec[i];
        int64_t numel = xa_shape_numel(s->ndim, s->shape, NULL);
        buf = xa_malloc(ctx, (size_t)(numel ? numel : 1) * sizeof(float));
        if (!buf) {
            st = XA_ENOMEM;
            break;
        }
        fill(ctx, s, buf, numel, std);
        if (shard_of[i] < 0) {
            free(buf);
            buf = NULL;
            continue;
        }
        shard_of[i] = (int)(kept_numel * o.shards / (total ? total : 1));
        kept_numel += numel;
        void *data = buf;
        if (o.dtype != XA_DTYPE_F32) {
            uint16_t *h = (uint16_t *)buf; // convert in place: each 2-byte slot is behind its source
            for (int64_t k = 0; k < numel; k++)
                h[k] = o.dtype == XA_DTYPE_F16 ? to_half(buf[k]) : to_bf16(buf[k]);
        }
        keep[i] = data;
        buf = NULL;
        bytes += (uint64_t)numel * xa_dtype_size(o.dtype);
        char name[200];
        snprintf(name, sizeof name, "%s%s", prefix, s->name);
        st = xa_st_writer_add(w[shard_of[i]], name, o.dtype, s->ndim, s->shape, data);
    }
    for (int k = 0; k < o.shards && st == XA_OK; k++) {
        xa_st_writer_meta(w[k], "format", "pt");
        if (o.shards == 1)
            snprintf(path, sizeof path, "%s/model.safetensors", dir);
        else
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, k + 1, o.shards);
        st = xa_st_writer_write(w[k], path);
    }
    if (st == XA_OK && o.shards > 1)
        st = write_index(ctx, dir, spec, n, shard_of, o.shards, prefix, bytes);
    if (st == XA_OK)
        st = remove_stale_weights(ctx, dir, o.shards);
    for (size_t i = 0; i < n; i++)
        free(keep[i]);
    free(keep);
out:
    for (int k = 0; w && k < o.shards; k++)
        xa_st_writer_free(w[k]);
    free(w);
    free(buf);
    free(shard_of);
    free(shell.spec);
    free(shell.text_blocks);
    free(shell.vision_blocks);
    return st;
}
