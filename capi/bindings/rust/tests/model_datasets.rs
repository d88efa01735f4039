//! The model and dataset layers: documented invariants (exact resume, evaluation leaves the model
//! unchanged, bits per dim = loss / ln 2, the text split rule, mu-law's formula) and errors.
mod common;

use sparse::{
    model_config_default, model_config_preset, parameter_count, train_config_default, Backend,
    Context, Dataset, DatasetKind, Model, ModelConfig, SampleParams, Split, Status,
};

fn tiny() -> ModelConfig {
    let mut c = model_config_default();
    c.seq_len = 32;
    c.num_layers = 2;
    c.d_model = 16;
    c.num_heads = 2;
    c.stride = 4;
    c.block_size = 16;
    c.position_shape = [8, 4, 0, 0];
    c
}

fn tokens(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = common::Rng::new(seed);
    (0..n).map(|_| (rng.next_u64() >> 56) as u8).collect()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sparse-rs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn model_trains_evaluates_and_samples() {
    let ctx =
        Context::with_settings(&sparse::Settings::default().backend(Backend::Cpu).num_threads(1))
            .unwrap();
    let cfg = tiny();
    let mut train = train_config_default();
    train.learning_rate = 3e-3;
    let mut m = Model::new(&ctx, &cfg, Some(&train)).unwrap();
    assert_eq!(m.parameter_count().unwrap(), parameter_count(&cfg).unwrap());
    assert_eq!(m.seq_len(), 32);
    assert_eq!(m.config().unwrap().d_model, 16);
    assert_eq!(m.train_config().unwrap().learning_rate, 3e-3);
    let batch = tokens(1, 64);
    let before = m.evaluate(&batch).unwrap();
    assert_eq!(before, m.evaluate(&batch).unwrap(), "evaluation must not change the model");
    let bits = m.token_bits(&batch).unwrap();
    assert_eq!(bits.len(), batch.len());
    assert!((bits.iter().sum::<f64>() / bits.len() as f64 - before).abs() < 1e-5);
    let mut last = None;
    for _ in 0..15 {
        let s = m.train_step(&batch).unwrap();
        assert!((s.bits_per_dim - s.loss / std::f64::consts::LN_2).abs() < 1e-9);
        assert_eq!(s.tokens, 64);
        last = Some(s);
    }
    let last = last.unwrap();
    assert_eq!((m.step().unwrap(), last.step), (15, 15));
    assert!(m.evaluate(&batch).unwrap() < before - 0.5);
    assert!(sparse::progress_line(&last, 30, 1.0).unwrap().contains("step 15/30"));
    let greedy = SampleParams { temperature: 0.0, ..SampleParams::default() };
    let a = m.sample(32, b"abc", Some(&greedy)).unwrap();
    assert_eq!(a, m.sample(32, b"abc", Some(&greedy)).unwrap());
    assert_eq!(&a[..3], b"abc");
    assert!(m.measure_memory(&batch).unwrap() > 0);
    // Errors, from the Rust side and from the library.
    assert_eq!(m.train_step(&batch[..40]).unwrap_err().status, Status::InvalidArgument);
    assert_eq!(m.evaluate(&[]).unwrap_err().status, Status::InvalidArgument);
    assert_eq!(m.sample(33, b"", None).unwrap_err().status, Status::InvalidArgument);
}

#[test]
fn checkpoints_resume_exactly() {
    let ctx = Context::new(Backend::Cpu).unwrap();
    let dir = temp_dir("ckpt");
    let path = dir.join("tiny.safetensors");
    let path = path.to_str().unwrap();
    let batches: Vec<Vec<u8>> = (0..4).map(|i| tokens(10 + i, 64)).collect();
    let mut m = Model::new(&ctx, &tiny(), None).unwrap();
    for b in &batches[..2] {
        m.train_step(b).unwrap();
    }
    m.save(path).unwrap();
    let cont: Vec<f64> = batches[2..].iter().map(|b| m.train_step(b).unwrap().loss).collect();
    let mut r = Model::load(&ctx, path).unwrap();
    assert_eq!(r.step().unwrap(), 2);
    let resumed: Vec<f64> = batches[2..].iter().map(|b| r.train_step(b).unwrap().loss).collect();
    assert_eq!(cont, resumed);
    m.restore(path).unwrap();
    assert_eq!(m.step().unwrap(), 2);
    let err = Model::load(&ctx, dir.join("missing").to_str().unwrap()).unwrap_err();
    assert_eq!(err.status, Status::Io, "{err}");
    std::fs::write(dir.join("junk"), b"not a checkpoint at all").unwrap();
    let err = Model::load(&ctx, dir.join("junk").to_str().unwrap()).unwrap_err();
    assert_eq!(err.status, Status::Format, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_configuration_errors() {
    let ctx = Context::new(Backend::Cpu).unwrap();
    let mut bad = tiny();
    bad.d_model = 15; // not a multiple of the heads
    let err = Model::new(&ctx, &bad, None).unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(!err.message.is_empty());
    assert_eq!(model_config_preset("nope").unwrap_err().status, Status::InvalidArgument);
    let c = model_config_preset("cifar10").unwrap();
    assert_eq!((c.num_layers, c.d_model), (128, 256));
    assert!(parameter_count(&c).unwrap() > 10_000_000);
}

#[test]
fn text_dataset_follows_the_split_rule() {
    // datasets/README.md: train = bytes [0, 0.9 n), valid = [0.9 n, 0.95 n), consecutive windows.
    let data = tokens(3, 10_000);
    let dir = temp_dir("text");
    let path = dir.join("bytes.bin");
    std::fs::write(&path, &data).unwrap();
    let path = path.to_str().unwrap();
    let mut d = Dataset::open(DatasetKind::Text, Some(path), Split::Train, |d| {
        d.seq_len = 100;
        d.shuffle = 0;
    })
    .unwrap();
    assert_eq!((d.num_sequences().unwrap(), d.seq_len(), d.vocab_size().unwrap()), (90, 100, 256));
    assert_eq!(d.read(0, 90).unwrap(), data[..9000].to_vec());
    let wide: Vec<i32> = data[500..700].iter().map(|&b| b as i32).collect();
    assert_eq!(d.read_i32(5, 2).unwrap(), wide);
    let (batch, idx) = d.next_batch(3).unwrap();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(batch, data[..300].to_vec());
    assert_eq!(d.position().unwrap(), (0, 3));
    assert_eq!(d.label(0).unwrap(), -1);
    assert_eq!(d.read(89, 2).unwrap_err().status, Status::InvalidArgument);
    assert_eq!(d.entropy().unwrap_err().status, Status::Unsupported);
    let v =
        Dataset::open(DatasetKind::Text, Some(path), Split::Valid, |d| d.seq_len = 100).unwrap();
    assert_eq!(v.read(0, 5).unwrap(), data[9000..9500].to_vec());
    let err =
        Dataset::open(DatasetKind::Text, Some("/nonexistent/x"), Split::Train, |_| {}).unwrap_err();
    assert_eq!(err.status, Status::Io);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synthetic_batches_cover_an_epoch() {
    let mut d =
        Dataset::open(DatasetKind::from_name("synthetic_text").unwrap(), None, Split::Train, |d| {
            d.seq_len = 64;
            d.num_sequences = 12;
            d.vocab = 16;
            d.seed = 5;
        })
        .unwrap();
    let all = d.read(0, 12).unwrap();
    let (batch, idx) = d.next_batch(12).unwrap();
    let mut sorted = idx.clone();
    sorted.sort();
    assert_eq!(sorted, (0..12).collect::<Vec<i64>>());
    for (r, &i) in idx.iter().enumerate() {
        assert_eq!(batch[r * 64..(r + 1) * 64], all[i as usize * 64..(i as usize + 1) * 64]);
    }
    assert!(batch.iter().all(|&t| t < 16));
    d.seek(0, 4).unwrap();
    assert_eq!(d.next_batch(2).unwrap().1, idx[4..6].to_vec());
    let (h, nll) = d.entropy().unwrap();
    assert!(h > 0.0 && h <= 4.0 && nll > 0.0, "{h} {nll}");
    assert_eq!(DatasetKind::Cifar10.name(), "cifar10");
}

#[test]
fn mulaw_matches_its_formula() {
    let x: Vec<f32> = (0..=1000).map(|i| -1.2 + 2.4 * i as f32 / 1000.0).collect();
    let q = sparse::mulaw_encode(&x).unwrap();
    for (&xi, &qi) in x.iter().zip(&q) {
        let c = (xi as f64).clamp(-1.0, 1.0);
        let f = c.signum() * (1.0 + 255.0 * c.abs()).ln() / 256f64.ln();
        let expect = ((f + 1.0) / 2.0 * 255.0).round();
        assert_eq!(qi as f64, expect, "mu-law of {xi}");
    }
    let levels: Vec<u8> = (0..=255).collect();
    for (&l, &y) in levels.iter().zip(&sparse::mulaw_decode(&levels).unwrap()) {
        let t = l as f64 / 255.0 * 2.0 - 1.0;
        let expect = t.signum() * (256f64.powf(t.abs()) - 1.0) / 255.0;
        assert!((y as f64 - expect).abs() < 1e-6, "level {l}: {y} vs {expect}");
    }
}
