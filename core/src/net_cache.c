// The frozen-prefix cache: everything below the lowest in-stream adapter is a pure function of
// the tokens when no dropout is active there, so the hidden states that the net needs from the
// prefix (the input of the lowest adapted block, and side-network taps at or below it) are
// kept per example and epoch 2 onward skips the prefix. Rows are keyed by a hash of their
// tokens; a row is stored with the batch length it was computed at and serves any batch that is
// not longer (padding positions depend only on the row and the position, never on the batch;
// only rounding can differ, as GEMMs of another size may sum in another order). With pad_fill a
// row keeps only its tokens and serves a batch of any length, its padding positions zero-filled:
// without that, shuffled batches padded to their longest member would rarely find every row at
// the length they need, and epoch 2 would compute most of its prefixes again.
#include <stdlib.h>
#include <string.h>

#include "net_cache.h"

typedef struct entry {
    struct entry *next;
    uint64_t key;
    int64_t T;   // positions stored (the batch length when computed)
    float *data; // nlayers x T x H
} entry;

struct xa_prefix_cache {
    entry **buckets;
    size_t nbuckets, count, bytes, budget;
    int64_t H;
    int layers[XA_PREFIX_MAX_LAYERS], nlayers; // which hidden states are kept
    bool pad_fill;                             // rows serve longer batches, zeros beyond
    int64_t hits, misses;
};

xa_prefix_cache *xa_prefix_cache_new(size_t budget, int64_t H) {
    xa_prefix_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nbuckets = 4096;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->budget = budget, c->H = H;
    return c;
}

static void flush(xa_prefix_cache *c) {
    for (size_t i = 0; i < c->nbuckets; i++) {
        entry *e = c->buckets[i];
        while (e) {
            entry *next = e->next;
            free(e->data);
            free(e);
            e = next;
        }
        c->buckets[i] = NULL;
    }
    c->count = c->bytes = 0;
}

void xa_prefix_cache_free(xa_prefix_cache *c) {
    if (!c)
        return;
    flush(c);
    free(c->buckets);
    free(c);
}

void xa_prefix_cache_stats(const xa_prefix_cache *c, int64_t *hits, int64_t *misses, size_t *bytes) {
    if (hits)
        *hits = c ? c->hits : 0;
    if (misses)
        *misses = c ? c->misses : 0;
    if (bytes)
        *bytes = c ? c->bytes : 0;
}

void xa_prefix_cache_layout(xa_prefix_cache *c, const int *layers, int n, bool pad_fill) {
    c->pad_fill = pad_fill; // every stored row is exact at its length either way
    bool same = n == c->nlayers && !memcmp(layers, c->layers, (size_t)n * sizeof *layers);
    if (same)
        return;
    flush(c); // another adapter layout needs other hidden states
    c->nlayers = n;
    memcpy(c->layers, layers, (size_t)n * sizeof *layers);
}

static uint64_t row_key(const xa_text_batch *b, int64_t row, int64_t len) {
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)len;
    for (int64_t t = 0; t < len; t++) {
        uint64_t v = (uint32_t)b->ids[row * b->T + t];
        if (b->type_ids)
            v |= (uint64_t)(uint32_t)b->type_ids[row * b->T + t] << 32;
        h = (h ^ v) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

static int64_t row_len(const xa_text_batch *b, int64_t row) {
    if (!b->mask)
        return b->T;
    int64_t len = 0;
    for (int64_t t = 0; t < b->T; t++)
        if (b->mask[row * b->T + t] != 0.0f)
            len = t + 1;
    return len;
}

static entry *find(const xa_prefix_cache *c, uint64_t key) {
    for (entry *e = c->buckets[key % c->nbuckets]; e; e = e->next)
        if (e->key == key)
            return e;
    return NULL;
}

bool xa_prefix_cache_lookup(xa_ctx *ctx, xa_prefix_cache *c, const xa_text_batch *b,
                            xa_tensor **out) {
    int64_t T = b->T, H = c->H;
    entry **rows = xa_arena_alloc(ctx, (size_t)b->B * sizeof *rows);
    if (!rows || c->nlayers == 0)
        return false;
    for (int64_t i = 0; i < b->B; i++) {
        rows[i] = find(c, row_key(b, i, row_len(b, i)));
        if (!rows[i] || (rows[i]->T < T && !c->pad_fill)) {
            c->misses++;
            return false;
        }
    }
    int64_t shape[3] = {b->B, T, H};
    for (int l = 0; l < c->nlayers; l++) {
        out[l] = xa_tensor_arena(ctx, 3, shape, false);
        if (!out[l])
            return false;
        for (int64_t i = 0; i < b->B; i++) {
            int64_t have = rows[i]->T < T ? rows[i]->T : T;
            float *dst = out[l]->data + i * T * H;
            memcpy(dst, rows[i]->data + (int64_t)l * rows[i]->T * H,
                   (size_t)(have * H) * sizeof(float));
            memset(dst + have * H, 0, (size_t)((T - have) * H) * sizeof(float));
        }
    }
    c->hits++;
    return true;
}

void xa_prefix_cache_store(xa_prefix_cache *c, const xa_text_batch *b, xa_tensor *const *hidden) {
    int64_t H = c->H, nl = c->nlayers;
    for (int64_t i = 0; i < b->B; i++) {
        int64_t len = row_len(b, i), T = b->T;
        uint64_t key = row_key(b, i, len);
        entry *e = find(c, key);
        if (e && (e->T >= T || c->pad_fill))
            continue;
        if (c->pad_fill) // its padding will be zeros anyway: keep only the tokens
            T = len > 0 ? len : 1;
        size_t row_bytes = (size_t)(nl * T * H) * sizeof(float);
        if (c->bytes + row_bytes > c->budget)
            return; // full: later rows are computed every time (no eviction churn)
        float *data = malloc(row_bytes);
        if (!data)
            return;
        for (int64_t l = 0; l < nl; l++)
            memcpy(data + l * T * H, hidden[c->layers[l]]->data + i * b->T * H,
                   (size_t)(T * H) * sizeof(float));
        if (e) { // stored before at a shorter length: widen it
            c->bytes -= (size_t)(nl * e->T * H) * sizeof(float);
            free(e->data);
        } else {
            e = calloc(1, sizeof *e);
            if (!e) {
                free(data);
                return;
            }
            e->key = key;
            e->next = c->buckets[key % c->nbuckets];
            c->buckets[key % c->nbuckets] = e;
            c->count++;
        }
        e->T = T, e->data = data;
        c->bytes += row_bytes;
    }
}
