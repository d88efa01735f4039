"""Layout: which keys each query attends to, per head, built from the C API's pattern descriptions
(layout.h) and cached per (patterns, seq_len, heads, block size). Needs numpy, not PyTorch."""
import collections
import hashlib
import itertools
import threading
import weakref

import numpy as np

from . import sparse_ctypes as sc

# Layouts by id (what the PyTorch operator receives): weak, so a layout lives as long as the
# cache below or a caller holds it.
_by_id = weakref.WeakValueDictionary()
# The most recently used layouts, by description.
_cache = collections.OrderedDict()
CACHE_SIZE = 64
_ids = itertools.count(1)
_lock = threading.Lock()


def _pattern_key(p):
    return (int(p.kind), p.head, p.window, p.stride, p.summary, p.summary_variants,
            bool(p.causal), tuple(p.global_tokens), p.random_blocks, p.seed)


def _from_id(layout_id):
    layout = _by_id.get(int(layout_id))
    if layout is None:
        raise ValueError(f"no live Layout with id {layout_id} (keep a reference to the layout "
                         "while tensors computed with it need their gradients)")
    return layout


class Layout:
    """A block-sparse attention layout over `num_heads` heads of `seq_len` positions.

    Layout(seq_len, patterns, num_heads=1, block_size=64) takes sparse_ctypes.Pattern objects
    (several may name one head: it attends to their union; head=-1 means every head); the class
    methods build the usual patterns. Asking twice for the same description returns the same
    (cached) object, so building layouts inside a forward pass costs a dictionary lookup.
    """

    def __new__(cls, seq_len, patterns, num_heads=1, block_size=64,
                transpose_strided_column=True):
        if isinstance(patterns, sc.Pattern):
            patterns = [patterns]
        patterns = list(patterns)
        for p in patterns:
            if not isinstance(p, sc.Pattern):
                raise TypeError(f"patterns: expected sparse_ctypes.Pattern objects, got "
                                f"{type(p).__name__}")
        key = ("patterns", tuple(_pattern_key(p) for p in patterns), int(seq_len),
               int(num_heads), int(block_size), bool(transpose_strided_column))
        return cls._cached(key, lambda: sc.Layout(int(seq_len), patterns, int(num_heads),
                                                  int(block_size),
                                                  bool(transpose_strided_column)))

    def __init__(self, *args, **kwargs):  # all the work is done in __new__ (cached objects)
        pass

    # Immutable and cached: a copy is the same object (a module holding a layout deep-copies, as
    # for an EMA of its weights, without a second owner of the library handle).
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    @classmethod
    def _cached(cls, key, build):
        with _lock:
            layout = _cache.get(key)
            if layout is not None:
                _cache.move_to_end(key)
                return layout
        native = build()  # raises SparseError naming the bad field
        layout = object.__new__(cls)
        layout._native, layout._key = native, key
        layout.seq_len, layout.num_heads = native.seq_len, native.num_heads
        layout.block_size = native.block_size
        with _lock:
            existing = _cache.get(key)
            if existing is not None:  # another thread built it meanwhile
                return existing
            layout.id = next(_ids)
            _by_id[layout.id] = layout
            _cache[key] = layout
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        return layout

    # ------------------------------------------------------------ the C API's patterns

    @classmethod
    def dense(cls, seq_len, num_heads=1, causal=True, block_size=64):
        """j <= i (every j when causal is False)."""
        return cls(seq_len, [sc.Pattern.dense(causal=causal)], num_heads, block_size)

    @classmethod
    def local(cls, seq_len, window, num_heads=1, block_size=64):
        """i - window < j <= i."""
        return cls(seq_len, [sc.Pattern.local(window)], num_heads, block_size)

    @classmethod
    def _two_types(cls, seq_len, first, second, num_heads, merged, block_size):
        if merged:
            return cls(seq_len, [first(-1), second(-1)], num_heads, block_size)
        if num_heads < 2:
            raise ValueError(f"num_heads = {num_heads}: the two head types need at least 2 heads "
                             "(or merged=True for their union on every head)")
        if num_heads > 4096:
            # One Python pattern per head: let the library judge the head count (its memory
            # bound, the int32 field) on the union layout before building millions of them.
            cls(seq_len, [first(-1), second(-1)], num_heads, block_size)
        pats = [(first if h % 2 == 0 else second)(h) for h in range(num_heads)]
        return cls(seq_len, pats, num_heads, block_size)

    @classmethod
    def strided(cls, seq_len, stride, num_heads=2, merged=False, block_size=64):
        """The Sparse Transformer's strided attention: even heads max(0, i - l) <= j <= i, odd
        heads (i - j) mod l == 0 (merged=True: every head attends to the union)."""
        return cls._two_types(seq_len, lambda h: sc.Pattern.strided_row(stride, head=h),
                              lambda h: sc.Pattern.strided_column(stride, head=h), num_heads,
                              merged, block_size)

    @classmethod
    def fixed(cls, seq_len, stride, summary, num_heads=2, merged=False, summary_variants=1,
              block_size=64):
        """The Sparse Transformer's fixed attention: even heads attend within their block of l
        positions, odd heads to the last `summary` positions of every block (merged=True: the
        union on every head, OpenAI's 'fixed' attention)."""
        return cls._two_types(
            seq_len, lambda h: sc.Pattern.fixed_block(stride, head=h),
            lambda h: sc.Pattern.fixed_summary(stride, summary, head=h,
                                               summary_variants=summary_variants),
            num_heads, merged, block_size)

    @classmethod
    def sliding_window(cls, seq_len, window, num_heads=1, causal=True, block_size=64):
        """|i - j| < window (i - window < j <= i when causal)."""
        return cls(seq_len, [sc.Pattern.sliding_window(window, causal=causal)], num_heads,
                   block_size)

    @classmethod
    def longformer(cls, seq_len, window, global_tokens, num_heads=1, causal=True,
                   block_size=64):
        """Sliding window plus global tokens (attended by and attending to every position)."""
        return cls(seq_len, [sc.Pattern.longformer(window, list(global_tokens), causal=causal)],
                   num_heads, block_size)

    @classmethod
    def bigbird(cls, seq_len, window, global_tokens, random_blocks, seed=0, num_heads=1,
                causal=True, block_size=64):
        """Longformer plus `random_blocks` random key blocks per query block row."""
        return cls(seq_len, [sc.Pattern.bigbird(window, list(global_tokens), random_blocks,
                                                seed, causal=causal)], num_heads, block_size)

    @classmethod
    def from_block_mask(cls, block_mask, seq_len, block_size=64, causal=False):
        """A user block mask: [num_heads, nb, nb] (or [nb, nb] for one head) of booleans or
        0/1, nb = ceil(seq_len / block_size); every element of a marked block is attended
        (j <= i as well when causal). Accepts numpy arrays, nested lists and CPU torch
        tensors."""
        if hasattr(block_mask, "detach"):  # a torch tensor, without importing torch
            block_mask = block_mask.detach().cpu().numpy()
        bm = np.ascontiguousarray(np.asarray(block_mask) != 0, dtype=np.uint8)
        if bm.ndim == 2:
            bm = bm[None]
        digest = hashlib.sha1(bm.tobytes()).hexdigest()
        key = ("blocks", bm.shape, digest, int(seq_len), int(block_size), bool(causal))
        return cls._cached(key, lambda: sc.Layout.from_blocks(int(seq_len), int(block_size), bm,
                                                               causal=bool(causal)))

    # ------------------------------------------------------------ queries

    @property
    def native(self):
        """The sparse_ctypes.Layout (the C handle)."""
        return self._native

    def stats(self, head=-1):
        """sparse_layout_get_stats() as a dict (head -1: all heads together)."""
        return self._native.stats(head)

    @property
    def density(self):
        """Computed blocks over the blocks of the dense causal layout."""
        return self.stats()["density"]

    def block_mask(self):
        """uint8 [num_heads, nb, nb] in the order the kernels compute (0 skipped, 1 partial,
        2 full); strided-column heads are in the transposed order."""
        return np.stack([self._native.block_mask(h) for h in range(self.num_heads)])

    def to_dense(self):
        """bool [num_heads, seq_len, seq_len]: element [h, i, j] is True when query i of head h
        attends to key j (read back from the layout, so exactly what the kernels compute). For
        scaled_dot_product_attention: attn_mask=torch.from_numpy(layout.to_dense())."""
        n, out = self.seq_len, np.zeros((self.num_heads, self.seq_len, self.seq_len), dtype=bool)
        for h in range(self.num_heads):
            for i in range(n):
                out[h, i] = self._native.row_mask(h, i)
        return out

    def __repr__(self):
        s = self.stats()
        return (f"Layout(seq_len={self.seq_len}, num_heads={self.num_heads}, block_size="
                f"{self.block_size}, computed blocks {s['nnz_blocks']}, density "
                f"{s['density']:.3f})")
