#!/usr/bin/python3
"""Independent PyTorch reference for xadapt's frozen encoders: writes the golden fixtures.

Re-implements BertModel, RobertaModel and CLIPModel (text + vision) forward passes from the
Hugging Face semantics written down in ../shared/research/hf-conventions.md (c.2, c.4), builds
tiny random checkpoints in exact HF layout (config.json + model.safetensors or shards) and
stores inputs and float64-computed outputs in expected.safetensors. It never runs at test time.

Only Debian's python3-torch (1.13) and python3-numpy are needed; no transformers/safetensors.
    /usr/bin/python3 tests/golden/reference.py --out tests/golden/fixtures           # missing ones
    /usr/bin/python3 tests/golden/reference.py --out tests/golden/fixtures --check   # verify
See docs/golden.md for what each fixture covers and the exact tensor names.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import zlib

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    sys.exit("reference.py needs Debian's python3-torch and python3-numpy (%s); "
             "run it with /usr/bin/python3" % e)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

GENERATOR = "tests/golden/reference.py v1"
DEFAULT_SEED = 20240611
ATOL_STORED_VS_F32 = 1e-5   # --check: float32 recompute from the files vs stored outputs
ATOL_STORED_VS_F64 = 2e-6   # --check: float64 recompute vs stored (only f32 storage rounding)
MUTATION_MIN_DIFF = 1e-3    # --check: every deliberate mistake must move some output this much,
# except swapping erf GELU and its tanh approximation: they differ by at most 4.7e-4 anywhere
# (at |x| = 2.7), and LayerNorm keeps the effect at that scale; 3x the tests' atol must do.
MUTATION_MIN_DIFF_GELU_SWAP = 3e-4

torch.set_grad_enabled(False)


# =============================================================================================
# Building blocks (all written from the HF semantics, in whatever dtype the weights carry)
# =============================================================================================

def act_fn(name, x):
    """ACT2FN subset. 'gelu' is the exact erf GELU (HF GELUActivation = F.gelu), 'gelu_new' and
    'gelu_pytorch_tanh' the tanh approximation (NewGELUActivation), 'quick_gelu' CLIP's
    x*sigmoid(1.702x)."""
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return torch.clamp(x, min=0.0)
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError("unsupported hidden_act %r" % name)


def swapped_act(name):
    """The activation a careless implementation might use instead (for mutation checks)."""
    return {"gelu": "gelu_new", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
            "quick_gelu": "gelu", "relu": "gelu"}[name]


def layer_norm(x, w, b, eps):
    """nn.LayerNorm over the last dim: biased variance, eps inside the square root."""
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def linear(x, W, name, bias=True):
    """nn.Linear: weight is [out, in], y = x @ W^T + b."""
    y = x @ W[name + ".weight"].transpose(0, 1)
    if bias:
        y = y + W[name + ".bias"]
    return y


def additive_padding_mask(attention_mask, dtype):
    """HF extended mask: (1 - mask) * finfo(dtype).min, shape [B, 1, 1, T] (broadcast on keys)."""
    m = attention_mask.to(dtype)[:, None, None, :]
    return (1.0 - m) * torch.finfo(dtype).min


def additive_causal_mask(T, dtype):
    """HF _create_4d_causal_attention_mask: finfo.min strictly above the diagonal, [1,1,T,T]."""
    return torch.full((T, T), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]


def self_attention(x, W, qkv, n_heads, masks, mut):
    """Multi-head self-attention without the output projection.

    qkv: names of the q, k, v Linear modules. masks: additive masks added one after the other
    to the scores before the softmax (HF adds CLIP's causal mask, then the padding mask).
    scores = q k^T / sqrt(head_dim) (BertSelfAttention; CLIPAttention scales q by
    head_dim**-0.5 first, which is the same value).
    """
    B, T, H = x.shape
    hd = H // n_heads

    def heads(t):
        return t.reshape(B, T, n_heads, hd).transpose(1, 2)  # [B, nh, T, hd]

    q = heads(linear(x, W, qkv[0]))
    k = heads(linear(x, W, qkv[1]))
    v = heads(linear(x, W, qkv[2]))
    scale = (1.0 / hd) if "attn_scale_hd" in mut else (1.0 / math.sqrt(hd))
    scores = (q @ k.transpose(-1, -2)) * scale
    for m in masks:
        scores = scores + m
    probs = torch.softmax(scores, dim=-1)  # dropout is off (eval mode)
    ctx = probs @ v                        # [B, nh, T, hd]
    return ctx.transpose(1, 2).reshape(B, T, H)


# =============================================================================================
# BERT / RoBERTa
# =============================================================================================
# Semantics followed (hf-conventions.md c.2/c.4 and transformers' modeling_bert/modeling_roberta):
#  * embeddings = word[input_ids] + token_type[token_type_ids] + position[position_ids], then
#    LayerNorm(eps=layer_norm_eps); dropout off.
#    BERT: position_ids = 0..T-1 for every row (padding does not matter).
#    RoBERTa: m = (input_ids != pad_token_id); position_ids = cumsum(m) * m + pad_token_id, so real
#    tokens start at pad+1 = 2 and pads get pad_token_id; token_type_ids default to zeros (row 0
#    of a [1, H] table). This is why max_position_embeddings = max_len + 2.
#  * post-LN blocks: a = LN(x + dense(SelfAttn(x))); out = LN(a + dense2(act(dense1(a)))),
#    additive padding mask (1-mask)*finfo.min on the keys; padded query rows are computed too
#    (they attend to the real tokens), exactly as HF returns them.
#  * hidden_states[0] = embedding output, hidden_states[i] = output of block i; last = [L].
#  * pooler = tanh(dense(h[:, 0])).
#  * BERT MLM head (cls.predictions): transform.dense -> ACT2FN[hidden_act] ->
#    transform.LayerNorm(eps) -> decoder (tied to word_embeddings when absent) + predictions.bias.
#  * RoBERTa MLM head (lm_head): dense -> gelu (always the erf GELU, whatever hidden_act says)
#    -> layer_norm(eps) -> decoder.weight (tied when absent) + lm_head.bias.

def bert_position_ids(input_ids, cfg, family, mut):
    B, T = input_ids.shape
    roberta_rule = (family == "roberta") != ("pos_wrong" in mut)
    if roberta_rule:
        pad = cfg["pad_token_id"]
        m = (input_ids != pad).to(torch.int64)
        return torch.cumsum(m, dim=1) * m + pad
    return torch.arange(T, dtype=torch.int64)[None, :].expand(B, T)


def bert_forward(W, cfg, input_ids, attention_mask, token_type_ids, family, mut=frozenset()):
    """W: canonical BertModel names (no 'bert.'/'roberta.' prefix, .weight/.bias), one float
    dtype. Returns an ordered dict of outputs named as in expected.safetensors."""
    dtype = W["embeddings.word_embeddings.weight"].dtype
    L, nh = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]
    if "eps_swap" in mut:
        eps = 1e-5 if eps < 1e-8 else 1e-12
    act = cfg["hidden_act"]
    if "act_swap" in mut:
        act = swapped_act(act)
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are implemented")

    position_ids = bert_position_ids(input_ids, cfg, family, mut)
    if token_type_ids is None or "tt_zero" in mut:
        token_type_ids = torch.zeros_like(input_ids)
    emb = (W["embeddings.word_embeddings.weight"][input_ids]
           + W["embeddings.token_type_embeddings.weight"][token_type_ids]
           + W["embeddings.position_embeddings.weight"][position_ids])
    h = layer_norm(emb, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)

    masks = [] if "no_mask" in mut else [additive_padding_mask(attention_mask, dtype)]
    out = {"position_ids": position_ids, "hidden_states.0": h}
    for i in range(L):
        p = "encoder.layer.%d." % i
        ctx = self_attention(h, W, (p + "attention.self.query", p + "attention.self.key",
                                    p + "attention.self.value"), nh, masks, mut)
        a = layer_norm(linear(ctx, W, p + "attention.output.dense") + h,
                       W[p + "attention.output.LayerNorm.weight"],
                       W[p + "attention.output.LayerNorm.bias"], eps)
        inter = act_fn(act, linear(a, W, p + "intermediate.dense"))
        h = layer_norm(linear(inter, W, p + "output.dense") + a,
                       W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps)
        out["hidden_states.%d" % (i + 1)] = h
    out["last_hidden_state"] = h

    if "pooler.dense.weight" in W:
        pooled = linear(h[:, 0], W, "pooler.dense")
        out["pooler_output"] = pooled if "pooler_no_tanh" in mut else torch.tanh(pooled)

    if "cls.predictions.bias" in W:  # BertForMaskedLM / BertForPreTraining head
        head_act = swapped_act(cfg["hidden_act"]) if "head_act_swap" in mut else cfg["hidden_act"]
        t = act_fn(head_act, linear(h, W, "cls.predictions.transform.dense"))
        t = layer_norm(t, W["cls.predictions.transform.LayerNorm.weight"],
                       W["cls.predictions.transform.LayerNorm.bias"], eps)
        dec = W.get("cls.predictions.decoder.weight", W["embeddings.word_embeddings.weight"])
        logits = t @ dec.transpose(0, 1)
        out["logits"] = logits if "head_no_bias" in mut else logits + W["cls.predictions.bias"]
    elif "lm_head.bias" in W:  # RobertaForMaskedLM head
        head_act = "gelu_new" if "head_act_swap" in mut else "gelu"
        t = act_fn(head_act, linear(h, W, "lm_head.dense"))
        t = layer_norm(t, W["lm_head.layer_norm.weight"], W["lm_head.layer_norm.bias"], eps)
        dec = W.get("lm_head.decoder.weight", W["embeddings.word_embeddings.weight"])
        logits = t @ dec.transpose(0, 1)
        out["logits"] = logits if "head_no_bias" in mut else logits + W["lm_head.bias"]
    return out


def bert_canonical(sd):
    """What a loader must do with a BERT/RoBERTa state dict: strip an optional 'bert.'/
    'roberta.' prefix, map legacy LayerNorm .gamma/.beta to .weight/.bias, drop the
    *.position_ids buffers and heads we do not evaluate (cls.seq_relationship)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("position_ids") or k.startswith("cls.seq_relationship."):
            continue
        nk = k
        for prefix in ("bert.", "roberta."):
            if nk.startswith(prefix):
                nk = nk[len(prefix):]
                break
        if nk.endswith(".gamma"):
            nk = nk[:-len(".gamma")] + ".weight"
        elif nk.endswith(".beta"):
            nk = nk[:-len(".beta")] + ".bias"
        if nk in out:
            raise ValueError("duplicate tensor after renaming: %s" % nk)
        out[nk] = v
    return out


def bert_required_names(cfg):
    names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
             "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
             "embeddings.LayerNorm.bias"]
    for i in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % i
        for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                  "output.dense", "output.LayerNorm"):
            names += [p + m + ".weight", p + m + ".bias"]
    return names


# =============================================================================================
# CLIP
# =============================================================================================
# Semantics followed (hf-conventions.md c.2/c.4 and transformers' modeling_clip):
#  * text: token_embedding[ids] + position_embedding[0..T-1]; pre-LN layers
#    x += out_proj(attn(layer_norm1(x))); x += fc2(act(fc1(layer_norm2(x)))), act = quick_gelu;
#    the causal mask (finfo.min above the diagonal) is added first, then the padding mask
#    (1-mask)*finfo.min; last_hidden_state = final_layer_norm(encoder output).
#    pooled = last_hidden_state at the EOT position: if text_config.eos_token_id == 2 (legacy
#    configs, before transformers PR #24773) the position is argmax(input_ids) per row (first
#    maximum), otherwise the first position where input_ids == eos_token_id.
#    text_embeds = text_projection(pooled), no bias.
#  * vision: Conv2d(3, H, kernel=stride=patch, no bias) == per-patch matmul, patches in row-major
#    grid order, channel-major (c, ky, kx) inside a patch; prepend class_embedding; add
#    position_embedding[0..N]; pre_layrnorm (real spelling); same pre-LN layers, no mask;
#    last_hidden_state = encoder output (BEFORE post_layernorm); pooled = post_layernorm(h[:,0]);
#    image_embeds = visual_projection(pooled), no bias.
#  * hidden_states[0] is the encoder input (text: embeddings; vision: after pre_layrnorm),
#    hidden_states[L] the encoder output (text: before final_layer_norm).
#  * logits_per_text = exp(logit_scale) * normalize(text_embeds) @ normalize(image_embeds)^T,
#    logits_per_image its transpose. Note: CLIPModel.forward returns text_embeds/image_embeds
#    already L2-normalized; we store the unnormalized projections (get_text_features /
#    CLIPTextModelWithProjection) as text_embeds/image_embeds and the normalized ones as
#    text_embeds_normalized/image_embeds_normalized.

def clip_encoder(h, W, prefix, cfg, masks, mut):
    nh = cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]
    if "eps_swap" in mut:
        eps = 1e-12
    act = swapped_act(cfg["hidden_act"]) if "act_swap" in mut else cfg["hidden_act"]
    states = [h]
    for i in range(cfg["num_hidden_layers"]):
        p = "%s.encoder.layers.%d." % (prefix, i)
        x = layer_norm(h, W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"], eps)
        x = self_attention(x, W, (p + "self_attn.q_proj", p + "self_attn.k_proj",
                                  p + "self_attn.v_proj"), nh, masks, mut)
        h = h + linear(x, W, p + "self_attn.out_proj")
        x = layer_norm(h, W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"], eps)
        h = h + linear(act_fn(act, linear(x, W, p + "mlp.fc1")), W, p + "mlp.fc2")
        states.append(h)
    return h, states, eps


def clip_eos_index(input_ids, eos_token_id, mut):
    legacy = (eos_token_id == 2) != ("pool_rule_swap" in mut)
    if legacy:
        return torch.argmax(input_ids, dim=-1)  # torch returns the first maximal index
    return torch.argmax((input_ids == eos_token_id).to(torch.int64), dim=-1)


def clip_text_forward(W, tcfg, input_ids, attention_mask, mut=frozenset()):
    dtype = W["text_model.embeddings.token_embedding.weight"].dtype
    B, T = input_ids.shape
    h = (W["text_model.embeddings.token_embedding.weight"][input_ids]
         + W["text_model.embeddings.position_embedding.weight"][torch.arange(T)][None])
    masks = []
    if "no_causal" not in mut:
        masks.append(additive_causal_mask(T, dtype))
    if "no_mask" not in mut:
        masks.append(additive_padding_mask(attention_mask, dtype))
    h, states, eps = clip_encoder(h, W, "text_model", tcfg, masks, mut)
    last = layer_norm(h, W["text_model.final_layer_norm.weight"],
                      W["text_model.final_layer_norm.bias"], eps)
    eos = clip_eos_index(input_ids, tcfg["eos_token_id"], mut)
    pooled = last[torch.arange(B), eos]
    return last, pooled, states, eos


def clip_patchify(pixel_values, patch):
    """[B, C, S, S] -> [B, (S/p)^2, C*p*p] in Conv2d weight order (c, ky, kx), row-major grid."""
    B, C, S, _ = pixel_values.shape
    g = S // patch
    x = pixel_values.reshape(B, C, g, patch, g, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * patch * patch)


def clip_vision_forward(W, vcfg, pixel_values, mut=frozenset()):
    H = vcfg["hidden_size"]
    patch = vcfg["patch_size"]
    wconv = W["vision_model.embeddings.patch_embedding.weight"]       # [H, C, p, p]
    patches = clip_patchify(pixel_values, patch)
    if "patch_transpose" in mut:
        g = vcfg["image_size"] // patch
        patches = patches.reshape(patches.shape[0], g, g, -1).transpose(1, 2).reshape(patches.shape)
    pe = patches @ wconv.reshape(H, -1).transpose(0, 1)                # [B, N, H]
    cls = W["vision_model.embeddings.class_embedding"].expand(pe.shape[0], 1, H)
    h = torch.cat([cls, pe], dim=1)
    h = h + W["vision_model.embeddings.position_embedding.weight"][None, :h.shape[1]]
    eps = vcfg["layer_norm_eps"]
    if "no_pre_layrnorm" not in mut:
        h = layer_norm(h, W["vision_model.pre_layrnorm.weight"],
                       W["vision_model.pre_layrnorm.bias"], 1e-12 if "eps_swap" in mut else eps)
    h, states, eps = clip_encoder(h, W, "vision_model", vcfg, [], mut)
    pooled = layer_norm(h[:, 0], W["vision_model.post_layernorm.weight"],
                        W["vision_model.post_layernorm.bias"], eps)
    last = h
    if "vision_post_ln_last" in mut:
        last = layer_norm(h, W["vision_model.post_layernorm.weight"],
                          W["vision_model.post_layernorm.bias"], eps)
    return last, pooled, states


def clip_forward(W, cfg, input_ids, attention_mask, pixel_values, mut=frozenset()):
    tl, tp, tstates, eos = clip_text_forward(W, cfg["text_config"], input_ids, attention_mask, mut)
    vl, vp, vstates = clip_vision_forward(W, cfg["vision_config"], pixel_values, mut)
    text_embeds = tp @ W["text_projection.weight"].transpose(0, 1)
    image_embeds = vp @ W["visual_projection.weight"].transpose(0, 1)
    tn = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
    vn = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
    logits_per_text = torch.exp(W["logit_scale"]) * (tn @ vn.transpose(0, 1))
    out = {"text_eos_index": eos}
    for i, s in enumerate(tstates):
        out["text_hidden_states.%d" % i] = s
    out.update({"text_last_hidden_state": tl, "text_pooler_output": tp, "text_embeds": text_embeds,
                "text_embeds_normalized": tn})
    for i, s in enumerate(vstates):
        out["vision_hidden_states.%d" % i] = s
    out.update({"vision_last_hidden_state": vl, "vision_pooler_output": vp,
                "image_embeds": image_embeds, "image_embeds_normalized": vn,
                "logits_per_text": logits_per_text,
                "logits_per_image": logits_per_text.transpose(0, 1)})
    return out


def clip_canonical(sd):
    """CLIPModel names are used as is; the *.position_ids buffers of older files are dropped."""
    return {k: v for k, v in sd.items() if not k.endswith("position_ids")}


def clip_required_names(cfg):
    names = ["logit_scale", "text_projection.weight", "visual_projection.weight",
             "text_model.embeddings.token_embedding.weight",
             "text_model.embeddings.position_embedding.weight",
             "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias",
             "vision_model.embeddings.class_embedding",
             "vision_model.embeddings.patch_embedding.weight",
             "vision_model.embeddings.position_embedding.weight",
             "vision_model.pre_layrnorm.weight", "vision_model.pre_layrnorm.bias",
             "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"]
    for tower, key in (("text_model", "text_config"), ("vision_model", "vision_config")):
        for i in range(cfg[key]["num_hidden_layers"]):
            p = "%s.encoder.layers.%d." % (tower, i)
            for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                      "self_attn.out_proj", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"):
                names += [p + m + ".weight", p + m + ".bias"]
    return names


# =============================================================================================
# Random weights, configs and inputs
# =============================================================================================
# Linear weights (and the patch Conv2d) ~ N(0, 1/fan_in) so that activations are O(1): attention
# is far from uniform and GELU variants / scales / masks change outputs by much more than the
# tests' atol (HF's N(0, 0.02) would leave attention almost uniform and GELU almost linear).
# Text embedding tables ~ N(0, 0.02) as HF initializes them: their sum has a small variance,
# which makes the LayerNorm eps (1e-12 vs 1e-5) visible; the word embeddings of MLM fixtures use
# 0.1 because they are also the tied decoder. CLIP class_embedding ~ N(0, 0.5), vision
# position_embedding ~ N(0, 0.1). LayerNorm weights ~ 1 + N(0, 0.1), all biases ~ N(0, 0.02),
# so a forgotten or swapped tensor always shows (--check proves it with deliberate mistakes).

class WeightMaker:
    def __init__(self, rng):
        self.rng = rng
        self.W = {}

    def normal(self, name, shape, std, mean=0.0):
        self.W[name] = torch.from_numpy(mean + std * self.rng.standard_normal(shape))

    def linear(self, name, n_out, n_in, bias=True):
        self.normal(name + ".weight", (n_out, n_in), 1.0 / math.sqrt(n_in))
        if bias:
            self.normal(name + ".bias", (n_out,), 0.02)

    def ln(self, name, n):
        self.normal(name + ".weight", (n,), 0.1, mean=1.0)
        self.normal(name + ".bias", (n,), 0.02)


def bert_config(arch, model_type, vocab, hidden, layers, heads, inter, max_pos, act="gelu",
                eps=1e-12, type_vocab=2, pad=0, torch_dtype="float32", **extra):
    cfg = {"architectures": [arch], "attention_probs_dropout_prob": 0.1, "hidden_act": act,
           "hidden_dropout_prob": 0.1, "hidden_size": hidden, "initializer_range": 0.02,
           "intermediate_size": inter, "layer_norm_eps": eps, "max_position_embeddings": max_pos,
           "model_type": model_type, "num_attention_heads": heads, "num_hidden_layers": layers,
           "pad_token_id": pad, "position_embedding_type": "absolute", "torch_dtype": torch_dtype,
           "transformers_version": "4.41.2", "type_vocab_size": type_vocab, "use_cache": True,
           "vocab_size": vocab}
    cfg.update(extra)
    return cfg


def bert_weights(rng, cfg, pooler, head):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    m = WeightMaker(rng)
    # The word embeddings double as the (tied) MLM decoder: with std 0.02 the logits would be
    # too small for a wrong head activation to show, so MLM fixtures use a larger std.
    m.normal("embeddings.word_embeddings.weight", (V, H), 0.02 if head is None else 0.1)
    m.normal("embeddings.position_embeddings.weight", (cfg["max_position_embeddings"], H), 0.02)
    m.normal("embeddings.token_type_embeddings.weight", (cfg["type_vocab_size"], H), 0.02)
    m.ln("embeddings.LayerNorm", H)
    for i in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % i
        for n in ("query", "key", "value"):
            m.linear(p + "attention.self." + n, H, H)
        m.linear(p + "attention.output.dense", H, H)
        m.ln(p + "attention.output.LayerNorm", H)
        m.linear(p + "intermediate.dense", I, H)
        m.linear(p + "output.dense", H, I)
        m.ln(p + "output.LayerNorm", H)
    if pooler:
        m.linear("pooler.dense", H, H)
    if head == "bert_mlm":
        m.linear("cls.predictions.transform.dense", H, H)
        m.ln("cls.predictions.transform.LayerNorm", H)
        m.normal("cls.predictions.bias", (V,), 0.02)
        m.linear("cls.seq_relationship", 2, H)  # present in real checkpoints, ignored
    elif head == "roberta_lm":
        m.linear("lm_head.dense", H, H)
        m.ln("lm_head.layer_norm", H)
        m.normal("lm_head.bias", (V,), 0.02)
    return m.W


def clip_config(text, vision, proj, torch_dtype="float32"):
    t = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu",
         "initializer_factor": 1.0, "initializer_range": 0.02, "layer_norm_eps": 1e-05,
         "model_type": "clip_text_model", "projection_dim": proj}
    t.update(text)
    v = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu",
         "initializer_factor": 1.0, "initializer_range": 0.02, "layer_norm_eps": 1e-05,
         "model_type": "clip_vision_model", "num_channels": 3, "projection_dim": proj}
    v.update(vision)
    return {"architectures": ["CLIPModel"], "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": proj,
            "text_config": t, "torch_dtype": torch_dtype, "transformers_version": "4.41.2",
            "vision_config": v}


def clip_weights(rng, cfg, logit_scale):
    t, v, P = cfg["text_config"], cfg["vision_config"], cfg["projection_dim"]
    m = WeightMaker(rng)
    Ht, Hv = t["hidden_size"], v["hidden_size"]
    m.normal("text_model.embeddings.token_embedding.weight", (t["vocab_size"], Ht), 0.02)
    m.normal("text_model.embeddings.position_embedding.weight",
             (t["max_position_embeddings"], Ht), 0.02)
    ps, C = v["patch_size"], v["num_channels"]
    n_pos = (v["image_size"] // ps) ** 2 + 1
    m.normal("vision_model.embeddings.class_embedding", (Hv,), 0.5)
    m.normal("vision_model.embeddings.patch_embedding.weight", (Hv, C, ps, ps),
             1.0 / math.sqrt(C * ps * ps))
    m.normal("vision_model.embeddings.position_embedding.weight", (n_pos, Hv), 0.1)
    m.ln("vision_model.pre_layrnorm", Hv)
    for tower, c in (("text_model", t), ("vision_model", v)):
        H, I = c["hidden_size"], c["intermediate_size"]
        for i in range(c["num_hidden_layers"]):
            p = "%s.encoder.layers.%d." % (tower, i)
            m.ln(p + "layer_norm1", H)
            for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
                m.linear(p + "self_attn." + n, H, H)
            m.ln(p + "layer_norm2", H)
            m.linear(p + "mlp.fc1", I, H)
            m.linear(p + "mlp.fc2", H, I)
    m.ln("text_model.final_layer_norm", Ht)
    m.ln("vision_model.post_layernorm", Hv)
    m.linear("text_projection", P, Ht, bias=False)
    m.linear("visual_projection", P, Hv, bias=False)
    m.W["logit_scale"] = torch.tensor(float(logit_scale), dtype=torch.float64)
    return m.W


def bert_inputs(rng, V, T, rows, cls, sep, pad, first_id, pair_sep):
    """rows: list of (len_a, len_b); builds CLS A SEP [B SEP] (BERT, pair_sep=[sep]) or
    <s> A </s> [</s> B </s>] (RoBERTa, pair_sep=[sep, sep]) right-padded with `pad`."""
    B = len(rows)
    ids = np.full((B, T), pad, dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    tt = np.zeros((B, T), dtype=np.int64)
    for b, (la, lb) in enumerate(rows):
        seq = [cls] + list(rng.integers(first_id, V, la)) + [sep]
        types = [0] * len(seq)
        if lb:
            part = pair_sep[1:] + list(rng.integers(first_id, V, lb)) + [sep]
            seq += part
            types += [1] * len(part)
        assert len(seq) <= T, (len(seq), T)
        ids[b, :len(seq)] = seq
        mask[b, :len(seq)] = 1
        tt[b, :len(seq)] = types
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(tt)


def clip_text_inputs(rng, T, rows, bos, eos, lo, hi):
    """rows: list of (n_tokens, pad_id, forced) -> BOS tokens EOS pad...; `forced` maps a
    position to an id (used to place ids above eos_token_id before the EOT)."""
    B = len(rows)
    ids = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    for b, (n, pad_id, forced) in enumerate(rows):
        seq = [bos] + list(rng.integers(lo, hi, n)) + [eos]
        for pos, tok in forced.items():
            seq[pos] = tok
        assert len(seq) <= T
        ids[b, :] = pad_id
        ids[b, :len(seq)] = seq
        mask[b, :len(seq)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


# =============================================================================================
# Fixture definitions
# =============================================================================================
STORAGE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _bert_spec(name, doc, cfg, storage="F32", prefix="", legacy_ln=False, pooler=True, head=None,
               decoder_present=False, position_ids_buffer=False, shards=1, T=12,
               rows=((4, 5), (6, 0), (2, 2)), family="bert"):
    return dict(name=name, doc=doc, family=family, cfg=cfg, storage=storage, prefix=prefix,
                legacy_ln=legacy_ln, pooler=pooler, head=head, decoder_present=decoder_present,
                position_ids_buffer=position_ids_buffer, shards=shards, T=T, rows=rows)


FIXTURES = [
    _bert_spec("bert_tiny", "plain BertModel keys, pooler, gelu (erf), eps 1e-12, sentence pairs",
               bert_config("BertModel", "bert", 211, 32, 2, 4, 37, 40)),
    _bert_spec("bert_prefixed_mlm",
               "BertForMaskedLM-style file: 'bert.' prefix, legacy LayerNorm .gamma/.beta, "
               "I64 bert.embeddings.position_ids buffer, cls.predictions head with the decoder "
               "ABSENT (tied to word embeddings), cls.seq_relationship present (ignored)",
               bert_config("BertForMaskedLM", "bert", 199, 48, 3, 3, 53, 48),
               prefix="bert.", legacy_ln=True, head="bert_mlm", position_ids_buffer=True, T=11,
               rows=((4, 4), (5, 0), (1, 1))),
    _bert_spec("bert_sharded", "BertModel split into two shards + model.safetensors.index.json",
               bert_config("BertModel", "bert", 157, 32, 3, 2, 64, 40), shards=2, T=10,
               rows=((3, 4), (2, 1))),
    _bert_spec("bert_f16",
               "all float tensors stored F16 (reference computed from the rounded values)",
               bert_config("BertModel", "bert", 131, 32, 2, 4, 45, 40, torch_dtype="float16"),
               storage="F16", T=9, rows=((3, 3), (4, 0), (1, 2))),
    _bert_spec("bert_bf16",
               "all float tensors stored BF16 (reference computed from the rounded values)",
               bert_config("BertModel", "bert", 131, 32, 2, 4, 45, 40, torch_dtype="bfloat16"),
               storage="BF16", T=9, rows=((3, 3), (4, 0), (1, 2))),
    _bert_spec("bert_gelu_new", "hidden_act gelu_new (tanh approximation), head_dim 10",
               bert_config("BertModel", "bert", 173, 40, 2, 4, 71, 40, act="gelu_new")),
    _bert_spec("roberta_tiny",
               "RobertaForMaskedLM-style file: 'roberta.' prefix, no pooler, lm_head with "
               "decoder.weight present (bitwise equal to the word embeddings, as tied), pad 1, "
               "positions from pad+1, type_vocab_size 1, eps 1e-5",
               bert_config("RobertaForMaskedLM", "roberta", 167, 32, 2, 2, 59, 40, eps=1e-05,
                           type_vocab=1, pad=1, bos_token_id=0, eos_token_id=2),
               family="roberta", prefix="roberta.", pooler=False, head="roberta_lm",
               decoder_present=True, T=12, rows=((4, 4), (7, 0), (2, 0))),
    dict(name="clip_tiny", family="clip", storage="F32", position_ids_buffer=True,
         doc="CLIPModel, legacy text_config.eos_token_id = 2 -> pooled at argmax(input_ids); "
             "older-file position_ids buffers present; 3 texts x 2 images",
         cfg=clip_config({"vocab_size": 120, "hidden_size": 32, "intermediate_size": 37,
                          "num_attention_heads": 4, "num_hidden_layers": 2,
                          "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 2,
                          "pad_token_id": 1},
                         {"hidden_size": 48, "intermediate_size": 75, "num_attention_heads": 3,
                          "num_hidden_layers": 2, "image_size": 32, "patch_size": 8}, 24),
         logit_scale=1.5, T=12, n_images=2,
         # BOS=118, EOS=119 (the largest ids, like 49406/49407); pad with EOS (HF tokenizer) or 0
         bos=118, eos=119, lo=3, hi=118,
         rows=[(10, 119, {}), (5, 119, {}), (2, 0, {})]),
    dict(name="clip_tiny_eos", family="clip", storage="F32", position_ids_buffer=False,
         doc="CLIPModel with a real eos_token_id (117) and added tokens 118/119 above it in the "
             "text: first-EOT pooling differs from argmax pooling in rows 0 and 1",
         cfg=clip_config({"vocab_size": 120, "hidden_size": 32, "intermediate_size": 37,
                          "num_attention_heads": 4, "num_hidden_layers": 2,
                          "max_position_embeddings": 16, "bos_token_id": 116, "eos_token_id": 117,
                          "pad_token_id": 1},
                         {"hidden_size": 48, "intermediate_size": 75, "num_attention_heads": 3,
                          "num_hidden_layers": 2, "image_size": 32, "patch_size": 8}, 24),
         logit_scale=2.0, T=12, n_images=2,
         bos=116, eos=117, lo=3, hi=116,
         rows=[(10, 117, {3: 119}), (6, 1, {2: 118, 5: 119}), (3, 117, {})]),
]
FIXTURE_NAMES = [f["name"] for f in FIXTURES]


def fixture_rng(seed, name):
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def round_to_storage(W, storage):
    """Stored tensors (in the storage dtype) and the exact float64 values they hold."""
    stored = {k: v.to(STORAGE[storage]) for k, v in W.items()}
    return stored, {k: v.to(torch.float64) for k, v in stored.items()}


def bert_file_layout(spec, stored):
    """Canonical names -> names as they appear in the checkpoint file."""
    out = {}
    for k, v in stored.items():
        nk = k if k.startswith(("cls.", "lm_head.")) else spec["prefix"] + k
        if spec["legacy_ln"]:
            if ".LayerNorm.weight" in nk:
                nk = nk.replace(".LayerNorm.weight", ".LayerNorm.gamma")
            elif ".LayerNorm.bias" in nk:
                nk = nk.replace(".LayerNorm.bias", ".LayerNorm.beta")
        out[nk] = v
    if spec["decoder_present"]:
        out["lm_head.decoder.weight"] = stored["embeddings.word_embeddings.weight"].clone()
    if spec["position_ids_buffer"]:
        out[spec["prefix"] + "embeddings.position_ids"] = \
            torch.arange(spec["cfg"]["max_position_embeddings"], dtype=torch.int64)[None]
    return out


def clip_file_layout(spec, stored):
    out = dict(stored)
    if spec["position_ids_buffer"]:
        t, v = spec["cfg"]["text_config"], spec["cfg"]["vision_config"]
        out["text_model.embeddings.position_ids"] = \
            torch.arange(t["max_position_embeddings"], dtype=torch.int64)[None]
        n_pos = (v["image_size"] // v["patch_size"]) ** 2 + 1
        out["vision_model.embeddings.position_ids"] = torch.arange(n_pos, dtype=torch.int64)[None]
    return out


def build(spec, seed):
    """-> (config dict, file tensors, inputs dict, outputs dict (float64 / int64))."""
    rng = fixture_rng(seed, spec["name"])
    cfg = spec["cfg"]
    if spec["family"] in ("bert", "roberta"):
        W = bert_weights(rng, cfg, spec["pooler"], spec["head"])
        stored, W64 = round_to_storage(W, spec["storage"])
        files = bert_file_layout(spec, stored)
        if spec["family"] == "roberta":
            ids, mask, tt = bert_inputs(rng, cfg["vocab_size"], spec["T"], spec["rows"], cls=0,
                                        sep=2, pad=cfg["pad_token_id"], first_id=4,
                                        pair_sep=[2, 2])
            tt = torch.zeros_like(ids)  # RoBERTa has one token type; its tokenizer emits zeros
        else:
            ids, mask, tt = bert_inputs(rng, cfg["vocab_size"], spec["T"], spec["rows"], cls=2,
                                        sep=3, pad=cfg["pad_token_id"], first_id=5, pair_sep=[3])
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
        outputs = bert_forward(W64, cfg, ids, mask, tt, spec["family"])
    else:
        W = clip_weights(rng, cfg, spec["logit_scale"])
        stored, W64 = round_to_storage(W, spec["storage"])
        files = clip_file_layout(spec, stored)
        ids, mask = clip_text_inputs(rng, spec["T"], spec["rows"], spec["bos"], spec["eos"],
                                     spec["lo"], spec["hi"])
        v = cfg["vision_config"]
        S = v["image_size"]
        pix = torch.from_numpy(rng.standard_normal((spec["n_images"], v["num_channels"], S, S)))
        pix = pix.to(torch.float32)  # what is stored; the reference uses exactly these values
        inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pix}
        outputs = clip_forward(W64, cfg, ids, mask, pix.to(torch.float64))
    return cfg, files, inputs, outputs


def expected_tensors(inputs, outputs):
    t = dict(inputs)
    for k, v in outputs.items():
        t[k] = v.to(torch.int64) if not v.is_floating_point() else v.to(torch.float32)
    return t


def shard_names(n):
    return ["model-%05d-of-%05d.safetensors" % (i + 1, n) for i in range(n)]


def split_shards(files, n):
    """The first half of the names (sorted) in shard 1, the rest in shard 2. For bert_sharded
    this puts encoder.layer.1 across both shards: a loader must not assume that a layer, or
    any group of tensors, lives in one file."""
    names = sorted(files)
    cut = len(names) // n
    parts = [names[i * cut:(i + 1) * cut] if i < n - 1 else names[i * cut:] for i in range(n)]
    return [{k: files[k] for k in part} for part in parts]


def write_fixture(spec, seed, out_dir):
    cfg, files, inputs, outputs = build(spec, seed)
    d = os.path.join(out_dir, spec["name"])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    meta = {"format": "pt"}
    if spec.get("shards", 1) > 1:
        weight_map = {}
        total = 0
        for fname, part in zip(shard_names(spec["shards"]), split_shards(files, spec["shards"])):
            st_io.save(os.path.join(d, fname), part, meta)
            for k, v in part.items():
                weight_map[k] = fname
                total += v.numel() * v.element_size()
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    else:
        st_io.save(os.path.join(d, "model.safetensors"), files, meta)
    emeta = {"format": "pt", "fixture": spec["name"], "family": spec["family"],
             "seed": str(seed), "generator": GENERATOR, "reference_precision": "float64"}
    st_io.save(os.path.join(d, "expected.safetensors"), expected_tensors(inputs, outputs), emeta)


def fixture_files(spec):
    model = shard_names(spec["shards"]) + ["model.safetensors.index.json"] \
        if spec.get("shards", 1) > 1 else ["model.safetensors"]
    return ["config.json"] + model + ["expected.safetensors"]


def fixture_complete(spec, out_dir):
    return all(os.path.isfile(os.path.join(out_dir, spec["name"], f)) for f in fixture_files(spec))


# =============================================================================================
# Loading a fixture back (the path a C loader has to follow) and --check
# =============================================================================================

def load_checkpoint(d):
    """config.json + model.safetensors, or the shards listed in model.safetensors.index.json."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    index_path = os.path.join(d, "model.safetensors.index.json")
    sd = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        total = 0
        for fname in sorted(set(index["weight_map"].values())):
            tensors, _ = st_io.check_canonical_layout(os.path.join(d, fname))
            for k, v in tensors.items():
                if index["weight_map"].get(k) != fname:
                    raise ValueError("%s: tensor %s not mapped to this shard" % (fname, k))
                if k in sd:
                    raise ValueError("tensor %s in two shards" % k)
                sd[k] = v
                total += v.numel() * v.element_size()
        if set(sd) != set(index["weight_map"]):
            raise ValueError("weight_map names tensors that no shard holds")
        if total != index["metadata"]["total_size"]:
            raise ValueError("index total_size %d != %d" % (index["metadata"]["total_size"], total))
    else:
        sd, _ = st_io.check_canonical_layout(os.path.join(d, "model.safetensors"))
    return cfg, sd


def canonical_weights(cfg, sd, dtype):
    if cfg["model_type"] == "clip":
        W = clip_canonical(sd)
        required = clip_required_names(cfg)
    else:
        W = bert_canonical(sd)
        required = bert_required_names(cfg)
    missing = [n for n in required if n not in W]
    if missing:
        raise ValueError("missing tensors: %s" % ", ".join(missing[:5]))
    return {k: v.to(dtype) for k, v in W.items()}


def run_fixture(cfg, W, exp, mut=frozenset()):
    dtype = next(iter(W.values())).dtype
    if cfg["model_type"] == "clip":
        return clip_forward(W, cfg, exp["input_ids"], exp["attention_mask"],
                            exp["pixel_values"].to(dtype), mut)
    family = "roberta" if cfg["model_type"] == "roberta" else "bert"
    return bert_forward(W, cfg, exp["input_ids"], exp["attention_mask"], exp["token_type_ids"],
                        family, mut)


def max_diff(outputs, exp, floats_only=False):
    worst, where = 0.0, None
    for k, v in outputs.items():
        if k not in exp:
            raise ValueError("output %s missing from expected.safetensors" % k)
        if not v.is_floating_point():
            if floats_only:  # mutations must show in the float outputs, not just in the ids
                continue
            if not torch.equal(v.to(torch.int64), exp[k]):
                return float("inf"), k
            continue
        d = (v.to(torch.float64) - exp[k].to(torch.float64)).abs().max().item()
        if d > worst:
            worst, where = d, k
    return worst, where


# Deliberate mistakes that the fixture must expose (a test that cannot fail is a defect).
MUTATIONS = {
    "bert": ["no_mask", "attn_scale_hd", "act_swap", "eps_swap", "pos_wrong", "tt_zero",
             "pooler_no_tanh", "head_no_bias", "head_act_swap"],
    "roberta": ["no_mask", "attn_scale_hd", "act_swap", "eps_swap", "pos_wrong", "head_no_bias",
                "head_act_swap"],
    "clip": ["no_mask", "no_causal", "attn_scale_hd", "act_swap", "eps_swap", "vision_post_ln_last",
             "no_pre_layrnorm", "patch_transpose"],
}


def mutations_for(spec):
    muts = list(MUTATIONS[spec["family"]])
    if spec["family"] == "bert":
        if not spec["pooler"]:
            muts.remove("pooler_no_tanh")
        if spec["head"] is None:
            muts = [m for m in muts if not m.startswith("head_")]
    if spec["name"] == "clip_tiny_eos":
        muts.append("pool_rule_swap")
    return muts


def check_fixture(spec, out_dir, seed_override=None):
    d = os.path.join(out_dir, spec["name"])
    report = {}
    cfg, sd = load_checkpoint(d)
    exp, meta = st_io.check_canonical_layout(os.path.join(d, "expected.safetensors"))
    if meta.get("fixture") != spec["name"]:
        raise ValueError("%s: metadata names fixture %r" % (d, meta.get("fixture")))
    # Stored files must be exactly what this script generates (deterministic, same seed).
    seed = seed_override if seed_override is not None else int(meta["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        write_fixture(spec, seed, tmp)
        for f in fixture_files(spec):
            with open(os.path.join(tmp, spec["name"], f), "rb") as a:
                fresh = a.read()
            with open(os.path.join(d, f), "rb") as b:
                if b.read() != fresh:
                    raise ValueError("%s/%s differs from a fresh generation (seed %d)"
                                     % (d, f, seed))
    # Float32 recompute from the files (HF-style loading), as the C code will do it.
    W32 = canonical_weights(cfg, sd, torch.float32)
    report["f32"], report["f32_at"] = max_diff(run_fixture(cfg, W32, exp), exp)
    if report["f32"] > ATOL_STORED_VS_F32:
        raise ValueError("%s: float32 recompute differs by %.3g at %s"
                         % (spec["name"], report["f32"], report["f32_at"]))
    # Float64 recompute: only the float32 rounding of the stored outputs should remain.
    W64 = canonical_weights(cfg, sd, torch.float64)
    report["f64"], report["f64_at"] = max_diff(run_fixture(cfg, W64, exp), exp)
    if report["f64"] > ATOL_STORED_VS_F64:
        raise ValueError("%s: float64 recompute differs by %.3g at %s"
                         % (spec["name"], report["f64"], report["f64_at"]))
    if cfg["model_type"] == "clip":  # the patch matmul must equal HF's Conv2d
        v = cfg["vision_config"]
        conv = torch.nn.functional.conv2d(exp["pixel_values"].to(torch.float64),
                                          W64["vision_model.embeddings.patch_embedding.weight"],
                                          stride=v["patch_size"]).flatten(2).transpose(1, 2)
        mine = clip_patchify(exp["pixel_values"].to(torch.float64), v["patch_size"]) @ \
            W64["vision_model.embeddings.patch_embedding.weight"].reshape(v["hidden_size"], -1).T
        assert (conv - mine).abs().max().item() < 1e-12
        for a, b in (("logits_per_text", "logits_per_image"),):
            assert torch.equal(exp[a].T, exp[b])
    # Independent structure check: torch.nn's own transformer layer, block by block.
    report["torch_nn"] = cross_check_torch_nn(cfg, W64, exp)
    if report["torch_nn"] > ATOL_STORED_VS_F32:
        raise ValueError("%s: torch.nn.TransformerEncoderLayer disagrees by %.3g"
                         % (spec["name"], report["torch_nn"]))
    # Every deliberate mistake must move some output by well over the tests' tolerance.
    report["mutations"] = {}
    weak = []
    for m in mutations_for(spec):
        diff, where = max_diff(run_fixture(cfg, W64, exp, frozenset([m])), exp, floats_only=True)
        report["mutations"][m] = (diff, where)
        gelu_swap = m in ("act_swap", "head_act_swap") and cfg["model_type"] != "clip"
        if diff < (MUTATION_MIN_DIFF_GELU_SWAP if gelu_swap else MUTATION_MIN_DIFF):
            weak.append("%s only changes outputs by %.3g" % (m, diff))
    if weak:
        raise ValueError("%s: %s" % (spec["name"], "; ".join(weak)))
    return report


def _torch_layer(W, p, names, H, nh, inter, act, eps, norm_first):
    """torch.nn.TransformerEncoderLayer loaded with one of our blocks (float64, dropout 0)."""
    layer = torch.nn.TransformerEncoderLayer(H, nh, dim_feedforward=inter, dropout=0.0,
                                             activation=act, layer_norm_eps=eps, batch_first=True,
                                             norm_first=norm_first, dtype=torch.float64)
    q, k, v, o, n1, f1, f2, n2 = (p + n for n in names)
    sd = {"self_attn.in_proj_weight":
          torch.cat([W[q + ".weight"], W[k + ".weight"], W[v + ".weight"]]),
          "self_attn.in_proj_bias": torch.cat([W[q + ".bias"], W[k + ".bias"], W[v + ".bias"]]),
          "self_attn.out_proj.weight": W[o + ".weight"], "self_attn.out_proj.bias": W[o + ".bias"],
          "linear1.weight": W[f1 + ".weight"], "linear1.bias": W[f1 + ".bias"],
          "linear2.weight": W[f2 + ".weight"], "linear2.bias": W[f2 + ".bias"],
          "norm1.weight": W[n1 + ".weight"], "norm1.bias": W[n1 + ".bias"],
          "norm2.weight": W[n2 + ".weight"], "norm2.bias": W[n2 + ".bias"]}
    layer.load_state_dict(sd)
    return layer.train()  # train mode (dropout 0) keeps torch off its fused fast path


def _torch_act(name):
    if name == "gelu":
        return "gelu"  # F.gelu, erf form
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: torch.nn.functional.gelu(x, approximate="tanh")
    if name == "relu":
        return "relu"
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    raise ValueError(name)


def cross_check_torch_nn(cfg, W64, exp):
    """Re-run every encoder block with torch.nn.TransformerEncoderLayer (an implementation we
    did not write: MultiheadAttention, its masking and scaling, LayerNorm, F.gelu) on the
    stored hidden_states[i] and compare with hidden_states[i+1]. Returns the largest diff."""
    worst = 0.0
    if cfg["model_type"] == "clip":
        towers = [("text_model", cfg["text_config"], "text_hidden_states."),
                  ("vision_model", cfg["vision_config"], "vision_hidden_states.")]
        names = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                 "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2")
        for tower, c, key in towers:
            text = tower == "text_model"
            for i in range(c["num_hidden_layers"]):
                layer = _torch_layer(W64, "%s.encoder.layers.%d." % (tower, i), names,
                                     c["hidden_size"], c["num_attention_heads"],
                                     c["intermediate_size"],
                                     _torch_act(c["hidden_act"]), c["layer_norm_eps"], True)
                x = exp[key + str(i)].to(torch.float64)
                T = x.shape[1]
                kw = {}
                if text:
                    kw["src_mask"] = torch.ones(T, T, dtype=torch.bool).triu(1)
                    kw["src_key_padding_mask"] = exp["attention_mask"] == 0
                y = layer(x, **kw)
                worst = max(worst, (y - exp[key + str(i + 1)].to(torch.float64)).abs().max().item())
        return worst
    names = ("attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
             "output.dense", "output.LayerNorm")
    for i in range(cfg["num_hidden_layers"]):
        layer = _torch_layer(W64, "encoder.layer.%d." % i, names, cfg["hidden_size"],
                             cfg["num_attention_heads"], cfg["intermediate_size"],
                             _torch_act(cfg["hidden_act"]), cfg["layer_norm_eps"], False)
        x = exp["hidden_states.%d" % i].to(torch.float64)
        y = layer(x, src_key_padding_mask=exp["attention_mask"] == 0)
        want = exp["hidden_states.%d" % (i + 1)].to(torch.float64)
        worst = max(worst, (y - want).abs().max().item())
    return worst


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def describe(out_dir):
    """Print the tensors stored in each expected.safetensors (used to write docs/golden.md)."""
    for spec in FIXTURES:
        d = os.path.join(out_dir, spec["name"])
        tensors, _, info = st_io.load(os.path.join(d, "expected.safetensors"))
        print("## %s (%d bytes)" % (spec["name"], dir_size(d)))
        for n in sorted(tensors, key=lambda n: (n.split(".")[0], int(n.split(".")[-1])
                                                if n.split(".")[-1].isdigit() else -1, n)):
            print("  %-28s %-4s %s" % (n, st_io.dtype_name(tensors[n]), list(tensors[n].shape)))


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "fixtures"), help="fixtures directory")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--only", action="append", choices=FIXTURE_NAMES, help="restrict to a fixture")
    ap.add_argument("--force", action="store_true", help="regenerate fixtures that already exist")
    ap.add_argument("--check", action="store_true", help="verify the fixtures instead of writing")
    ap.add_argument("--describe", action="store_true", help="list the stored expected tensors")
    args = ap.parse_args(argv)
    specs = [s for s in FIXTURES if not args.only or s["name"] in args.only]

    if args.describe:
        describe(args.out)
        return 0
    if args.check:
        failed = 0
        for spec in specs:
            try:
                r = check_fixture(spec, args.out)
            except Exception as e:  # report all fixtures, then fail
                failed += 1
                print("FAIL %-18s %s" % (spec["name"], e))
                continue
            weakest = min(r["mutations"].items(), key=lambda kv: kv[1][0])
            print("ok   %-18s f32 %.1e  f64 %.1e  torch.nn %.1e  %d mutations caught "
                  "(weakest %s %.1e)" % (spec["name"], r["f32"], r["f64"], r["torch_nn"],
                                         len(r["mutations"]), weakest[0], weakest[1][0]))
        print("fixtures: %d bytes in %s" % (dir_size(args.out), args.out))
        return 1 if failed else 0

    os.makedirs(args.out, exist_ok=True)
    for spec in specs:
        if fixture_complete(spec, args.out) and not args.force:
            print("skip %-18s (exists; --force to regenerate)" % spec["name"])
            continue
        d = os.path.join(args.out, spec["name"])
        if os.path.isdir(d):
            shutil.rmtree(d)  # partial or forced: start clean so no stale file survives
        write_fixture(spec, args.seed, args.out)
        print("made %-18s %7d bytes" % (spec["name"], dir_size(d)))
    print("fixtures: %d bytes in %s" % (dir_size(args.out), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
