#!/usr/bin/env python3
"""Checks that the PyTorch peer (torch_model.py) is the same model as libsparse, so that the
training-throughput comparison in train_throughput.py compares like with like.

For several tiny configurations (strided and fixed patterns; interleaved, merged and multi-head
combinations; half-size QK/FF; tied embeddings; three position tables; a length that is a
multiple of neither the block nor the stride; recomputation), through the C ABI only (ctypes):
  1. libsparse creates a model, trains it a few steps on random bytes (so the checkpoint holds
     Adam moments) and saves it; the parameters are then replaced by large random values (at
     OpenAI's small initialisation attention barely moves the loss) and the checkpoint is loaded
     back into libsparse with sparse_model_load;
  2. PyTorch loads that checkpoint; on a fresh batch the mean loss of sparse_model_evaluate and of
     the PyTorch model (masked SDPA and the written-out softmax path) must agree to 1e-4 relative;
  3. both take one more training step from the same state (Adam moments and step from the
     checkpoint) on the same batch: the loss and gradient norm must agree, and the parameters
     after the step must agree to a small fraction of one learning-rate step;
  4. the check must be able to fail: the same weights with plain causal attention (no pattern)
     must give a loss that differs from the library's by more than 10x the tolerance.

Exit status: 0 pass, 1 mismatch, 77 skipped (PyTorch not installed), 2 setup error.
Usage: test_torch_equivalence.py [--lib build/libsparse.so] [--threads 2] [-v]
"""
import argparse
import math
import os
import random
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SKIP = 77

try:
    import torch
except ImportError:
    print("SKIP: PyTorch is not installed (python3 -m pip install torch); "
          "the equivalence check needs it")
    sys.exit(SKIP)

sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "capi", "bindings", "python"))
import numpy as np  # noqa: E402
import torch_model  # noqa: E402

LOSS_RTOL = 1e-4

# Tiny configurations covering every code path of the model (fields of sparse_model_config).
CASES = {
    "strided-2111-halfqkff-3pos": dict(seq_len=96, num_layers=4, d_model=32, num_heads=2,
                                       attention=1, head_mode=0, stride=24, block_size=16,
                                       layer_cycle="2111", half_qk=1, half_ff=1,
                                       position_shape=(4, 8, 3)),
    "strided-merged-tied-ragged": dict(seq_len=100, num_layers=2, d_model=16, num_heads=2,
                                       attention=1, head_mode=1, stride=12, block_size=16,
                                       tied_embeddings=1, position_shape=(9, 12)),
    "strided-multihead-recompute": dict(seq_len=80, num_layers=3, d_model=32, num_heads=4,
                                        attention=1, head_mode=2, stride=10, block_size=16,
                                        half_qk=1, recompute=1, position_shape=(8, 10)),
    "fixed-interleaved": dict(seq_len=64, num_layers=2, d_model=16, num_heads=2, attention=2,
                              head_mode=0, stride=16, summary=4, block_size=16,
                              layer_cycle="12", position_shape=(4, 16)),
    "fixed-multihead": dict(seq_len=128, num_layers=2, d_model=32, num_heads=4, attention=2,
                            head_mode=2, stride=32, summary=8, block_size=32,
                            position_shape=(4, 32)),
    "dense": dict(seq_len=64, num_layers=2, d_model=16, num_heads=2, attention=0,
                  block_size=16, position_shape=(8, 8)),
}


def find_library(explicit):
    if explicit:
        return explicit
    env = os.environ.get("SPARSE_LIBRARY")
    if env:
        return env
    for build in ("build-peer", "build"):
        path = os.path.join(ROOT, build, "libsparse.so")
        if os.path.exists(path):
            return path
    return None


def perturb_checkpoint(path, seed):
    """Rewrites the parameters of a libsparse checkpoint with random values of a size at which
    every part of the model matters: matrices ~ N(0, 1.5^2 / fan_in), embedding tables
    N(0, 0.5^2), gains 1 + N(0, 0.2^2), biases N(0, 0.2^2). Adam moments are kept."""
    meta, tensors = torch_model.read_safetensors(path)
    gen = torch.Generator().manual_seed(seed)
    for name, t in tensors.items():
        if not name.startswith("param."):
            continue
        noise = torch.randn(t.shape, generator=gen)
        if name.endswith(".gain"):
            t.copy_(1.0 + 0.2 * noise)
        elif name.endswith((".bias", ".b1", ".b2")):
            t.copy_(0.2 * noise)
        elif name.startswith("param.embed."):
            t.copy_(0.5 * noise)
        else:
            t.copy_(1.5 / math.sqrt(t.shape[0]) * noise)
    torch_model.write_checkpoint(path, meta, tensors)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def run_case(sp, name, fields, threads, verbose, tmpdir):
    rng = random.Random(zlib.crc32(name.encode()))
    batch = 2
    n = fields["seq_len"]
    lr = 0.05
    failures = []

    def batch_bytes():
        return bytes(rng.randrange(256) for _ in range(batch * n))

    def array(data):
        return np.frombuffer(data, dtype=np.uint8).reshape(batch, n)

    ctx = sp.Context("cpu", num_threads=threads)
    cfg = sp.model_config(**fields)
    train = sp.train_config(learning_rate=lr, weight_decay=0.01, clip_norm=1.0)
    model = sp.Model(ctx, cfg, train)
    try:
        for _ in range(5):
            model.train_step(array(batch_bytes()))
        ckpt_a = os.path.join(tmpdir, f"{name}-a.safetensors")
        model.save(ckpt_a)
        # Large random weights (the trained ones are still close to OpenAI's small
        # initialisation, where attention patterns barely move the loss), loaded back through
        # the library's own strict checkpoint reader.
        perturb_checkpoint(ckpt_a, zlib.crc32(name.encode()))
        model.close()
        model = sp.Model.load(ctx, ckpt_a)
        eval_data = batch_bytes()
        lib_bpd = model.evaluate(array(eval_data))
        step_data = batch_bytes()
        stats = model.train_step(array(step_data))
        ckpt_b = os.path.join(tmpdir, f"{name}-b.safetensors")
        model.save(ckpt_b)
    finally:
        model.close()
        ctx.close()

    def tokens(data):
        return torch.tensor(list(data), dtype=torch.int64).view(batch, n)

    lib_loss = lib_bpd * math.log(2.0)
    losses = {}
    for impl in ("sdpa", "math", "causal"):
        tm, meta, _ = torch_model.load_checkpoint(ckpt_a, attention=impl)
        tm.eval()
        with torch.no_grad():
            losses[impl] = tm(tokens(eval_data)).item()
    for impl in ("sdpa", "math"):
        if rel(losses[impl], lib_loss) > LOSS_RTOL:
            failures.append(f"evaluate loss ({impl}) {losses[impl]:.8f} vs libsparse "
                            f"{lib_loss:.8f} (rel {rel(losses[impl], lib_loss):.2e})")
    # The check can fail: dropping the pattern must move the loss far beyond the tolerance.
    sensitivity = rel(losses["causal"], lib_loss)
    if fields.get("attention", 1) != 0 and sensitivity < 10 * LOSS_RTOL:
        failures.append(f"insensitive: causal-attention loss {losses['causal']:.8f} is within "
                        f"10x the tolerance of libsparse's {lib_loss:.8f}")

    # One training step from the same state.
    tm, meta, tensors = torch_model.load_checkpoint(ckpt_a, attention="sdpa")
    tc = torch_model.train_config_from_string(meta["train_config"])
    trainer = torch_model.Trainer(tm, lr=tc["learning_rate"], beta1=tc["beta1"],
                                  beta2=tc["beta2"], eps=tc["epsilon"],
                                  weight_decay=tc["weight_decay"], clip_norm=tc["clip_norm"])
    trainer.load_adam_state(tensors, int(meta["step"]))
    tm.train()
    t_loss, t_norm = trainer.step(tokens(step_data))
    if rel(t_loss, stats['loss']) > LOSS_RTOL:
        failures.append(f"train-step loss {t_loss:.8f} vs libsparse {stats['loss']:.8f}")
    if rel(t_norm, stats['grad_norm']) > 1e-3:
        failures.append(f"gradient norm {t_norm:.6e} vs libsparse {stats['grad_norm']:.6e}")
    _, after = torch_model.read_safetensors(ckpt_b)
    worst, worst_name = 0.0, ""
    for pname, p in tm.named_tensors():
        diff = (p.detach() - after["param." + pname]).abs().max().item()
        if diff > worst:
            worst, worst_name = diff, pname
    # Each Adam update moves a weight by about lr; the two must agree to 2% of that.
    if worst > 0.02 * lr:
        failures.append(f"parameters after one step differ by {worst:.3e} ({worst_name}), "
                        f"more than 2% of lr = {lr}")

    line = (f"{name:30s} eval loss lib {lib_loss:.7f} sdpa {losses['sdpa']:.7f} "
            f"(rel {rel(losses['sdpa'], lib_loss):.1e}) math rel "
            f"{rel(losses['math'], lib_loss):.1e} | causal-only rel {sensitivity:.1e} | "
            f"step loss rel {rel(t_loss, stats['loss']):.1e} grad-norm rel "
            f"{rel(t_norm, stats['grad_norm']):.1e} | params max diff {worst:.1e} "
            f"({worst / lr:.1e} lr)")
    print(("FAIL " if failures else "ok   ") + line, flush=True)
    for f in failures:
        print("     " + f)
    return not failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", help="path of libsparse.so (default: $SPARSE_LIBRARY, "
                    "build-peer/ or build/ in the repository)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", action="append", help="run only these cases")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    path = find_library(args.lib)
    if not path or not os.path.exists(path):
        print(f"error: libsparse.so not found ({path or 'searched build-peer/, build/'}); "
              "build it or pass --lib", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    os.environ["SPARSE_LIBRARY"] = os.path.abspath(path)
    import sparse_ctypes as sp  # the Python binding (capi/bindings/python), on this library
    print(f"libsparse: {path}; torch {torch.__version__}; loss tolerance {LOSS_RTOL:g} relative")
    ok = True
    with tempfile.TemporaryDirectory(prefix="sparse-peer-") as tmpdir:
        for name, fields in CASES.items():
            if args.case and name not in args.case:
                continue
            ok &= run_case(sp, name, fields, args.threads, args.verbose, tmpdir)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
