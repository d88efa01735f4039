//! The Sparse Transformer model and its trainer (capi/include/sparse/model.h).
use std::marker::PhantomData;
use std::os::raw::c_char;
use std::ptr::{self, NonNull};

use crate::{c_string, check, cstr, ffi, to_i64, Context, Error, Result, Status};

/// `sparse_model_config`; start from [`model_config_default`] or [`model_config_preset`].
pub type ModelConfig = ffi::sparse_model_config;
/// `sparse_train_config`; start from [`train_config_default`].
pub type TrainConfig = ffi::sparse_train_config;
/// `sparse_train_stats` of one training step.
pub type TrainStats = ffi::sparse_train_stats;
/// `sparse_sample_params`; `SampleParams::default()` gives the library's defaults.
pub type SampleParams = ffi::sparse_sample_params;

/// The library's default model configuration (2 layers, d 64, 2 heads, strided, n 256).
pub fn model_config_default() -> ModelConfig {
    // SAFETY: plain data; the library fills it (it fails only for NULL).
    let mut c: ModelConfig = unsafe { std::mem::zeroed() };
    unsafe { ffi::sparse_model_config_default(&mut c) };
    c
}

/// A named preset ("cifar10", "enwik8", "imagenet64", "audio", or "<name>-small").
pub fn model_config_preset(name: &str) -> Result<ModelConfig> {
    let n = c_string(name)?;
    let mut c: ModelConfig = unsafe { std::mem::zeroed() };
    check(unsafe { ffi::sparse_model_config_preset(n.as_ptr(), &mut c) })?;
    Ok(c)
}

/// The library's default trainer configuration.
pub fn train_config_default() -> TrainConfig {
    let mut t: TrainConfig = unsafe { std::mem::zeroed() };
    unsafe { ffi::sparse_train_config_default(&mut t) };
    t
}

/// Trainable parameters of a model of this configuration.
pub fn parameter_count(config: &ModelConfig) -> Result<i64> {
    let mut n = 0i64;
    check(unsafe { ffi::sparse_model_config_parameter_count(config, &mut n) })?;
    Ok(n)
}

impl Default for SampleParams {
    fn default() -> SampleParams {
        let mut p: SampleParams = unsafe { std::mem::zeroed() };
        unsafe { ffi::sparse_sample_params_default(&mut p) };
        p
    }
}

/// "step S/T | loss L | bpd B | N tok/s | ETA ..." for a step's statistics.
pub fn progress_line(stats: &TrainStats, total_steps: i64, elapsed_seconds: f64) -> Result<String> {
    let mut buf = vec![0 as c_char; 512];
    check(unsafe {
        ffi::sparse_train_progress_line(
            stats,
            total_steps,
            elapsed_seconds,
            buf.as_mut_ptr(),
            buf.len(),
        )
    })?;
    Ok(cstr(buf.as_ptr()))
}

/// A model with its optimiser state. Borrows the context it was created with (the library keeps
/// a pointer to it); freed on drop.
pub struct Model<'c> {
    raw: NonNull<ffi::sparse_model>,
    seq_len: usize,
    _ctx: PhantomData<&'c Context>,
}

impl<'c> Model<'c> {
    /// Creates and initialises a model; `train` None = the trainer defaults.
    pub fn new(
        ctx: &'c Context,
        config: &ModelConfig,
        train: Option<&TrainConfig>,
    ) -> Result<Model<'c>> {
        let mut out: *mut ffi::sparse_model = ptr::null_mut();
        check(unsafe {
            ffi::sparse_model_create(
                ctx.as_ptr(),
                config,
                train.map_or(ptr::null(), |t| t as *const _),
                &mut out,
            )
        })?;
        Model::wrap(out)
    }

    /// A model from a checkpoint written by [`Model::save`].
    pub fn load(ctx: &'c Context, path: &str) -> Result<Model<'c>> {
        let p = c_string(path)?;
        let mut out: *mut ffi::sparse_model = ptr::null_mut();
        check(unsafe { ffi::sparse_model_load(ctx.as_ptr(), p.as_ptr(), &mut out) })?;
        Model::wrap(out)
    }

    fn wrap(out: *mut ffi::sparse_model) -> Result<Model<'c>> {
        let raw = NonNull::new(out).ok_or_else(|| Error {
            status: Status::Internal,
            message: "model creation returned NULL".into(),
        })?;
        let mut m = Model { raw, seq_len: 0, _ctx: PhantomData };
        m.seq_len = m.config()?.seq_len as usize;
        Ok(m)
    }

    pub fn as_ptr(&self) -> *mut ffi::sparse_model {
        self.raw.as_ptr()
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn config(&self) -> Result<ModelConfig> {
        let mut c: ModelConfig = unsafe { std::mem::zeroed() };
        check(unsafe { ffi::sparse_model_get_config(self.as_ptr(), &mut c) })?;
        Ok(c)
    }

    pub fn train_config(&self) -> Result<TrainConfig> {
        let mut t: TrainConfig = unsafe { std::mem::zeroed() };
        check(unsafe { ffi::sparse_model_get_train_config(self.as_ptr(), &mut t) })?;
        Ok(t)
    }

    pub fn parameter_count(&self) -> Result<i64> {
        let mut n = 0i64;
        check(unsafe { ffi::sparse_model_parameter_count(self.as_ptr(), &mut n) })?;
        Ok(n)
    }

    /// Optimiser steps taken so far.
    pub fn step(&self) -> Result<i64> {
        let mut n = 0i64;
        check(unsafe { ffi::sparse_model_step(self.as_ptr(), &mut n) })?;
        Ok(n)
    }

    /// `tokens` must hold whole sequences: batch = tokens.len() / seq_len >= 1.
    fn batch(&self, tokens: &[u8]) -> Result<i64> {
        if tokens.is_empty() || self.seq_len == 0 || tokens.len() % self.seq_len != 0 {
            return Err(Error::invalid(format!(
                "{} tokens are not a whole number (>= 1) of sequences of {}",
                tokens.len(),
                self.seq_len
            )));
        }
        to_i64(tokens.len() / self.seq_len, "batch")
    }

    /// One optimiser step on `tokens` (batch x seq_len bytes, row-major).
    pub fn train_step(&mut self, tokens: &[u8]) -> Result<TrainStats> {
        let batch = self.batch(tokens)?;
        let mut s = TrainStats {
            struct_size: std::mem::size_of::<TrainStats>() as u32,
            ..Default::default()
        };
        check(unsafe {
            ffi::sparse_model_train_step(self.as_ptr(), tokens.as_ptr(), batch, &mut s)
        })?;
        Ok(s)
    }

    /// Mean bits per dim on `tokens` without dropout; the model is not changed.
    pub fn evaluate(&mut self, tokens: &[u8]) -> Result<f64> {
        let batch = self.batch(tokens)?;
        let mut bpd = 0f64;
        check(unsafe {
            ffi::sparse_model_evaluate(self.as_ptr(), tokens.as_ptr(), batch, &mut bpd)
        })?;
        Ok(bpd)
    }

    /// Bits of each token of `tokens` given the earlier tokens of its sequence (batch x seq_len
    /// values, row-major); their mean is `evaluate(tokens)`. The model is not changed.
    pub fn token_bits(&mut self, tokens: &[u8]) -> Result<Vec<f64>> {
        let batch = self.batch(tokens)?;
        let mut bits = vec![0f64; tokens.len()];
        check(unsafe {
            ffi::sparse_model_token_bits(
                self.as_ptr(),
                tokens.as_ptr(),
                batch,
                bits.as_mut_ptr(),
                bits.len(),
            )
        })?;
        Ok(bits)
    }

    /// Peak activation bytes of one training pass on `tokens` (the model is not changed).
    pub fn measure_memory(&mut self, tokens: &[u8]) -> Result<i64> {
        let batch = self.batch(tokens)?;
        let mut n = 0i64;
        check(unsafe {
            ffi::sparse_model_measure_memory(self.as_ptr(), tokens.as_ptr(), batch, &mut n)
        })?;
        Ok(n)
    }

    /// `length` bytes: `prompt`, then sampled bytes (`params` None = the defaults).
    pub fn sample(
        &mut self,
        length: usize,
        prompt: &[u8],
        params: Option<&SampleParams>,
    ) -> Result<Vec<u8>> {
        let mut out = vec![0u8; length];
        check(unsafe {
            ffi::sparse_model_sample(
                self.as_ptr(),
                params.map_or(ptr::null(), |p| p as *const _),
                if prompt.is_empty() { ptr::null() } else { prompt.as_ptr() },
                to_i64(prompt.len(), "prompt_len")?,
                out.as_mut_ptr(),
                to_i64(length, "length")?,
            )
        })?;
        Ok(out)
    }

    /// Writes a checkpoint (replaced atomically).
    pub fn save(&self, path: &str) -> Result<()> {
        let p = c_string(path)?;
        check(unsafe { ffi::sparse_model_save(self.as_ptr(), p.as_ptr()) })
    }

    /// Loads a checkpoint of the same configuration into this model.
    pub fn restore(&mut self, path: &str) -> Result<()> {
        let p = c_string(path)?;
        check(unsafe { ffi::sparse_model_restore(self.as_ptr(), p.as_ptr()) })
    }
}

impl std::fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("raw", &self.raw).field("seq_len", &self.seq_len).finish()
    }
}

impl Drop for Model<'_> {
    fn drop(&mut self) {
        unsafe { ffi::sparse_model_destroy(self.raw.as_ptr()) }
    }
}
