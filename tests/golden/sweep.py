#!/usr/bin/python3
"""Randomized differential sweep: `xadapt encode` against tests/golden/reference.py.

For N random draws it builds a tiny BERT / RoBERTa / XLM-R / CLIP checkpoint in HF layout
(random config, random storage variant), random inputs (ids, text pairs via a vocab.txt,
PNG images of random size and mode), runs `xadapt info` and `xadapt encode`, and compares every
tensor xadapt writes with the float64 reference (atol 1e-4). Every few cases it also writes
deliberately broken copies (missing tensor, wrong shape, wrong block count, ...) and checks
for one clean error with a non-zero exit.

    /usr/bin/python3 tests/golden/sweep.py [-n 200] [--seed 1] [--keep DIR] [-v]

Failures are kept under --keep (default /tmp/sweep_runs) with a repro.txt per case.
"""

import argparse
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import traceback

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import st_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
XADAPT = os.environ.get("XADAPT", os.path.join(ROOT, "build/lua/xadapt"))
ATOL = 1e-4
torch.set_grad_enabled(False)

ACTS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid,
        # more of HF's ACT2FN, only used to check what xadapt does if it accepts them
        "silu": lambda x: x * torch.sigmoid(x), "swish": lambda x: x * torch.sigmoid(x),
        "gelu_fast": lambda x: 0.5 * x * (1 + torch.tanh(x * 0.7978845608 * (1 + 0.044715 * x * x))),
        "gelu_accurate": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
        "mish": lambda x: x * torch.tanh(torch.nn.functional.softplus(x)),
        "relu6": lambda x: x.clamp(0, 6), "linear": lambda x: x,
        "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.01),
        "gelu_10": lambda x: R.act_fn("gelu", x).clamp(-10, 10)}
_orig_act = R.act_fn


def act_fn(name, x):  # reference subset + HF's "tanh"/"sigmoid" (nn.Tanh / nn.Sigmoid)
    if name in ACTS:
        return ACTS[name](x)
    return _orig_act(name, x)


R.act_fn = act_fn

STORE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# random configs
# ----------------------------------------------------------------------------------------------

BIG = [False]  # set per case: larger sizes (tiling / blocking paths in the C kernels)


def heads_dims(r, max_h=96):
    if BIG[0]:
        max_h = 384
    while True:
        nh = r.choice([1, 2, 3, 4, 5, 6] + ([7, 8, 12] if BIG[0] else []))
        hd = r.choice([4, 5, 6, 7, 8, 10, 12, 16, 20, 32] + ([24, 33, 48, 64] if BIG[0] else []))
        if nh * hd <= max_h:
            return nh, hd


def inter_size(r):
    while True:
        i = r.randint(9, 1100 if BIG[0] else 160)
        if i % 16:
            return i


def odd(r, lo, hi):
    v = r.randint(lo, hi)
    return v if v % 2 else v + 1


def store_tensors(r, W, storage):
    """-> file dtype tensors, their exact float64 values."""
    stored = {}
    for k, v in W.items():
        dt = STORE[r.choice(["F32", "F16", "BF16"])] if storage == "mixed" else STORE[storage]
        stored[k] = v.to(dt)
    return stored


def torch_dtype_name(storage):
    return {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "mixed": "float32"}[storage]


BERT_DEFAULTS = {"hidden_act": "gelu", "layer_norm_eps": 1e-12, "type_vocab_size": 2,
                 "max_position_embeddings": 512, "position_embedding_type": "absolute",
                 "initializer_range": 0.02, "use_cache": True}
CLIP_T_DEFAULTS = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "pad_token_id": 1,
                   "max_position_embeddings": 77, "attention_dropout": 0.0, "dropout": 0.0,
                   "initializer_factor": 1.0, "initializer_range": 0.02,
                   "bos_token_id": 49406, "eos_token_id": 49407}
CLIP_V_DEFAULTS = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_channels": 3,
                   "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0,
                   "initializer_range": 0.02, "image_size": 224, "patch_size": 32}


def trim_defaults(d, defaults):
    return {k: v for k, v in d.items() if not (k in defaults and defaults[k] == v)}


def gen_bert(r, rng, family):
    nh, hd = heads_dims(r)
    H = nh * hd
    L = r.randint(1, 4)
    I = inter_size(r)
    eps = r.choice([1e-12, 1e-5, 1e-7])
    act = r.choice(["gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "quick_gelu",
                    "tanh", "sigmoid"])
    roberta = family in ("roberta", "xlm-roberta")
    if roberta:
        pad = r.choice([1, 1, 1, 0, 3])
        type_vocab = r.choice([1, 1, 1, 2])
    else:
        pad = r.choice([0, 0, 1, 5])
        type_vocab = r.choice([1, 2, 2, 2, 3])
    T = r.randint(1, 140 if BIG[0] else 20)
    need = T + (pad + 1 if roberta else 0)
    max_pos = r.choice([need, need + r.randint(1, 9), 514 if roberta else 512])
    V = odd(r, max(40, T + 8), 1001 if BIG[0] else 301)
    head = None
    if r.random() < 0.45:
        head = "roberta_lm" if roberta else "bert_mlm"
    pooler = r.random() < (0.3 if roberta else 0.7)
    arch = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}[family]
    if head:
        arch = arch.replace("Model", "ForMaskedLM")
    storage = r.choice(["F32", "F32", "F32", "F16", "BF16", "mixed"])
    decoder = "absent"
    if head:
        decoder = r.choice(["absent", "tied", "tied", "untied"])
    extra = {}
    if roberta:
        extra = {"bos_token_id": 0, "eos_token_id": 2}
    if decoder == "untied":
        extra["tie_word_embeddings"] = False
    cfg = R.bert_config(arch, family, V, H, L, nh, I, max_pos, act=act, eps=eps,
                        type_vocab=type_vocab, pad=pad, torch_dtype=torch_dtype_name(storage),
                        **extra)
    trimmed = r.random() < 0.2
    if trimmed:
        d = dict(BERT_DEFAULTS, pad_token_id=1 if roberta else 0)
        cfg = trim_defaults(cfg, d)
    spec = dict(family=family, cfg=cfg, storage=storage, head=head, pooler=pooler,
                decoder=decoder, shards=r.choice([1, 1, 1, 2, 3]),
                prefix=r.choice(["", ("roberta." if roberta else "bert.")]),
                legacy_ln=r.random() < 0.3, pos_buf=r.random() < 0.4, trimmed=trimmed,
                H=H, L=L, nh=nh, I=I, V=V, T=T, pad=pad, type_vocab=type_vocab, eps=eps,
                act=act, max_pos=max_pos)
    W = R.bert_weights(rng, dict(cfg, **{"type_vocab_size": type_vocab, "max_position_embeddings":
                                         max_pos}), pooler, head)
    if head == "bert_mlm" and r.random() < 0.5:
        del W["cls.seq_relationship.weight"], W["cls.seq_relationship.bias"]
    stored = store_tensors(r, W, storage)
    files = {}
    for k, v in stored.items():
        nk = k if k.startswith(("cls.", "lm_head.")) else spec["prefix"] + k
        if spec["legacy_ln"]:
            nk = nk.replace(".LayerNorm.weight", ".LayerNorm.gamma").replace(
                ".LayerNorm.bias", ".LayerNorm.beta")
        files[nk] = v
    dec_name = "cls.predictions.decoder.weight" if not roberta else "lm_head.decoder.weight"
    wname = "embeddings.word_embeddings.weight"
    if decoder == "tied":
        files[dec_name] = stored[wname].clone()
    elif decoder == "untied":
        files[dec_name] = torch.from_numpy(0.1 * rng.standard_normal((V, H))).to(stored[wname].dtype)
    spec["decoder_bias"] = head is not None and r.random() < 0.25
    if spec["decoder_bias"]:  # older saves keep the tied decoder bias under both names
        bname = "cls.predictions" if not roberta else "lm_head"
        files[bname + ".decoder.bias"] = stored[bname + ".bias"].clone()
    if spec["pos_buf"]:
        files[spec["prefix"] + "embeddings.position_ids"] = \
            torch.arange(max_pos, dtype=torch.int64)[None]
    # reference weights: loaded the way a loader must (prefix/gamma/buffers), in float64
    W64 = {k: v.to(torch.float64) for k, v in R.bert_canonical(files).items()}
    spec["files"], spec["W64"] = files, W64
    # inputs
    B = r.randint(1, 4)
    lens = [T] + [r.randint(1, T) for _ in range(B - 1)]
    r.shuffle(lens)
    use_text = (family == "bert" and r.random() < 0.4 and V > 12 and max_pos >= max(T, 2))
    spec["use_text"] = use_text
    rows, args = [], []
    if use_text:
        # vocab.txt: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then w5 ... w<V-1>
        spec["vocab"] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
            ["w%d" % i for i in range(5, V)]
        pairs = []
        for n in lens:
            n = max(n, 2)
            if type_vocab >= 2 and n >= 4 and r.random() < 0.6:
                la = r.randint(1, n - 3)
                lb = n - 3 - la
                pairs.append((la, lb))
            else:
                pairs.append((n - 2, None))
        ids_rows, tt_rows = [], []
        for la, lb in pairs:
            a = [r.randrange(5, V) for _ in range(la)]
            seq, tt = [2] + a + [3], [0] * (la + 2)
            a_txt = " ".join("w%d" % i for i in a)
            if lb is not None:
                b = [r.randrange(5, V) for _ in range(lb)]
                seq += b + [3]
                tt += [1] * (lb + 1)
                args.append(["--text", a_txt, "--pair", " ".join("w%d" % i for i in b)])
            else:
                args.append(["--text", a_txt])
            ids_rows.append(seq)
            tt_rows.append(tt)
        pad_id = 0
    else:
        ids_rows, tt_rows = [], []
        spec["pad_inside"] = False
        for n in lens:
            if roberta:
                pool = [i for i in range(V) if i != pad]
                seq = [r.choice(pool) for _ in range(n)]
                if n >= 3 and r.random() < 0.15:  # a pad id inside a real row (HF positions)
                    seq[r.randrange(1, n - 1)] = pad
                    spec["pad_inside"] = True
            else:
                seq = [r.randrange(0, V) for _ in range(n)]
            ids_rows.append(seq)
            tt_rows.append([0] * n)
            args.append(["--ids", " ".join(map(str, seq))])
        pad_id = pad
    Tm = max(len(s) for s in ids_rows)
    ids = torch.full((B, Tm), pad_id, dtype=torch.int64)
    mask = torch.zeros((B, Tm), dtype=torch.int64)
    tt = torch.zeros((B, Tm), dtype=torch.int64)
    for b, (s, t) in enumerate(zip(ids_rows, tt_rows)):
        ids[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
        tt[b, :len(s)] = torch.tensor(t)
    spec["inputs"] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
    spec["args"] = [x for a in args for x in a] + (["--logits"] if head else [])
    eff = dict(cfg)
    eff.setdefault("hidden_act", "gelu")
    eff.setdefault("layer_norm_eps", 1e-12)
    eff.setdefault("pad_token_id", 1 if roberta else 0)
    eff.setdefault("position_embedding_type", "absolute")
    out = R.bert_forward(W64, eff, ids, mask, tt, "roberta" if roberta else "bert")
    ref = {k: v for k, v in out.items() if k != "position_ids"}
    spec["ref"] = ref
    return spec


CLIP_IMG = [(32, 8), (30, 6), (48, 16), (224, 32), (24, 4), (16, 16), (36, 12), (20, 5)]


def gen_clip(r, rng, work):
    tnh, thd = heads_dims(r, 80)
    vnh, vhd = heads_dims(r, 80)
    Ht, Hv = tnh * thd, vnh * vhd
    Lt, Lv = r.randint(1, 3), r.randint(1, 3)
    S, p = r.choice(CLIP_IMG)
    if S >= 200:
        Lv = min(Lv, 2)
    Vt = odd(r, 41, 301)
    eos_mode = r.choice(["legacy", "legacy", "top", "mid"])
    if eos_mode == "legacy":
        bos_tok, eot = Vt - 2, Vt - 1
        cfg_bos, cfg_eos = 0, 2
        hi = Vt - 2
    elif eos_mode == "top":
        bos_tok, eot = Vt - 2, Vt - 1
        cfg_bos, cfg_eos = bos_tok, eot
        hi = Vt - 2
    else:  # real eos with "added tokens" above it
        bos_tok, eot = Vt - 5, Vt - 4
        cfg_bos, cfg_eos = bos_tok, eot
        hi = Vt - 5
    pad = r.choice([1, 1, 0, eot])
    Tn = r.randint(2, 77 if BIG[0] else 16)
    max_pos = r.choice([Tn, Tn + r.randint(1, 7), 77])
    storage = r.choice(["F32", "F32", "F32", "F16", "BF16", "mixed"])
    text = {"vocab_size": Vt, "hidden_size": Ht, "intermediate_size": inter_size(r),
            "num_attention_heads": tnh, "num_hidden_layers": Lt, "max_position_embeddings": max_pos,
            "bos_token_id": cfg_bos, "eos_token_id": cfg_eos, "pad_token_id": pad,
            "hidden_act": r.choice(["quick_gelu"] * 4 + ["gelu", "gelu_new", "relu",
                                                         "gelu_pytorch_tanh"]),
            "layer_norm_eps": r.choice([1e-5, 1e-5, 1e-12, 1e-7])}
    vision = {"hidden_size": Hv, "intermediate_size": inter_size(r), "num_attention_heads": vnh,
              "num_hidden_layers": Lv, "image_size": S, "patch_size": p,
              "hidden_act": r.choice(["quick_gelu"] * 4 + ["gelu", "gelu_new", "relu"]),
              "layer_norm_eps": r.choice([1e-5, 1e-5, 1e-12, 1e-7])}
    P = r.randint(5, 40)
    cfg = R.clip_config(text, vision, P, torch_dtype=torch_dtype_name(storage))
    cfg["text_config"].update({k: text[k] for k in ("hidden_act", "layer_norm_eps")})
    cfg["vision_config"].update({k: vision[k] for k in ("hidden_act", "layer_norm_eps")})
    trimmed = r.random() < 0.25
    if trimmed:
        cfg["text_config"] = trim_defaults(cfg["text_config"], CLIP_T_DEFAULTS)
        cfg["vision_config"] = trim_defaults(cfg["vision_config"], CLIP_V_DEFAULTS)
    # clip_weights sizes n_pos from image_size // patch (HF's Conv2d floors too)
    W = R.clip_weights(rng, {"text_config": dict(text), "vision_config": dict(vision, num_channels=3),
                             "projection_dim": P}, logit_scale=r.uniform(0.5, 4.0))
    stored = store_tensors(r, W, storage)
    files = dict(stored)
    pos_buf = r.random() < 0.4
    if pos_buf:
        files["text_model.embeddings.position_ids"] = torch.arange(max_pos, dtype=torch.int64)[None]
        files["vision_model.embeddings.position_ids"] = \
            torch.arange((S // p) ** 2 + 1, dtype=torch.int64)[None]
    W64 = {k: v.to(torch.float64) for k, v in R.clip_canonical(files).items()}
    spec = dict(family="clip", cfg=cfg, storage=storage, shards=r.choice([1, 1, 1, 2, 3]),
                pos_buf=pos_buf, trimmed=trimmed, files=files, W64=W64, eos_mode=eos_mode,
                S=S, patch=p, Ht=Ht, Hv=Hv, Lt=Lt, Lv=Lv, P=P, Vt=Vt, pad=pad, T=Tn,
                head=None, max_pos=max_pos)
    Bt = r.choice([0, 1, 2, 3, 4])
    Bi = r.choice([0, 1, 1, 2, 3]) if Bt else r.choice([1, 2, 3])
    args, ref = [], {}
    spec["no_eot"] = False
    if Bt:
        lens = [Tn] + [r.randint(2, Tn) for _ in range(Bt - 1)]
        r.shuffle(lens)
        rows = []
        for n in lens:
            seq = [bos_tok] + [r.randrange(3, hi) for _ in range(n - 2)] + [eot]
            if eos_mode == "mid" and n >= 4 and r.random() < 0.7:  # added tokens above EOT
                seq[r.randrange(1, n - 1)] = r.randrange(eot + 1, Vt)
            if n >= 3 and r.random() < 0.05:  # no EOT at all (truncated row)
                seq[-1] = r.randrange(3, hi)
                spec["no_eot"] = True
            rows.append(seq)
            args += ["--ids", " ".join(map(str, seq))]
        ids = torch.full((Bt, Tn), pad, dtype=torch.int64)
        mask = torch.zeros((Bt, Tn), dtype=torch.int64)
        for b, s in enumerate(rows):
            ids[b, :len(s)] = torch.tensor(s)
            mask[b, :len(s)] = 1
        tcfg = dict(CLIP_T_DEFAULTS, **cfg["text_config"])
        last, pooled, states, eos_idx = R.clip_text_forward(W64, tcfg, ids, mask)
        for i, s in enumerate(states):
            ref["text_hidden_states.%d" % i] = s
        ref["text_last_hidden_state"] = last
        ref["text_pooler_output"] = pooled
        ref["text_embeds"] = pooled @ W64["text_projection.weight"].T
        spec["inputs"] = {"input_ids": ids, "attention_mask": mask}
        spec["eos_index"] = eos_idx.tolist()
    if Bi:
        pix, descr = [], []
        for i in range(Bi):
            path = os.path.join(work, "img%d.png" % i)
            kind = r.choice(["exact", "exact", "wide", "tall", "small", "large"])
            if kind == "exact":
                w = h = S
            elif kind == "wide":
                w, h = S + r.randint(1, 20), S + r.randint(-3, 3)
            elif kind == "tall":
                w, h = S + r.randint(-3, 3), S + r.randint(1, 20)
            elif kind == "small":
                w, h = max(4, S // 2 + r.randint(-3, 3)), max(4, S // 2 + r.randint(-3, 3))
            else:
                w, h = S * 2 + r.randint(0, 9), S * 2 + r.randint(0, 9)
            mode = r.choice(["RGB", "RGB", "RGB", "L", "RGBA", "P", "LA", "1", "I16", "JPEG"])
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if r.random() < 0.5:  # smooth image (more like a photo)
                yy, xx = np.mgrid[0:h, 0:w]
                arr = ((np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                                  (xx + yy) * 127 // max(w + h - 2, 1)], -1)
                        + arr // 8).clip(0, 255)).astype(np.uint8)
            im = Image.fromarray(arr, "RGB")
            if mode == "L":
                im = im.convert("L")
            elif mode == "RGBA":
                a = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
                im = im.copy()
                im.putalpha(a)
            elif mode == "P":
                im = im.quantize(colors=r.choice([7, 64, 256]))
            elif mode == "LA":
                im = im.convert("LA")
            elif mode == "1":
                im = im.convert("1")
            elif mode == "I16":
                im = Image.fromarray((arr[..., 0].astype(np.uint16) * r.choice([1, 3, 257])),
                                     "I;16")
            if mode == "JPEG":
                path = path[:-4] + ".jpg"
                im.save(path, "JPEG", quality=r.choice([50, 90]),
                        subsampling=r.choice([0, 2]))
            else:
                im.save(path)
            descr.append("%s %dx%d %s" % (os.path.basename(path), w, h, mode))
            pix.append(clip_pixels(path, S))
            args += ["--image", path]
        spec["images"] = descr
        pv = torch.stack(pix).to(torch.float64)
        g = S // p
        pv = pv[:, :, :g * p, :g * p]  # HF Conv2d(stride=p) ignores the remainder
        vcfg = dict(CLIP_V_DEFAULTS, **cfg["vision_config"])
        last, pooled, states = R.clip_vision_forward(W64, vcfg, pv)
        for i, s in enumerate(states):
            ref["vision_hidden_states.%d" % i] = s
        ref["vision_last_hidden_state"] = last
        ref["vision_pooler_output"] = pooled
        ref["image_embeds"] = pooled @ W64["visual_projection.weight"].T
    spec["args"] = args
    spec["ref"] = ref
    return spec


MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def clip_pixels(path, S):
    """transformers' slow CLIPImageProcessor (shortest edge S, center crop S, OpenAI mean/std)."""
    im = Image.open(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    short, long_ = (w, h) if w <= h else (h, w)
    ns, nl = S, int(S * long_ / short)
    nh, nw = (nl, ns) if w <= h else (ns, nl)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
    a = np.asarray(im)
    top, left = (nh - S) // 2, (nw - S) // 2
    a = a[top:top + S, left:left + S]
    x = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


# ----------------------------------------------------------------------------------------------
# writing checkpoints, running xadapt
# ----------------------------------------------------------------------------------------------

def save_st(path, tensors, r, foreign):
    """Reference-writer layout, or (foreign) a file as other writers make it: random tensor
    order, header not padded (so F32 data is misaligned), optional __metadata__."""
    if not foreign:
        st_io.save(path, tensors, {"format": "pt"})
        return
    names = list(tensors)
    r.shuffle(names)
    header, blobs, off = {}, [], 0
    if r.random() < 0.5:
        header["__metadata__"] = {"format": "pt", "note": "x"}
    for n in names:
        b = st_io._raw_bytes(tensors[n])
        header[n] = {"dtype": st_io.dtype_name(tensors[n]), "shape": list(tensors[n].shape),
                     "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) % 4 == 0:
        text += b" "  # make sure the data section starts misaligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_ckpt(d, cfg, files, shards, r, vocab=None, foreign=False):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if vocab:
        with open(os.path.join(d, "vocab.txt"), "w") as f:
            f.write("\n".join(vocab) + "\n")
    meta = {"format": "pt"}
    if shards > 1:
        names = list(files)
        r.shuffle(names)  # any tensor can land in any shard
        parts = [names[i::shards] for i in range(shards)]
        wm, total = {}, 0
        for i, part in enumerate(parts):
            fn = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
            save_st(os.path.join(d, fn), {k: files[k] for k in part}, r, foreign)
            for k in part:
                wm[k] = fn
                total += files[k].numel() * files[k].element_size()
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}
        if foreign and r.random() < 0.5:
            del index["metadata"]
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    else:
        save_st(os.path.join(d, "model.safetensors"), files, r, foreign)


def run(cmd, timeout=120):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def compare(spec, outpath):
    """-> (max diff, where, list of problems)."""
    got, meta, _ = st_io.load(outpath)
    problems = []
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        if k in spec.get("inputs", {}):
            if k == "token_type_ids" and spec["family"] == "clip":
                continue
            if k not in got:
                problems.append("output lacks %s" % k)
            elif not torch.equal(got[k].to(torch.int64), spec["inputs"][k]):
                problems.append("%s differs: got %s want %s" % (k, got[k].tolist(),
                                                               spec["inputs"][k].tolist()))
    worst, where = 0.0, None
    ref = spec["ref"]
    for k, v in ref.items():
        if k not in got:
            problems.append("missing output %s" % k)
            continue
        g = got[k].to(torch.float64)
        if tuple(g.shape) != tuple(v.shape):
            problems.append("%s shape %s, want %s" % (k, tuple(g.shape), tuple(v.shape)))
            continue
        if not torch.isfinite(g).all():
            problems.append("%s has non-finite values" % k)
            continue
        d = (g - v).abs().max().item() if v.numel() else 0.0
        if d > worst:
            worst, where = d, k
    for k in got:
        if k not in ref and k not in ("input_ids", "attention_mask", "token_type_ids"):
            problems.append("unexpected output %s" % k)
    if worst > ATOL:
        problems.append("max abs diff %.3g at %s" % (worst, where))
    return worst, where, problems, got


def describe(spec):
    keys = ["big", "family", "storage", "shards", "prefix", "legacy_ln", "pos_buf", "pooler", "head",
            "decoder", "decoder_bias", "foreign", "no_model_type", "trimmed", "use_text", "pad_inside", "eos_mode", "no_eot", "S", "patch",
            "images", "eos_index"]
    return {k: spec[k] for k in keys if k in spec}


def bad_exit(rc, out, err, outpath):
    """A clean refusal: exit 1..127, a short message on stderr, no sanitizer/crash text."""
    why = []
    if rc == 0:
        why.append("exit 0")
    elif rc < 0 or rc >= 128:
        why.append("crash (rc %d)" % rc)
    if not err.strip():
        why.append("empty stderr")
    if any(s in err for s in ("Sanitizer", "Segmentation", "Aborted", "core dumped", "panic")):
        why.append("crash text on stderr")
    lines = err.strip().splitlines()
    if lines and not lines[0].startswith("xadapt "):
        why.append("stderr does not start with 'xadapt <cmd>:'")
    if sum(l.startswith("xadapt ") for l in lines) > 1:
        why.append("%d separate error messages" % sum(l.startswith("xadapt ") for l in lines))
    if outpath and os.path.exists(outpath):
        why.append("wrote %s anyway" % outpath)
    return why


def broken_variants(r, spec):
    """-> list of (name, cfg, files, must_fail)."""
    cfg, files = spec["cfg"], spec["files"]
    out = []
    float_names = [k for k, v in files.items() if v.is_floating_point()
                   and not k.startswith("cls.seq_relationship") and not k.endswith("decoder.bias")]
    # required = everything the encoder binds; heads are optional, skip them for "missing"
    opt = [k for k in float_names if k.startswith(("cls.", "lm_head.", "pooler.",
                                                   spec.get("prefix", "") + "pooler."))]
    core = [k for k in float_names if k not in opt and k != "logit_scale"]
    k = r.choice(core)
    out.append(("missing %s" % k, cfg, {n: v for n, v in files.items() if n != k}, True))
    # one tensor of an optional group (pooler / MLM head) missing: half a head (the MLM decoder
    # weight may be absent: it is then tied to the word embeddings)
    opt = [k for k in opt if not k.endswith("decoder.weight")]
    if opt:
        k = r.choice(opt)
        out.append(("partial-group missing %s" % k, cfg, {n: v for n, v in files.items() if n != k},
                    "partial"))
    k = r.choice(float_names)
    v = files[k]
    if v.dim() == 0:
        nv = torch.zeros(2, dtype=v.dtype)
    elif v.dim() == 2 and v.shape[0] != v.shape[1] and r.random() < 0.5:
        nv = v.T.contiguous()
    else:
        shp = list(v.shape)
        shp[r.randrange(len(shp))] += 1
        nv = torch.zeros(shp, dtype=v.dtype)
    out.append(("wrong shape %s %s->%s" % (k, tuple(v.shape), tuple(nv.shape)), cfg,
                dict(files, **{k: nv}), True))
    other = r.choice(["silu", "swish", "gelu_fast", "gelu_accurate", "mish", "relu6", "linear",
                      "leaky_relu", "gelu_10", "GELU", "gelu "])
    ca = json.loads(json.dumps(cfg))
    if spec["family"] == "clip":
        ca[r.choice(["text_config", "vision_config"])]["hidden_act"] = other
    else:
        ca["hidden_act"] = other
    out.append(("hidden_act %r" % other, ca, files, "act"))
    if spec["family"] != "clip":
        cp = json.loads(json.dumps(cfg))
        cp["position_embedding_type"] = r.choice(["relative_key", "relative_key_query"])
        out.append(("position_embedding_type %s" % cp["position_embedding_type"], cp, files, True))
    c2 = json.loads(json.dumps(cfg))
    if spec["family"] == "clip":
        tower = r.choice(["text_config", "vision_config"])
        c2[tower]["num_hidden_layers"] += 1
        out.append(("%s.num_hidden_layers +1" % tower, c2, files, True))
        c3 = json.loads(json.dumps(cfg))
        c3[tower]["hidden_size"] = c3[tower].get("hidden_size", 512) + \
            c3[tower].get("num_attention_heads", 8)
        out.append(("%s.hidden_size + heads" % tower, c3, files, True))
        c4 = json.loads(json.dumps(cfg))
        L = c4[tower]["num_hidden_layers"]
        if L > 1:
            c4[tower]["num_hidden_layers"] = L - 1
            out.append(("%s.num_hidden_layers -1" % tower, c4, files, None))
        c5 = json.loads(json.dumps(cfg))
        c5["projection_dim"] = cfg["projection_dim"] + 1
        out.append(("projection_dim +1", c5, files, True))
        c6 = json.loads(json.dumps(cfg))
        c6["vision_config"]["patch_size"] = cfg["vision_config"].get("patch_size", 32) + 1
        out.append(("patch_size +1", c6, files, True))
    else:
        c2["num_hidden_layers"] += 1
        out.append(("num_hidden_layers +1", c2, files, True))
        c3 = json.loads(json.dumps(cfg))
        c3["hidden_size"] += c3["num_attention_heads"]
        out.append(("hidden_size + heads", c3, files, True))
        if cfg["num_hidden_layers"] > 1:
            c4 = json.loads(json.dumps(cfg))
            c4["num_hidden_layers"] -= 1
            out.append(("num_hidden_layers -1", c4, files, None))
        c5 = json.loads(json.dumps(cfg))
        c5["vocab_size"] = cfg["vocab_size"] + 2
        out.append(("vocab_size +2", c5, files, True))
        c6 = json.loads(json.dumps(cfg))
        c6["max_position_embeddings"] = spec["max_pos"] + 1
        out.append(("max_position_embeddings +1", c6, files, True))
        if spec["nh"] > 1 and spec["H"] % (spec["nh"] + 1):
            c7 = json.loads(json.dumps(cfg))
            c7["num_attention_heads"] = spec["nh"] + 1
            out.append(("num_attention_heads %d (does not divide %d)" % (spec["nh"] + 1, spec["H"]),
                        c7, files, True))
    return out


def run_case(i, seed, keep, verbose, stats):
    r = random.Random("%d/%d" % (seed, i))
    rng = np.random.default_rng([seed, i])
    work = os.path.join(keep, "case%04d" % i)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    fam = r.choice(["bert", "bert", "roberta", "xlm-roberta", "clip", "clip"])
    BIG[0] = r.random() < 0.15
    spec = gen_clip(r, rng, work) if fam == "clip" else gen_bert(r, rng, fam)
    spec["big"] = BIG[0]
    arch = "roberta" if fam == "xlm-roberta" else fam
    d = os.path.join(work, "ckpt")
    spec["foreign"] = r.random() < 0.2
    if r.random() < 0.1 and fam != "xlm-roberta":  # older configs: no model_type
        spec["cfg"] = {k: v for k, v in spec["cfg"].items() if k != "model_type"}
        spec["no_model_type"] = True
    write_ckpt(d, spec["cfg"], spec["files"], spec["shards"], r, spec.get("vocab"),
               spec["foreign"])
    outp = os.path.join(work, "out.safetensors")
    cmd = [XADAPT, "encode", "--model", d] + spec["args"] + ["--out", outp]
    fails = []
    rc, so, se = run([XADAPT, "info", d])
    if rc != 0:
        fails.append("info rc %d: %s" % (rc, se.strip()))
    rc, so, se = run(cmd)
    worst = None
    if rc != 0:
        fails.append("encode rc %d: %s" % (rc, se.strip()))
    else:
        worst, where, probs, got = compare(spec, outp)
        fails += probs
        stats["worst"][arch] = max(stats["worst"].get(arch, (0, None, None)), (worst, where, i))
    stats["cases"] += 1
    stats["by_arch"][arch] = stats["by_arch"].get(arch, 0) + 1
    # the same weights in canonical layout (plain names, one F32 file, no buffers): outputs must
    # be identical and the fingerprint should be too (it hashes the bound F32 weights)
    if rc == 0 and r.random() < 0.5:
        if spec["family"] == "clip":
            canon = {k: v.to(torch.float32) for k, v in R.clip_canonical(spec["files"]).items()}
        else:
            canon = {k: v.to(torch.float32) for k, v in R.bert_canonical(spec["files"]).items()}
        d2 = os.path.join(work, "ckpt_canonical")
        c2 = dict(spec["cfg"])
        write_ckpt(d2, c2, canon, 1, r, spec.get("vocab"))
        out2 = os.path.join(work, "out2.safetensors")
        rc2, _, se2 = run([XADAPT, "encode", "--model", d2] + spec["args"] + ["--out", out2])
        if rc2 != 0:
            fails.append("canonical copy: encode rc %d: %s" % (rc2, se2.strip()))
        else:
            g1, m1, _ = st_io.load(outp)
            g2, m2, _ = st_io.load(out2)
            diff = [k for k in g1 if k not in g2 or not torch.equal(g1[k], g2[k])]
            if diff:
                fails.append("canonical copy gives different outputs: %s" % diff[:4])
            if m1.get("model_fingerprint") != m2.get("model_fingerprint"):
                stats["fp_notes"].append("case %d: fingerprint %s (as stored: %s) vs %s (canonical "
                                         "F32)" % (i, m1.get("model_fingerprint"), spec["storage"],
                                                   m2.get("model_fingerprint")))
            stats["canonical"] += 1
    # deliberately broken copies
    if i % 2 == 0:
        for name, bcfg, bfiles, must_fail in broken_variants(r, spec):
            bd = os.path.join(work, "broken")
            shutil.rmtree(bd, ignore_errors=True)
            write_ckpt(bd, bcfg, bfiles, spec["shards"], r, spec.get("vocab"))
            bout = os.path.join(work, "broken_out.safetensors")
            if os.path.exists(bout):
                os.remove(bout)
            rc, so, se = run([XADAPT, "encode", "--model", bd] + spec["args"] + ["--out", bout])
            rci, soi, sei = run([XADAPT, "info", bd])
            stats["broken"] += 1
            if must_fail == "act":
                if rc == 0:
                    stats["acts"].append("case %d %s accepted" % (i, name))
                    fails.append("broken '%s': accepted (HF has it in ACT2FN; is it right?)" % name)
                else:
                    why = bad_exit(rc, so, se, bout)
                    if why:
                        fails.append("broken '%s': %s; stderr: %s" % (name, why, se.strip()))
                    stats["broken_msgs"].setdefault("hidden_act", se.strip()[:300])
                continue
            if must_fail == "partial":
                got = None
                if rc == 0:
                    got, _, _ = st_io.load(bout)
                stats["partial"].append("case %d %s: %s" % (
                    i, name, ("accepted; outputs %s" % sorted(k for k in got if not k.startswith(
                        "hidden_states"))) if rc == 0 else "refused: " + se.strip()[:300]))
                if rc != 0:
                    why = bad_exit(rc, so, se, bout)
                    if why:
                        fails.append("broken '%s': %s; stderr: %s" % (name, why, se.strip()))
                continue
            if must_fail is None:  # fewer blocks in config than in the file: HF runs fewer
                if rc == 0:
                    stats["fewer_layers"].append("case %d %s: accepted" % (i, name))
                else:
                    stats["fewer_layers"].append("case %d %s: refused: %s" % (i, name, se.strip()))
                    why = bad_exit(rc, so, se, bout)
                    if why:
                        fails.append("broken '%s': %s; stderr: %s" % (name, why, se.strip()))
                continue
            why = bad_exit(rc, so, se, bout)
            whyi = bad_exit(rci, soi, sei, None)
            if why:
                fails.append("broken '%s': encode %s; stderr: %s" % (name, why, se.strip()[:500]))
            if whyi:
                fails.append("broken '%s': info %s; stderr: %s" % (name, whyi, sei.strip()[:500]))
            stats["broken_msgs"].setdefault(name.split(" ")[0], se.strip()[:300])
    # runtime input errors: an id past the vocabulary, a too-long row, a bad image
    if i % 5 == 1:
        bad = []
        if spec["family"] != "clip" or "inputs" in spec:
            V = spec.get("V", spec.get("Vt"))
            bad.append(("id >= vocab", ["--ids", "1 %d 2" % V]))
            usable = spec["max_pos"] - (spec["pad"] + 1 if arch == "roberta" else 0)
            if usable < 100:
                tok = "4" if spec["pad"] == 3 else "3"
                bad.append(("row longer than positions", ["--ids", " ".join([tok] * (usable + 1))]))
        if spec.get("use_text") and spec["type_vocab"] == 1:
            bad.append(("pair with type_vocab_size 1", ["--text", "w5", "--pair", "w6"]))
        if spec["family"] == "clip":
            trunc = os.path.join(work, "trunc.png")
            Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(trunc)
            with open(trunc, "rb") as f:
                data = f.read()
            with open(trunc, "wb") as f:
                f.write(data[:len(data) // 2])
            bad.append(("truncated png", ["--image", trunc]))
        for name, a in bad:
            bout = os.path.join(work, "bad_out.safetensors")
            rc, so, se = run([XADAPT, "encode", "--model", d] + a + ["--out", bout])
            stats["bad_inputs"] += 1
            why = bad_exit(rc, so, se, bout)
            if why:
                fails.append("bad input '%s': %s; stderr: %s" % (name, why, se.strip()[:300]))
    if fails:
        stats["failed"].append(i)
        with open(os.path.join(work, "repro.txt"), "w") as f:
            f.write("command: %s\n" % " ".join("'%s'" % c if " " in c else c for c in cmd))
            f.write("variant: %s\n" % json.dumps(describe(spec), default=str))
            f.write("config.json: %s\n" % json.dumps(spec["cfg"], sort_keys=True))
            for x in fails:
                f.write("FAIL %s\n" % x)
        print("FAIL case %d (%s): %s" % (i, arch, json.dumps(describe(spec), default=str)))
        for x in fails:
            print("     %s" % x[:1500])
    else:
        if verbose:
            print("ok   case %d %-8s diff %.2e  %s" % (i, arch, worst or 0,
                                                       json.dumps(describe(spec), default=str)))
        if not os.environ.get("SWEEP_KEEP_ALL"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            torch.save({k: v for k, v in spec["ref"].items()}, os.path.join(work, "ref.pt"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--keep", default="/tmp/sweep_runs")
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.keep, exist_ok=True)
    stats = {"cases": 0, "by_arch": {}, "worst": {}, "failed": [], "broken": 0, "bad_inputs": 0,
             "canonical": 0, "fp_notes": [], "fewer_layers": [], "broken_msgs": {}, "partial": [], "acts": []}
    t0 = time.time()
    for i in range(a.start, a.start + a.n):
        try:
            run_case(i, a.seed, a.keep, a.v, stats)
        except Exception:
            stats["failed"].append(i)
            print("ERROR case %d (sweep itself)\n%s" % (i, traceback.format_exc()))
    print("\n%d cases in %.0f s: %s" % (stats["cases"], time.time() - t0, stats["by_arch"]))
    for k, (w, where, i) in sorted(stats["worst"].items()):
        print("  %-8s largest diff %.3g (%s, case %d)" % (k, w, where, i))
    print("  canonical-copy checks %d, broken checkpoints %d, bad inputs %d"
          % (stats["canonical"], stats["broken"], stats["bad_inputs"]))
    print("  config with fewer blocks than the file: %d accepted, %d refused" % (
        sum("accepted" in x for x in stats["fewer_layers"]),
        sum("refused" in x for x in stats["fewer_layers"])))
    print("  optional group with one tensor missing: %d accepted, %d refused" % (
        sum(": accepted" in x for x in stats["partial"]), sum("refused" in x for x in stats["partial"])))
    if a.v:
        for x in sorted(stats["partial"], key=lambda x: "refused" in x)[:6]:
            print("  partial: %s" % x)
    if stats["fp_notes"]:
        print("  fingerprint differs between stored and canonical F32 copy in %d cases, e.g. %s"
              % (len(stats["fp_notes"]), stats["fp_notes"][0]))
    if a.v:
        for k, m in stats["broken_msgs"].items():
            print("  sample error [%s]: %s" % (k, m))
        for x in stats["fewer_layers"][:3]:
            print("  fewer layers: %s" % x)
    print("FAILED cases: %s" % (stats["failed"] or "none"))
    return 1 if stats["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
