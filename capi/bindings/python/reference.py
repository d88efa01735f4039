"""Independent numpy references for the binding tests: token-level attention masks written from
the definitions in capi/include/sparse/layout.h (not from the library), and dense masked attention
forward/backward in float64."""
import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
C1 = 0xBF58476D1CE4E5B9
C2 = 0x94D049BB133111EB


def bigbird_random_blocks(seed, head, row_block, num_random, causal, nb):
    """The key blocks BigBird adds to query block row `row_block` of `head` (layout.h)."""
    r = row_block + 1 if causal else nb
    if num_random >= r:
        return set(range(r))
    x = (seed ^ ((GOLDEN * (head + 1)) & M64) ^ ((C1 * (row_block + 1)) & M64)) & M64
    taken = set()
    while len(taken) < num_random:
        x = (x + GOLDEN) & M64
        z = x
        z = ((z ^ (z >> 30)) * C1) & M64
        z = ((z ^ (z >> 27)) * C2) & M64
        z ^= z >> 31
        taken.add(z % r)
    return taken


def pattern_mask(p, n, head, block_size):
    """Boolean [n, n] mask (query i, key j) of one pattern for one head. `p` is a dict with the
    sparse_pattern field names (kind as a lowercase name)."""
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    causal = bool(p.get("causal", 1))
    kind = p["kind"]
    l, c, w = p.get("stride", 0), p.get("summary", 0), p.get("window", 0)
    if kind == "dense":
        return (j <= i) if causal else np.ones((n, n), bool)
    if kind == "local":
        return (i - w < j) & (j <= i)
    if kind == "strided_row":
        return (np.maximum(0, i - l) <= j) & (j <= i)
    if kind == "strided_column":
        return (j <= i) & ((i - j) % l == 0)
    if kind == "fixed_block":
        return (j <= i) & (j // l == i // l)
    if kind == "fixed_summary":
        v = head % p.get("summary_variants", 1)
        return (j <= i) & (l - c * (v + 1) <= j % l) & (j % l < l - c * v)
    if kind in ("sliding_window", "longformer", "bigbird"):
        m = (i - w < j) & (j <= i) if causal else (np.abs(i - j) < w)
        if kind in ("longformer", "bigbird"):
            g = np.zeros(n, bool)
            g[list(p.get("global_tokens", []))] = True
            m = m | g[None, :] | g[:, None]
        if kind == "bigbird":
            nb = -(-n // block_size)
            for row_block in range(nb):
                rows = slice(row_block * block_size, min(n, (row_block + 1) * block_size))
                for b in bigbird_random_blocks(p.get("seed", 0), head, row_block,
                                               p.get("random_blocks", 0), causal, nb):
                    m[rows, b * block_size:min(n, (b + 1) * block_size)] = True
        if causal:
            m = m & (j <= i)
        return m
    raise ValueError(kind)


def layout_masks(patterns, n, num_heads, block_size):
    """[heads, n, n]: per head the union of the patterns naming it (head -1 = every head)."""
    masks = np.zeros((num_heads, n, n), bool)
    for p in patterns:
        heads = range(num_heads) if p.get("head", -1) == -1 else [p["head"]]
        for h in heads:
            masks[h] |= pattern_mask(p, n, h, block_size)
    return masks


def attention_forward(q, k, v, masks, scale):
    """Dense masked attention in float64. q, k, v: [b, h, n, d]; masks: [h, n, n]. Returns
    (out, lse, p) with p the probabilities; rows without keys give out 0, lse -inf."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)
    m = np.broadcast_to(masks[None], s.shape)
    s = np.where(m, s, -np.inf)
    row_max = s.max(axis=-1, keepdims=True)
    empty = ~m.any(axis=-1, keepdims=True)
    row_max = np.where(empty, 0.0, row_max)
    e = np.where(m, np.exp(s - row_max), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    p = np.where(empty, 0.0, e / np.where(empty, 1.0, total))
    out = np.einsum("bhij,bhjd->bhid", p, v)
    with np.errstate(divide="ignore"):
        lse = np.where(empty[..., 0], -np.inf, np.log(np.where(empty, 1.0, total))[..., 0] +
                       row_max[..., 0])
    return out, lse, p


def attention_backward(q, k, v, dout, masks, scale):
    """Analytic gradients (dq, dk, dv) of sum(out * dout), float64."""
    q, k, v, dout = (np.asarray(x, np.float64) for x in (q, k, v, dout))
    out, _, p = attention_forward(q, k, v, masks, scale)
    dv = np.einsum("bhij,bhid->bhjd", p, dout)
    dp = np.einsum("bhid,bhjd->bhij", dout, v)
    delta = (dout * out).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = scale * np.einsum("bhij,bhjd->bhid", ds, k)
    dk = scale * np.einsum("bhij,bhid->bhjd", ds, q)
    return dq, dk, dv
