"""In-tree alias of sparse_attention.sparse_ctypes (the package's low-level ctypes module), for
scripts that put capi/bindings/python on sys.path and `import sparse_ctypes`. Both names refer to
one module object, so its loaded library and its classes are shared."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
from sparse_attention import sparse_ctypes as _impl  # noqa: E402

sys.modules[__name__] = _impl
