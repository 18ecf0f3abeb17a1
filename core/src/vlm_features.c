// CLIP features for a batch: each distinct image (by content) or text is run through the frozen
// VLM once, kept in a hash map in memory and, optionally, in a directory of small safetensors
// files keyed by the VLM (weights, config, tokenizer) and the input, with a checksum of the
// values; plus text -> image retrieval over a pool.
// The encoders are in encoder.c / clip.c, image decoding in image.c, tokenizers in tok_*.c.
//
// What the experts get (a PROJECT CHOICE, see research/methods.md section 1.3):
//   image tokens = the vision tower's last hidden state (1 + P, Dv), class token first, before
//                  post_layernorm ("image patch tokens" for X-adapter's V-expert);
//   image pooled = image_embeds (visual projection of the post-LN class token), (proj);
//   text tokens  = the text tower's last hidden state after final_layer_norm (n, Dt), n <= 77;
//   text pooled  = text_embeds (projection of the end-of-text token), (proj).
//
// The VLM runs in a context of its own: its activations live in that context's arena (reset after
// each chunk of inputs, so a large image pool never fills the caller's step arena), nothing is
// recorded on any tape and the caller's RNG stream is not touched.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_internal.h"
#include "xadapt/image.h"
#include "xadapt/safetensors.h"
#include "xadapt/task.h"

#define CHUNK_IMAGES 8 // images per vision forward: bounds the private arena (~35 MB each, B/32)
#define CHUNK_TEXTS  32
#define CLIP_CONTEXT 77
#define DISK_FORMAT  "xadapt-vlm-features/2"

enum { KIND_IMAGE, KIND_TEXT };
static const char *const kind_names[] = {"image", "text"};

typedef struct entry {
    struct entry *next; // hash chain
    uint64_t hash;
    int kind;
    bool pending; // placeholder while its features are being computed
    char *key;
    int64_t ntok, dtok, dproj;
    float *tokens; // ntok * dtok, followed by pooled (dproj) in the same allocation
    float *pooled;
    uint64_t pool_mark; // retrieval: the call that last saw it in its pool
} entry;

// A file seen before: its stat signature (path, size, times, inode) and the content key made by
// reading it, so an unchanged file is hashed once per process.
typedef struct seen_file {
    struct seen_file *next;
    uint64_t hash;
    char *sig;
    char key[48];
} seen_file;

struct xa_vlm_cache {
    xa_ctx *work; // the VLM's own context (see the top of the file)
    xa_model *vlm;
    char *dir; // NULL: memory only
    char fp[34]; // the weights' fingerprint, then a hash of config.json and the tokenizer files
    xa_tokenizer *tok;
    char *tok_missing; // why text features cannot be computed (NULL when tok is loaded)
    entry **slots;
    size_t nslots, count;
    seen_file **files;
    size_t nfile_slots, nfiles;
    int64_t computed, mem_hits, disk_hits;
    uint64_t retrievals;
    char *disk_error; // why the directory stopped being written (then memory only)
};

// --- hashing
// ---------------------------------------------------------------------------------------

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix(uint64_t z) { // splitmix64's finaliser
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// fnv1a of the rest of `f` from *h1, and with h2 a second stream chained to the first (128
// bits together); *total counts the bytes. false on a read error. Closes f.
static bool hash_file(FILE *f, uint64_t *h1, uint64_t *h2, size_t *total) {
    unsigned char buf[1 << 15];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        *h1 = fnv1a(*h1, buf, got);
        if (h2)
            *h2 = fnv1a(*h2 ^ mix(*h1), buf, got);
        if (total)
            *total += got;
    }
    bool ok = !ferror(f);
    fclose(f);
    return ok;
}

// fnv1a over a whole file, or over a marker when it cannot be read (absent files hash alike).
static uint64_t file_hash(uint64_t h, const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    h = fnv1a(h, name, strlen(name) + 1);
    if (!f || !hash_file(f, &h, NULL, NULL))
        return fnv1a(h, "(unreadable)", 12);
    return h;
}

static uint64_t key_hash(int kind, const char *key) {
    uint64_t h = fnv1a(0xcbf29ce484222325ull, kind_names[kind], strlen(kind_names[kind]) + 1);
    return mix(fnv1a(h, key, strlen(key)));
}

// The file of an input: 128 bits of hash over (fingerprint, kind, key) as 32 hex digits. The
// key is stored in the file too and checked on reading, so a collision is only a miss.
static void disk_path(const xa_vlm_cache *c, int kind, const char *key, char *out, size_t n) {
    uint64_t h1 = fnv1a(0xcbf29ce484222325ull, c->fp, sizeof c->fp);
    h1 = fnv1a(h1, kind_names[kind], strlen(kind_names[kind]) + 1);
    h1 = fnv1a(h1, key, strlen(key));
    uint64_t h2 = fnv1a(0x84222325cbf29ce4ull ^ h1, key, strlen(key));
    snprintf(out, n, "%s/%016llx%016llx.safetensors", c->dir, (unsigned long long)mix(h1),
             (unsigned long long)mix(h2 ^ 0x9e3779b97f4a7c15ull));
}

// --- the in-memory map ---------------------------------------------------------------------------

static void entry_free(entry *e) {
    if (!e)
        return;
    free(e->key);
    free(e->tokens);
    free(e);
}

static entry *map_find(const xa_vlm_cache *c, int kind, const char *key, uint64_t h) {
    if (!c->nslots)
        return NULL;
    for (entry *e = c->slots[h % c->nslots]; e; e = e->next)
        if (e->hash == h && e->kind == kind && !strcmp(e->key, key))
            return e;
    return NULL;
}

static xa_status map_insert(xa_ctx *ctx, xa_vlm_cache *c, entry *e) {
    if (c->count + 1 > c->nslots) { // keep the load factor <= 1
        size_t n = c->nslots ? 2 * c->nslots : 64;
        entry **slots = xa_calloc(ctx, n, sizeof *slots);
        if (!slots)
            return XA_ENOMEM;
        for (size_t i = 0; i < c->nslots; i++)
            for (entry *x = c->slots[i], *next; x; x = next) {
                next = x->next;
                x->next = slots[x->hash % n];
                slots[x->hash % n] = x;
            }
        free(c->slots);
        c->slots = slots, c->nslots = n;
    }
    e->next = c->slots[e->hash % c->nslots];
    c->slots[e->hash % c->nslots] = e;
    c->count++;
    return XA_OK;
}

// Drop every placeholder left by a failed computation.
static void map_drop_pending(xa_vlm_cache *c) {
    for (size_t i = 0; i < c->nslots; i++)
        for (entry **p = &c->slots[i]; *p;) {
            if ((*p)->pending) {
                entry *dead = *p;
                *p = dead->next;
                entry_free(dead);
                c->count--;
            } else {
                p = &(*p)->next;
            }
        }
}

static entry *entry_new(xa_ctx *ctx, int kind, const char *key, uint64_t h) {
    entry *e = xa_calloc(ctx, 1, sizeof *e);
    if (!e)
        return NULL;
    e->kind = kind, e->hash = h;
    if (!(e->key = xa_strdup(ctx, key))) {
        free(e);
        return NULL;
    }
    return e;
}

// Give e room for (ntok, dtok) tokens and a pooled vector of dproj.
static xa_status entry_alloc(xa_ctx *ctx, entry *e, int64_t ntok, int64_t dtok, int64_t dproj) {
    free(e->tokens);
    e->tokens = xa_malloc(ctx, (size_t)(ntok * dtok + dproj) * sizeof(float));
    if (!e->tokens)
        return XA_ENOMEM;
    e->pooled = e->tokens + ntok * dtok;
    e->ntok = ntok, e->dtok = dtok, e->dproj = dproj;
    return XA_OK;
}

// --- creation ----------------------------------------------------------------------------------

static xa_status make_dirs(xa_ctx *ctx, const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return xa_errorf(ctx, XA_EINVAL, "feature cache directory path too long: %s", dir);
    for (char *p = path + 1;; p++) {
        bool end = *p == '\0';
        if (*p != '/' && !end)
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return xa_errorf(ctx, XA_EIO, "feature cache directory %s: cannot create %s: %s", dir,
                             path, strerror(errno));
        if (end)
            break;
        *p = '/';
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return xa_errorf(ctx, XA_EIO, "feature cache directory %s: not a directory", dir);
    return XA_OK;
}

// The CLIP tokenizer next to the checkpoint. Its absence is not an error until a text is asked
// for (image-only use needs none); broken tokenizer files are.
static xa_status load_tokenizer(xa_ctx *ctx, xa_vlm_cache *c) {
    const char *dir = xa_model_dir(c->vlm);
    xa_status st = xa_tokenizer_load_dir(c->work, dir, &c->tok);
    if (st == XA_ENOTFOUND) {
        char msg[4600];
        snprintf(msg, sizeof msg,
                 "%s: no CLIP tokenizer next to the checkpoint (tokenizer.json, or vocab.json with "
                 "merges.txt); text features need one: copy vocab.json and merges.txt from the "
                 "original CLIP checkpoint into that directory (tools/clip-vocab.py DIR derives "
                 "them from OpenAI's bpe_simple_vocab_16e6.txt.gz)",
                 dir);
        c->tok_missing = xa_strdup(ctx, msg);
        xa_error_clear(c->work);
        return c->tok_missing ? XA_OK : XA_ENOMEM;
    }
    if (st)
        return xa_errorf(ctx, st, "VLM tokenizer: %s", xa_errmsg(c->work));
    const xa_tokenizer_info *info = xa_tokenizer_info_get(c->tok);
    int64_t vocab = xa_model_config_of(c->vlm)->text.vocab;
    if (info->kind != XA_TOKENIZER_CLIP)
        return xa_errorf(ctx, XA_EFORMAT, "%s: the tokenizer there is not a CLIP tokenizer", dir);
    if (info->vocab_size > vocab)
        return xa_errorf(ctx, XA_EFORMAT,
                         "%s: the tokenizer has %d ids but the text tower's vocabulary has %lld "
                         "(tokenizer files from another checkpoint?)",
                         dir, info->vocab_size, (long long)vocab);
    return XA_OK;
}

xa_status xa_vlm_cache_new(xa_ctx *ctx, xa_model *vlm, const char *disk_dir, xa_vlm_cache **out) {
    *out = NULL;
    if (!vlm || xa_model_config_of(vlm)->arch != XA_ARCH_CLIP)
        return xa_errorf(ctx, XA_EINVAL, "feature cache: the VLM must be a CLIP model, got %s",
                         vlm ? xa_arch_name(xa_model_config_of(vlm)->arch) : "none");
    xa_vlm_cache *c = xa_calloc(ctx, 1, sizeof *c);
    if (!c)
        return XA_ENOMEM;
    xa_status st = XA_OK;
    c->vlm = vlm;
    if (!(c->work = xa_ctx_new())) {
        st = xa_errorf(ctx, XA_ENOMEM, "feature cache: out of memory");
        goto out_free;
    }
    xa_set_grad_enabled(c->work, false);
    xa_set_training(c->work, false);
    // Features depend on the weights, on the config (activation, eps, heads, sizes, end-of-text
    // rule) and, for texts, on the tokenizer: a cache directory shared by checkpoints that
    // differ in any of them must not hand one's features to the other.
    uint64_t h = 0xcbf29ce484222325ull;
    static const char *const files[] = {"config.json", "tokenizer.json", "vocab.json",
                                        "merges.txt"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        h = file_hash(h, xa_model_dir(vlm), files[i]);
    snprintf(c->fp, sizeof c->fp, "%.16s%016llx", xa_model_fingerprint(vlm),
             (unsigned long long)mix(h));
    if (disk_dir) {
        if ((st = make_dirs(ctx, disk_dir)))
            goto out_free;
        if (!(c->dir = xa_strdup(ctx, disk_dir))) {
            st = XA_ENOMEM;
            goto out_free;
        }
    }
    if ((st = load_tokenizer(ctx, c)))
        goto out_free;
    *out = c;
    return XA_OK;
out_free:
    xa_vlm_cache_free(c);
    return st;
}

void xa_vlm_cache_free(xa_vlm_cache *c) {
    if (!c)
        return;
    for (size_t i = 0; i < c->nslots; i++)
        for (entry *e = c->slots[i], *next; e; e = next) {
            next = e->next;
            entry_free(e);
        }
    free(c->slots);
    for (size_t i = 0; i < c->nfile_slots; i++)
        for (seen_file *s = c->files[i], *next; s; s = next) {
            next = s->next;
            free(s->sig);
            free(s);
        }
    free(c->files);
    free(c->disk_error);
    xa_tokenizer_free(c->tok);
    free(c->tok_missing);
    free(c->dir);
    xa_ctx_free(c->work);
    free(c);
}

const char *xa_vlm_cache_disk_error(const xa_vlm_cache *c) {
    return c->disk_error;
}

void xa_vlm_cache_stats(const xa_vlm_cache *c, int64_t *computed, int64_t *memory_hits,
                        int64_t *disk_hits) {
    if (computed)
        *computed = c->computed;
    if (memory_hits)
        *memory_hits = c->mem_hits;
    if (disk_hits)
        *disk_hits = c->disk_hits;
}

// --- disk ----------------------------------------------------------------------------------------

static int64_t token_dim(const xa_vlm_cache *c, int kind) {
    const xa_model_config *cfg = xa_model_config_of(c->vlm);
    return kind == KIND_IMAGE ? cfg->vision.hidden : cfg->text.hidden;
}

// A checksum of an entry's values (tokens and pooled), as 16 hex digits.
static void values_sum(const entry *e, char out[17]) {
    uint64_t h =
        fnv1a(0xcbf29ce484222325ull, e->tokens, (size_t)(e->ntok * e->dtok) * sizeof(float));
    h = fnv1a(h, e->pooled, (size_t)e->dproj * sizeof(float));
    snprintf(out, 17, "%016llx", (unsigned long long)mix(h));
}

// Fill e from its file. false (and no message anywhere) when the file is absent, unreadable,
// malformed, damaged (checksum, non-finite values) or belongs to another input: the features
// are then computed and the file rewritten.
static bool disk_read(xa_vlm_cache *c, entry *e) {
    if (!c->dir)
        return false;
    char path[4200];
    disk_path(c, e->kind, e->key, path, sizeof path);
    xa_st_file *f = NULL;
    xa_tensor *tok = NULL, *pool = NULL;
    bool ok = false;
    if (xa_st_open(c->work, path, &f) != XA_OK)
        goto out;
    const char *fmt = xa_st_meta_get(f, "format"), *fp = xa_st_meta_get(f, "fingerprint");
    const char *kind = xa_st_meta_get(f, "kind"), *key = xa_st_meta_get(f, "key");
    if (!fmt || strcmp(fmt, DISK_FORMAT) || !fp || strcmp(fp, c->fp) || !kind ||
        strcmp(kind, kind_names[e->kind]) || !key || strcmp(key, e->key))
        goto out;
    if (xa_st_tensor(c->work, f, "tokens", &tok) != XA_OK ||
        xa_st_tensor(c->work, f, "pooled", &pool) != XA_OK)
        goto out;
    int64_t proj = xa_model_config_of(c->vlm)->projection_dim;
    if (tok->ndim != 2 || tok->shape[0] < 1 || tok->shape[1] != token_dim(c, e->kind) ||
        pool->ndim != 1 || pool->shape[0] != proj)
        goto out;
    if (entry_alloc(c->work, e, tok->shape[0], tok->shape[1], proj) != XA_OK)
        goto out;
    memcpy(e->tokens, tok->data, (size_t)tok->numel * sizeof(float));
    memcpy(e->pooled, pool->data, (size_t)proj * sizeof(float));
    char sum[17];
    values_sum(e, sum);
    const char *want = xa_st_meta_get(f, "checksum");
    ok = want && !strcmp(want, sum);
    for (int64_t i = 0; ok && i < tok->numel; i++)
        ok = isfinite(e->tokens[i]);
    for (int64_t i = 0; ok && i < proj; i++)
        ok = isfinite(e->pooled[i]);
    if (!ok) { // back to an empty entry: it is computed again
        free(e->tokens);
        e->tokens = e->pooled = NULL;
    }
out:
    xa_tensor_release(tok);
    xa_tensor_release(pool);
    xa_st_close(f);
    xa_error_clear(c->work);
    return ok;
}

static xa_status disk_write(xa_ctx *ctx, xa_vlm_cache *c, const entry *e) {
    if (!c->dir)
        return XA_OK;
    char path[4200];
    disk_path(c, e->kind, e->key, path, sizeof path);
    xa_st_writer *w = xa_st_writer_new(c->work);
    if (!w)
        return xa_errorf(ctx, XA_ENOMEM, "feature cache: out of memory");
    int64_t ts[2] = {e->ntok, e->dtok}, ps[1] = {e->dproj};
    xa_status st = xa_st_writer_add(w, "tokens", XA_DTYPE_F32, 2, ts, e->tokens);
    if (!st)
        st = xa_st_writer_add(w, "pooled", XA_DTYPE_F32, 1, ps, e->pooled);
    if (!st)
        st = xa_st_writer_meta(w, "format", DISK_FORMAT);
    if (!st)
        st = xa_st_writer_meta(w, "fingerprint", c->fp);
    if (!st)
        st = xa_st_writer_meta(w, "kind", kind_names[e->kind]);
    if (!st)
        st = xa_st_writer_meta(w, "key", e->key);
    char sum[17];
    values_sum(e, sum);
    if (!st)
        st = xa_st_writer_meta(w, "checksum", sum);
    if (!st)
        st = xa_st_writer_write(w, path);
    xa_st_writer_free(w);
    if (st)
        st = xa_errorf(ctx, st, "feature cache %s: %s", c->dir, xa_errmsg(c->work));
    return st;
}

// --- computing -----------------------------------------------------------------------------------

static xa_status from_work(xa_ctx *ctx, xa_vlm_cache *c, xa_status st, const char *what) {
    if (!st)
        return XA_OK;
    st = xa_errorf(ctx, xa_errcode(c->work) ? xa_errcode(c->work) : st, "%s: %s", what,
                   xa_errmsg(c->work));
    xa_error_clear(c->work);
    return st;
}

// Vision forward over n pending image entries (at most CHUNK_IMAGES); paths[i] is e[i]'s file.
static xa_status compute_images(xa_ctx *ctx, xa_vlm_cache *c, entry **e, const char **paths,
                                int64_t n) {
    const xa_model_config *cfg = xa_model_config_of(c->vlm);
    int64_t S = cfg->vision.image_size, px = 3 * S * S;
    float *pixels = xa_malloc(ctx, (size_t)(n * px) * sizeof(float));
    if (!pixels)
        return XA_ENOMEM;
    xa_status st = XA_OK;
    for (int64_t i = 0; i < n && !st; i++)
        st = from_work(ctx, c, xa_clip_preprocess_file(c->work, paths[i], (int)S, pixels + i * px),
                       paths[i]);
    xa_vision_out vo;
    if (!st)
        st =
            from_work(ctx, c, xa_vision_forward(c->work, c->vlm, pixels, n, &vo), "image features");
    for (int64_t i = 0; i < n && !st; i++) {
        int64_t T = vo.last->shape[1], D = vo.last->shape[2], P = vo.embeds->shape[1];
        if ((st = entry_alloc(ctx, e[i], T, D, P)))
            break;
        memcpy(e[i]->tokens, vo.last->data + i * T * D, (size_t)(T * D) * sizeof(float));
        memcpy(e[i]->pooled, vo.embeds->data + i * P, (size_t)P * sizeof(float));
    }
    xa_arena_reset(c->work);
    free(pixels);
    return st;
}

static xa_status need_tokenizer(xa_ctx *ctx, const xa_vlm_cache *c) {
    return c->tok ? XA_OK : xa_errorf(ctx, XA_ENOTFOUND, "%s", c->tok_missing);
}

// Text forward over n pending text entries (at most CHUNK_TEXTS): CLIP's tokenizer, cut to 77
// tokens (end-of-text kept). Texts of one length run together, without padding: no work is
// spent on padding, and a text's features depend less on the texts computed with it (padding
// changed them by up to 2e-6; the batch's row count still moves the last bit, ~1e-7).
static xa_status compute_texts(xa_ctx *ctx, xa_vlm_cache *c, entry **e, int64_t n) {
    const xa_model_config *cfg = xa_model_config_of(c->vlm);
    int64_t ctxlen =
        cfg->text.max_positions < CLIP_CONTEXT ? cfg->text.max_positions : CLIP_CONTEXT;
    xa_encode_opts eo = {.max_length = (int32_t)ctxlen};
    xa_encoding *enc = xa_calloc(ctx, (size_t)n, sizeof *enc);
    int32_t *ids = xa_calloc(ctx, (size_t)(n * ctxlen), sizeof *ids);
    float *mask = xa_malloc(ctx, (size_t)(n * ctxlen) * sizeof *mask);
    int64_t *group = xa_malloc(ctx, (size_t)n * sizeof *group);
    xa_status st = enc && ids && mask && group ? XA_OK : XA_ENOMEM;
    for (int64_t i = 0; i < n && !st; i++) {
        st = from_work(ctx, c, xa_tokenizer_encode(c->work, c->tok, e[i]->key, NULL, &eo, &enc[i]),
                       "text features");
        if (!st && (enc[i].len < 1 || enc[i].len > ctxlen))
            st = xa_errorf(ctx, XA_EINVAL, "text features: text %lld encodes to %lld tokens",
                           (long long)i, (long long)enc[i].len);
    }
    for (int64_t i = 0; i < n * ctxlen && !st; i++)
        mask[i] = 1.0f;
    bool *done = st ? NULL : xa_calloc(ctx, (size_t)n, sizeof *done);
    if (!st && !done)
        st = XA_ENOMEM;
    for (int64_t first = 0; first < n && !st; first++) {
        if (done[first])
            continue;
        int64_t T = enc[first].len, m = 0;
        for (int64_t i = first; i < n; i++) // every pending text of this length
            if (!done[i] && enc[i].len == T) {
                done[i] = true;
                group[m] = i;
                memcpy(ids + m * T, enc[i].ids, (size_t)T * sizeof *ids);
                m++;
            }
        xa_text_out to;
        xa_text_batch tb = {.ids = ids, .mask = mask, .B = m, .T = T};
        st = from_work(ctx, c, xa_text_forward(c->work, c->vlm, &tb, NULL, &to), "text features");
        for (int64_t j = 0; j < m && !st; j++) {
            entry *ej = e[group[j]];
            int64_t D = to.last->shape[2], P = to.embeds->shape[1];
            if ((st = entry_alloc(ctx, ej, T, D, P)))
                break;
            memcpy(ej->tokens, to.last->data + j * T * D, (size_t)(T * D) * sizeof(float));
            memcpy(ej->pooled, to.embeds->data + j * P, (size_t)P * sizeof(float));
        }
        xa_arena_reset(c->work);
    }
    for (int64_t i = 0; enc && i < n; i++)
        xa_encoding_deinit(&enc[i]);
    free(enc);
    free(ids);
    free(mask);
    free(group);
    free(done);
    return st;
}

// The key of an image is its content: 128 bits of hash over the file's bytes and its size, so
// an edited or replaced file is a new input even with the old size and time (cp -p, rsync -a,
// unpacked archives), a copy elsewhere is the same input, and the disk cache survives moving
// the data. A file whose path, size, times and inode are unchanged is not read again.
static char *image_key(xa_ctx *ctx, xa_vlm_cache *c, const char *path) {
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(path, real) || stat(real, &st) != 0) {
        xa_errorf(ctx, errno == ENOENT ? XA_ENOTFOUND : XA_EIO, "image %s: %s", path,
                  strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        xa_errorf(ctx, XA_EINVAL, "image %s: not a regular file", path);
        return NULL;
    }
    char sig[PATH_MAX + 160];
    snprintf(sig, sizeof sig, "%s\n%lld\n%lld.%09ld\n%lld.%09ld\n%llu.%llu", real,
             (long long)st.st_size, (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec,
             (long long)st.st_ctim.tv_sec, (long)st.st_ctim.tv_nsec, (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    uint64_t h = mix(fnv1a(0xcbf29ce484222325ull, sig, strlen(sig)));
    for (seen_file *s = c->nfile_slots ? c->files[h % c->nfile_slots] : NULL; s; s = s->next)
        if (s->hash == h && !strcmp(s->sig, sig))
            return xa_strdup(ctx, s->key);
    FILE *f = fopen(real, "rb");
    if (!f) {
        xa_errorf(ctx, XA_EIO, "image %s: %s", path, strerror(errno));
        return NULL;
    }
    uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
    size_t total = 0;
    if (!hash_file(f, &h1, &h2, &total)) {
        xa_errorf(ctx, XA_EIO, "image %s: read error", path);
        return NULL;
    }
    if (c->nfiles + 1 > c->nfile_slots) { // grow to keep chains short
        size_t n = c->nfile_slots ? c->nfile_slots * 2 : 256;
        seen_file **t = xa_calloc(ctx, n, sizeof *t);
        if (!t)
            return NULL;
        for (size_t i = 0; i < c->nfile_slots; i++)
            for (seen_file *s = c->files[i], *next; s; s = next) {
                next = s->next;
                s->next = t[s->hash % n], t[s->hash % n] = s;
            }
        free(c->files);
        c->files = t, c->nfile_slots = n;
    }
    seen_file *s = xa_calloc(ctx, 1, sizeof *s);
    if (!s || !(s->sig = xa_strdup(ctx, sig))) {
        free(s);
        return NULL;
    }
    s->hash = h;
    snprintf(s->key, sizeof s->key, "%016llx%016llx.%zu", (unsigned long long)mix(h1),
             (unsigned long long)mix(h2), total);
    s->next = c->files[h % c->nfile_slots], c->files[h % c->nfile_slots] = s;
    c->nfiles++;
    return xa_strdup(ctx, s->key);
}

// Entries for n inputs of one kind (out[i] for inputs[i]): from memory, then disk, then the VLM
// in chunks over the distinct misses. A repeated miss within one call counts as a memory hit.
static xa_status resolve(xa_ctx *ctx, xa_vlm_cache *c, int kind, const char *const *inputs,
                         int64_t n, entry **out) {
    if (kind == KIND_TEXT) {
        xa_status st = need_tokenizer(ctx, c);
        if (st)
            return st;
    }
    entry **miss = xa_malloc(ctx, (size_t)(n ? n : 1) * sizeof *miss);
    const char **paths = xa_malloc(ctx, (size_t)(n ? n : 1) * sizeof *paths);
    int64_t nmiss = 0;
    xa_status st = miss && paths ? XA_OK : XA_ENOMEM;
    for (int64_t i = 0; i < n && !st; i++) {
        if (!inputs[i]) {
            st = xa_errorf(ctx, XA_EINVAL, "%s %lld is NULL", kind_names[kind], (long long)i);
            break;
        }
        char *ikey = kind == KIND_IMAGE ? image_key(ctx, c, inputs[i]) : NULL;
        const char *key = kind == KIND_IMAGE ? ikey : inputs[i];
        if (!key) {
            st = xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM;
            break;
        }
        uint64_t h = key_hash(kind, key);
        entry *e = map_find(c, kind, key, h);
        if (e) {
            c->mem_hits++; // a placeholder too: the repeat is served by the one computation
        } else if (!(e = entry_new(ctx, kind, key, h))) {
            st = XA_ENOMEM;
        } else {
            bool on_disk = disk_read(c, e);
            e->pending = !on_disk;
            if ((st = map_insert(ctx, c, e))) {
                entry_free(e);
                e = NULL;
            } else if (on_disk) {
                c->disk_hits++;
            } else {
                paths[nmiss] = inputs[i];
                miss[nmiss++] = e;
            }
        }
        free(ikey);
        out[i] = e;
    }
    int64_t chunk = kind == KIND_IMAGE ? CHUNK_IMAGES : CHUNK_TEXTS;
    for (int64_t i = 0; i < nmiss && !st; i += chunk) {
        int64_t m = nmiss - i < chunk ? nmiss - i : chunk;
        st = kind == KIND_IMAGE ? compute_images(ctx, c, miss + i, paths + i, m)
                                : compute_texts(ctx, c, miss + i, m);
        for (int64_t j = 0; j < m && !st; j++) {
            miss[i + j]->pending = false;
            c->computed++;
            if (disk_write(ctx, c, miss[i + j]) != XA_OK) { // a full disk is no reason to stop
                size_t len = strlen(xa_errmsg(ctx)) + 80;
                if ((c->disk_error = malloc(len)))
                    snprintf(c->disk_error, len, "%s; features are kept in memory only from now on",
                             xa_errmsg(ctx));
                xa_error_clear(ctx);
                free(c->dir);
                c->dir = NULL;
            }
        }
    }
    if (st)
        map_drop_pending(c);
    free(miss);
    free(paths);
    return st;
}

// --- batch tensors -------------------------------------------------------------------------------

static xa_tensor *arena3(xa_ctx *ctx, int64_t a, int64_t b, int64_t c, bool zero) {
    int64_t shape[3] = {a, b, c};
    return xa_tensor_arena(ctx, 3, shape, zero);
}

xa_status xa_vlm_images(xa_ctx *ctx, xa_vlm_cache *c, const char *const *paths, int64_t B, int k,
                        xa_vlm_feats *out) {
    if (B < 1 || k < 1)
        return xa_errorf(ctx, XA_EINVAL, "image features: need B >= 1 and k >= 1, got %lld and %d",
                         (long long)B, k);
    entry **e = xa_malloc(ctx, (size_t)(B * k) * sizeof *e);
    if (!e)
        return XA_ENOMEM;
    xa_status st = resolve(ctx, c, KIND_IMAGE, paths, B * k, e);
    if (st)
        goto out;
    int64_t T = e[0]->ntok, D = e[0]->dtok, P = e[0]->dproj;
    for (int64_t i = 1; i < B * k; i++)
        if (e[i]->ntok != T) { // a cache file from another image size; cannot happen in one VLM
            st = xa_errorf(ctx, XA_ESHAPE, "image features: %s has %lld tokens, %s has %lld",
                           paths[0], (long long)T, paths[i], (long long)e[i]->ntok);
            goto out;
        }
    xa_tensor *tok = arena3(ctx, B, k * T, D, false), *pool = arena3(ctx, B, k, P, false);
    float *mask = xa_arena_alloc(ctx, (size_t)(B * k * T) * sizeof(float));
    if (!tok || !pool || !mask) {
        st = xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM;
        goto out;
    }
    for (int64_t i = 0; i < B * k; i++) { // row b holds its k images one after another
        memcpy(tok->data + i * T * D, e[i]->tokens, (size_t)(T * D) * sizeof(float));
        memcpy(pool->data + i * P, e[i]->pooled, (size_t)P * sizeof(float));
    }
    for (int64_t i = 0; i < B * k * T; i++)
        mask[i] = 1.0f;
    out->image_tokens = tok, out->image_pooled = pool, out->image_token_mask = mask;
out:
    free(e);
    return st;
}

xa_status xa_vlm_texts(xa_ctx *ctx, xa_vlm_cache *c, const char *const *texts, int64_t B,
                       xa_vlm_feats *out) {
    if (B < 1)
        return xa_errorf(ctx, XA_EINVAL, "text features: need B >= 1, got %lld", (long long)B);
    entry **e = xa_malloc(ctx, (size_t)B * sizeof *e);
    if (!e)
        return XA_ENOMEM;
    xa_status st = resolve(ctx, c, KIND_TEXT, texts, B, e);
    if (st)
        goto out;
    int64_t T = 0, D = e[0]->dtok, P = e[0]->dproj;
    for (int64_t i = 0; i < B; i++)
        T = e[i]->ntok > T ? e[i]->ntok : T;
    xa_tensor *tok = arena3(ctx, B, T, D, true), *pool = arena3(ctx, B, 1, P, false);
    float *mask = xa_arena_alloc(ctx, (size_t)(B * T) * sizeof(float));
    if (!tok || !pool || !mask) {
        st = xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM;
        goto out;
    }
    for (int64_t i = 0; i < B; i++) {
        memcpy(tok->data + i * T * D, e[i]->tokens, (size_t)(e[i]->ntok * D) * sizeof(float));
        memcpy(pool->data + i * P, e[i]->pooled, (size_t)P * sizeof(float));
        for (int64_t t = 0; t < T; t++)
            mask[i * T + t] = t < e[i]->ntok ? 1.0f : 0.0f;
    }
    out->text_tokens = tok, out->text_pooled = pool, out->text_token_mask = mask;
out:
    free(e);
    return st;
}

// --- retrieval -----------------------------------------------------------------------------------

typedef struct {
    double score;
    int64_t idx;
} scored;

static int by_score(const void *pa, const void *pb) { // best first, ties by lower index
    const scored *a = pa, *b = pb;
    if (isnan(a->score) != isnan(b->score)) // NaN last, so the order stays consistent
        return isnan(a->score) ? 1 : -1;
    if (a->score != b->score && !isnan(a->score))
        return a->score < b->score ? 1 : -1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static double norm_of(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return fmax(sqrt(s), 1e-12);
}

xa_status xa_vlm_retrieve(xa_ctx *ctx, xa_vlm_cache *c, const char *const *pool, int64_t npool,
                          const char *const *texts, int64_t B, int k, int64_t *out_idx) {
    if (B < 1 || npool < 1 || k < 1 || k > npool)
        return xa_errorf(ctx, XA_EINVAL,
                         "retrieval: need B >= 1 texts and 1 <= k <= %lld pool "
                         "images, got B %lld, k %d",
                         (long long)npool, (long long)B, k);
    entry **pe = xa_malloc(ctx, (size_t)npool * sizeof *pe);
    entry **te = xa_malloc(ctx, (size_t)B * sizeof *te);
    scored *s = xa_malloc(ctx, (size_t)npool * sizeof *s);
    double *pn = xa_malloc(ctx, (size_t)npool * sizeof *pn);
    xa_status st = pe && te && s && pn ? XA_OK : XA_ENOMEM;
    if (!st)
        st = resolve(ctx, c, KIND_TEXT, texts, B, te); // first: a missing tokenizer fails fast
    if (!st)
        st = resolve(ctx, c, KIND_IMAGE, pool, npool, pe);
    if (!st && pe[0]->dproj != te[0]->dproj)
        st = xa_errorf(ctx, XA_ESHAPE,
                       "retrieval: image embeddings have %lld values, text "
                       "embeddings %lld",
                       (long long)pe[0]->dproj, (long long)te[0]->dproj);
    // The same image listed twice (or two byte-identical files) is one candidate: the first.
    int64_t nuniq = 0, *uniq = st ? NULL : xa_malloc(ctx, (size_t)npool * sizeof *uniq);
    if (!st && !uniq)
        st = XA_ENOMEM;
    c->retrievals++;
    for (int64_t j = 0; !st && j < npool; j++) {
        if (pe[j]->pool_mark == c->retrievals)
            continue;
        pe[j]->pool_mark = c->retrievals;
        pn[j] = norm_of(pe[j]->pooled, pe[j]->dproj);
        uniq[nuniq++] = j;
    }
    if (!st && k > nuniq)
        st = xa_errorf(ctx, XA_EINVAL,
                       "retrieval: k = %d, but the pool has %lld distinct images (of %lld)", k,
                       (long long)nuniq, (long long)npool);
    for (int64_t b = 0; !st && b < B; b++) {
        const float *q = te[b]->pooled;
        int64_t P = te[b]->dproj;
        double qn = norm_of(q, P);
        for (int64_t u = 0; u < nuniq; u++) {
            int64_t j = uniq[u];
            double dot = 0;
            for (int64_t d = 0; d < P; d++)
                dot += (double)q[d] * pe[j]->pooled[d];
            s[u] = (scored){dot / (qn * pn[j]), j};
        }
        qsort(s, (size_t)nuniq, sizeof *s, by_score);
        for (int j = 0; j < k; j++)
            out_idx[b * k + j] = s[j].idx;
    }
    free(uniq);
    free(pe);
    free(te);
    free(s);
    free(pn);
    return st;
}
