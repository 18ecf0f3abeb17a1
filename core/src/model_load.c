// Loading Hugging Face checkpoint directories: config.json into xa_model_config, the weights
// (one model.safetensors or a sharded set with model.safetensors.index.json) bound to the
// model's tensors through one table of expected names and shapes (model_spec.c), which
// `make-random` also uses to write checkpoints. Forward passes live in encoder.c and clip.c.
#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_internal.h"

const char *xa_arch_name(xa_arch a) {
    switch (a) {
    case XA_ARCH_BERT: return "bert";
    case XA_ARCH_ROBERTA: return "roberta";
    case XA_ARCH_CLIP: return "clip";
    }
    return "?";
}

// --- config.json ------------------------------------------------------------------------------

static char *slurp(xa_ctx *ctx, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        xa_errorf(ctx, XA_ENOTFOUND, "%s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        n < (64l << 20) && (buf = xa_malloc(ctx, (size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
        *len = (size_t)n;
    } else {
        if (!xa_errcode(ctx) || buf)
            xa_errorf(ctx, XA_EIO, "%s: cannot read%s", path, n >= (64l << 20) ? " (over 64 MiB)" : "");
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

cJSON *xa_json_load(xa_ctx *ctx, const char *path) {
    size_t len;
    char *text = slurp(ctx, path, &len);
    if (!text)
        return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!j) {
        size_t at = end ? (size_t)(end - text) : 0;
        xa_errorf(ctx, XA_EFORMAT, "%s: invalid JSON near byte %zu", path, at);
    } else if (!cJSON_IsObject(j)) {
        xa_errorf(ctx, XA_EFORMAT, "%s: expected a JSON object at the top level", path);
        cJSON_Delete(j);
        j = NULL;
    }
    free(text);
    return j;
}

// Integer key with a default; false (and an error) when present but not a whole number.
static bool get_int(xa_ctx *ctx, const char *path, const cJSON *obj, const char *key, int64_t dflt,
                    int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return true;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;
    if (!(d >= -1e15 && d <= 1e15) || d != floor(d)) { // range first: the cast of 1e36 is UB
        xa_errorf(ctx, XA_EFORMAT, "%s: '%s' must be an integer", path, key);
        return false;
    }
    *out = (int64_t)d;
    return true;
}

static bool get_float(xa_ctx *ctx, const char *path, const cJSON *obj, const char *key,
                      float dflt, float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return true;
    }
    if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) <= FLT_MAX)) {
        xa_errorf(ctx, XA_EFORMAT, "%s: '%s' must be a number a float can hold", path, key);
        return false;
    }
    *out = (float)v->valuedouble;
    return true;
}

static bool get_act(xa_ctx *ctx, const char *path, const cJSON *obj, const char *dflt, xa_act *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "hidden_act");
    const char *name = cJSON_IsString(v) ? v->valuestring : dflt;
    if (v && !cJSON_IsString(v)) {
        xa_errorf(ctx, XA_EFORMAT, "%s: 'hidden_act' must be a string", path);
        return false;
    }
    if (!xa_act_parse(name, out)) {
        xa_errorf(ctx, XA_EFORMAT,
                  "%s: hidden_act '%s' is not supported (gelu, gelu_new, gelu_pytorch_tanh, "
                  "quick_gelu, relu, tanh, sigmoid)",
                  path, name);
        return false;
    }
    return true;
}

static bool check_tower(xa_ctx *ctx, const char *path, const char *what, const xa_tower_config *t,
                        bool vision) {
    const struct {
        const char *key;
        int64_t v;
    } pos[] = {{"hidden_size", t->hidden},
               {"num_hidden_layers", t->layers},
               {"num_attention_heads", t->heads},
               {"intermediate_size", t->intermediate},
               {vision ? "image_size" : "vocab_size", vision ? t->image_size : t->vocab},
               {vision ? "patch_size" : "max_position_embeddings",
                vision ? t->patch_size : t->max_positions}};
    for (size_t i = 0; i < sizeof pos / sizeof *pos; i++)
        if (pos[i].v <= 0 || pos[i].v > (1 << 24)) {
            xa_errorf(ctx, XA_EFORMAT, "%s: %s%s must be between 1 and 2^24, got %lld", path, what,
                      pos[i].key, (long long)pos[i].v);
            return false;
        }
    if (t->hidden % t->heads) {
        xa_errorf(ctx, XA_EFORMAT, "%s: %snum_attention_heads %lld does not divide hidden_size %lld",
                  path, what, (long long)t->heads, (long long)t->hidden);
        return false;
    }
    if (vision && (t->image_size % t->patch_size || t->channels <= 0 || t->channels > 16)) {
        xa_errorf(ctx, XA_EFORMAT, "%s: %spatch_size %lld must divide image_size %lld", path, what,
                  (long long)t->patch_size, (long long)t->image_size);
        return false;
    }
    if (!(t->eps > 0.0f)) {
        xa_errorf(ctx, XA_EFORMAT, "%s: %slayer_norm_eps must be positive", path, what);
        return false;
    }
    return true;
}

static bool parse_bert(xa_ctx *ctx, const char *path, const cJSON *j, xa_model_config *c) {
    xa_tower_config *t = &c->text;
    bool roberta = c->arch == XA_ARCH_ROBERTA;
    const cJSON *pet = cJSON_GetObjectItemCaseSensitive(j, "position_embedding_type");
    if (pet && !(cJSON_IsString(pet) && strcmp(pet->valuestring, "absolute") == 0)) {
        xa_errorf(ctx, XA_EFORMAT,
                  "%s: position_embedding_type '%s' is not supported (only \"absolute\")", path,
                  cJSON_IsString(pet) ? pet->valuestring : "?");
        return false;
    }
    return get_int(ctx, path, j, "hidden_size", 768, &t->hidden) &&
           get_int(ctx, path, j, "num_hidden_layers", 12, &t->layers) &&
           get_int(ctx, path, j, "num_attention_heads", 12, &t->heads) &&
           get_int(ctx, path, j, "intermediate_size", 3072, &t->intermediate) &&
           get_int(ctx, path, j, "vocab_size", roberta ? 50265 : 30522, &t->vocab) &&
           get_int(ctx, path, j, "max_position_embeddings", 512, &t->max_positions) &&
           get_int(ctx, path, j, "type_vocab_size", 2, &t->type_vocab) &&
           get_int(ctx, path, j, "pad_token_id", roberta ? 1 : 0, &c->pad_id) &&
           get_int(ctx, path, j, "bos_token_id", roberta ? 0 : -1, &c->bos_id) &&
           get_int(ctx, path, j, "eos_token_id", roberta ? 2 : -1, &c->eos_id) &&
           get_float(ctx, path, j, "layer_norm_eps", 1e-12f, &t->eps) &&
           get_act(ctx, path, j, "gelu", &t->act) && check_tower(ctx, path, "", t, false);
}

// CLIP configs written by recent transformers keep only non-default keys, so every default of
// CLIPTextConfig / CLIPVisionConfig is spelled out here.
static bool parse_clip(xa_ctx *ctx, const char *path, const cJSON *j, xa_model_config *c) {
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(j, "text_config");
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(j, "vision_config");
    if ((tc && !cJSON_IsObject(tc)) || (vc && !cJSON_IsObject(vc))) {
        xa_errorf(ctx, XA_EFORMAT, "%s: text_config and vision_config must be objects", path);
        return false;
    }
    cJSON empty = {0};
    empty.type = cJSON_Object;
    if (!tc)
        tc = &empty;
    if (!vc)
        vc = &empty;
    xa_tower_config *t = &c->text, *v = &c->vision;
    return get_int(ctx, path, j, "projection_dim", 512, &c->projection_dim) &&
           get_int(ctx, path, tc, "hidden_size", 512, &t->hidden) &&
           get_int(ctx, path, tc, "num_hidden_layers", 12, &t->layers) &&
           get_int(ctx, path, tc, "num_attention_heads", 8, &t->heads) &&
           get_int(ctx, path, tc, "intermediate_size", 2048, &t->intermediate) &&
           get_int(ctx, path, tc, "vocab_size", 49408, &t->vocab) &&
           get_int(ctx, path, tc, "max_position_embeddings", 77, &t->max_positions) &&
           get_int(ctx, path, tc, "pad_token_id", 1, &c->pad_id) &&
           get_int(ctx, path, tc, "bos_token_id", 49406, &c->bos_id) &&
           get_int(ctx, path, tc, "eos_token_id", 49407, &c->eos_id) &&
           get_float(ctx, path, tc, "layer_norm_eps", 1e-5f, &t->eps) &&
           get_act(ctx, path, tc, "quick_gelu", &t->act) &&
           check_tower(ctx, path, "text_config.", t, false) &&
           get_int(ctx, path, vc, "hidden_size", 768, &v->hidden) &&
           get_int(ctx, path, vc, "num_hidden_layers", 12, &v->layers) &&
           get_int(ctx, path, vc, "num_attention_heads", 12, &v->heads) &&
           get_int(ctx, path, vc, "intermediate_size", 3072, &v->intermediate) &&
           get_int(ctx, path, vc, "image_size", 224, &v->image_size) &&
           get_int(ctx, path, vc, "patch_size", 32, &v->patch_size) &&
           get_int(ctx, path, vc, "num_channels", 3, &v->channels) &&
           get_float(ctx, path, vc, "layer_norm_eps", 1e-5f, &v->eps) &&
           get_act(ctx, path, vc, "quick_gelu", &v->act) &&
           check_tower(ctx, path, "vision_config.", v, true) &&
           (c->projection_dim > 0 ||
            (xa_errorf(ctx, XA_EFORMAT, "%s: projection_dim must be positive", path), false));
}

xa_status xa_config_parse(xa_ctx *ctx, const char *path, const cJSON *j, xa_model_config *c) {
    memset(c, 0, sizeof *c);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    const char *type = cJSON_IsString(mt) ? mt->valuestring : NULL;
    if (!type) { // older files: infer from "architectures"
        const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "architectures"), 0);
        const char *a = cJSON_IsString(arch) ? arch->valuestring : "";
        type = !strncmp(a, "Roberta", 7) ? "roberta" : !strncmp(a, "Bert", 4) ? "bert"
             : !strncmp(a, "CLIP", 4)    ? "clip"    : NULL;
    }
    if (!type)
        return xa_errorf(ctx, XA_EFORMAT,
                         "%s: no 'model_type' (and no recognisable 'architectures'); xadapt reads "
                         "bert, roberta and clip checkpoints",
                         path);
    snprintf(c->model_type, sizeof c->model_type, "%s", type);
    if (!strcmp(type, "bert"))
        c->arch = XA_ARCH_BERT;
    else if (!strcmp(type, "roberta") || !strcmp(type, "xlm-roberta"))
        c->arch = XA_ARCH_ROBERTA;
    else if (!strcmp(type, "clip"))
        c->arch = XA_ARCH_CLIP;
    else
        return xa_errorf(ctx, XA_EFORMAT,
                         "%s: model_type '%s' is not supported (bert, roberta, xlm-roberta, clip)",
                         path, type);
    c->text.channels = 0;
    c->vision.channels = 3;
    bool ok = c->arch == XA_ARCH_CLIP ? parse_clip(ctx, path, j, c) : parse_bert(ctx, path, j, c);
    if (!ok)
        return xa_errcode(ctx);
    if (c->arch == XA_ARCH_ROBERTA && c->text.max_positions <= c->pad_id + 1)
        return xa_errorf(ctx, XA_EFORMAT,
                         "%s: max_position_embeddings %lld leaves no room after padding index %lld",
                         path, (long long)c->text.max_positions, (long long)c->pad_id);
    return XA_OK;
}

// --- weight files ----------------------------------------------------------------------------

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static xa_status open_shards(xa_ctx *ctx, xa_model *m) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", m->dir);
    if (exists(path)) {
        m->files = xa_calloc(ctx, 1, sizeof *m->files);
        if (!m->files)
            return XA_ENOMEM;
        xa_status st = xa_st_open(ctx, path, &m->files[0]);
        if (st)
            return st;
        m->nfiles = 1;
        return XA_OK;
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", m->dir);
    if (!exists(path)) {
        const char *other[] = {"pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"};
        for (size_t i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/%s", m->dir, other[i]);
            if (exists(path))
                return xa_errorf(
                    ctx, XA_ENOTFOUND,
                    "%s: xadapt reads safetensors only, not %s (a pickle/framework file that can "
                    "run code). Convert once with: python3 -c \"from transformers import AutoModel; "
                    "AutoModel.from_pretrained('%s').save_pretrained('%s', "
                    "safe_serialization=True)\"",
                    m->dir, other[i], m->dir, m->dir);
        }
        return xa_errorf(ctx, XA_ENOTFOUND,
                         "%s: no model.safetensors or model.safetensors.index.json", m->dir);
    }
    cJSON *idx = xa_json_load(ctx, path);
    if (!idx)
        return xa_errcode(ctx);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    xa_status st = XA_OK;
    if (!cJSON_IsObject(map)) {
        st = xa_errorf(ctx, XA_EFORMAT, "%s: no 'weight_map' object", path);
        goto out_json;
    }
    // distinct shard names, in first-seen order
    int n = cJSON_GetArraySize(map);
    m->files = xa_calloc(ctx, (size_t)(n ? n : 1), sizeof *m->files);
    char **names = xa_calloc(ctx, (size_t)(n ? n : 1), sizeof *names);
    if (!m->files || !names) {
        st = XA_ENOMEM;
        goto out_names;
    }
    int nn = 0;
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || e->valuestring[0] == '.') {
            st = xa_errorf(ctx, XA_EFORMAT, "%s: weight_map['%s'] must name a file in %s", path,
                           e->string, m->dir);
            goto out_names;
        }
        int k = 0;
        while (k < nn && strcmp(names[k], e->valuestring))
            k++;
        if (k == nn)
            names[nn++] = e->valuestring;
    }
    for (int k = 0; k < nn; k++) {
        char shard[4096];
        snprintf(shard, sizeof shard, "%s/%s", m->dir, names[k]);
        if ((st = xa_st_open(ctx, shard, &m->files[k])) != XA_OK) {
            xa_error_wrap(ctx, "shard listed in %s", path);
            goto out_names;
        }
        m->nfiles = (size_t)k + 1;
    }
out_names:
    free(names);
out_json:
    cJSON_Delete(idx);
    return st;
}

// Entry for `name` in any shard.
static xa_st_file *find_entry(xa_model *m, const char *name, const xa_st_entry **e) {
    for (size_t i = 0; i < m->nfiles; i++)
        if ((*e = xa_st_find(m->files[i], name)))
            return m->files[i];
    return NULL;
}

// Hugging Face names the same tensor several ways: an optional "bert."/"roberta." prefix from
// *ForMaskedLM checkpoints, and legacy LayerNorm "gamma"/"beta". Returns the name found.
static xa_st_file *resolve(xa_model *m, const char *canon, const xa_st_entry **e, char *found,
                           size_t n) {
    const char *prefixes[3] = {"", m->cfg.arch == XA_ARCH_ROBERTA ? "roberta." : "bert.", NULL};
    if (m->cfg.arch == XA_ARCH_CLIP || !strncmp(canon, "cls.", 4) || !strncmp(canon, "lm_head.", 8))
        prefixes[1] = NULL;
    for (int p = 0; p < 2 && prefixes[p]; p++)
        for (int legacy = 0; legacy < 2; legacy++) {
            snprintf(found, n, "%s%s", prefixes[p], canon);
            if (legacy) {
                size_t len = strlen(found);
                bool ln = strstr(found, "LayerNorm.") != NULL;
                if (!ln)
                    break;
                if (len > 7 && !strcmp(found + len - 7, ".weight"))
                    strcpy(found + len - 7, ".gamma");
                else if (len > 5 && !strcmp(found + len - 5, ".bias"))
                    strcpy(found + len - 5, ".beta");
                else
                    break;
            }
            xa_st_file *f = find_entry(m, found, e);
            if (f)
                return f;
        }
    return NULL;
}

// Problems are collected into one message so a user sees every missing tensor at once.
typedef struct {
    char *buf;
    size_t len, cap;
    int count;
} problems;

static void add_problem(problems *p, const char *fmt, ...) XA_PRINTF(2, 3);
static void add_problem(problems *p, const char *fmt, ...) {
    p->count++;
    if (p->count > 40)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (p->len + (size_t)n + 4 > p->cap) {
        size_t cap = (p->cap + (size_t)n + 4) * 2;
        char *b = realloc(p->buf, cap);
        if (!b)
            return;
        p->buf = b, p->cap = cap;
    }
    p->len += (size_t)snprintf(p->buf + p->len, p->cap - p->len, "\n  %s", line);
}

static bool shape_matches(const xa_st_entry *e, const xa_tspec *s) {
    if (e->ndim != s->ndim)
        return false;
    for (int i = 0; i < s->ndim; i++)
        if (e->shape[i] != s->shape[i])
            return false;
    return true;
}

// The blocks of each tower must be the config's: blocks the config does not have (a 12-layer
// checkpoint read with num_hidden_layers 6) would be dropped without a word, and blocks it claims
// but the file lacks (num_hidden_layers 230522) would each be looked up and listed tensor by
// tensor. Both are one problem per tower, found by one scan of the tensor names.
typedef struct {
    const char *pattern; // after an optional "bert." / "roberta." prefix
    int64_t *layers;     // the config's count (lowered to the file's while binding)
    int64_t want;        // the config's count as read
    long most;           // highest block index in the file, -1 for none
    const char *last;    // a tensor of that block
} tower_blocks;

static void scan_blocks(const xa_model *m, tower_blocks *t) {
    t->most = -1, t->last = NULL;
    for (size_t f = 0; f < m->nfiles; f++)
        for (size_t i = 0; i < xa_st_count(m->files[f]); i++) {
            const char *name = xa_st_at(m->files[f], i)->name;
            const char *at = strstr(name, t->pattern);
            if (!at || (at != name && at[-1] != '.'))
                continue;
            char *end;
            long layer = strtol(at + strlen(t->pattern), &end, 10);
            if (*end == '.' && layer > t->most)
                t->most = layer, t->last = name;
        }
}

// Checks the block counts and, where the config claims more blocks than the file has, binds only
// those the file has (the load fails anyway); `want` keeps the config's counts for messages.
static void check_layers(xa_model *m, problems *p, tower_blocks *towers, int n) {
    for (int t = 0; t < n; t++) {
        scan_blocks(m, &towers[t]);
        int64_t want = towers[t].want = *towers[t].layers;
        if (towers[t].most >= want)
            add_problem(p,
                        "tensor '%s': the file has blocks up to %ld, config.json says %lld "
                        "layers (num_hidden_layers)",
                        towers[t].last, towers[t].most, (long long)want);
        else if (towers[t].most < 0 && want > 0) {
            add_problem(p,
                        "config.json says %lld layers (num_hidden_layers), the file has no "
                        "'%s<i>.*' tensors",
                        (long long)want, towers[t].pattern);
            *towers[t].layers = 0;
        } else if (towers[t].most + 1 < want) {
            add_problem(p,
                        "config.json says %lld layers (num_hidden_layers), the file has blocks "
                        "0..%ld ('%s<i>.*')",
                        (long long)want, towers[t].most, towers[t].pattern);
            *towers[t].layers = towers[t].most + 1;
        }
    }
}

static xa_status bind_all(xa_ctx *ctx, xa_model *m) {
    problems p = {0};
    bool clip = m->cfg.arch == XA_ARCH_CLIP;
    tower_blocks towers[2] = {
        {.pattern = clip ? "text_model.encoder.layers." : "encoder.layer.",
         .layers = &m->cfg.text.layers},
        {.pattern = "vision_model.encoder.layers.", .layers = &m->cfg.vision.layers}};
    int ntowers = clip ? 2 : 1;
    check_layers(m, &p, towers, ntowers);
    xa_tspec *spec;
    size_t n;
    xa_status st = xa_model_spec(ctx, m, &spec, &n);
    if (st) {
        free(p.buf);
        return st;
    }
    // An optional group (pooler, MLM head) is bound whole or not at all: it is present when any
    // of its tensors is (then a missing one is an error, not a silently absent head). The MLM
    // decoder alone makes the head present too; without it the head ties to the embeddings.
    int group_present[XA_GROUP_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        const xa_st_entry *e;
        char found[256];
        if (spec[i].group != XA_GROUP_REQUIRED &&
            resolve(m, spec[i].name, &e, found, sizeof found)) {
            group_present[spec[i].group] = 1;
            if (spec[i].group == XA_GROUP_MLM_DECODER)
                group_present[XA_GROUP_MLM] = 1;
        }
    }
    for (size_t i = 0; i < n && st == XA_OK; i++) {
        xa_tspec *s = &spec[i];
        const xa_st_entry *e;
        char found[256];
        xa_st_file *f = resolve(m, s->name, &e, found, sizeof found);
        if (!f) {
            if (s->group == XA_GROUP_REQUIRED || group_present[s->group] == 1)
                add_problem(&p, "missing tensor '%s'", s->name);
            continue;
        }
        if (!shape_matches(e, s)) {
            char want[96], got[96];
            xa_shape_fmt(s->ndim, s->shape, want, sizeof want);
            xa_shape_fmt(e->ndim > 4 ? 4 : e->ndim, e->shape, got, sizeof got);
            add_problem(&p, "tensor '%s': expected shape %s, file has %s%s", found, want, got,
                        e->ndim > 4 ? " (rank > 4)" : "");
            continue;
        }
        if (e->dtype != XA_DTYPE_F32 && e->dtype != XA_DTYPE_F16 && e->dtype != XA_DTYPE_BF16) {
            add_problem(&p, "tensor '%s': dtype %s is not a float type", found,
                        xa_dtype_name(e->dtype));
            continue;
        }
        st = xa_st_tensor(ctx, f, found, s->dst);
        if (*s->dst)
            (*s->dst)->name = s->name;
    }
    for (int t = 0; t < ntowers; t++) // the config's counts again, for the message
        *towers[t].layers = towers[t].want;
    if (st == XA_OK && p.count)
        st = xa_errorf(ctx, XA_EFORMAT, "%s: %d problem%s with the weights (config.json says %s, "
                       "%lld layers, hidden %lld):%s%s",
                       m->dir, p.count, p.count == 1 ? "" : "s", m->cfg.model_type,
                       (long long)m->cfg.text.layers, (long long)m->cfg.text.hidden,
                       p.buf ? p.buf : "", p.count > 40 ? "\n  ..." : "");
    free(p.buf);
    m->has_pooler = group_present[XA_GROUP_POOLER] == 1;
    m->has_mlm = group_present[XA_GROUP_MLM] == 1;
    if (m->has_mlm && !m->mlm_decoder) // decoder tied to the word embeddings when absent
        m->mlm_decoder = xa_tensor_retain(m->word_emb);
    return st;
}

xa_status xa_model_load(xa_ctx *ctx, const char *dir, xa_model **out) {
    *out = NULL;
    if (!dir || !*dir) // "" would read /config.json
        return xa_errorf(ctx, XA_EINVAL, "no model directory given (an empty path)");
    xa_model *m = xa_calloc(ctx, 1, sizeof *m);
    if (!m)
        return XA_ENOMEM;
    xa_status st = XA_ENOMEM;
    m->dir = xa_strdup(ctx, dir);
    if (!m->dir)
        goto out_free;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *j = xa_json_load(ctx, path);
    if (!j) {
        st = xa_errcode(ctx);
        goto out_free;
    }
    st = xa_config_parse(ctx, path, j, &m->cfg);
    cJSON_Delete(j);
    if (st)
        goto out_free;
    if ((st = xa_model_alloc_blocks(ctx, m)) != XA_OK || (st = open_shards(ctx, m)) != XA_OK ||
        (st = bind_all(ctx, m)) != XA_OK)
        goto out_free;
    *out = m;
    return XA_OK;
out_free:
    xa_model_free(m);
    return st;
}

const xa_model_config *xa_model_config_of(const xa_model *m) { return &m->cfg; }
const char *xa_model_dir(const xa_model *m) { return m->dir; }
bool xa_model_has_mlm_head(const xa_model *m) { return m->has_mlm; }
bool xa_model_has_pooler(const xa_model *m) { return m->has_pooler; }
xa_block *xa_model_block(xa_model *m, int i) {
    return i >= 0 && i < m->cfg.text.layers ? &m->text_blocks[i] : NULL;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14; older kernels say EINVAL and fault lazily as before
#endif

void xa_model_touch(xa_model *m, bool vision) {
    bool *done = vision ? &m->vision_touched : &m->text_touched;
    const xa_block *blocks = vision ? m->vision_blocks : m->text_blocks;
    int64_t L = vision ? m->cfg.vision.layers : m->cfg.text.layers;
    if (*done || !blocks)
        return;
    *done = true;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int64_t l = 0; l < L; l++) {
        const xa_block *b = &blocks[l];
        const xa_tensor *ts[] = {b->wq, b->bq, b->wk, b->bk, b->wv,   b->bv,   b->wo, b->bo,
                                 b->ln1_w, b->ln1_b, b->w1, b->b1, b->w2, b->b2, b->ln2_w, b->ln2_b};
        for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
            const xa_tensor *t = ts[i];
            if (!t || !(t->flags & XA_TENSOR_READONLY))
                continue; // converted from f16/bf16: already in memory
            uintptr_t lo = (uintptr_t)t->data & ~(page - 1);
            uintptr_t hi = (uintptr_t)(t->data + t->numel);
            (void)madvise((void *)lo, hi - lo, MADV_POPULATE_READ); // a hint: failure is harmless
        }
    }
}
