"""sparse_attention: libsparse's block-sparse (Sparse Transformer) attention from Python.

    import torch, sparse_attention as sa
    layout = sa.Layout.strided(seq_len=4096, stride=64, num_heads=8)
    out = sa.attention(q, k, v, layout)      # q, k, v: [batch, 8, 4096, head_dim], autograd

Modules: `sparse_ctypes` (the C ABI through ctypes, numpy arrays; needs no PyTorch), `layout`
(Layout, cached pattern layouts), `torch_ops` (the torch.library operator, imported on first use
of `attention` when PyTorch is installed). `python -m sparse_attention info` prints the versions
and backends.
"""
from . import sparse_ctypes
from .layout import Layout
from .sparse_ctypes import Pattern, SparseError

__all__ = ["Layout", "Pattern", "SparseError", "attention", "sparse_ctypes", "library_version",
           "backends", "torch_available"]


def library_version():
    """The loaded libsparse's version string."""
    return sparse_ctypes.version()


def backends():
    """{backend name: available} of the loaded libsparse."""
    return {name: sparse_ctypes.backend_available(name) for name in ("cpu", "cuda")}


def torch_available():
    """True when PyTorch can be imported (the operator then exists)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def __getattr__(name):
    # The operator needs PyTorch; importing this package does not.
    if name in ("attention", "torch_ops"):
        import importlib
        try:
            torch_ops = importlib.import_module(__name__ + ".torch_ops")
        except ImportError as e:
            if e.name != "torch":
                raise
            raise ImportError("sparse_attention.attention needs PyTorch (pip install torch); "
                              "the numpy API (sparse_attention.sparse_ctypes) does not") from e
        return torch_ops if name == "torch_ops" else torch_ops.attention
    raise AttributeError(f"module 'sparse_attention' has no attribute {name!r}")
