#!/usr/bin/env python3
"""How fast the model learns text, next to an independent, standard PyTorch GPT of the same size.

Both train on the first 90% of a text file (the Enwik8 sample by default) with the same width,
depth, heads, context, batch, learning-rate schedule (linear warm-up, cosine decay), AdamW and
gradient clipping, and both are evaluated on the same held-out sequences (the last 10%, cut into
whole sequences). The PyTorch model is the usual pre-LayerNorm GPT (learned positions, GELU MLP,
N(0, 0.02) initialisation, dense causal attention, `scaled_dot_product_attention`); it is not the
Sparse Transformer and shares no code with it. Our model runs with dense attention through the
Python binding so that the comparison is about learning, not about the pattern.

This answers "is the model slow to learn, or is the budget small?": if both curves agree, the bits
per byte reached in a few minutes on a CPU are what this much training gives.

usage: text_learning_curve.py [--lib build/libsparse.so] [--steps 500] [--out results]
"""
import argparse
import datetime
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "capi", "bindings", "python"))
import provenance  # noqa: E402

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    print(f"SKIP: {e.name} is not installed (python3 -m pip install numpy torch)")
    sys.exit(77)


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, n, d, layers, heads, zero_output=False):
        super().__init__()
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.zeros(n, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
        if zero_output:  # as the Sparse Transformer (OpenAI's code) initialises its output layer
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x):  # x: [b, n] inputs (already shifted)
        h = self.tok(x) + self.pos
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln(h))


def schedule(step, peak, warmup, total):
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "libsparse.so"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "enwik8",
                                                   "enwik8-head-100000"))
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gpt-output-init", choices=("normal", "zero"), default="normal",
                    help="the PyTorch GPT's output layer: N(0, 0.02) (usual) or zero (as the "
                         "Sparse Transformer does), to see what that choice costs a short run")
    ap.add_argument("--out", help="folder for text_learning_curve.{md,json}")
    args = ap.parse_args()
    if not os.path.exists(args.lib):
        sys.exit(f"error: {args.lib} not found: build the library or pass --lib")
    if not os.path.exists(args.data):
        sys.exit(f"error: {args.data} not found: pass --data FILE")
    os.environ["SPARSE_LIBRARY"] = os.path.abspath(args.lib)
    import sparse_ctypes as sp

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    raw = np.frombuffer(open(args.data, "rb").read(), dtype=np.uint8)
    n, batch = args.seq_len, args.batch
    cut = len(raw) * 9 // 10
    train, held = raw[:cut], raw[cut:]
    held = held[:len(held) // n * n].reshape(-1, n)
    rng = np.random.default_rng(args.seed)
    starts = [rng.integers(0, len(train) - n, batch) for _ in range(args.steps)]
    batches = [np.stack([train[s:s + n] for s in row]) for row in starts]
    warmup = max(1, args.steps // 20)

    # PyTorch GPT: input = [0, x_0 .. x_{n-2}] (a start byte), target = x, as our model does.
    gpt = GPT(n, args.width, args.layers, args.heads, args.gpt_output_init == "zero")
    opt = torch.optim.AdamW(gpt.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01)

    def shifted(x):
        x = torch.from_numpy(x.astype(np.int64))
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1), x

    def gpt_bits(x):
        with torch.no_grad():
            inp, tgt = shifted(x)
            return F.cross_entropy(gpt(inp).reshape(-1, 256), tgt.reshape(-1)).item() / math.log(2)

    curves = {"pytorch_gpt": [], "libsparse": []}
    t0 = time.perf_counter()
    for step, x in enumerate(batches):
        for g in opt.param_groups:
            g["lr"] = schedule(step, args.lr, warmup, args.steps)
        inp, tgt = shifted(x)
        loss = F.cross_entropy(gpt(inp).reshape(-1, 256), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
        opt.step()
        curves["pytorch_gpt"].append(loss.item() / math.log(2))
    gpt_seconds = time.perf_counter() - t0
    gpt.eval()
    gpt_held = float(np.mean([gpt_bits(held[i:i + 1]) for i in range(len(held))]))

    ctx = sp.Context("cpu", num_threads=args.threads)
    cfg = sp.model_config("enwik8-small", seq_len=n, num_layers=args.layers, d_model=args.width,
                          num_heads=args.heads, attention=sp.ModelAttention.DENSE, dropout=0.0,
                          block_size=16, position_shape=[n])
    tc = sp.train_config(optimizer=sp.Optimizer.ADAMW, learning_rate=args.lr,
                         warmup_steps=warmup, total_steps=args.steps,
                         weight_decay=0.01, clip_norm=1.0)
    model = sp.Model(ctx, cfg, tc)
    t0 = time.perf_counter()
    for x in batches:
        curves["libsparse"].append(model.train_step(x)["bits_per_dim"])
    lib_seconds = time.perf_counter() - t0
    lib_held = float(np.mean([model.evaluate(held[i:i + 1]) for i in range(len(held))]))
    params = {"pytorch_gpt": sum(p.numel() for p in gpt.parameters()),
              "libsparse": model.parameter_count}

    def windows(c, k=10):
        w = max(1, len(c) // k)
        return [round(float(np.mean(c[i:i + w])), 3) for i in range(0, len(c), w)]

    rows = [(f"PyTorch GPT (independent, dense, output layer {args.gpt_output_init})",
             "pytorch_gpt", gpt_held, gpt_seconds),
            ("libsparse model (dense attention)", "libsparse", lib_held, lib_seconds)]
    prov = {"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "commit": provenance.git_commit(), "cpu": provenance.cpu_model(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "threads": args.threads}
    md = ["# Learning text: libsparse's model next to a standard PyTorch GPT", "",
          "| provenance | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in prov.items()] + [
          "",
          f"Same data ({os.path.basename(args.data)}: first 90% train, the last 10% held out as "
          f"{len(held)} sequences of {n}), {args.steps} steps of {batch} x {n} bytes, width "
          f"{args.width}, {args.layers} layers, {args.heads} heads, AdamW lr {args.lr:g} with "
          f"{warmup} warm-up steps and cosine decay, clipping 1.0.", "",
          "| model | params | held-out bits/byte | train bits/byte, mean of each tenth of the run "
          "| train seconds |", "|---|---|---|---|---|"]
    for label, key, held_bits, seconds in rows:
        md.append(f"| {label} | {params[key]} | {held_bits:.3f} | "
                  f"{' '.join(f'{v:.2f}' for v in windows(curves[key]))} | {seconds:.0f} |")
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        provenance.write_atomically(os.path.join(args.out, "text_learning_curve.md"), text)
        provenance.write_atomically(
            os.path.join(args.out, "text_learning_curve.json"),
            json.dumps({"provenance": prov, "held_out_bits_per_byte":
                        {"pytorch_gpt": gpt_held, "libsparse": lib_held},
                        "parameters": params, "train_curves": curves}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
