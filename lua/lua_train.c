// The hot path of training, in C: optimizers ("xadapt.Optim": AdamW, SGD, clipping by global
// norm) and one step on a model (m:_forward with CLIP features and MLM masking, m:_loss for the
// objectives -> "xadapt.Loss" handles that combine with + and *, m:_backward, m:_end).
// Predictions and metrics are in lua_eval.c, checkpoints in lua_checkpoint.c; the loop that
// calls these is Lua (lua/xadapt/trainer.lua).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xl.h"

#define IGNORE_INDEX (-100)

// --- optimizers ---------------------------------------------------------------------------------

xl_optim *xl_check_optim(lua_State *L, int idx) {
    xl_optim *o = luaL_testudata(L, idx, XL_OPTIM);
    if (!o)
        xl_argerror(L, idx, "optimizer expected (xa.adamw{...} or xa.sgd{...}), got %s",
                    luaL_typename(L, idx));
    return o;
}

static int optim_gc(lua_State *L) {
    xl_optim *o = luaL_checkudata(L, 1, XL_OPTIM);
    xa_optim_free(o->opt);
    o->opt = NULL;
    return 0;
}

static const char *const adamw_keys[] = {"lr",  "weight_decay", "betas",
                                         "eps", "correct_bias", NULL};
static const char *const sgd_keys[] = {"lr", "momentum", "nesterov", "weight_decay", NULL};

static xl_optim *new_optim(lua_State *L) {
    xl_optim *o = lua_newuserdatauv(L, sizeof *o, 1);
    memset(o, 0, sizeof *o);
    luaL_setmetatable(L, XL_OPTIM);
    return o;
}

static int l_adamw(lua_State *L) {
    xl_check_opts(L, 1, "xa.adamw", adamw_keys, true);
    lua_settop(L, 1);
    if (lua_isnil(L, 1)) {
        lua_newtable(L);
        lua_replace(L, 1);
    }
    xa_optim_opts oo = {.kind = XA_OPTIM_ADAMW, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    oo.lr = (float)xl_opt_num(L, 1, "lr", 1e-3);
    oo.weight_decay = (float)xl_opt_num(L, 1, "weight_decay", 0.01);
    oo.eps = (float)xl_opt_num(L, 1, "eps", 1e-8);
    oo.no_bias_correction = !xl_opt_bool(L, 1, "correct_bias", true);
    if (lua_getfield(L, 1, "betas") != LUA_TNIL) {
        if (!lua_istable(L, -1) || lua_rawlen(L, -1) != 2)
            return xl_raise(L, "xa.adamw: betas = {beta1, beta2}");
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (!lua_isnumber(L, -1) || !lua_isnumber(L, -2))
            return xl_raise(L, "xa.adamw: betas = {beta1, beta2} (numbers)");
        oo.beta1 = (float)lua_tonumber(L, -2);
        oo.beta2 = (float)lua_tonumber(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    if (!(oo.lr > 0) || oo.weight_decay < 0 || !(oo.eps > 0) || !(oo.beta1 >= 0 && oo.beta1 < 1) ||
        !(oo.beta2 >= 0 && oo.beta2 < 1))
        return xl_raise(L,
                        "xa.adamw: need lr > 0, weight_decay >= 0, eps > 0 and betas in [0, 1) "
                        "(got lr %g, weight_decay %g, eps %g, betas %g, %g)",
                        (double)oo.lr, (double)oo.weight_decay, (double)oo.eps, (double)oo.beta1,
                        (double)oo.beta2);
    new_optim(L)->o = oo;
    return 1;
}

static int l_sgd(lua_State *L) {
    xl_check_opts(L, 1, "xa.sgd", sgd_keys, true);
    lua_settop(L, 1);
    if (lua_isnil(L, 1)) {
        lua_newtable(L);
        lua_replace(L, 1);
    }
    xa_optim_opts oo = {.kind = XA_OPTIM_SGD};
    oo.lr = (float)xl_opt_num(L, 1, "lr", 1e-2);
    oo.momentum = (float)xl_opt_num(L, 1, "momentum", 0);
    oo.nesterov = xl_opt_bool(L, 1, "nesterov", false);
    oo.weight_decay = (float)xl_opt_num(L, 1, "weight_decay", 0);
    if (!(oo.lr > 0) || oo.momentum < 0 || oo.weight_decay < 0)
        return xl_raise(L, "xa.sgd: need lr > 0, momentum >= 0 and weight_decay >= 0");
    if (oo.nesterov && oo.momentum <= 0)
        return xl_raise(L, "xa.sgd: nesterov needs momentum > 0 (as in PyTorch)");
    new_optim(L)->o = oo;
    return 1;
}

// opt:_bind(model): the optimizer updates that model's trainable parameters from now on.
static int optim_bind(lua_State *L) {
    xl_optim *o = xl_check_optim(L, 1);
    xl_model *m = xl_check_model(L, 2);
    if (o->opt && o->net != m->net)
        return xl_raise(L, "this optimizer already trains another model; make one per model");
    if (!o->opt) {
        lua_pushvalue(L, 2);
        lua_setiuservalue(L, 1, 1);
        if (!(o->opt = xa_optim_new(xl_ctx(L), xa_net_params(m->net), &o->o)))
            return xl_raise_ctx(L, "optimizer");
        o->net = m->net;
    }
    return 0;
}

// For an error message: the trainable parameters whose values (grads false) or gradients hold NaN
// or Inf, as "a, b, c and 4 more"; "" when there are none.
static void nonfinite_names(xa_params *ps, bool grads, char *buf, size_t cap) {
    size_t n = 0, len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < xa_params_count(ps); i++) {
        xa_tensor *t = xa_params_at(ps, i);
        const float *v = grads ? t->grad : t->data;
        if (!(t->flags & XA_TENSOR_TRAINABLE) || !v)
            continue;
        int64_t j = 0;
        while (j < t->numel && isfinite(v[j]))
            j++;
        if (j == t->numel || n++ >= 3 || len >= cap)
            continue;
        len +=
            (size_t)snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", xa_params_name(ps, i));
    }
    if (n > 3 && len < cap)
        snprintf(buf + len, cap - len, " and %zu more", n - 3);
}

// m:_nonfinite() -> the trainable parameters holding NaN or Inf ("a, b and 2 more"), or nil
static int model_nonfinite(lua_State *L) {
    char names[512];
    nonfinite_names(xa_net_params(xl_check_model(L, 1)->net), false, names, sizeof names);
    if (names[0])
        lua_pushstring(L, names);
    else
        lua_pushnil(L);
    return 1;
}

// opt:step(lr, grad_scale, clip) -> global gradient norm before clipping
static int optim_step(lua_State *L) {
    xl_optim *o = xl_check_optim(L, 1);
    float lr = (float)luaL_checknumber(L, 2);
    float scale = (float)luaL_optnumber(L, 3, 1.0);
    float clip = (float)luaL_optnumber(L, 4, 0.0);
    if (!o->opt)
        return xl_raise(L, "optimizer step before the optimizer was given a model");
    if (!(lr >= 0) || !isfinite(lr))
        return xl_raise(L, "learning rate %g is not a finite number >= 0 (check the schedule)",
                        (double)lr);
    xa_optim_set_clip(o->opt, clip);
    xa_status st = xa_optim_step(o->opt, lr, scale);
    float norm = o->last_norm = xa_optim_grad_norm(o->opt);
    if (st == XA_ERANGE) { // a gradient that is not finite: nothing was updated
        char grads[512], values[512];
        xa_params *ps = xa_net_params(o->net);
        nonfinite_names(ps, true, grads, sizeof grads);
        nonfinite_names(ps, false, values, sizeof values);
        if (!grads[0]) // every element finite, their norm overflows float
            snprintf(grads, sizeof grads, "their sum (each gradient is finite)");
        if (values[0])
            return xl_raise(L,
                            "the gradient is not finite (norm %g) in %s, and parameters hold NaN "
                            "or Inf (%s): an earlier update blew up; lower the learning rate or "
                            "clip",
                            (double)norm, grads, values);
        if (!xa_optim_steps(o->opt))
            return xl_raise(L,
                            "the gradient is not finite (norm %g) in %s at this optimizer's first "
                            "update, so no update of it made it: the forward or backward did (an "
                            "adapter plugin's? its gradient check would show it), or the loss was "
                            "not finite",
                            (double)norm, grads);
        return xl_raise(L,
                        "the gradient is not finite (norm %g) in %s: lower the learning rate or "
                        "clip",
                        (double)norm, grads);
    }
    if (st != XA_OK)
        return xl_raise_ctx(L, "optimizer step");
    lua_pushnumber(L, norm);
    return 1;
}

static int optim_zero_grad(lua_State *L) {
    xl_optim *o = xl_check_optim(L, 1);
    if (o->net)
        xa_params_zero_grad(xa_net_params(o->net));
    return 0;
}

static int optim_index(lua_State *L) {
    xl_optim *o = xl_check_optim(L, 1);
    const char *k = luaL_checkstring(L, 2);
    static const luaL_Reg methods[] = {
        {"_bind", optim_bind}, {"step", optim_step}, {"zero_grad", optim_zero_grad}, {NULL, NULL}};
    for (int i = 0; methods[i].name; i++)
        if (!strcmp(k, methods[i].name))
            return lua_pushcfunction(L, methods[i].func), 1;
    if (!strcmp(k, "lr"))
        lua_pushnumber(L, o->o.lr);
    else if (!strcmp(k, "kind"))
        lua_pushstring(L, o->o.kind == XA_OPTIM_ADAMW ? "adamw" : "sgd");
    else if (!strcmp(k, "steps"))
        lua_pushinteger(L, o->opt ? xa_optim_steps(o->opt) : 0);
    else if (!strcmp(k, "grad_norm"))
        lua_pushnumber(L, o->last_norm);
    else if (!strcmp(k, "weight_decay"))
        lua_pushnumber(L, o->o.weight_decay);
    else if (!strcmp(k, "momentum"))
        lua_pushnumber(L, o->o.momentum);
    else
        lua_pushnil(L);
    return 1;
}

static int optim_tostring(lua_State *L) {
    xl_optim *o = xl_check_optim(L, 1);
    lua_pushfstring(L, "xadapt.Optim(%s, lr %f)", o->o.kind == XA_OPTIM_ADAMW ? "adamw" : "sgd",
                    (double)o->o.lr);
    return 1;
}

// --- one step ---------------------------------------------------------------------------------

typedef struct xl_loss {
    xa_tensor *t;
    uint64_t generation;
} xl_loss;

bool xl_step_live(lua_State *L, const xl_model *m) {
    return m->step.generation && m->step.generation == xl_state_of(L)->generation;
}

xl_step *xl_live_step(lua_State *L, xl_model *m) {
    if (!xl_step_live(L, m))
        xl_raise(L, "no forward pass in this step (m:_forward first; steps end at the next "
                    "forward)");
    return &m->step;
}

static xl_batch *batch_of(lua_State *L, const xl_step *s) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->batch_ref);
    xl_batch *b = lua_touserdata(L, -1);
    lua_pop(L, 1); // the registry reference keeps it alive
    return b;
}

xl_batch *xl_step_batch(lua_State *L, xl_model *m) {
    return batch_of(L, &m->step);
}

static const char *const forward_keys[] = {"train", "features", "images",       "texts",
                                           "mlm",   "dropout",  "attn_dropout", NULL};

// m:_forward(batch, {train=, features=, images=, texts=, mlm=prob, dropout=, attn_dropout=})
// Starts a step: resets the arena, masks tokens for MLM, gets CLIP features, runs the network.
static int model_forward(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    xl_batch *b = xl_check_batch(L, 2);
    xl_check_opts(L, 3, "m:_forward", forward_keys, true);
    lua_settop(L, 3);
    if (lua_isnil(L, 3)) {
        lua_newtable(L);
        lua_replace(L, 3);
    }
    bool train = xl_opt_bool(L, 3, "train", false);
    bool images = xl_opt_bool(L, 3, "images", false), texts = xl_opt_bool(L, 3, "texts", false);
    lua_Number mlm = xl_opt_num(L, 3, "mlm", 0);
    float dropout = (float)xl_opt_num(L, 3, "dropout", 0);
    float attn_dropout = (float)xl_opt_num(L, 3, "attn_dropout", 0);
    lua_getfield(L, 3, "features");
    xl_features *f = lua_isnil(L, -1) ? NULL : xl_check_features(L, lua_gettop(L));
    if ((images || texts) && !f)
        return xl_raise(L, "CLIP features need a feature cache (features = xa.features(vlm))");
    if (images && !b->images)
        return xl_raise(L, "the batch has no image paths (build it with images = true)");
    if ((images || texts) && b->choices > 1)
        return xl_raise(L, "CLIP features for multiple-choice batches are not supported");
    if (mlm < 0 || mlm >= 1)
        return xl_raise(L, "mlm masking probability must be in [0, 1), got %g", (double)mlm);

    xa_ctx *ctx = xl_ctx(L);
    xl_arena_reset(L);
    xl_step *s = &m->step;
    if (s->batch_ref)
        luaL_unref(L, LUA_REGISTRYINDEX, s->batch_ref);
    memset(s, 0, sizeof *s);
    lua_pushvalue(L, 2);
    s->batch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->B = b->tok.rows, s->T = b->tok.cols, s->mask = b->mask, s->training = train;

    const int32_t *ids = b->tok.input_ids;
    if (mlm > 0) {
        if (!m->tok)
            return xl_raise(L, "MLM needs the PLM's tokenizer (for its mask id)");
        const xa_tokenizer_info *ti = xa_tokenizer_info_get(m->tok);
        int64_t vocab = xa_model_config_of(xa_net_plm_model(m->net))->text.vocab;
        if (ti->mask_id < 0)
            return xl_raise(L, "MLM: the tokenizer has no mask token");
        size_t cells = (size_t)(s->B * s->T);
        int32_t *masked = xa_arena_alloc(ctx, cells * sizeof *masked);
        s->mlm_labels = xa_arena_alloc(ctx, cells * sizeof *s->mlm_labels);
        if (!masked || !s->mlm_labels)
            return xl_raise(L, "out of memory (step arena)");
        memcpy(masked, ids, cells * sizeof *masked);
        int32_t v = ti->vocab_size < vocab ? ti->vocab_size : (int32_t)vocab;
        xa_mlm_mask(ctx, masked, s->mlm_labels, b->mask, b->special, s->B, s->T, ti->mask_id, v,
                    (float)mlm, IGNORE_INDEX);
        ids = masked;
    }
    xa_set_training(ctx, train);
    xa_set_grad_enabled(ctx, false); // the frozen VLM never records
    if (images &&
        xa_vlm_images(ctx, f->c, (const char *const *)b->images, b->n, b->k, &s->feats) != XA_OK)
        return xl_raise_ctx(L, "image features");
    if (texts && xa_vlm_texts(ctx, f->c, (const char *const *)b->texts, b->n, &s->feats) != XA_OK)
        return xl_raise_ctx(L, "text features");
    if (f && !f->told && xa_vlm_cache_disk_error(f->c)) {
        fprintf(stderr, "xadapt: CLIP feature cache: %s\n", xa_vlm_cache_disk_error(f->c));
        f->told = true;
    }
    s->has_feats = images || texts;
    xa_set_grad_enabled(ctx, train);
    xa_net_batch nb = {.text = {.ids = ids,
                                .mask = b->mask,
                                .type_ids = b->tok.token_type_ids,
                                .B = s->B,
                                .T = s->T},
                       .feats = s->has_feats ? &s->feats : NULL,
                       // training masks anew each time; evaluation's masking is seeded, so
                       // its rows repeat and are worth keeping
                       .one_off = train && mlm > 0};
    xa_forward_opts fo = {.dropout = dropout, .attn_dropout = attn_dropout};
    if (xa_net_forward(ctx, m->net, &nb, &fo, &s->out) != XA_OK)
        return xl_raise_ctx(L, NULL);
    s->generation = xl_state_of(L)->generation;
    return 0;
}

static int push_loss(lua_State *L, xa_tensor *t) {
    if (!t)
        return xl_raise_ctx(L, NULL);
    xl_loss *l = lua_newuserdatauv(L, sizeof *l, 0);
    l->t = t;
    l->generation = xl_state_of(L)->generation;
    luaL_setmetatable(L, XL_LOSS);
    return 1;
}

static xl_loss *check_loss(lua_State *L, int idx) {
    xl_loss *l = luaL_testudata(L, idx, XL_LOSS);
    if (!l)
        xl_argerror(L, idx, "loss expected, got %s", luaL_typename(L, idx));
    if (l->generation != xl_state_of(L)->generation)
        xl_raise(L, "this loss belongs to an earlier step (losses live until the next forward)");
    return l;
}

static xa_tensor *pool(xa_ctx *ctx, const xl_step *s, xa_pool p) {
    switch (p) {
    case XA_POOL_MEAN:
        return xa_pool_mean(ctx, s->out.fused, s->mask);
    case XA_POOL_POOLER:
        if (!s->out.plm.pooled)
            xa_errorf(ctx, XA_ENOTFOUND, "pool = \"pooler\": the PLM checkpoint has no pooler");
        return s->out.plm.pooled;
    case XA_POOL_CLS:
    default:
        return xa_pool_first(ctx, s->out.fused);
    }
}

xa_tensor *xl_head_logits(lua_State *L, xl_step *s, xl_head *h) {
    // A head reads one row per example, a choice head `choices` rows: the batch must be built
    // for it (a mismatch would read labels past the batch's end).
    const xl_batch *b = batch_of(L, s);
    bool choice = !h->proj_w && h->opts.kind == XA_HEAD_CHOICE;
    if (b && choice && b->choices != h->opts.choices)
        xl_raise(L, "head '%s' is a choice head for %d choices; the batch has %d per example",
                 h->name, h->opts.choices, b->choices);
    if (b && !choice && b->choices > 1)
        xl_raise(L,
                 "head '%s' reads one row per example; the batch has %d choices per example "
                 "(use a choice head)",
                 h->name, b->choices);
    if (h->proj_w)
        return xa_linear(xl_ctx(L),
                         xa_dropout(xl_ctx(L), pool(xl_ctx(L), s, h->proj_pool), h->opts.dropout),
                         h->proj_w, h->proj_b); // dropout is a no-op outside training
    return xa_head_forward(xl_ctx(L), h->h, &s->out, s->mask, s->B, s->T);
}

static xa_tensor *classify_loss(lua_State *L, xl_step *s, xl_head *h, xl_batch *b) {
    if (!b->labels)
        xl_raise(L, "classification needs integer labels in the batch");
    if (h->proj_w || (h->opts.kind != XA_HEAD_CLASSIFY && h->opts.kind != XA_HEAD_CHOICE))
        xl_raise(L, "head '%s' is not a classify or choice head", h->name);
    int classes = h->opts.kind == XA_HEAD_CHOICE ? h->opts.choices : h->opts.classes;
    for (int64_t i = 0; i < b->n; i++)
        if (b->labels[i] >= classes)
            xl_raise(L, "%s: label %d is outside the head's %d classes (0..%d)",
                     b->where ? b->where[i] : "?", b->labels[i], classes, classes - 1);
    xa_tensor *logits = xl_head_logits(L, s, h);
    return xa_cross_entropy(xl_ctx(L), logits, b->labels, IGNORE_INDEX);
}

static xa_tensor *regress_loss(lua_State *L, xl_step *s, xl_head *h, xl_batch *b) {
    if (!b->targets)
        xl_raise(L, "regression needs number labels in the batch");
    if (h->proj_w || h->opts.kind != XA_HEAD_REGRESS)
        xl_raise(L, "head '%s' is not a regress head", h->name);
    xa_ctx *ctx = xl_ctx(L);
    xa_tensor *pred = xl_head_logits(L, s, h);
    xa_tensor *y = xa_tensor_arena_nd(ctx, b->n, 1, 0, 0);
    if (!pred || !y)
        return NULL;
    memcpy(y->data, b->targets, (size_t)b->n * sizeof(float));
    return xa_mse(ctx, pred, y);
}

static xa_tensor *mlm_loss(lua_State *L, xl_model *m, xl_step *s, xl_head *h) {
    if (!s->mlm_labels)
        xl_raise(L, "the MLM loss needs a forward with mlm = <masking probability>");
    xa_ctx *ctx = xl_ctx(L);
    xa_tensor *logits =
        h ? xl_head_logits(L, s, h) : xa_mlm_logits(ctx, xa_net_plm_model(m->net), s->out.fused);
    if (!logits)
        return NULL;
    int64_t V = logits->shape[logits->ndim - 1], shape[2] = {s->B * s->T, V};
    return xa_cross_entropy(ctx, xa_reshape(ctx, logits, 2, shape), s->mlm_labels, IGNORE_INDEX);
}

static const char *const distill_losses[] = {"mse", "cosine", "nst", "ntxent", NULL};

static xa_tensor *distill_loss(lua_State *L, xl_step *s, xl_head *h, int kind, float temp) {
    xa_ctx *ctx = xl_ctx(L);
    if (!h->proj_w)
        xl_raise(L, "distillation needs a project head (m:head(name, {kind = \"project\", "
                    "dim = <CLIP projection size>}))");
    if (!s->feats.text_pooled)
        xl_raise(L, "distillation needs the CLIP text features of the batch (texts = true)");
    xa_tensor *student = xl_head_logits(L, s, h);
    xa_tensor *tp = s->feats.text_pooled;
    int64_t P = tp->shape[tp->ndim - 1], shape[3] = {s->B, P, 0};
    if (student && student->shape[1] != P)
        xl_raise(L, "head '%s' projects to %lld, the CLIP text features have %lld", h->name,
                 (long long)student->shape[1], (long long)P);
    xa_tensor *teacher = xa_reshape(ctx, tp, 2, shape);
    switch (kind) {
    case 0:
        return xa_mse(ctx, student, teacher);
    case 1:
        return xa_cosine_loss(ctx, student, teacher);
    case 2: { // channel selectivity over the batch's examples: (1, B, C)
        int64_t s3[3] = {1, s->B, P};
        return xa_nst_loss(ctx, xa_reshape(ctx, student, 3, s3), xa_reshape(ctx, teacher, 3, s3));
    }
    default:
        return xa_ntxent_loss(ctx, student, teacher, temp);
    }
}

static const char *const loss_kinds[] = {"classify", "regress", "mlm", "distill", NULL};
static const char *const loss_keys[] = {"head", "loss", "temperature", NULL};

// m:_loss(kind[, {head=, loss=, temperature=}]) -> Loss
static int model_loss(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    const char *kind_s = luaL_checkstring(L, 2);
    xl_check_opts(L, 3, "loss", loss_keys, true);
    lua_settop(L, 3);
    int kind = -1;
    for (int i = 0; loss_kinds[i]; i++)
        if (!strcmp(kind_s, loss_kinds[i]))
            kind = i;
    if (kind < 0)
        return xl_argerror(L, 2, "'%s' is not a loss (valid: classify, regress, mlm, distill)",
                           kind_s);
    xl_step *s = xl_live_step(L, m);
    xl_batch *b = xl_step_batch(L, m);
    xl_head *h = NULL;
    if (lua_istable(L, 3) && lua_getfield(L, 3, "head") != LUA_TNIL)
        h = xl_model_head(L, 1, lua_gettop(L));
    else if (kind != 2)
        return xl_raise(L, "the %s loss needs head = <a head of the model>", kind_s);
    int dk = lua_istable(L, 3) ? xl_opt_enum(L, 3, "loss", distill_losses, 1) : 1;
    float temp = lua_istable(L, 3) ? (float)xl_opt_num(L, 3, "temperature", 0.07) : 0.07f;
    switch (kind) {
    case 0:
        return push_loss(L, classify_loss(L, s, h, b));
    case 1:
        return push_loss(L, regress_loss(L, s, h, b));
    case 2:
        return push_loss(L, mlm_loss(L, m, s, h));
    default:
        return push_loss(L, distill_loss(L, s, h, dk, temp));
    }
}

static int model_backward(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    xl_loss *l = check_loss(L, 2);
    if (!xl_live_step(L, m)->training)
        return xl_raise(L, "backward after a forward with train = false");
    if (xa_backward(xl_ctx(L), l->t) != XA_OK)
        return xl_raise_ctx(L, "backward");
    m->step.backward_done = true;
    return 0;
}

// m:_prepare(): make the parameters a network creates on its first forward (concat fusion).
static int model_prepare(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    if (xa_net_prepare(m->net) != XA_OK)
        return xl_raise_ctx(L, "the concat fusion");
    return 0;
}

// m:_end(): end the step (frees its activations; losses of it become invalid).
static int model_end(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    if (m->step.batch_ref)
        luaL_unref(L, LUA_REGISTRYINDEX, m->step.batch_ref);
    memset(&m->step, 0, sizeof m->step);
    xl_arena_reset(L);
    return 0;
}

// --- losses as values ---------------------------------------------------------------------------

static xa_tensor *as_tensor(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        xa_tensor *c = xa_tensor_arena_nd(xl_ctx(L), 1, 0, 0, 0);
        if (!c)
            xl_raise(L, "out of memory (step arena)");
        c->data[0] = (float)lua_tonumber(L, idx);
        return c;
    }
    return check_loss(L, idx)->t;
}

static int loss_add(lua_State *L) {
    xa_tensor *a = as_tensor(L, 1), *b = as_tensor(L, 2);
    return push_loss(L, xa_add(xl_ctx(L), a, b));
}

static int loss_sub(lua_State *L) {
    xa_tensor *a = as_tensor(L, 1), *b = as_tensor(L, 2);
    return push_loss(L, xa_sub(xl_ctx(L), a, b));
}

static int loss_mul(lua_State *L) {
    int li = lua_type(L, 1) == LUA_TNUMBER ? 2 : 1, ni = 3 - li;
    xl_loss *l = check_loss(L, li);
    if (lua_type(L, ni) != LUA_TNUMBER)
        return xl_raise(L, "a loss can be multiplied by a number only");
    return push_loss(L, xa_scale(xl_ctx(L), l->t, (float)lua_tonumber(L, ni)));
}

static int loss_div(lua_State *L) {
    xl_loss *l = check_loss(L, 1);
    if (lua_type(L, 2) != LUA_TNUMBER || lua_tonumber(L, 2) == 0)
        return xl_raise(L, "a loss can be divided by a non-zero number only");
    return push_loss(L, xa_scale(xl_ctx(L), l->t, (float)(1.0 / lua_tonumber(L, 2))));
}

static int loss_unm(lua_State *L) {
    return push_loss(L, xa_scale(xl_ctx(L), check_loss(L, 1)->t, -1.0f));
}

static int loss_value(lua_State *L) {
    lua_pushnumber(L, check_loss(L, 1)->t->data[0]);
    return 1;
}

static int loss_tostring(lua_State *L) {
    xl_loss *l = luaL_checkudata(L, 1, XL_LOSS);
    if (l->generation != xl_state_of(L)->generation)
        lua_pushstring(L, "xadapt.Loss (of an earlier step)");
    else
        lua_pushfstring(L, "xadapt.Loss(%f)", (double)l->t->data[0]);
    return 1;
}

// --- registration -------------------------------------------------------------------------------

void xl_open_train(lua_State *L, int mod) {
    luaL_newmetatable(L, XL_OPTIM);
    lua_pushcfunction(L, optim_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, optim_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, optim_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    static const luaL_Reg loss_meta[] = {
        {"__add", loss_add}, {"__sub", loss_sub}, {"__mul", loss_mul},
        {"__div", loss_div}, {"__unm", loss_unm}, {"__tostring", loss_tostring},
        {NULL, NULL},
    };
    luaL_newmetatable(L, XL_LOSS);
    luaL_setfuncs(L, loss_meta, 0);
    lua_newtable(L);
    lua_pushcfunction(L, loss_value);
    lua_setfield(L, -2, "value");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    static const luaL_Reg step_methods[] = {
        {"_forward", model_forward},
        {"_loss", model_loss},
        {"_backward", model_backward},
        {"_end", model_end},
        {"_prepare", model_prepare},
        {"_nonfinite", model_nonfinite},
        {NULL, NULL},
    };
    luaL_getmetatable(L, XL_MODEL);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, step_methods, 0);
    lua_pop(L, 2);

    static const luaL_Reg fns[] = {
        {"adamw", l_adamw},
        {"sgd", l_sgd},
        {NULL, NULL},
    };
    lua_pushvalue(L, mod);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
