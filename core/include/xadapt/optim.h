// Trainable parameters packed into contiguous slabs (values, gradients, optimizer moments), and
// the optimizers that update them: AdamW (decoupled weight decay, PyTorch semantics) and SGD
// with momentum; clipping by global norm and gradient accumulation.
#ifndef XADAPT_OPTIM_H
#define XADAPT_OPTIM_H

#include "xadapt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum xa_init_kind {
    XA_INIT_ZERO,
    XA_INIT_ONE,
    XA_INIT_NORMAL,  // N(0, a)
    XA_INIT_UNIFORM, // U(-a, a)
    XA_INIT_XAVIER,  // U(-b, b), b = a * sqrt(6 / (fan_in + fan_out)); a = 0 means 1
    XA_INIT_KAIMING, // PyTorch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
} xa_init_kind;

typedef struct xa_init {
    xa_init_kind kind;
    float a;
} xa_init;

typedef struct xa_params xa_params;

xa_params *xa_params_new(xa_ctx *ctx);
void xa_params_free(xa_params *ps);
// A trainable parameter owned by the set (names unique), initialised with the context's RNG.
// NULL + XA_EINVAL on a duplicate name or bad shape.
xa_tensor *xa_params_add(xa_params *ps, const char *name, int ndim, const int64_t *shape,
                         xa_init init);
size_t xa_params_count(const xa_params *ps);
xa_tensor *xa_params_at(const xa_params *ps, size_t i);
const char *xa_params_name(const xa_params *ps, size_t i);
xa_tensor *xa_params_find(const xa_params *ps, const char *name);
int64_t xa_params_numel(const xa_params *ps, bool trainable_only);
// Frozen parameters keep their values and receive no gradient.
void xa_params_set_trainable(xa_params *ps, size_t i, bool on);
// Weight decay applies by default to parameters of 2 or more dims (not to biases and norms).
void xa_params_set_decay(xa_params *ps, size_t i, bool on);
bool xa_params_decays(const xa_params *ps, size_t i);
void xa_params_zero_grad(xa_params *ps);
// Remove every parameter whose name starts with `prefix` (undoing a failed adapter creation).
void xa_params_remove_prefix(xa_params *ps, const char *prefix);
// Pack values and gradients into contiguous slabs (done by the optimizer; idempotent).
xa_status xa_params_pack(xa_params *ps);

typedef enum xa_optim_kind { XA_OPTIM_ADAMW, XA_OPTIM_SGD } xa_optim_kind;

typedef struct xa_optim_opts {
    xa_optim_kind kind;
    float lr;           // default learning rate when step gets lr < 0
    float beta1, beta2; // AdamW; 0.9, 0.999 when betas and eps are all left 0
    float eps;          // AdamW; 1e-8 when betas and eps are all left 0
    bool no_bias_correction; // AdamW without bias correction: BertAdam (LXMERT, XDBERT), and
                             // transformers' AdamW(correct_bias=False)
    float weight_decay; // AdamW: decoupled; SGD: L2 added to the gradient
    float momentum;     // SGD
    bool nesterov;      // SGD
    float clip_norm;    // clip the global gradient norm to this; 0 = off
} xa_optim_opts;

typedef struct xa_optim xa_optim;

// PyTorch's betas and eps when all three are 0 (a zero-initialised struct); once one is set,
// all three are used as given (beta1 = 0 is a real choice). Keeps a pointer to `ps`.
xa_optim *xa_optim_new(xa_ctx *ctx, xa_params *ps, const xa_optim_opts *opts);
void xa_optim_free(xa_optim *opt);
// One update from the accumulated gradients times `grad_scale` (1/k after k accumulated
// backward passes), then zero the gradients. lr < 0 uses opts.lr. As PyTorch does for a
// gradient of None, a parameter that no backward reached since the last step (an adapter,
// expert or head switched off) is not touched: no weight decay, no momentum, no step counted.
// A gradient whose global norm is NaN or Inf is refused (XA_ERANGE) and nothing changes.
xa_status xa_optim_step(xa_optim *opt, float lr, float grad_scale);
float xa_optim_grad_norm(const xa_optim *opt); // global norm before clipping, last step
void xa_optim_set_clip(xa_optim *opt, float clip_norm); // opts.clip_norm from now on; 0 = off
int64_t xa_optim_steps(const xa_optim *opt);
// Moments for checkpointing: numel floats each (m and v for AdamW; the momentum buffer for SGD
// in m, v NULL). Valid until the parameter set changes.
int64_t xa_optim_state(xa_optim *opt, float **m, float **v);
void xa_optim_set_steps(xa_optim *opt, int64_t steps);
// Per parameter (in the set's order), the updates it took part in: AdamW's bias correction
// counts these, as PyTorch keeps a step per parameter. Writable, for checkpoints; NULL on
// failure.
int64_t *xa_optim_param_steps(xa_optim *opt, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
