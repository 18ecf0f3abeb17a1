#!/usr/bin/python3
"""The workloads of `xadapt bench` in plain PyTorch: the peer bench/run.py times xadapt against.

    /usr/bin/python3 bench/peer_torch.py WORKLOAD [--model DIR] [--vlm DIR] [--repeat N]
                                        [--warmup N] [--threads N] [--json] [--label NAME]
    /usr/bin/python3 bench/peer_torch.py --check --model BERT_DIR --vlm CLIP_DIR [--xadapt EXE]

No transformers: BERT and the CLIP vision tower are written here with torch.nn the way
transformers writes them (nn.Linear, nn.LayerNorm, nn.Embedding, nn.Conv2d, eager attention),
and the weights are read from the same make-random checkpoint xadapt maps, straight into the
parameters (peak memory one copy of the weights; tests/golden/st_io.load would hold two). The base
is frozen (requires_grad False), the adapters have the shapes and defaults of ours (see
ADAPTERS below and docs/performance.md). --check compares this model with the independent
reference in tests/golden/reference.py and, given --xadapt, with `xadapt encode`.
Debian's python3-torch 1.13 has no scaled_dot_product_attention; attention is eager, as
transformers' BertSelfAttention does it.
"""

import argparse
import json
import math
import os
import resource
import struct
import sys
import time

T_IMPORT = time.monotonic()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IMPORT_S = time.monotonic() - T_IMPORT
HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("sgemm", "forward", "clip-vision", "step-xadapter", "step-kadapter",
             "step-bottleneck", "step-lora", "load")


# ----------------------------------------------------------------------------------------------
# Weights: the safetensors header, then each tensor read straight into its own storage
# ----------------------------------------------------------------------------------------------

def read_checkpoint(d, keep):
    """name -> float32 tensor for the names `keep(name)` accepts (prefixes bert./roberta.
    removed). Only F32 files, as `xadapt make-random` writes by default."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    path = os.path.join(d, "model.safetensors")
    out = {}
    with open(path, "rb", buffering=0) as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        base = 8 + n
        for name, e in header.items():
            canon = name
            for p in ("bert.", "roberta."):
                if canon.startswith(p):
                    canon = canon[len(p):]
            if not keep(canon):
                continue
            if e["dtype"] != "F32":
                raise SystemExit("%s: %s is %s; the peer reads F32 checkpoints only"
                                 % (path, name, e["dtype"]))
            t = torch.empty(e["shape"], dtype=torch.float32)
            begin, end = e["data_offsets"]
            f.seek(base + begin)
            view = memoryview(t.numpy()).cast("B")
            if f.readinto(view) != end - begin:
                raise SystemExit("%s: short read of %s" % (path, name))
            out[canon] = t
    return cfg, out


def frozen(t):
    return nn.Parameter(t, requires_grad=False)


def linear_from(W, name, bias=True):
    out_f, in_f = W[name + ".weight"].shape
    m = nn.utils.skip_init(nn.Linear, in_f, out_f, bias=bias)
    m.weight = frozen(W[name + ".weight"])
    if bias:
        m.bias = frozen(W[name + ".bias"])
    return m


def ln_from(W, name, eps):
    m = nn.LayerNorm(W[name + ".weight"].shape[0], eps=eps)
    m.weight, m.bias = frozen(W[name + ".weight"]), frozen(W[name + ".bias"])
    return m


def attention(q, k, v, heads, p, training):
    """Eager multi-head attention, transformers style: (B,Tq,D), (B,Tk,D) -> (B,Tq,D)."""
    B, Tq, D = q.shape
    Tk, hd = k.shape[1], D // heads
    q = q.view(B, Tq, heads, hd).transpose(1, 2)
    k = k.view(B, Tk, heads, hd).transpose(1, 2)
    v = v.view(B, Tk, heads, v.shape[-1] // heads).transpose(1, 2)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    probs = F.dropout(probs, p, training)
    return (probs @ v).transpose(1, 2).reshape(B, Tq, -1)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


# ----------------------------------------------------------------------------------------------
# BERT (post-LN) with the adapter sites xadapt has: projections q/v, attn and ffn sub-layer
# outputs before their residual, block output
# ----------------------------------------------------------------------------------------------

class BertLayer(nn.Module):
    def __init__(self, W, p, heads, eps, dropout):
        super().__init__()
        self.q = linear_from(W, p + "attention.self.query")
        self.k = linear_from(W, p + "attention.self.key")
        self.v = linear_from(W, p + "attention.self.value")
        self.o = linear_from(W, p + "attention.output.dense")
        self.ln1 = ln_from(W, p + "attention.output.LayerNorm", eps)
        self.ff1 = linear_from(W, p + "intermediate.dense")
        self.ff2 = linear_from(W, p + "output.dense")
        self.ln2 = ln_from(W, p + "output.LayerNorm", eps)
        self.heads, self.p = heads, dropout
        self.lora_q = self.lora_v = self.ad_attn = self.ad_ffn = self.ad_out = None

    def forward(self, x, feats):
        q, v = self.q(x), self.v(x)
        if self.lora_q is not None:
            q = q + self.lora_q(x)
        if self.lora_v is not None:
            v = v + self.lora_v(x)
        a = attention(q, self.k(x), v, self.heads, self.p, self.training)
        a = F.dropout(self.o(a), self.p, self.training)
        if self.ad_attn is not None:
            a = self.ad_attn(a)
        x = self.ln1(x + a)
        f = F.dropout(self.ff2(F.gelu(self.ff1(x))), self.p, self.training)
        if self.ad_ffn is not None:
            f = self.ad_ffn(f)
        x = self.ln2(x + f)
        if self.ad_out is not None:
            x = self.ad_out(x, feats)
        return x


class Bert(nn.Module):
    def __init__(self, cfg, W, dropout=0.1):
        super().__init__()
        eps = cfg["layer_norm_eps"]
        self.word = nn.Embedding.from_pretrained(W["embeddings.word_embeddings.weight"])
        self.pos = nn.Embedding.from_pretrained(W["embeddings.position_embeddings.weight"])
        self.typ = nn.Embedding.from_pretrained(W["embeddings.token_type_embeddings.weight"])
        self.ln = ln_from(W, "embeddings.LayerNorm", eps)
        self.layers = nn.ModuleList(
            BertLayer(W, "encoder.layer.%d." % i, cfg["num_attention_heads"], eps, dropout)
            for i in range(cfg["num_hidden_layers"]))
        self.pooler = linear_from(W, "pooler.dense") if "pooler.dense.weight" in W else None
        self.p = dropout
        self.hidden, self.H = cfg["hidden_size"], cfg["hidden_size"]

    def forward(self, ids, feats=None, all_hidden=False):
        B, T = ids.shape
        pos = torch.arange(T).expand(B, T)
        x = self.ln(self.word(ids) + self.pos(pos) + self.typ(torch.zeros_like(ids)))
        x = F.dropout(x, self.p, self.training)
        hs = [x] if all_hidden else None
        for layer in self.layers:
            x = layer(x, feats)
            if all_hidden:
                hs.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return x, pooled, hs


def bert_keep(name):
    return name.startswith("embeddings.") or name.startswith("encoder.") or \
        name.startswith("pooler.")


# ----------------------------------------------------------------------------------------------
# CLIP vision tower (pre-LN, quick_gelu), as transformers' CLIPVisionModelWithProjection
# ----------------------------------------------------------------------------------------------

class ClipVision(nn.Module):
    def __init__(self, cfg, W):
        super().__init__()
        v = cfg["vision_config"]
        self.v, eps, P = v, v["layer_norm_eps"], "vision_model."
        w = W[P + "embeddings.patch_embedding.weight"]
        self.patch = nn.utils.skip_init(nn.Conv2d, w.shape[1], w.shape[0], v["patch_size"],
                                        stride=v["patch_size"], bias=False)
        self.patch.weight = frozen(w)
        self.cls = frozen(W[P + "embeddings.class_embedding"])
        self.pos = frozen(W[P + "embeddings.position_embedding.weight"])
        self.pre = ln_from(W, P + "pre_layrnorm", eps)
        self.blocks = nn.ModuleList()
        for i in range(v["num_hidden_layers"]):
            p = P + "encoder.layers.%d." % i
            self.blocks.append(nn.ModuleDict({
                "ln1": ln_from(W, p + "layer_norm1", eps),
                "q": linear_from(W, p + "self_attn.q_proj"),
                "k": linear_from(W, p + "self_attn.k_proj"),
                "v": linear_from(W, p + "self_attn.v_proj"),
                "o": linear_from(W, p + "self_attn.out_proj"),
                "ln2": ln_from(W, p + "layer_norm2", eps),
                "fc1": linear_from(W, p + "mlp.fc1"),
                "fc2": linear_from(W, p + "mlp.fc2")}))
        self.post = ln_from(W, P + "post_layernorm", eps)
        self.proj = linear_from(W, "visual_projection", bias=False)

    def forward(self, pixels):
        x = self.patch(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.pos[None]
        x = self.pre(x)
        heads = self.v["num_attention_heads"]
        for b in self.blocks:
            h = b["ln1"](x)
            x = x + b["o"](attention(b["q"](h), b["k"](h), b["v"](h), heads, 0.0, False))
            x = x + b["fc2"](quick_gelu(b["fc1"](b["ln2"](x))))
        pooled = self.post(x[:, 0])
        return x, pooled, self.proj(pooled)


def clip_vision_keep(name):
    return name.startswith("vision_model.") or name == "visual_projection.weight"


# ----------------------------------------------------------------------------------------------
# ADAPTERS: the shapes and defaults of adapters/*/ (xadapt's plugins)
# ----------------------------------------------------------------------------------------------

def normal_linear(i, o, std, bias=True):
    m = nn.Linear(i, o, bias=bias)
    nn.init.normal_(m.weight, 0.0, std)
    if bias:
        nn.init.zeros_(m.bias)
    return m


class XExpert(nn.Module):
    """adapters/xadapter defaults: pre-LN (eps 1e-5) on the query, q from h, k/v from CLIP
    tokens, dim 128, 4 heads, attention dropout 0.1, dropout 0.1, zero-init output."""

    def __init__(self, H, Df, dim=128, heads=4, dropout=0.1):
        super().__init__()
        self.ln = nn.LayerNorm(H, eps=1e-5)
        self.q, self.k, self.v = (normal_linear(H, dim, 0.02), normal_linear(Df, dim, 0.02),
                                  normal_linear(Df, dim, 0.02))
        self.o = nn.Linear(dim, H)
        nn.init.zeros_(self.o.weight), nn.init.zeros_(self.o.bias)
        self.heads, self.p = heads, dropout

    def forward(self, h, f):
        z = attention(self.q(self.ln(h)), self.k(f), self.v(f), self.heads, self.p,
                      self.training)
        return self.o(F.dropout(z, self.p, self.training))


class XAdapter(nn.Module):
    def __init__(self, H, Dv, Dt):
        super().__init__()
        self.ev, self.et = XExpert(H, Dv), XExpert(H, Dt)

    def forward(self, h, feats):
        return h + (self.ev(h, feats["image_tokens"]) + self.et(h, feats["text_tokens"]))


class Bottleneck(nn.Module):
    """Houlsby unit: h + up(relu(down(h))), down N(0, 0.02), up zero, reduction factor 16."""

    def __init__(self, H, rf=16):
        super().__init__()
        self.down, self.up = normal_linear(H, H // rf, 0.02), nn.Linear(H // rf, H)
        nn.init.zeros_(self.up.weight), nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(F.relu(self.down(h)))


class Lora(nn.Module):
    """PEFT's LoRA delta: scale * B A x, A like nn.Linear's default init, B zero."""

    def __init__(self, i, o, rank=8, alpha=16):
        super().__init__()
        self.A, self.B = nn.Linear(i, rank, bias=False), nn.Linear(rank, o, bias=False)
        nn.init.zeros_(self.B.weight)
        self.scale = alpha / rank

    def forward(self, x):
        return self.B(self.A(x)) * self.scale


class KLayer(nn.Module):
    """A trainable post-LN BertLayer inside K-Adapter (GELU, eps 1e-5, dropout 0.1)."""

    def __init__(self, S, heads, inter, dropout=0.1):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(S, S) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(S, eps=1e-5), nn.LayerNorm(S, eps=1e-5)
        self.ff1, self.ff2 = nn.Linear(S, inter), nn.Linear(inter, S)
        self.heads, self.p = heads, dropout

    def forward(self, h):
        z = self.o(attention(self.q(h), self.k(h), self.v(h), self.heads, self.p, self.training))
        h = self.ln1(h + F.dropout(z, self.p, self.training))
        z = self.ff2(F.gelu(self.ff1(h)))
        return self.ln2(h + F.dropout(z, self.p, self.training))


class KAdapter(nn.Module):
    """methods.md 2.2/2.3: per tap x = hs[tap] + prev; x + up(BERT_2(down(x))); down/up
    N(0, 0.0002); then K-Adapter's concat fusion linear(cat[h_L, out]) (2H -> H)."""

    def __init__(self, H, taps, S, heads, inter, layers=2):
        super().__init__()
        self.taps = taps
        self.down = nn.ModuleList(normal_linear(H, S, 0.0002) for _ in taps)
        self.up = nn.ModuleList(normal_linear(S, H, 0.0002) for _ in taps)
        self.enc = nn.ModuleList(nn.Sequential(*(KLayer(S, heads, inter) for _ in range(layers)))
                                 for _ in taps)
        self.fuse = nn.Linear(2 * H, H)

    def forward(self, last, hs):
        prev = None
        for k, tap in enumerate(self.taps):
            x = hs[tap] if prev is None else hs[tap] + prev
            prev = x + self.up[k](self.enc[k](self.down[k](x)))
        return self.fuse(torch.cat([last, prev], dim=-1))


# ----------------------------------------------------------------------------------------------
# FLOP counts: the same formulas as lua/cli_bench.c (matrix products only, multiply-add = 2)
# ----------------------------------------------------------------------------------------------

def lin(n, i, o):
    return 2.0 * n * i * o


def attn_flops(B, Tq, Tk, D):
    return 4.0 * B * Tq * Tk * D


def block_fwd(B, T, H, I):
    return 4 * lin(B * T, H, H) + 2 * lin(B * T, H, I) + attn_flops(B, T, T, H)


def block_bwd_dx(B, T, H, I):
    return 4 * lin(B * T, H, H) + 2 * lin(B * T, H, I) + 2 * attn_flops(B, T, T, H)


def plm_fwd(B, T, H, I, L):
    return L * block_fwd(B, T, H, I) + lin(B, H, H)


def step_flops(kind, B, T, H, I, L):
    """(forward, what is computed) per training step; see lua/cli_bench.c step_flops."""
    N = B * T
    f, b = plm_fwd(B, T, H, I, L) + lin(B, H, 2), 2 * lin(B, H, 2)
    if kind == "xadapter":
        def e_fwd(Nf, Df):
            return lin(N, H, 128) + 2 * lin(B * Nf, Df, 128) + attn_flops(B, T, Nf, 128) + \
                lin(N, 128, H)

        def e_bwd(Nf, Df):
            return 2 * lin(N, 128, H) + 2 * attn_flops(B, T, Nf, 128) + \
                2 * lin(B * Nf, Df, 128) + 2 * lin(N, H, 128)
        f += 2 * (e_fwd(50, 768) + e_fwd(77, 512))
        b += block_bwd_dx(B, T, H, I) + 2 * (e_bwd(50, 768) + e_bwd(77, 512))
    elif kind == "kadapter":
        inner = block_fwd(B, T, H, I)
        f += 3 * (2 * lin(N, H, H) + 2 * inner) + lin(N, 2 * H, H)
        b += 2 * lin(N, 2 * H, H) + 3 * (2 * lin(N, H, H) + 4 * inner) + 5 * lin(N, H, H)
    elif kind == "bottleneck":
        m = H // 16
        unit = lin(N, H, m) + lin(N, m, H)
        f += L * 2 * unit
        b += (L - 1) * (block_bwd_dx(B, T, H, I) + 4 * unit)
        b += 2 * lin(N, H, I) + lin(N, H, m) + 2 * lin(N, m, H) + 2 * unit
    else:
        unit = lin(N, H, 8) + lin(N, 8, H)
        f += L * 2 * unit
        b += (L - 1) * (block_bwd_dx(B, T, H, I) + 4 * unit)
        b += lin(N, H, H) + 2 * lin(N, H, I) + 1.5 * attn_flops(B, T, T, H) + \
            2 * (lin(N, H, 8) + 2 * lin(N, 8, H))
    return f, f + b


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------

def time_loop(label, fn, warmup, repeat):
    times = []
    for i in range(warmup + repeat):
        t0 = time.monotonic()
        fn()
        dt = time.monotonic() - t0
        warm = i < warmup
        if not warm:
            times.append(dt)
        print("%s %-7s %2d  %9.4f s" % (label, "warmup" if warm else "iter",
                                        i + 1 if warm else i - warmup + 1, dt), flush=True)
    return times


def run_sgemm(a, res):
    best = None
    for M, N, K in ((1024, 3072, 768), (1024, 768, 3072), (2048, 2048, 2048)):
        A, Bt, C = torch.rand(M, K) - 0.5, torch.rand(N, K) - 0.5, torch.empty(M, N)
        label = "sgemm %dx%dx%d" % (M, N, K)
        times = time_loop(label, lambda: torch.mm(A, Bt.t(), out=C), a.warmup, a.repeat)
        gflop = 2.0 * M * N * K * 1e-9
        rate = gflop / median(times)
        print("%s: %.1f GFLOP/s at the median, %.1f at the best" % (label, rate,
                                                                     gflop / min(times)))
        if best is None or rate > best[0]:
            best = (rate, times, gflop, "%dx%dx%d" % (M, N, K))
    res.update(times=best[1], gflop=best[2], shape=best[3], peak_gflops=round(best[0], 2))


def random_ids(g, B, T, V):
    lo = 1000 if V > 2000 else 1
    return torch.randint(lo, V - 1, (B, T), generator=g)


def run_forward(a, res, load=False):
    g = torch.Generator().manual_seed(a.seed)
    if load:  # weights read into the modules + first forward, per iteration (run.py asks 1)
        state = {}

        def once():
            cfg, W = read_checkpoint(a.model, bert_keep)
            m = Bert(cfg, W).eval()
            ids = random_ids(g, a.batch, a.seq, cfg["vocab_size"])
            with torch.inference_mode():
                m(ids)
            state["cfg"] = cfg
        times = time_loop("load", once, a.warmup, a.repeat)
        cfg = state["cfg"]
    else:
        cfg, W = read_checkpoint(a.model, bert_keep)
        m = Bert(cfg, W).eval()
        ids = random_ids(g, a.batch, a.seq, cfg["vocab_size"])

        def once():
            with torch.inference_mode():
                m(ids)
        times = time_loop("forward", once, a.warmup, a.repeat)
    res.update(times=times, batch=a.batch, seq=a.seq,
               gflop=plm_fwd(a.batch, a.seq, cfg["hidden_size"], cfg["intermediate_size"],
                             cfg["num_hidden_layers"]) * 1e-9)


def run_vision(a, res):
    cfg, W = read_checkpoint(a.vlm or a.model, clip_vision_keep)
    m = ClipVision(cfg, W).eval()
    v = cfg["vision_config"]
    S, B = v["image_size"], a.batch
    pixels = torch.randn(B, v.get("num_channels", 3), S, S,
                         generator=torch.Generator().manual_seed(a.seed))

    def once():
        with torch.inference_mode():
            m(pixels)
    times = time_loop("clip-vision", once, a.warmup, a.repeat)
    P, H, I = (S // v["patch_size"]) ** 2, v["hidden_size"], v["intermediate_size"]
    gflop = lin(B * P, 3 * v["patch_size"] ** 2, H) + \
        v["num_hidden_layers"] * block_fwd(B, 1 + P, H, I) + lin(B, H, cfg["projection_dim"])
    res.update(times=times, gflop=gflop * 1e-9, batch=B, image=S)


def build_step(kind, cfg, W, vlm_cfg):
    """The frozen BERT with adapters of `kind` in train mode, the head and AdamW."""
    torch.manual_seed(0)
    model = Bert(cfg, W).train()
    H, L, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    I = cfg["intermediate_size"]
    side = None
    if kind == "xadapter":
        Dv, Dt = vlm_cfg["vision_config"]["hidden_size"], vlm_cfg["text_config"]["hidden_size"]
        for i in (L - 2, L - 1):
            model.layers[i].ad_out = XAdapter(H, Dv, Dt)
    elif kind == "kadapter":
        side = KAdapter(H, [0, L // 2 - 1, L - 1], H, heads, I)
    elif kind == "bottleneck":
        for layer in model.layers:
            layer.ad_attn, layer.ad_ffn = Bottleneck(H), Bottleneck(H)
    else:
        for layer in model.layers:
            layer.lora_q, layer.lora_v = Lora(H, H), Lora(H, H)
    head = nn.Linear(H, 2)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    if side is not None:
        trainable += list(side.parameters())
        side.train()
    # xadapt decays matrices only (not biases and norms)
    groups = [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": 0.01},
              {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4)
    return model, side, head, opt, sum(p.numel() for p in trainable)


def run_step(a, res, kind):
    cfg, W = read_checkpoint(a.model, bert_keep)
    vlm_cfg = None
    if kind == "xadapter":
        if not a.vlm:
            raise SystemExit("peer_torch: step-xadapter needs --vlm DIR (CLIP sizes)")
        with open(os.path.join(a.vlm, "config.json")) as f:
            vlm_cfg = json.load(f)
    model, side, head, opt, ntrain = build_step(kind, cfg, W, vlm_cfg)
    g = torch.Generator().manual_seed(a.seed)
    B, T = a.batch, a.seq
    ids = random_ids(g, B, T, cfg["vocab_size"])
    labels = torch.randint(0, 2, (B,), generator=g)
    feats = None
    if vlm_cfg is not None:  # cached CLIP features in the real pipeline; random here
        feats = {"image_tokens": torch.randn(B, 50, vlm_cfg["vision_config"]["hidden_size"],
                                             generator=g),
                 "text_tokens": torch.randn(B, 77, vlm_cfg["text_config"]["hidden_size"],
                                            generator=g)}
    state = {}

    def once():
        opt.zero_grad(set_to_none=True)
        last, _, hs = model(ids, feats, all_hidden=side is not None)
        if side is not None:
            last = side(last, hs)
        logits = head(F.dropout(last[:, 0], 0.1, True))
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        state["loss"] = loss.item()
    times = time_loop("step-" + kind, once, a.warmup, a.repeat)
    f, actual = step_flops(kind, B, T, cfg["hidden_size"], cfg["intermediate_size"],
                           cfg["num_hidden_layers"])
    res.update(times=times, gflop=actual * 1e-9, gflop_dense=3 * f * 1e-9, batch=B, seq=T,
               trainable=ntrain, loss=round(state["loss"], 5))
    print("step-%s: loss %.4f" % (kind, state["loss"]))


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def cpu_capability():
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage" in line:
            return line.split(":")[-1].strip()
    return "?"


# ----------------------------------------------------------------------------------------------
# --check: the peer computes what the reference and xadapt compute
# ----------------------------------------------------------------------------------------------

def check(a):
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
    import reference  # noqa: E402  (sets grad off globally: --check only)
    worst = 0.0
    cfg, W = read_checkpoint(a.model, bert_keep)
    m = Bert(cfg, W).eval()
    ids = random_ids(torch.Generator().manual_seed(3), 2, 16, cfg["vocab_size"])
    with torch.inference_mode():
        last, pooled, _ = m(ids)
    ref = reference.bert_forward({k: v.double() for k, v in W.items()}, cfg, ids,
                                 torch.ones_like(ids), None, "bert")
    d = max((last.double() - ref["last_hidden_state"]).abs().max().item(),
            (pooled.double() - ref["pooler_output"]).abs().max().item())
    print("check: peer BERT vs tests/golden/reference.py: max |diff| %.2e" % d)
    worst = max(worst, d)
    if a.xadapt:
        import subprocess
        import tempfile
        sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
        import st_io
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "x.safetensors")
            cmd = [a.xadapt, "encode", "--model", a.model, "--out", out]
            for row in ids.tolist():
                cmd += ["--ids", " ".join(map(str, row))]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            got, _, _ = st_io.load(out)
        d = (got["last_hidden_state"].double() - last.double()).abs().max().item()
        print("check: peer BERT vs xadapt encode: max |diff| %.2e" % d)
        worst = max(worst, d)
    if a.vlm:
        cfg, W = read_checkpoint(a.vlm, clip_vision_keep)
        m = ClipVision(cfg, W).eval()
        S = cfg["vision_config"]["image_size"]
        px = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(4))
        with torch.inference_mode():
            last, pooled, emb = m(px)
        Wd = {k: v.double() for k, v in W.items()}
        rl, rp, _ = reference.clip_vision_forward(Wd, cfg["vision_config"], px.double())
        re = rp @ Wd["visual_projection.weight"].t()
        d = max((last.double() - rl).abs().max().item(), (emb.double() - re).abs().max().item())
        print("check: peer CLIP vision vs tests/golden/reference.py: max |diff| %.2e" % d)
        worst = max(worst, d)
    ok = worst < 1e-3
    print("check: %s (largest difference %.2e, tolerance 1e-3)" % ("ok" if ok else "FAILED",
                                                                   worst))
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload", nargs="?", choices=WORKLOADS)
    ap.add_argument("--model")
    ap.add_argument("--vlm")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--label", default="torch", help="impl name in the JSON line")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--xadapt", help="xadapt executable for --check")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.check:
        return check(a)
    if not a.workload:
        ap.error("a workload is required")
    if a.workload not in ("sgemm", "clip-vision") and not a.model:
        ap.error("%s needs --model DIR" % a.workload)
    print("peer_torch %s: torch %s, %d threads, %s, OPENBLAS_CORETYPE=%s" % (
        a.workload, torch.__version__, torch.get_num_threads(), cpu_capability(),
        os.environ.get("OPENBLAS_CORETYPE", "unset")), flush=True)
    res = {}
    if a.workload == "sgemm":
        run_sgemm(a, res)
    elif a.workload in ("forward", "load"):
        run_forward(a, res, load=a.workload == "load")
    elif a.workload == "clip-vision":
        run_vision(a, res)
    else:
        run_step(a, res, a.workload[len("step-"):])
    times = res.pop("times")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    med = median(times)
    print("%s: median %.4f s, min %.4f s, %.2f GFLOP/iter, peak RSS %.1f MB" % (
        a.workload, med, min(times), res["gflop"], rss))
    if a.json:
        line = {"impl": a.label, "workload": a.workload, "median_s": round(med, 6),
                "min_s": round(min(times), 6), "gflop": round(res.pop("gflop"), 4),
                "gflop_dense": round(res.pop("gflop_dense", 0.0), 4), "rss_mb": round(rss, 1),
                "threads": torch.get_num_threads(), "capability": cpu_capability(),
                "import_s": round(IMPORT_S, 3), "times_s": [round(t, 6) for t in times]}
        line.update(res)
        print(json.dumps(line, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
