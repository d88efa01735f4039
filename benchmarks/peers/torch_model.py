"""The Sparse Transformer of libsparse, written again in PyTorch with dense masked attention.

This is the peer that `train_throughput.py` times against `sparse-repro bench-train`, and that
`test_torch_equivalence.py` checks against the library on the same checkpoint. It follows
capi/include/sparse/model.h and libsparse/model/{config,transformer,trainer}.cpp exactly:

  H0 = embed(x shifted right behind a learned start vector) + sum_k pos_k[coordinate_k(t)]
  Hk = Hk-1 + a + b,  a = attention(ln1(Hk-1)) W_p,  b = W2 gelu(W1 ln2(Hk-1 + a) + b1) + b2
  logits = ln_final(HN) W_out (or ln_final(HN) E^T when tied), loss = mean cross-entropy (nats)

with layer-norm epsilon 1e-5 (final 1e-6), GELU x * sigmoid(1.702 x), attention scale
1 / sqrt(query/key head width), linear weights stored [in, out] (y = x W), and every parameter
named as in the library's checkpoints ("layers.3.attn.q", ...).

Attention is dense: every (query, key) pair is computed and the sparse pattern is applied as a
boolean mask built from the token-level definitions in capi/include/sparse/layout.h. Three
implementations are available (`attention=`):
  "sdpa"   torch.nn.functional.scaled_dot_product_attention with the boolean mask (the fastest
           masked path PyTorch has on the CPU: its fused flash-attention kernel, which needs one
           head width for Q, K and V, so half-size Q/K heads are zero-padded to the V width
           unless pad_qk=False, exactly as the library does)
  "math"   softmax(Q K^T * scale + mask) V written out (PyTorch's textbook path)
  "causal" scaled_dot_product_attention(is_causal=True) with no pattern at all: plain dense
           causal attention (a different, dense model of the same size, for reference)
Rows of a pattern that allow no key at all (FIXED_SUMMARY heads near the start) give a zero
output, as in the library.

Dropout uses PyTorch's own generator (the library's dropout streams are not reproduced), so
the two agree exactly only with dropout 0 or in evaluation.
"""
import dataclasses
import json
import math
import os
import struct

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

VOCAB = 256

# sparse_model_attention and sparse_head_mode values (stable in the C ABI).
ATTENTION_DENSE, ATTENTION_STRIDED, ATTENTION_FIXED = 0, 1, 2
HEADS_INTERLEAVED, HEADS_MERGED, HEADS_MULTIHEAD = 0, 1, 2
ROW_STRIDED, ROW_LOCAL = 0, 1  # sparse_row_attention


@dataclasses.dataclass
class ModelConfig:
    """Mirror of sparse_model_config (defaults from sparse_model_config_default)."""
    seq_len: int = 256
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 2
    attention: int = ATTENTION_STRIDED
    head_mode: int = HEADS_INTERLEAVED
    stride: int = 16
    summary: int = 4
    block_size: int = 16
    layer_cycle: str = "12"
    half_qk: int = 0
    half_ff: int = 0
    dropout: float = 0.0
    tied_embeddings: int = 0
    position_shape: tuple = (16, 16)
    recompute: int = 0
    seed: int = 1
    output_init_std: float = 0.0
    row_attention: int = ROW_STRIDED
    summary_variants: int = 1

    @property
    def dqk(self):
        return self.d_model // 2 if self.half_qk else self.d_model

    @property
    def inner(self):
        return 2 * self.d_model if self.half_ff else 4 * self.d_model


def preset(name):
    """The presets of sparse_model_config_preset (libsparse/model/config.cpp)."""
    base, small = (name[:-6], True) if name.endswith("-small") else (name, False)
    openai = base == "cifar10-openai"
    if openai:
        base = "cifar10"
    c = ModelConfig()
    if base == "cifar10":
        c = dataclasses.replace(c, seq_len=3072, num_layers=128, d_model=256, num_heads=2,
                                attention=ATTENTION_STRIDED, stride=96, block_size=32,
                                layer_cycle="2111", half_qk=1, half_ff=1, dropout=0.25,
                                position_shape=(32, 32, 3))
    elif base == "enwik8":
        c = dataclasses.replace(c, seq_len=12288, num_layers=30, d_model=512, num_heads=8,
                                attention=ATTENTION_FIXED, stride=128, summary=32, block_size=32,
                                dropout=0.40, position_shape=(96, 128))
    elif base == "imagenet64":
        c = dataclasses.replace(c, seq_len=12288, num_layers=48, d_model=512, num_heads=16,
                                attention=ATTENTION_STRIDED, stride=128, block_size=64,
                                dropout=0.01, position_shape=(64, 64, 3))
    elif base == "audio":
        c = dataclasses.replace(c, seq_len=65536, num_layers=48, d_model=512, num_heads=16,
                                attention=ATTENTION_STRIDED, stride=256, block_size=64,
                                dropout=0.0, position_shape=(256, 256))
    else:
        raise ValueError(f"unknown model preset {name!r}")
    if small:
        c = dataclasses.replace(c, num_layers=4, d_model=64, num_heads=2)
    if openai:
        c = dataclasses.replace(c, row_attention=ROW_LOCAL)
    return c


def config_from_string(text):
    """Parses the "model_config" metadata string of a libsparse checkpoint."""
    kv = dict(item.split("=", 1) for item in text.split(";") if item)
    def f32(key, default="0"):
        return struct.unpack("<f", struct.pack("<I", int(kv.get(key, default))))[0]

    dropout = f32("dropout_bits")
    ndims = int(kv["num_position_dims"])
    return ModelConfig(
        seq_len=int(kv["seq_len"]), num_layers=int(kv["num_layers"]), d_model=int(kv["d_model"]),
        num_heads=int(kv["num_heads"]), attention=int(kv["attention"]),
        head_mode=int(kv["head_mode"]), stride=int(kv["stride"]), summary=int(kv["summary"]),
        block_size=int(kv["block_size"]), layer_cycle=kv["layer_cycle"],
        half_qk=int(kv["half_qk"]), half_ff=int(kv["half_ff"]), dropout=dropout,
        tied_embeddings=int(kv["tied_embeddings"]),
        position_shape=tuple(int(kv[f"position_shape{k}"]) for k in range(ndims)),
        recompute=int(kv["recompute"]), seed=int(kv["seed"]),
        output_init_std=f32("output_init_std_bits"),  # absent before API 0.3: zero init
        # absent for the paper's choices (and before API 0.4)
        row_attention=int(kv.get("row_attention", ROW_STRIDED)),
        summary_variants=max(1, int(kv.get("summary_variants", 1))))


def train_config_from_string(text):
    """Parses the "train_config" metadata string (floats are stored as their bit patterns)."""
    kv = dict(item.split("=", 1) for item in text.split(";") if item)
    out = {}
    for key, value in kv.items():
        if key.endswith("_bits"):
            out[key[:-5]] = struct.unpack("<f", struct.pack("<I", int(value)))[0]
        else:
            out[key] = int(value)
    return out


# ---------------------------------------------------------------- attention patterns

def _pattern_rows(kind, i, j, stride, summary, variant=0):
    """Token-level definitions of capi/include/sparse/layout.h (i: [r, 1], j: [1, n]); the local
    window is the stride, as in the model."""
    causal = j <= i
    if kind == "dense":
        return causal.expand(i.shape[0], j.shape[1])
    if kind == "local":
        return causal & (j > i - stride)
    if kind == "strided_row":
        return causal & (j >= i - stride)
    if kind == "strided_column":
        return causal & ((i - j) % stride == 0)
    if kind == "fixed_block":
        return causal & (torch.div(j, stride, rounding_mode="floor")
                         == torch.div(i, stride, rounding_mode="floor"))
    if kind == "fixed_summary":
        jm = j % stride
        return causal & (jm >= stride - summary * (variant + 1)) & (jm < stride - summary * variant)
    raise ValueError(kind)


def pattern_mask(kinds, n, stride, summary, rows_per_chunk=1024, variant=0):
    """Boolean [n, n] mask, True = allowed: the union of the pattern kinds in `kinds`; `variant`
    is the fixed summary head's offset (head mod summary_variants)."""
    mask = torch.empty(n, n, dtype=torch.bool)
    j = torch.arange(n, dtype=torch.int64).unsqueeze(0)
    for r0 in range(0, n, rows_per_chunk):
        i = torch.arange(r0, min(n, r0 + rows_per_chunk), dtype=torch.int64).unsqueeze(1)
        block = torch.zeros(i.shape[0], n, dtype=torch.bool)
        for kind in kinds:
            block |= _pattern_rows(kind, i, j, stride, summary, variant)
        mask[r0:r0 + i.shape[0]] = block
    return mask


def head_types(c):
    if c.attention == ATTENTION_FIXED:
        return "fixed_block", "fixed_summary"
    if c.row_attention == ROW_LOCAL:
        return "local", "strided_column"
    return "strided_row", "strided_column"


def _heads_mask(c, kinds_of_head):
    """[n, n] when every head has the same set, else [heads, n, n]; kinds_of_head(h) lists the
    kinds head h attends to. Fixed summary heads take offset h mod summary_variants."""
    n, variants = c.seq_len, max(1, c.summary_variants)
    uses_variants = variants > 1 and c.attention == ATTENTION_FIXED
    heads = [(tuple(kinds_of_head(h)), h % variants if uses_variants else 0)
             for h in range(c.num_heads)]
    cache = {}
    for key in heads:
        if key not in cache:
            cache[key] = pattern_mask(list(key[0]), n, c.stride, c.summary, variant=key[1])
    if len(cache) == 1:
        return next(iter(cache.values()))
    return torch.stack([cache[key] for key in heads])


def layer_masks(c):
    """(masks, layer_mask): distinct masks ([n, n] or [heads, n, n]) and, per layer, which one
    it uses, as build_model_layouts() in libsparse/model/transformer.cpp."""
    n = c.seq_len
    if c.attention == ATTENTION_DENSE:
        return [pattern_mask(["dense"], n, c.stride, c.summary)], [0] * c.num_layers
    t1, t2 = head_types(c)
    if c.head_mode == HEADS_INTERLEAVED:
        masks = [_heads_mask(c, lambda h: [t1]), _heads_mask(c, lambda h: [t2])]
        cycle = c.layer_cycle
        return masks, [0 if cycle[l % len(cycle)] == "1" else 1 for l in range(c.num_layers)]
    if c.head_mode == HEADS_MERGED:
        return [_heads_mask(c, lambda h: [t1, t2])], [0] * c.num_layers
    return [_heads_mask(c, lambda h: [t1] if h % 2 == 0 else [t2])], [0] * c.num_layers


class MaskedAttention:
    """A boolean pattern mask prepared for attention: rows that allow no key are given key 0
    (so softmax stays finite) and their output is multiplied by 0 afterwards."""

    def __init__(self, mask):
        has_key = mask.any(dim=-1)  # [..., n]
        self.row_scale = None
        if not bool(has_key.all()):
            mask = mask.clone()
            empty = ~has_key
            mask[..., 0] |= empty
            self.row_scale = has_key.to(torch.float32).unsqueeze(-1)  # [..., n, 1]
        self.mask = mask
        self.additive = None  # float mask for the "math" path, built on first use

    def float_mask(self):
        if self.additive is None:
            self.additive = torch.zeros(self.mask.shape, dtype=torch.float32)
            self.additive.masked_fill_(~self.mask, float("-inf"))
        return self.additive


def flex_block_mask(mask, block, device):
    """FlexAttention BlockMask of a boolean [n, n] or [heads, n, n] mask (True = allowed) at the
    library's block size: a block with every element allowed is full, one with some is partial
    (its elements looked up in `mask` by the mask_mod), the others are skipped, as the library's
    layout skips blocks its pattern does not touch."""
    from torch.nn.attention.flex_attention import BlockMask
    m = mask if mask.dim() == 3 else mask.unsqueeze(0)
    heads, n = m.shape[0], m.shape[-1]
    nb = -(-n // block)
    padded = torch.zeros(heads, nb * block, nb * block, dtype=torch.bool)
    padded[:, :n, :n] = m
    blocks = padded.view(heads, nb, block, nb, block)
    count = blocks.sum(dim=(2, 4))
    full = count == block * block
    part = (count > 0) & ~full

    def lists(x):
        num = x.sum(-1).to(torch.int32)
        idx = torch.argsort(x.to(torch.int8), dim=-1, descending=True, stable=True)
        return num[None].to(device), idx[None].to(torch.int32).to(device)

    dense = m.to(device)

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[h if heads > 1 else 0, q_idx, kv_idx]

    kv_num, kv_idx = lists(part)
    full_num, full_idx = lists(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx,
                                    BLOCK_SIZE=(block, block), mask_mod=mask_mod,
                                    seq_lengths=(n, n))


# ---------------------------------------------------------------- the model

class SparseTransformer(torch.nn.Module):
    def __init__(self, config, attention="sdpa", init_seed=None, pad_qk=True):
        super().__init__()
        self.pad_qk = pad_qk
        self.config = c = config
        if attention not in ("sdpa", "math", "causal", "flex"):
            raise ValueError(f"attention = {attention!r}")
        self.attention_impl = attention
        d, n = c.d_model, c.seq_len
        self.head_qk = c.dqk // c.num_heads
        self.head_v = d // c.num_heads
        self.scale = 1.0 / math.sqrt(self.head_qk)
        self.params = torch.nn.ParameterDict()
        self.names = []  # checkpoint names in the library's order
        self.decay = {}  # name -> weight decay applies (matrices and tables)
        N = c.num_layers

        def add(name, shape, std, decay, fill=0.0):
            t = torch.empty(shape, dtype=torch.float32)
            if std > 0:
                t.normal_(0.0, std)
            else:
                t.fill_(fill)
            self.params[name.replace(".", "__")] = torch.nn.Parameter(t)
            self.names.append(name)
            self.decay[name] = decay

        if init_seed is not None:
            torch.manual_seed(init_seed)
        add("embed.token", (VOCAB, d), 0.01, True)
        add("embed.start", (d,), 0.01, True)
        pos_std = 0.01 / math.sqrt(len(c.position_shape))
        for k, size in enumerate(c.position_shape):
            add(f"embed.pos{k}", (size, d), pos_std, True)
        for l in range(N):
            p = f"layers.{l}."
            add(p + "ln1.gain", (d,), 0, False, 1.0)
            add(p + "ln1.bias", (d,), 0, False)
            add(p + "attn.q", (d, c.dqk), math.sqrt(0.125 / d), True)
            add(p + "attn.k", (d, c.dqk), math.sqrt(0.125 / d), True)
            add(p + "attn.v", (d, d), math.sqrt(0.125 / d), True)
            add(p + "attn.proj", (d, d), math.sqrt(0.125 * 0.5 / (d * N)), True)
            add(p + "ln2.gain", (d,), 0, False, 1.0)
            add(p + "ln2.bias", (d,), 0, False)
            add(p + "ff.w1", (d, c.inner), math.sqrt(0.125 / d), True)
            add(p + "ff.b1", (c.inner,), 0, False)
            add(p + "ff.w2", (c.inner, d), math.sqrt(0.125 * 0.5 / (c.inner * N)), True)
            add(p + "ff.b2", (d,), 0, False)
        add("final_ln.gain", (d,), 0, False, 1.0)
        add("final_ln.bias", (d,), 0, False)
        if not c.tied_embeddings:
            add("out.w", (d, VOCAB), c.output_init_std, True)

        # Position coordinates: t in mixed radix over position_shape, last coordinate fastest.
        t = torch.arange(n, dtype=torch.int64)
        coords = []
        for k in range(len(c.position_shape)):
            div = 1
            for size in c.position_shape[k + 1:]:
                div *= size
            coords.append((t // div) % c.position_shape[k])
        self.register_buffer("coords", torch.stack(coords), persistent=False)

        if attention == "causal":
            self.masks, self.layer_mask = [], [None] * N
        else:
            raw, self.layer_mask = layer_masks(c)
            self.masks = [MaskedAttention(m) for m in raw]
        self.flex = None  # (compiled flex_attention, block masks): prepare_flex()

    def prepare_flex(self, device, compile=True):
        """attention="flex": FlexAttention with each mask's BlockMask at the library's block
        size, on `device`, compiled (fullgraph) unless compile=False (eager: CPU rehearsals)."""
        from torch.nn.attention.flex_attention import flex_attention
        fn = torch.compile(flex_attention, fullgraph=True, dynamic=False) if compile \
            else flex_attention
        block_masks = [flex_block_mask(m.mask, self.config.block_size, device) for m in self.masks]
        for m in self.masks:
            if m.row_scale is not None:
                m.row_scale = m.row_scale.to(device)
        self.flex = (fn, block_masks)

    def sdpa_backend(self, batch=1):
        """Name of the kernel scaled_dot_product_attention picks for this model's shapes."""
        c = self.config
        e = self.head_v if (self.pad_qk and self.attention_impl != "math") else self.head_qk
        q = torch.zeros(batch, c.num_heads, c.seq_len, e)
        v = torch.zeros(batch, c.num_heads, c.seq_len, self.head_v)
        if self.attention_impl == "math":
            return "none (written-out softmax)"
        if self.attention_impl == "causal":
            mask, causal = None, True
        else:
            mask, causal = self.masks[0].mask, False
        try:
            choice = int(torch._fused_sdp_choice(q, q, v, mask, 0.0, causal))
        except Exception:  # a private API: report rather than fail
            return "unknown"
        return {0: "math", 1: "flash_attention", 2: "efficient_attention", 3: "cudnn",
                4: "overrideable"}.get(choice, str(choice))

    def p(self, name):
        return self.params[name.replace(".", "__")]

    def named_tensors(self):
        return [(name, self.p(name)) for name in self.names]

    def load_tensors(self, tensors):
        """Copies {checkpoint name: tensor} into the parameters (every name must be present)."""
        with torch.no_grad():
            for name in self.names:
                src = tensors["param." + name] if "param." + name in tensors else tensors[name]
                dst = self.p(name)
                if tuple(src.shape) != tuple(dst.shape):
                    raise ValueError(f"{name}: shape {tuple(src.shape)} != {tuple(dst.shape)}")
                dst.copy_(src)

    # ------------------------------------------------------------ forward

    def embed(self, tokens):
        B, n = tokens.shape
        d = self.config.d_model
        prev = F.embedding(tokens[:, :-1], self.p("embed.token"))
        start = self.p("embed.start").view(1, 1, d).expand(B, 1, d)
        h = torch.cat([start, prev], dim=1)
        pos = 0
        for k in range(len(self.config.position_shape)):
            pos = pos + self.p(f"embed.pos{k}")[self.coords[k]]
        return h + pos

    def attend(self, q, k, v, layer):
        """q, k: [B, H, n, head_qk]; v: [B, H, n, head_v] -> [B, H, n, head_v]."""
        if self.pad_qk and self.head_qk < self.head_v and self.attention_impl != "math":
            # PyTorch's fused CPU kernel (flash attention) needs one head width for Q, K and V;
            # zero columns leave every score unchanged (the library pads the same way).
            pad = (0, self.head_v - self.head_qk)
            q, k = F.pad(q, pad), F.pad(k, pad)
        if self.attention_impl == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        m = self.masks[self.layer_mask[layer]]
        if self.attention_impl == "flex":
            fn, block_masks = self.flex
            out = fn(q, k, v, block_mask=block_masks[self.layer_mask[layer]], scale=self.scale)
        elif self.attention_impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=m.mask, scale=self.scale)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale + m.float_mask()
            out = torch.matmul(torch.softmax(scores, dim=-1), v)
        if m.row_scale is not None:
            out = out * m.row_scale
        return out

    def layer(self, l, h):
        c = self.config
        B, n, d = h.shape
        H = c.num_heads
        pre = f"layers.{l}."
        P = lambda name: self.p(pre + name)  # noqa: E731
        y1 = F.layer_norm(h, (d,), P("ln1.gain"), P("ln1.bias"), eps=1e-5)
        q = (y1 @ P("attn.q")).view(B, n, H, self.head_qk).transpose(1, 2)
        k = (y1 @ P("attn.k")).view(B, n, H, self.head_qk).transpose(1, 2)
        v = (y1 @ P("attn.v")).view(B, n, H, self.head_v).transpose(1, 2)
        att = self.attend(q, k, v, l).transpose(1, 2).reshape(B, n, d)
        a = att @ P("attn.proj")
        if self.training and c.dropout > 0:
            a = F.dropout(a, c.dropout)
        r = h + a
        y2 = F.layer_norm(r, (d,), P("ln2.gain"), P("ln2.bias"), eps=1e-5)
        u = torch.addmm(P("ff.b1"), y2.reshape(B * n, d), P("ff.w1"))
        g = u * torch.sigmoid(1.702 * u)
        f = torch.addmm(P("ff.b2"), g, P("ff.w2")).view(B, n, d)
        if self.training and c.dropout > 0:
            f = F.dropout(f, c.dropout)
        return r + f

    def logits(self, tokens):
        c = self.config
        h = self.embed(tokens)
        for l in range(c.num_layers):
            if c.recompute and self.training and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(self.layer, l, h, use_reentrant=False)
            else:
                h = self.layer(l, h)
        y = F.layer_norm(h, (c.d_model,), self.p("final_ln.gain"), self.p("final_ln.bias"),
                         eps=1e-6)
        w = self.p("embed.token").t() if c.tied_embeddings else self.p("out.w")
        return y @ w

    def forward(self, tokens):
        """Mean cross-entropy in nats over every position of `tokens` [B, n] (int64)."""
        logits = self.logits(tokens)
        return F.cross_entropy(logits.reshape(-1, VOCAB), tokens.reshape(-1))


# ---------------------------------------------------------------- the trainer

class Trainer:
    """sparse_model_train_step: Adam with weight decay as an L2 penalty on matrices and tables
    (torch.optim.Adam's weight_decay is exactly that), global-norm clipping before the penalty,
    constant learning rate (no warm-up, no decay: the defaults)."""

    def __init__(self, model, lr=3.5e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                 clip_norm=1.0):
        self.model = model
        self.clip_norm = clip_norm
        decay = [p for name, p in model.named_tensors() if model.decay[name]]
        other = [p for name, p in model.named_tensors() if not model.decay[name]]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": other, "weight_decay": 0.0}]
        self.opt = torch.optim.Adam(groups, lr=lr, betas=(beta1, beta2), eps=eps)

    def load_adam_state(self, tensors, step):
        """Sets Adam's moments and step from checkpoint tensors "adam_m.*" / "adam_v.*"."""
        for name, p in self.model.named_tensors():
            self.opt.state[p] = {"step": torch.tensor(float(step)),
                                 "exp_avg": tensors["adam_m." + name].clone(),
                                 "exp_avg_sq": tensors["adam_v." + name].clone()}

    def step(self, tokens):
        """One optimiser step; returns (loss before the update, gradient norm before clipping)."""
        self.opt.zero_grad(set_to_none=False)
        loss = self.model(tokens)
        loss.backward()
        params = [p for _, p in self.model.named_tensors()]
        norm = torch.sqrt(sum(torch.sum(p.grad.double() ** 2) for p in params)).item()
        if self.clip_norm > 0 and norm > self.clip_norm:
            scale = self.clip_norm / norm
            for p in params:
                p.grad.mul_(scale)
        self.opt.step()
        return loss.item(), norm


# ---------------------------------------------------------------- checkpoints

_DTYPES = {"F32": torch.float32, "F64": torch.float64}


def read_safetensors(path):
    """(metadata dict, {name: tensor}) of a safetensors file (a libsparse checkpoint)."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = memoryview(blob)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=_DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return meta, tensors


def _fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_checkpoint(path, meta, tensors):
    """Writes {name: tensor} with libsparse's metadata `meta` (as read by read_safetensors) in
    the layout sparse_model_load accepts (format sparse-checkpoint-2): F32 tensors in the given
    order, FNV-1a 64 checksums in the metadata of the data section ("checksum") and of the length
    bytes and header with its own 16 digits read as '0' ("header_checksum"), header padded with
    spaces to a multiple of 8 bytes.
    Written to `path`.tmp, then renamed. (Slow for big models: the checksum is pure Python.)"""
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    data = b"".join(chunks)
    zero = "0" * 16
    meta = dict(meta, format="sparse-checkpoint-2", checksum=f"{_fnv1a64(data):016x}",
                header_checksum=zero)
    text = json.dumps({"__metadata__": meta, **header}, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    prefix = struct.pack("<Q", len(text))
    field = '"header_checksum":"' + zero + '"'
    assert text.count(field) == 1
    digest = _fnv1a64(prefix + text.encode("utf-8"))
    text = text.replace(field, f'"header_checksum":"{digest:016x}"')
    with open(str(path) + ".tmp", "wb") as f:
        f.write(prefix)
        f.write(text.encode("utf-8"))
        f.write(data)
    os.replace(str(path) + ".tmp", path)


def load_checkpoint(path, attention="sdpa"):
    """A SparseTransformer with the configuration and parameters of a libsparse checkpoint;
    returns (model, metadata, tensors)."""
    meta, tensors = read_safetensors(path)
    model = SparseTransformer(config_from_string(meta["model_config"]), attention=attention)
    model.load_tensors(tensors)
    return model, meta, tensors
