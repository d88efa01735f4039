"""The PyTorch operator: torch.ops.sparse_attention.attention_fwd / attention_bwd (torch.library
custom ops with a fake implementation for torch.compile and an autograd formula), and
attention(q, k, v, layout, scale=None), the function models call.

Tensors are handed to the C ABI as they are (data pointer and element strides; no copies): CPU
tensors to a CPU context, CUDA tensors to a CUDA context of their device running on PyTorch's
current stream. Outputs are allocated by PyTorch (its caching allocator on the GPU)."""
import threading

import torch

from . import sparse_ctypes as sc
from .layout import Layout, _from_id

_contexts = {}
_contexts_lock = threading.Lock()


def _context(device):
    """A cached sparse context for `device`: CPU with PyTorch's intra-op thread count, or CUDA on
    the device's current stream."""
    if device.type == "cpu":
        key = ("cpu", torch.get_num_threads())
        make = lambda: sc.Context("cpu", num_threads=key[1])  # noqa: E731
    elif device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        # PyTorch's default stream is the legacy NULL stream; NULL would give the context a stream
        # of its own, so name it explicitly as cudaStreamLegacy ((cudaStream_t)0x1).
        stream = torch.cuda.current_stream(index).cuda_stream or 0x1
        key = ("cuda", index, stream)
        make = lambda: sc.Context("cuda", device_index=index, cuda_stream=stream)  # noqa: E731
    else:
        raise ValueError(f"sparse_attention: tensors on {device} are not supported (cpu, cuda)")
    with _contexts_lock:
        ctx = _contexts.get(key)
    if ctx is None:
        if key[0] == "cuda" and not sc.backend_available("cuda"):
            raise RuntimeError("sparse_attention: libsparse's CUDA backend is unavailable (not "
                               "compiled in, or no driver or device: python -m sparse_attention "
                               "info)")
        ctx = make()
        with _contexts_lock:
            ctx = _contexts.setdefault(key, ctx)
    return ctx


def _check(q, k, v, layout):
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"sparse_attention: {name} has shape {tuple(t.shape)}, q has "
                             f"{tuple(q.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"sparse_attention: {name} is {t.dtype} on {t.device}, q is "
                             f"{q.dtype} on {q.device}")
    if q.dim() != 4:
        raise ValueError(f"sparse_attention: q must be 4-D [batch, heads, seq_len, head_dim], got "
                         f"shape {tuple(q.shape)}")
    if q.shape[1] != layout.num_heads or q.shape[2] != layout.seq_len:
        raise ValueError(f"sparse_attention: q has shape {tuple(q.shape)}; the layout has "
                         f"{layout.num_heads} heads and seq_len {layout.seq_len}")


def _desc(t):
    return sc.Tensor.from_torch(t)


@torch.library.custom_op("sparse_attention::attention_fwd", mutates_args=())
def attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout_id: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): out like q (contiguous), lse float32 [batch, heads, seq_len]."""
    layout = _from_id(layout_id)
    _check(q, k, v, layout)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    sc.attention_forward(_context(q.device), layout.native, _desc(q), _desc(k), _desc(v),
                         out=_desc(out), lse=_desc(lse), scale=scale)
    return out, lse


@attention_fwd.register_fake
def _attention_fwd_fake(q, k, v, layout_id, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("sparse_attention::attention_bwd", mutates_args=())
def attention_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                  lse: torch.Tensor, dout: torch.Tensor, layout_id: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of attention_fwd for the gradient dout of out."""
    layout = _from_id(layout_id)
    _check(q, k, v, layout)
    dout = dout.to(q.dtype)
    grads = [torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3)]
    sc.attention_backward(_context(q.device), layout.native, _desc(q), _desc(k), _desc(v),
                          _desc(out), _desc(lse), _desc(dout), *(_desc(g) for g in grads),
                          scale=scale)
    return tuple(grads)


@attention_bwd.register_fake
def _attention_bwd_fake(q, k, v, out, lse, dout, layout_id, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, layout_id, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.layout_id, ctx.scale = layout_id, scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_bwd(q, k, v, out, lse, dout, ctx.layout_id, ctx.scale)
    return dq, dk, dv, None, None


attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def attention(q, k, v, layout, scale=None):
    """Block-sparse attention: softmax(scale q k^T restricted to the layout) v for q, k, v of
    shape [batch, heads, seq_len, head_dim] (any strides; one dtype and device). `layout` is a
    Layout; scale None means 1 / sqrt(head_dim). Differentiable in q, k and v; works inside
    torch.compile. A query with no key gets zeros (and zero gradients)."""
    if not isinstance(layout, Layout):
        raise TypeError(f"sparse_attention.attention: layout must be a Layout, got "
                        f"{type(layout).__name__}")
    out, _ = attention_fwd(q, k, v, layout.id, 0.0 if scale is None else float(scale))
    return out
