//! The safe layer against the naive f64 reference in tests/common (masks from layout.h's
//! token-level definitions, dense softmax attention and its analytic gradients).
mod common;

use common::{assert_close, contiguous, masks, Rng};
use sparse::{AttentionParams, Backend, Context, Layout, Pattern, View, ViewMut};

fn ctx() -> Context {
    Context::with_settings(&sparse::Settings::default().backend(Backend::Cpu).num_threads(2))
        .expect("CPU context")
}

struct Case {
    name: &'static str,
    shape: [usize; 4], // batch, heads, seq_len, head_dim
    block: usize,
    patterns: Vec<Pattern>,
    scale: Option<f32>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "strided multi-head",
            shape: [2, 2, 200, 32],
            block: 32,
            patterns: vec![Pattern::strided_row(14).head(0), Pattern::strided_column(14).head(1)],
            scale: None,
        },
        Case {
            name: "fixed merged",
            shape: [1, 1, 128, 64],
            block: 16,
            patterns: vec![Pattern::fixed_block(16), Pattern::fixed_summary(16, 4)],
            scale: Some(0.3),
        },
        Case {
            name: "fixed summary variants",
            shape: [1, 3, 96, 16],
            block: 16,
            patterns: vec![Pattern::fixed_summary(16, 4).summary_variants(3)],
            scale: None,
        },
        Case {
            name: "empty head",
            shape: [1, 2, 64, 32],
            block: 16,
            patterns: vec![Pattern::local(9).head(0)],
            scale: None,
        },
        Case {
            name: "longformer + bigbird",
            shape: [1, 2, 96, 32],
            block: 32,
            patterns: vec![
                Pattern::longformer(6, &[0, 50]).head(0),
                Pattern::bigbird(8, &[3], 1, 3).causal(false).head(1),
            ],
            scale: None,
        },
    ]
}

fn build(case: &Case) -> Layout {
    Layout::builder(case.shape[2])
        .block_size(case.block)
        .heads(case.shape[1])
        .patterns(&case.patterns)
        .build()
        .expect(case.name)
}

fn scale_of(case: &Case) -> f64 {
    case.scale.map_or(1.0 / (case.shape[3] as f64).sqrt(), |s| s as f64)
}

#[test]
fn row_masks_match_token_level_definitions() {
    let layouts: Vec<(usize, usize, usize, Vec<Pattern>, bool)> = vec![
        (70, 16, 1, vec![Pattern::dense()], true),
        (70, 16, 1, vec![Pattern::dense().causal(false)], true),
        (90, 16, 1, vec![Pattern::local(7)], true),
        (
            100,
            16,
            2,
            vec![Pattern::strided_row(10).head(0), Pattern::strided_column(10).head(1)],
            true,
        ),
        (101, 16, 1, vec![Pattern::strided_column(9)], true),
        (101, 16, 1, vec![Pattern::strided_column(9)], false),
        (96, 16, 3, vec![Pattern::fixed_summary(16, 4).summary_variants(3)], true),
        (80, 16, 1, vec![Pattern::strided_row(9), Pattern::strided_column(9)], true),
        (
            77,
            16,
            2,
            vec![
                Pattern::sliding_window(6).head(0),
                Pattern::sliding_window(6).causal(false).head(1),
            ],
            true,
        ),
        (
            77,
            16,
            2,
            vec![
                Pattern::longformer(5, &[0, 17, 17, 76]).head(0),
                Pattern::longformer(5, &[3, 40]).causal(false).head(1),
            ],
            true,
        ),
        (
            130,
            16,
            3,
            vec![
                Pattern::bigbird(5, &[1], 2, 42),
                Pattern::bigbird(3, &[], 3, 7).causal(false).head(2),
            ],
            true,
        ),
    ];
    for (n, block, heads, pats, transpose) in layouts {
        let layout = Layout::builder(n)
            .block_size(block)
            .heads(heads)
            .patterns(&pats)
            .transpose_strided_column(transpose)
            .build()
            .unwrap();
        let expect = masks(&pats, n, heads, block);
        for (h, m) in expect.iter().enumerate() {
            for i in 0..n {
                let row = layout.row_mask(h, i).unwrap();
                assert_eq!(row, m[i * n..(i + 1) * n].to_vec(), "{pats:?} head {h} query {i}");
            }
            let useful = m.iter().filter(|&&x| x).count() as i64;
            assert_eq!(layout.stats(Some(h)).unwrap().useful_elements, useful);
        }
    }
}

#[test]
fn forward_matches_naive_reference() {
    let ctx = ctx();
    for (t, case) in cases().iter().enumerate() {
        let layout = build(case);
        let len: usize = case.shape.iter().product();
        let mut rng = Rng::new(t as u64 + 1);
        let (q, k, v) = (rng.vec(len), rng.vec(len), rng.vec(len));
        let mut out = vec![f32::NAN; len];
        let mut lse = vec![f32::NAN; len / case.shape[3]];
        let params = case.scale.map(AttentionParams::with_scale);
        ctx.attention_forward(
            &layout,
            params.as_ref(),
            &View::new(&q, &case.shape).unwrap(),
            &View::new(&k, &case.shape).unwrap(),
            &View::new(&v, &case.shape).unwrap(),
            &mut ViewMut::new(&mut out, &case.shape).unwrap(),
            Some(&mut ViewMut::new(&mut lse, &case.shape[..3]).unwrap()),
        )
        .unwrap();
        let m = masks(&case.patterns, case.shape[2], case.shape[1], case.block);
        let (e_out, e_lse) =
            common::forward(&q, &k, &v, contiguous(case.shape), case.shape, &m, scale_of(case));
        assert_close(case.name, &out, &e_out, 1e-4, 2e-5);
        for (t, (&g, &e)) in lse.iter().zip(&e_lse).enumerate() {
            if e == f64::NEG_INFINITY {
                assert_eq!(g, f32::NEG_INFINITY, "{}: lse[{t}] of an empty row", case.name);
            } else {
                assert!(
                    (g as f64 - e).abs() <= 5e-5 + 1e-5 * e.abs(),
                    "{}: lse[{t}] = {g}, reference {e}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn empty_rows_give_zero_and_minus_infinity() {
    let ctx = ctx();
    let case = &cases()[3];
    let layout = build(case);
    let len: usize = case.shape.iter().product();
    let mut rng = Rng::new(9);
    let q = rng.vec(len);
    let (out, lse) = ctx.attention(&layout, &q, &q, &q, case.shape).unwrap();
    let head = len / 2; // head 1 of batch 0: no pattern names it
    assert!(out[head..].iter().all(|&x| x == 0.0));
    assert!(lse[case.shape[2]..].iter().all(|&x| x == f32::NEG_INFINITY));
    assert!(out[..head].iter().any(|&x| x != 0.0));
}

#[test]
fn strided_views_match_naive_reference() {
    // Inputs stored as [batch, seq_len, heads, head_dim] and seen as [batch, heads, seq_len,
    // head_dim]; the output lands in every other element of a larger buffer.
    let ctx = ctx();
    let case = &cases()[0];
    let [b, h, n, d] = case.shape;
    let layout = build(case);
    let s = [n * h * d, d, h * d, 1];
    let mut rng = Rng::new(77);
    let (q, k, v) = (rng.vec(b * n * h * d), rng.vec(b * n * h * d), rng.vec(b * n * h * d));
    let mut big = vec![f32::NAN; 2 * b * h * n * d];
    let os = [2 * h * n * d, 2 * n * d, 2 * d, 2];
    ctx.attention_forward(
        &layout,
        None,
        &View::strided(&q, &case.shape, &s).unwrap(),
        &View::strided(&k, &case.shape, &s).unwrap(),
        &View::strided(&v, &case.shape, &s).unwrap(),
        &mut ViewMut::strided(&mut big, &case.shape, &os).unwrap(),
        None,
    )
    .unwrap();
    let m = masks(&case.patterns, n, h, case.block);
    let (e_out, _) = common::forward(&q, &k, &v, s, case.shape, &m, scale_of(case));
    let out: Vec<f32> = big.iter().step_by(2).cloned().collect();
    assert_close("strided out", &out, &e_out, 1e-4, 2e-5);
    assert!(big.iter().skip(1).step_by(2).all(|x| x.is_nan()), "wrote outside the view");
}

#[test]
fn backward_matches_naive_reference() {
    let ctx = ctx();
    for (t, case) in cases().iter().enumerate() {
        if case.shape[2] > 128 {
            continue; // keep the O(n^2 d) reference quick
        }
        let layout = build(case);
        let shape = case.shape;
        let len: usize = shape.iter().product();
        let mut rng = Rng::new(100 + t as u64);
        let (q, k, v, dout) = (rng.vec(len), rng.vec(len), rng.vec(len), rng.vec(len));
        let params = case.scale.map(AttentionParams::with_scale);
        let mut out = vec![0f32; len];
        let mut lse = vec![0f32; len / shape[3]];
        let (qv, kv, vv) = (
            View::new(&q, &shape).unwrap(),
            View::new(&k, &shape).unwrap(),
            View::new(&v, &shape).unwrap(),
        );
        ctx.attention_forward(
            &layout,
            params.as_ref(),
            &qv,
            &kv,
            &vv,
            &mut ViewMut::new(&mut out, &shape).unwrap(),
            Some(&mut ViewMut::new(&mut lse, &shape[..3]).unwrap()),
        )
        .unwrap();
        let (mut dq, mut dk, mut dv) =
            (vec![f32::NAN; len], vec![f32::NAN; len], vec![f32::NAN; len]);
        ctx.attention_backward(
            &layout,
            params.as_ref(),
            &qv,
            &kv,
            &vv,
            &View::new(&out, &shape).unwrap(),
            &View::new(&lse, &shape[..3]).unwrap(),
            &View::new(&dout, &shape).unwrap(),
            &mut ViewMut::new(&mut dq, &shape).unwrap(),
            &mut ViewMut::new(&mut dk, &shape).unwrap(),
            &mut ViewMut::new(&mut dv, &shape).unwrap(),
        )
        .unwrap();
        let m = masks(&case.patterns, shape[2], shape[1], case.block);
        let (e_dq, e_dk, e_dv) =
            common::backward(&q, &k, &v, &dout, contiguous(shape), shape, &m, scale_of(case));
        assert_close(&format!("{} dq", case.name), &dq, &e_dq, 1e-3, 2e-4);
        assert_close(&format!("{} dk", case.name), &dk, &e_dk, 1e-3, 2e-4);
        assert_close(&format!("{} dv", case.name), &dv, &e_dv, 1e-3, 2e-4);
    }
}

#[test]
fn naive_backward_matches_finite_differences() {
    // Guards the reference itself (f64 central differences of the naive forward).
    let shape = [1, 1, 9, 4];
    let pats = vec![Pattern::local(4)];
    let m = masks(&pats, 9, 1, 16);
    let mut rng = Rng::new(5);
    let (mut q, k, v, dout) = (rng.vec(36), rng.vec(36), rng.vec(36), rng.vec(36));
    let s = contiguous(shape);
    let (dq, _, _) = common::backward(&q, &k, &v, &dout, s, shape, &m, 0.7);
    let loss = |q: &[f32]| -> f64 {
        let (out, _) = common::forward(q, &k, &v, s, shape, &m, 0.7);
        out.iter().zip(&dout).map(|(o, g)| o * *g as f64).sum()
    };
    for idx in [0usize, 17, 35] {
        let eps = 1e-2f32;
        let old = q[idx];
        q[idx] = old + eps;
        let up = loss(&q);
        q[idx] = old - eps;
        let down = loss(&q);
        q[idx] = old;
        let fd = (up - down) / (2.0 * eps as f64);
        assert!(
            (fd - dq[idx]).abs() < 1e-4,
            "dq[{idx}]: finite difference {fd}, analytic {}",
            dq[idx]
        );
    }
}

#[test]
fn context_memory_round_trip() {
    // Host memory on the CPU backend; device memory on CUDA, with the same code.
    let ctx = ctx();
    let case = &cases()[1];
    let layout = build(case);
    let shape = case.shape;
    let len: usize = shape.iter().product();
    let mut rng = Rng::new(3);
    let q = rng.vec(len);
    let mut bq = ctx.alloc(len * 4).unwrap();
    bq.copy_from(&q).unwrap();
    let mut bo = ctx.alloc(len * 4).unwrap();
    {
        let qv = bq.view::<f32>(&shape).unwrap();
        let mut ov = bo.view_mut::<f32>(&shape).unwrap();
        let params = AttentionParams::with_scale(0.3);
        ctx.attention_forward(&layout, Some(&params), &qv, &qv, &qv, &mut ov, None).unwrap();
    }
    let mut out = vec![0f32; len];
    bo.copy_to(&mut out).unwrap();
    let m = masks(&case.patterns, shape[2], shape[1], case.block);
    let (e_out, _) = common::forward(&q, &q, &q, contiguous(shape), shape, &m, 0.3);
    assert_close("buffer out", &out, &e_out, 1e-4, 2e-5);
    assert!(bq.copy_from(&q[1..]).is_err());
    assert!(bq.view::<f32>(&[len + 1]).is_err());
    assert_eq!(bq.memory(), ctx.memory().unwrap());
}

#[test]
fn layout_statistics() {
    let n = 1024;
    let t = Layout::builder(n).block_size(32).pattern(Pattern::strided_column(32)).build().unwrap();
    let nat = Layout::builder(n)
        .block_size(32)
        .pattern(Pattern::strided_column(32))
        .transpose_strided_column(false)
        .build()
        .unwrap();
    let (st, sn) = (t.stats(Some(0)).unwrap(), nat.stats(None).unwrap());
    assert_eq!((st.transposed, sn.transposed), (1, 0));
    assert!(st.nnz_blocks * 4 < sn.nnz_blocks);
    assert_eq!(st.useful_elements, sn.useful_elements);
    let bm = t.block_mask(0).unwrap();
    assert_eq!(bm.len() as i64, st.num_blocks * st.num_blocks);
    assert_eq!(bm.iter().filter(|&&b| b != 0).count() as i64, st.nnz_blocks);
    let from_blocks =
        Layout::from_blocks(40, 16, 1, &[1, 0, 0, 0, 1, 0, 1, 0, 1], None, true).unwrap();
    let row = from_blocks.row_mask(0, 35).unwrap();
    let expect: Vec<bool> = (0..40).map(|j| j < 16 || (32..=35).contains(&j)).collect();
    assert_eq!(row, expect);
}
