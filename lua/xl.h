// Private to the Lua binding (lua_*.c): the per-state context, error helpers that point at the
// user's script line, option-table checking, JSON <-> Lua conversion, and the userdata types
// the files share. Nothing here is installed; scripts see only the `xadapt` module.
#ifndef XADAPT_LUA_XL_H
#define XADAPT_LUA_XL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>

#include "xadapt/net.h"
#include "xadapt/task.h"
#include "xadapt/tokenizer.h"

typedef struct cJSON cJSON;

// One per Lua state, kept in the registry: the context every call uses, the plugin registry.
typedef struct xl_state {
    xa_ctx *ctx;
    xa_registry *reg;
    bool scanned;
    char *libdir;        // "<dir>/xadapt/" of the pure-Lua helpers, for error locations
    uint64_t generation; // bumped at each arena reset: arena handles from earlier steps are dead
} xl_state;

xl_state *xl_state_of(lua_State *L);
xa_ctx *xl_ctx(lua_State *L);
// The plugin registry, scanned on first use.
xa_registry *xl_registry(lua_State *L);
// Reset the step arena (and the tape) and invalidate every arena handle given to Lua.
void xl_arena_reset(lua_State *L);

// --- errors ---------------------------------------------------------------------------------
// Expected failure: push nil and the context's message (then clear it); returns 2.
int xl_fail(lua_State *L);
// Push nil and a formatted message; returns 2.
int xl_failf(lua_State *L, const char *fmt, ...);
// Raise a Lua error located at the innermost frame of the user's script (not at C code or the
// xadapt Lua helpers). Never returns.
int xl_raise(lua_State *L, const char *fmt, ...);
// Raise with the context's message (C-side failure inside an operation that must succeed).
int xl_raise_ctx(lua_State *L, const char *what);
// Push "chunk:line: " of the innermost frame of the user's script ("" when there is none).
void xl_push_user_where(lua_State *L);
// "bad argument #n to 'f' (...)" located in the user's script.
int xl_argerror(lua_State *L, int arg, const char *fmt, ...);
// The options table at `idx` (absent/nil allowed when `optional`): every key must be a string
// in `keys` (NULL-terminated); otherwise raise naming the bad key and listing the valid ones.
void xl_check_opts(lua_State *L, int idx, const char *fname, const char *const *keys,
                   bool optional);

// Typed option getters on the table at `t` (absolute index); a wrong type raises.
lua_Integer xl_opt_int(lua_State *L, int t, const char *key, lua_Integer dflt);
lua_Number xl_opt_num(lua_State *L, int t, const char *key, lua_Number dflt);
bool xl_opt_bool(lua_State *L, int t, const char *key, bool dflt);
const char *xl_opt_str(lua_State *L, int t, const char *key, const char *dflt);
// One of `choices` (NULL-terminated): returns its index; raises listing the valid ones.
int xl_opt_enum(lua_State *L, int t, const char *key, const char *const *choices, int dflt);

// --- JSON -------------------------------------------------------------------------------------
// Push a JSON value as Lua (objects -> tables, arrays -> sequences, null -> nil).
void xl_push_json(lua_State *L, const cJSON *j);
// A Lua value as JSON (tables with 1..n keys are arrays; an empty table is `empty_array` ? [] :
// {}). NULL with `err` filled for functions, userdata, cycles or non-string keys.
cJSON *xl_to_json(lua_State *L, int idx, bool empty_array, char *err, size_t errlen);
// The same with numbers as exact text (cJSON raw items), for text that must read back as the
// same values (xa.json.encode): print it, do not inspect its numbers with cJSON_IsNumber.
cJSON *xl_to_json_exact(lua_State *L, int idx, bool empty_array, char *err, size_t errlen);

// A userdata box owning a cJSON tree (deleted by __gc): parse into *box so an error between
// parsing and freeing cannot leak it.
cJSON **xl_json_box(lua_State *L);

// --- shared userdata
// ------------------------------------------------------------------------------
#define XL_ENCODER   "xadapt.Encoder"
#define XL_MODEL     "xadapt.Model"
#define XL_HEAD      "xadapt.Head"
#define XL_TOKENIZER "xadapt.Tokenizer"
#define XL_BATCH     "xadapt.Batch"
#define XL_OPTIM     "xadapt.Optim"
#define XL_LOSS      "xadapt.Loss"
#define XL_FEATURES  "xadapt.Features"

typedef struct xl_tokenizer {
    xa_tokenizer *tok;
} xl_tokenizer;

typedef struct xl_encoder {
    xa_model *m;
} xl_encoder;

// Provable freezing: every frozen model's fingerprint is taken at load and checked again when
// the model is collected; a change is counted (xadapt run then exits 1) and reported.
extern bool xl_frozen_report; // print the fingerprints at load and at the end (--frozen-report)
extern int xl_frozen_violations;

typedef struct xl_head {
    xa_head *h; // NULL for a projection head (distillation student), built by the binding
    char *name;
    xa_head_opts opts;
    xa_tensor *proj_w, *proj_b; // projection heads: "head.<name>.weight/bias" (net parameters)
    xa_pool proj_pool;
} xl_head;

// What one forward leaves for the losses and predictions of the same step.
typedef struct xl_step {
    uint64_t generation; // xl_state generation the step belongs to (0: none)
    bool training;
    xa_net_out out;
    const float *mask;
    int64_t B, T;
    int32_t *mlm_labels; // arena, B*T, -100 where not masked (MLM steps)
    xa_vlm_feats feats;
    bool has_feats;
    int batch_ref; // registry reference to the batch userdata (kept alive for the step)
    bool backward_done; // the step's tape was walked (what trains may change again)
} xl_step;

typedef struct xl_model {
    xa_net *net;
    xa_tokenizer *tok; // the PLM's tokenizer (NULL when its directory has none)
    xl_step step;
} xl_model;

typedef struct xl_batch {
    xa_token_batch tok; // ids, attention mask (int), type ids
    float *mask;        // attention mask as floats
    uint8_t *special;   // 1 at special and padding positions
    int64_t rows, n;    // rows = n examples x choices
    int choices;        // 1 unless a choice batch
    int label_kind;     // 0 none, 1 integer, 2 number
    int32_t *labels;    // n
    char **where;       // n, "file:line" or "example #i" of each labelled example, for messages
    float *targets;     // n
    char **texts;       // n, for CLIP text features
    char **images;      // n * k image paths, or NULL
    int k;              // images per example
} xl_batch;

typedef struct xl_features {
    xa_vlm_cache *c;
    bool told; // its disk error was reported
} xl_features;

typedef struct xl_optim {
    xa_optim_opts o;
    xa_optim *opt;
    xa_net *net; // the network it is bound to (kept alive by uservalue 1)
    float last_norm;
} xl_optim;

xl_encoder *xl_check_encoder(lua_State *L, int idx);
xl_optim *xl_check_optim(lua_State *L, int idx);
xl_features *xl_check_features(lua_State *L, int idx);
xl_tokenizer *xl_check_tokenizer(lua_State *L, int idx);
// Load the tokenizer of a model directory: pushes a Tokenizer, or nil and a message (returns 2).
int xl_push_tokenizer(lua_State *L, const char *dir);
xl_model *xl_check_model(lua_State *L, int idx);
xl_head *xl_check_head(lua_State *L, int idx);
xl_batch *xl_check_batch(lua_State *L, int idx);
// A head of model `m` (at model_idx) given as a Head or a name; raises listing the heads.
xl_head *xl_model_head(lua_State *L, int model_idx, int idx);
// Whether the model's last forward is still this arena generation's step.
bool xl_step_live(lua_State *L, const xl_model *m);
// The step of the model's last forward (raises when there is none in this arena generation),
// its batch, and a head's output for it (NULL + context message on failure).
xl_step *xl_live_step(lua_State *L, xl_model *m);
xl_batch *xl_step_batch(lua_State *L, xl_model *m);
xa_tensor *xl_head_logits(lua_State *L, xl_step *s, xl_head *h);

// --- registration (each file adds its functions to the module table at `mod`) --------------------
void xl_open_model(lua_State *L, int mod);
void xl_open_random(lua_State *L, int mod);
void xl_open_data(lua_State *L, int mod);
void xl_open_train(lua_State *L, int mod);
void xl_open_features(lua_State *L, int mod);
void xl_open_eval(lua_State *L, int mod);
void xl_open_checkpoint(lua_State *L, int mod);
void xl_open_util(lua_State *L, int mod);

// Open the module (the C entry point for `require "xadapt"` and the runner).
int luaopen_xadapt(lua_State *L);

#endif
