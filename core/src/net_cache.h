// Private to the network: the frozen-prefix cache (net_cache.c).
#ifndef XADAPT_NET_CACHE_H
#define XADAPT_NET_CACHE_H

#include "internal.h"
#include "xadapt/model.h"

#define XA_PREFIX_MAX_LAYERS 64

typedef struct xa_prefix_cache xa_prefix_cache;

xa_prefix_cache *xa_prefix_cache_new(size_t budget_bytes, int64_t hidden);
void xa_prefix_cache_free(xa_prefix_cache *c);
// Which hidden states (HF numbering) are kept; a different layout empties the cache. With
// `pad_fill`, rows are kept without their padding and serve batches of any length, padding
// positions filled with zeros (the caller says when that is exact); without it, a row is kept at
// its batch's length and serves batches no longer than that, padding included.
void xa_prefix_cache_layout(xa_prefix_cache *c, const int *layers, int n, bool pad_fill);
// All rows cached: out[l] = (B,T,H) arena tensors of the layout's hidden states; else false.
bool xa_prefix_cache_lookup(xa_ctx *ctx, xa_prefix_cache *c, const xa_text_batch *b,
                            xa_tensor **out);
// Keep the rows of a batch computed in full (hidden: every hidden state), within the budget.
void xa_prefix_cache_store(xa_prefix_cache *c, const xa_text_batch *b, xa_tensor *const *hidden);
void xa_prefix_cache_stats(const xa_prefix_cache *c, int64_t *hits, int64_t *misses,
                           size_t *bytes);

#endif
