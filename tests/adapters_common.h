// Shared by the adapter tests: a tiny frozen BERT (and CLIP) from the golden fixtures, the
// registry of the built plugins, a batch, random CLIP features, and helpers to run the net.
#ifndef XADAPT_TEST_ADAPTERS_COMMON_H
#define XADAPT_TEST_ADAPTERS_COMMON_H

#include "gradcheck.h"
#include "xadapt/net.h"

typedef struct {
    xa_ctx *ctx;
    xa_model *plm, *vlm;
    xa_registry *reg;
    xa_net *net;
    int32_t ids[2 * 7];
    float mask[2 * 7];
    xa_vlm_feats feats;
    xa_net_batch batch;
} fixture;

// Load bert_tiny (+ clip_tiny when with_vlm), scan the plugins, make a batch and features.
void fixture_open(fixture *f, bool with_vlm);
void fixture_close(fixture *f);
// Forward; returns the fused output (arena) or NULL.
xa_tensor *fixture_forward(fixture *f);
// Set every trainable parameter to N(0, scale) (to make gradient checks meaningful).
void fixture_randomize(fixture *f, float scale);
// Gradient check of every parameter of the net through its forward (tolerance row "adapter").
// Fails the test when the net has more parameters than the check can take.
bool fixture_gradcheck(fixture *f, gc_report *rep);
// Largest |a - b| over a's elements, and a heap copy of a tensor's values (caller frees).
float max_abs_diff(const xa_tensor *a, const float *b);
float *copy_of(const xa_tensor *t);

#endif
