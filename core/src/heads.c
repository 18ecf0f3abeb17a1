// Task heads: classification, regression and multiple-choice layers on a pooled hidden state, and
// the frozen PLM's own masked-LM head. Head parameters are the network's ("head.<name>.weight",
// "head.<name>.bias"), so they train, save and load with the adapters. Losses are in ops_loss.c
// and objectives.c; the network itself in net.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "net_internal.h"
#include "xadapt/task.h"

struct xa_head {
    xa_net *net;
    char *name;
    xa_head_opts opts;
    xa_tensor *w, *b; // owned by the network's parameter set; NULL for the MLM head
};

static const char *kind_name(xa_head_kind k) {
    static const char *names[] = {"classify", "regress", "choice", "mlm"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}

static xa_status check_opts(xa_ctx *ctx, xa_model *plm, const char *name, const xa_head_opts *o) {
    if ((unsigned)o->kind > XA_HEAD_MLM)
        return xa_errorf(ctx, XA_EINVAL,
                         "head '%s': unknown kind %d (classify, regress, choice, "
                         "mlm)",
                         name, (int)o->kind);
    if (o->kind == XA_HEAD_MLM) {
        if (!xa_model_has_mlm_head(plm))
            return xa_errorf(ctx, XA_EINVAL,
                             "head '%s': %s has no masked-LM head; load a *ForMaskedLM checkpoint "
                             "(cls.predictions.* / lm_head.*)",
                             name, xa_model_dir(plm));
        return XA_OK; // pooling, classes and dropout do not apply
    }
    if ((unsigned)o->pool > XA_POOL_MEAN)
        return xa_errorf(ctx, XA_EINVAL, "head '%s': unknown pooling %d (cls, pooler, mean)", name,
                         (int)o->pool);
    if (o->pool == XA_POOL_POOLER && !xa_model_has_pooler(plm))
        return xa_errorf(ctx, XA_EINVAL,
                         "head '%s': pooling 'pooler' needs the checkpoint's pooler.dense.*, which "
                         "%s lacks (RoBERTa checkpoints often do); use 'cls' or 'mean'",
                         name, xa_model_dir(plm));
    if (o->kind == XA_HEAD_CLASSIFY && o->classes < 2)
        return xa_errorf(ctx, XA_EINVAL,
                         "head '%s': a classifier needs classes >= 2, got %d "
                         "(use a regression head for one output)",
                         name, o->classes);
    if (o->kind == XA_HEAD_CHOICE && o->choices < 2)
        return xa_errorf(ctx, XA_EINVAL,
                         "head '%s': a multiple-choice head needs choices >= 2, "
                         "got %d",
                         name, o->choices);
    if (!(o->dropout >= 0.0f && o->dropout < 1.0f))
        return xa_errorf(ctx, XA_EINVAL, "head '%s': dropout %g is outside [0, 1)", name,
                         (double)o->dropout);
    return XA_OK;
}

xa_status xa_head_new(xa_net *net, const char *name, const xa_head_opts *opts, xa_head **out) {
    xa_model *plm = xa_net_plm_model(net);
    xa_ctx *ctx = xa_net_ctx(net);
    *out = NULL;
    if (!name || !*name || strchr(name, '.') || strchr(name, '*') || strlen(name) > 200)
        return xa_errorf(ctx, XA_EINVAL,
                         "head name '%s' must be 1-200 characters without '.' or "
                         "'*'",
                         name ? name : "(null)");
    xa_status st = check_opts(ctx, plm, name, opts);
    if (st)
        return st;
    char wname[256], bname[256];
    snprintf(wname, sizeof wname, "head.%s.weight", name);
    snprintf(bname, sizeof bname, "head.%s.bias", name);
    xa_params *ps = xa_net_params(net);
    if (xa_params_find(ps, wname) || xa_params_find(ps, bname))
        return xa_errorf(ctx, XA_EINVAL, "a head named '%s' already exists on this network", name);
    xa_head *h = xa_calloc(ctx, 1, sizeof *h);
    if (!h)
        return XA_ENOMEM;
    h->net = net, h->opts = *opts;
    if (!(h->name = xa_strdup(ctx, name))) {
        free(h);
        return XA_ENOMEM;
    }
    if (opts->kind != XA_HEAD_MLM) {
        int64_t H = xa_model_config_of(plm)->text.hidden;
        int64_t outs = opts->kind == XA_HEAD_CLASSIFY ? opts->classes : 1;
        int64_t ws[2] = {outs, H}, bs[1] = {outs};
        h->w = xa_net_param(net, wname, 2, ws, (xa_init){XA_INIT_NORMAL, 0.02f});
        h->b = h->w ? xa_net_param(net, bname, 1, bs, (xa_init){XA_INIT_ZERO, 0.0f}) : NULL;
        if (!h->b) {
            st = xa_errcode(ctx) ? xa_errcode(ctx) : XA_ENOMEM;
            char prefix[256];
            snprintf(prefix, sizeof prefix, "head.%s.", name);
            xa_params_remove_prefix(ps, prefix);
            xa_head_free(h);
            return st;
        }
    }
    *out = h;
    return XA_OK;
}

// The parameters stay in the network (they may have been saved, and the optimizer holds them).
void xa_head_free(xa_head *h) {
    if (!h)
        return;
    free(h->name);
    free(h);
}

const xa_head_opts *xa_head_options(const xa_head *h) {
    return &h->opts;
}

// POOLER: BERT's frozen tanh(dense(h[:, 0])). When the network has side networks the pooler runs
// on the fused state, so it sees the adapters' contribution; otherwise the PLM forward already
// computed it (plm.pooled) and that tensor is reused.
static xa_tensor *pooler(xa_ctx *ctx, xa_model *plm, const xa_net_out *out) {
    if (out->fused == out->plm.last && out->plm.pooled)
        return out->plm.pooled;
    return xa_tanh(ctx, xa_linear(ctx, xa_pool_first(ctx, out->fused), plm->pool_w, plm->pool_b));
}

xa_tensor *xa_head_forward(xa_ctx *ctx, xa_head *h, const xa_net_out *out, const float *mask,
                           int64_t B, int64_t T) {
    xa_tensor *x = out ? out->fused : NULL;
    if (!x) {
        if (!xa_errcode(ctx))
            xa_errorf(ctx, XA_EINVAL, "head '%s': the network output has no hidden state", h->name);
        return NULL;
    }
    xa_model *plm = xa_net_plm_model(h->net);
    int64_t H = xa_model_config_of(plm)->text.hidden;
    if (x->ndim != 3 || x->shape[0] != B || x->shape[1] != T || x->shape[2] != H) {
        char s[96];
        xa_errorf(ctx, XA_ESHAPE, "head '%s': expected a hidden state (%lld,%lld,%lld), got %s",
                  h->name, (long long)B, (long long)T, (long long)H, xa_shape_str(x, s, sizeof s));
        return NULL;
    }
    const xa_head_opts *o = &h->opts;
    if (o->kind == XA_HEAD_MLM)
        return xa_mlm_logits(ctx, plm, x);
    if (o->kind == XA_HEAD_CHOICE && B % o->choices != 0) {
        xa_errorf(ctx, XA_ESHAPE,
                  "head '%s' (%s): %lld rows are not a whole number of examples "
                  "with %d choices each",
                  h->name, kind_name(o->kind), (long long)B, o->choices);
        return NULL;
    }
    xa_tensor *p = o->pool == XA_POOL_CLS    ? xa_pool_first(ctx, x)
                   : o->pool == XA_POOL_MEAN ? xa_pool_mean(ctx, x, mask)
                                             : pooler(ctx, plm, out);
    xa_tensor *logits = xa_linear(ctx, xa_dropout(ctx, p, o->dropout), h->w, h->b);
    if (o->kind != XA_HEAD_CHOICE)
        return logits;
    int64_t shape[2] = {B / o->choices, o->choices};
    return xa_reshape(ctx, logits, 2, shape);
}
