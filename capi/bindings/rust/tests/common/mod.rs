//! Independent references for the tests: token-level masks written from the definitions in
//! capi/include/sparse/layout.h (not from the library) and naive attention in f64.
#![allow(dead_code)]

use sparse::{Pattern, PatternKind};

/// splitmix64-based deterministic generator of test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * 1.5).collect()
    }
}

/// BigBird's random key blocks of (head, query block row), as layout.h specifies.
pub fn bigbird_blocks(
    seed: u64,
    head: usize,
    row: usize,
    count: i64,
    causal: bool,
    nb: usize,
) -> Vec<usize> {
    let r = if causal { row + 1 } else { nb };
    if count as usize >= r {
        return (0..r).collect();
    }
    let mut x = seed
        ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(head as u64 + 1)
        ^ 0xBF58_476D_1CE4_E5B9u64.wrapping_mul(row as u64 + 1);
    let mut taken: Vec<usize> = Vec::new();
    while taken.len() < count as usize {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let b = (z % r as u64) as usize;
        if !taken.contains(&b) {
            taken.push(b);
        }
    }
    taken
}

/// Whether query i attends to key j under pattern `p` on head `h` (block size for BigBird).
pub fn allowed(p: &Pattern, h: usize, i: usize, j: usize, n: usize, block: usize) -> bool {
    let (i, j) = (i as i64, j as i64);
    let (l, c, w) = (p.stride, p.summary, p.window);
    let causal_ok = j <= i;
    match p.kind {
        PatternKind::Dense => !p.causal || causal_ok,
        PatternKind::Local => i - w < j && j <= i,
        PatternKind::StridedRow => (i - l).max(0) <= j && j <= i,
        PatternKind::StridedColumn => causal_ok && (i - j) % l == 0,
        PatternKind::FixedBlock => causal_ok && j / l == i / l,
        PatternKind::FixedSummary => {
            let v = (h as i64) % p.summary_variants as i64;
            causal_ok && l - c * (v + 1) <= j % l && j % l < l - c * v
        }
        PatternKind::SlidingWindow | PatternKind::Longformer | PatternKind::BigBird => {
            let mut a = if p.causal { i - w < j && j <= i } else { (i - j).abs() < w };
            if p.kind != PatternKind::SlidingWindow {
                a |= p.global_tokens.contains(&j) || p.global_tokens.contains(&i);
            }
            if p.kind == PatternKind::BigBird {
                #[allow(unknown_lints, clippy::manual_is_multiple_of)] // ceil without overflow
                let nb = n / block + usize::from(n % block > 0);
                let blocks =
                    bigbird_blocks(p.seed, h, i as usize / block, p.random_blocks, p.causal, nb);
                a |= blocks.contains(&(j as usize / block));
            }
            a && (!p.causal || causal_ok)
        }
    }
}

/// masks[h][i * n + j]: the union over the patterns naming head h.
pub fn masks(patterns: &[Pattern], n: usize, heads: usize, block: usize) -> Vec<Vec<bool>> {
    (0..heads)
        .map(|h| {
            let mut m = vec![false; n * n];
            for p in patterns.iter().filter(|p| p.head < 0 || p.head as usize == h) {
                for i in 0..n {
                    for j in 0..n {
                        m[i * n + j] |= allowed(p, h, i, j, n, block);
                    }
                }
            }
            m
        })
        .collect()
}

/// Element (b, h, i, c) of a [B, H, N, D] tensor with element strides `s`.
pub fn at(x: &[f32], s: [usize; 4], b: usize, h: usize, i: usize, c: usize) -> f64 {
    x[b * s[0] + h * s[1] + i * s[2] + c * s[3]] as f64
}

pub fn contiguous(shape: [usize; 4]) -> [usize; 4] {
    [shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1]
}

#[allow(clippy::too_many_arguments)]
/// Probabilities of row (b, h, i): (keys, p, lse); empty rows give no keys and lse -inf.
fn row_probs(
    q: &[f32],
    k: &[f32],
    s: [usize; 4],
    shape: [usize; 4],
    m: &[bool],
    scale: f64,
    b: usize,
    h: usize,
    i: usize,
) -> (Vec<usize>, Vec<f64>, f64) {
    let (n, d) = (shape[2], shape[3]);
    let keys: Vec<usize> = (0..n).filter(|&j| m[i * n + j]).collect();
    let scores: Vec<f64> = keys
        .iter()
        .map(|&j| scale * (0..d).map(|c| at(q, s, b, h, i, c) * at(k, s, b, h, j, c)).sum::<f64>())
        .collect();
    if keys.is_empty() {
        return (keys, Vec::new(), f64::NEG_INFINITY);
    }
    let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = scores.iter().map(|x| (x - mx).exp()).sum();
    let p = scores.iter().map(|x| (x - mx).exp() / total).collect();
    (keys, p, mx + total.ln())
}

/// Naive forward: (out [B,H,N,D] contiguous, lse [B,H,N]).
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: [usize; 4],
    shape: [usize; 4],
    masks: &[Vec<bool>],
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let [bn, hn, n, d] = shape;
    let mut out = vec![0f64; bn * hn * n * d];
    let mut lse = vec![0f64; bn * hn * n];
    for b in 0..bn {
        for h in 0..hn {
            for i in 0..n {
                let (keys, p, l) = row_probs(q, k, s, shape, &masks[h], scale, b, h, i);
                lse[(b * hn + h) * n + i] = l;
                for c in 0..d {
                    out[((b * hn + h) * n + i) * d + c] =
                        keys.iter().zip(&p).map(|(&j, &pj)| pj * at(v, s, b, h, j, c)).sum();
                }
            }
        }
    }
    (out, lse)
}

/// Naive backward of sum(out * dout): (dq, dk, dv) contiguous.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    s: [usize; 4],
    shape: [usize; 4],
    masks: &[Vec<bool>],
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [bn, hn, n, d] = shape;
    let len = bn * hn * n * d;
    let (mut dq, mut dk, mut dv) = (vec![0f64; len], vec![0f64; len], vec![0f64; len]);
    let idx = |b: usize, h: usize, i: usize, c: usize| ((b * hn + h) * n + i) * d + c;
    for b in 0..bn {
        for h in 0..hn {
            for i in 0..n {
                let (keys, p, _) = row_probs(q, k, s, shape, &masks[h], scale, b, h, i);
                // dP_j = dout_i . v_j; delta = sum_j P_j dP_j; dS_j = P_j (dP_j - delta)
                let dp: Vec<f64> = keys
                    .iter()
                    .map(|&j| (0..d).map(|c| at(dout, s, b, h, i, c) * at(v, s, b, h, j, c)).sum())
                    .collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (t, &j) in keys.iter().enumerate() {
                    let ds = p[t] * (dp[t] - delta);
                    for c in 0..d {
                        dq[idx(b, h, i, c)] += scale * ds * at(k, s, b, h, j, c);
                        dk[idx(b, h, j, c)] += scale * ds * at(q, s, b, h, i, c);
                        dv[idx(b, h, j, c)] += p[t] * at(dout, s, b, h, i, c);
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// max |a - e| / (atol + rtol |e|) over all elements; <= 1 passes.
pub fn assert_close(name: &str, got: &[f32], expect: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), expect.len(), "{name}: length");
    let mut worst = (0.0f64, 0usize);
    for (t, (&g, &e)) in got.iter().zip(expect).enumerate() {
        let err = (g as f64 - e).abs() / (atol + rtol * e.abs());
        if err > worst.0 || err.is_nan() {
            worst = (if err.is_nan() { f64::INFINITY } else { err }, t);
        }
    }
    assert!(
        worst.0 <= 1.0,
        "{name}: element {} is {} but the reference is {} (ratio {})",
        worst.1,
        got[worst.1],
        expect[worst.1],
        worst.0
    );
}
