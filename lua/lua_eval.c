// Evaluation from C: predictions of a head for the current step (m:_predict), masked-word
// log-probabilities for probing (m:_mask_scores), and task.h's metrics (xa._metric, wrapped by
// lua/xadapt/metrics.lua as xa.metrics). The step itself is lua_train.c's.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xl.h"

// m:_predict(head) -> predictions (class indices 0.. for classify/choice, numbers for regress)
static int model_predict(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    xl_step *s = xl_live_step(L, m);
    xl_head *h = xl_model_head(L, 1, 2);
    if (h->proj_w || h->opts.kind == XA_HEAD_MLM)
        return xl_raise(L,
                        "head '%s' makes no predictions (use a classify, choice or regress "
                        "head)",
                        h->name);
    xa_tensor *y = xl_head_logits(L, s, h);
    if (!y)
        return xl_raise_ctx(L, NULL);
    int64_t rows = xa_tensor_rows(y), cols = xa_tensor_cols(y);
    lua_createtable(L, (int)rows, 0);
    for (int64_t r = 0; r < rows; r++) {
        const float *row = y->data + r * cols;
        if (h->opts.kind == XA_HEAD_REGRESS) {
            lua_pushnumber(L, row[0]);
        } else {
            int64_t best = 0;
            for (int64_t c = 1; c < cols; c++)
                if (row[c] > row[best])
                    best = c;
            lua_pushinteger(L, best);
        }
        lua_rawseti(L, -2, r + 1);
    }
    return 1;
}

// m:_mask_scores(candidate_ids) -> { {logp of each candidate at the row's first mask}, ... }
static int model_mask_scores(lua_State *L) {
    xl_model *m = xl_check_model(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    xl_step *s = xl_live_step(L, m);
    xl_batch *b = xl_step_batch(L, m);
    if (!m->tok)
        return xl_raise(L, "masked-word scores need the PLM's tokenizer");
    int32_t mask_id = xa_tokenizer_info_get(m->tok)->mask_id;
    int64_t K = (int64_t)lua_rawlen(L, 2);
    xa_ctx *ctx = xl_ctx(L);
    int64_t *pos = xa_arena_alloc(ctx, (size_t)s->B * sizeof *pos);
    int32_t *cand = xa_arena_alloc(ctx, (size_t)(K ? K : 1) * sizeof *cand);
    if (!pos || !cand)
        return xl_raise(L, "out of memory (step arena)");
    int64_t V = xa_model_config_of(xa_net_plm_model(m->net))->text.vocab;
    for (int64_t k = 0; k < K; k++) {
        lua_rawgeti(L, 2, k + 1);
        int ok;
        lua_Integer id = lua_tointegerx(L, -1, &ok);
        if (!ok || id < 0 || id >= V)
            return xl_argerror(L, 2, "candidate %lld is not a token id in 0..%lld",
                               (long long)k + 1, (long long)V - 1);
        cand[k] = (int32_t)id;
        lua_pop(L, 1);
    }
    for (int64_t r = 0; r < s->B; r++) {
        pos[r] = -1;
        for (int64_t t = 0; t < s->T && pos[r] < 0; t++)
            if (b->tok.input_ids[r * s->T + t] == mask_id)
                pos[r] = t;
        if (pos[r] < 0)
            return xl_raise(L, "row %lld of the batch has no mask token", (long long)r + 1);
    }
    xa_tensor *h = xa_pool_gather(ctx, s->out.fused, pos);
    xa_tensor *logits = xa_mlm_logits(ctx, xa_net_plm_model(m->net), h);
    if (!logits)
        return xl_raise_ctx(L, NULL);
    lua_createtable(L, (int)s->B, 0);
    for (int64_t r = 0; r < s->B; r++) {
        const float *row = logits->data + r * V;
        double mx = row[0], sum = 0;
        for (int64_t v = 1; v < V; v++)
            mx = row[v] > mx ? row[v] : mx;
        for (int64_t v = 0; v < V; v++)
            sum += exp((double)row[v] - mx);
        double lse = mx + log(sum);
        lua_createtable(L, (int)K, 0);
        for (int64_t k = 0; k < K; k++) {
            lua_pushnumber(L, (double)row[cand[k]] - lse);
            lua_rawseti(L, -2, k + 1);
        }
        lua_rawseti(L, -2, r + 1);
    }
    return 1;
}

// --- metrics ------------------------------------------------------------------------------------

static int32_t *int_list(lua_State *L, int idx, int64_t n) {
    int32_t *v = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *v, 0);
    for (int64_t i = 0; i < n; i++) {
        bool number = lua_rawgeti(L, idx, i + 1) == LUA_TNUMBER; // not "1": strings are no classes
        int ok;
        lua_Integer x = lua_tointegerx(L, -1, &ok);
        if (!number || !ok || x < 0 || x > INT32_MAX)
            xl_argerror(L, idx, "a list of class indices 0, 1, ... (entry %lld is not)",
                        (long long)i + 1);
        v[i] = (int32_t)x;
        lua_pop(L, 1);
    }
    return v;
}

static double *num_list(lua_State *L, int idx, int64_t n) {
    double *v = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *v, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (!lua_isnumber(L, -1))
            xl_argerror(L, idx, "a list of numbers (entry %lld is not)", (long long)i + 1);
        v[i] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    return v;
}

static int64_t pair_len(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t n = (int64_t)lua_rawlen(L, 1);
    if ((int64_t)lua_rawlen(L, 2) != n)
        xl_raise(L, "predictions (%lld) and gold labels (%lld) differ in length", (long long)n,
                 (long long)lua_rawlen(L, 2));
    if (n == 0)
        xl_raise(L, "a metric of no examples");
    return n;
}

static int m_accuracy(lua_State *L) {
    int64_t n = pair_len(L);
    int32_t *p = int_list(L, 1, n), *g = int_list(L, 2, n);
    lua_pushnumber(L, xa_metric_accuracy(p, g, n));
    return 1;
}

static int m_f1(lua_State *L) {
    int64_t n = pair_len(L);
    lua_Integer pos = luaL_optinteger(L, 3, 1);
    int32_t *p = int_list(L, 1, n), *g = int_list(L, 2, n);
    lua_pushnumber(L, xa_metric_f1(p, g, n, (int32_t)pos));
    return 1;
}

static int m_matthews(lua_State *L) {
    int64_t n = pair_len(L);
    int32_t *p = int_list(L, 1, n), *g = int_list(L, 2, n);
    lua_pushnumber(L, xa_metric_matthews(p, g, n));
    return 1;
}

static int m_pearson(lua_State *L) {
    int64_t n = pair_len(L);
    double *x = num_list(L, 1, n), *y = num_list(L, 2, n);
    lua_pushnumber(L, xa_metric_pearson(x, y, n));
    return 1;
}

static int m_spearman(lua_State *L) {
    int64_t n = pair_len(L);
    double *x = num_list(L, 1, n), *y = num_list(L, 2, n);
    lua_pushnumber(L, xa_metric_spearman(x, y, n));
    return 1;
}

void xl_open_eval(lua_State *L, int mod) {
    static const luaL_Reg methods[] = {
        {"_predict", model_predict}, {"_mask_scores", model_mask_scores}, {NULL, NULL}};
    luaL_getmetatable(L, XL_MODEL);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
    static const luaL_Reg metrics[] = {
        {"accuracy", m_accuracy}, {"f1", m_f1}, {"matthews", m_matthews}, {"pearson", m_pearson},
        {"spearman", m_spearman}, {NULL, NULL},
    };
    lua_newtable(L);
    luaL_setfuncs(L, metrics, 0);
    lua_setfield(L, mod, "_metric");
}
