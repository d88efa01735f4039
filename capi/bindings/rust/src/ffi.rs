//! Raw declarations of the C ABI (capi/include/sparse/{common,context,layout,attention,model,
//! datasets}.h).
//!
//! Kept in step with the headers by `capi/bindings/check_bindings.py` (every function exists in
//! the library and in the headers with the same arity and pointer-ness; every struct has the
//! compiled C size, alignment and field offsets) and by this crate's tests (struct sizes against
//! the `struct_size` the library's defaults functions write). C enums are `c_int` aliases with
//! constants, so any value the library returns is representable.
#![allow(non_camel_case_types)]

use std::marker::{PhantomData, PhantomPinned};
use std::os::raw::{c_char, c_int, c_void};

// ------------------------------------------------------------------ common.h

pub type sparse_status = c_int;
pub const SPARSE_OK: sparse_status = 0;
pub const SPARSE_ERR_INVALID_ARGUMENT: sparse_status = -1;
pub const SPARSE_ERR_OUT_OF_MEMORY: sparse_status = -2;
pub const SPARSE_ERR_UNSUPPORTED: sparse_status = -3;
pub const SPARSE_ERR_DEVICE: sparse_status = -4;
pub const SPARSE_ERR_IO: sparse_status = -5;
pub const SPARSE_ERR_FORMAT: sparse_status = -6;
pub const SPARSE_ERR_INTERNAL: sparse_status = -7;
pub const SPARSE_ERR_BUFFER_TOO_SMALL: sparse_status = -8;

pub type sparse_dtype = c_int;
pub const SPARSE_DTYPE_F32: sparse_dtype = 0;
pub const SPARSE_DTYPE_F16: sparse_dtype = 1;
pub const SPARSE_DTYPE_BF16: sparse_dtype = 2;
pub const SPARSE_DTYPE_F64: sparse_dtype = 3;

pub type sparse_memory = c_int;
pub const SPARSE_MEMORY_HOST: sparse_memory = 0;
pub const SPARSE_MEMORY_DEVICE: sparse_memory = 1;

pub const SPARSE_TENSOR_MAX_DIMS: usize = 8;
pub const SPARSE_API_VERSION_MAJOR: u32 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_tensor {
    pub data: *mut c_void,
    pub dtype: sparse_dtype,
    pub memory: sparse_memory,
    pub device: i32,
    pub ndim: i32,
    pub shape: [i64; SPARSE_TENSOR_MAX_DIMS],
    pub strides: [i64; SPARSE_TENSOR_MAX_DIMS],
}

// ------------------------------------------------------------------ context.h

pub type sparse_backend = c_int;
pub const SPARSE_BACKEND_AUTO: sparse_backend = 0;
pub const SPARSE_BACKEND_CPU: sparse_backend = 1;
pub const SPARSE_BACKEND_CUDA: sparse_backend = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_settings {
    pub struct_size: u32,
    pub backend: sparse_backend,
    pub num_threads: i32,
    pub device_index: i32,
    pub seed: u64,
    pub cuda_stream: *mut c_void,
    pub reserved: [u8; 64],
}

/// Opaque: only ever behind a pointer.
#[repr(C)]
pub struct sparse_context {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

// ------------------------------------------------------------------ layout.h

pub type sparse_pattern_kind = c_int;
pub const SPARSE_PATTERN_DENSE: sparse_pattern_kind = 0;
pub const SPARSE_PATTERN_LOCAL: sparse_pattern_kind = 1;
pub const SPARSE_PATTERN_STRIDED_ROW: sparse_pattern_kind = 2;
pub const SPARSE_PATTERN_STRIDED_COLUMN: sparse_pattern_kind = 3;
pub const SPARSE_PATTERN_FIXED_BLOCK: sparse_pattern_kind = 4;
pub const SPARSE_PATTERN_FIXED_SUMMARY: sparse_pattern_kind = 5;
pub const SPARSE_PATTERN_SLIDING_WINDOW: sparse_pattern_kind = 6;
pub const SPARSE_PATTERN_LONGFORMER: sparse_pattern_kind = 7;
pub const SPARSE_PATTERN_BIGBIRD: sparse_pattern_kind = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_pattern {
    pub kind: sparse_pattern_kind,
    pub head: i32,
    pub window: i64,
    pub stride: i64,
    pub summary: i64,
    pub summary_variants: i32,
    pub causal: i32,
    pub global_tokens: *const i64,
    pub num_global_tokens: i64,
    pub random_blocks: i64,
    pub seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_layout_desc {
    pub struct_size: u32,
    pub seq_len: i64,
    pub block_size: i32,
    pub num_heads: i32,
    pub patterns: *const sparse_pattern,
    pub num_patterns: i32,
    pub pattern_struct_size: u32,
    pub transpose_strided_column: i32,
    pub reserved: [u8; 60],
}

/// Opaque: only ever behind a pointer.
#[repr(C)]
pub struct sparse_layout {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct sparse_layout_stats {
    pub struct_size: u32,
    pub seq_len: i64,
    pub block_size: i32,
    pub num_heads: i32,
    pub transposed: i32,
    pub num_blocks: i64,
    pub nnz_blocks: i64,
    pub full_blocks: i64,
    pub dense_blocks: i64,
    pub useful_elements: i64,
    pub computed_elements: i64,
    pub density: f64,
    pub effective_density: f64,
    pub memory_bytes: usize,
}

// ------------------------------------------------------------------ attention.h

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_attention_params {
    pub struct_size: u32,
    pub scale: f32,
    pub algorithm: i32,
    pub reserved: [u8; 56],
}

pub type sparse_attention_algorithm = c_int;
pub const SPARSE_ATTENTION_FUSED: sparse_attention_algorithm = 0;
pub const SPARSE_ATTENTION_UNFUSED: sparse_attention_algorithm = 1;

// ------------------------------------------------------------------ model.h

pub type sparse_model_attention = c_int;
pub const SPARSE_MODEL_ATTENTION_DENSE: sparse_model_attention = 0;
pub const SPARSE_MODEL_ATTENTION_STRIDED: sparse_model_attention = 1;
pub const SPARSE_MODEL_ATTENTION_FIXED: sparse_model_attention = 2;

pub type sparse_head_mode = c_int;
pub const SPARSE_HEADS_INTERLEAVED: sparse_head_mode = 0;
pub const SPARSE_HEADS_MERGED: sparse_head_mode = 1;
pub const SPARSE_HEADS_MULTIHEAD: sparse_head_mode = 2;

pub type sparse_row_attention = c_int;
pub const SPARSE_ROW_STRIDED: sparse_row_attention = 0;
pub const SPARSE_ROW_LOCAL: sparse_row_attention = 1;

pub type sparse_optimizer = c_int;
pub const SPARSE_OPTIMIZER_ADAM: sparse_optimizer = 0;
pub const SPARSE_OPTIMIZER_ADAMW: sparse_optimizer = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_model_config {
    pub struct_size: u32,
    pub seq_len: i64,
    pub num_layers: i32,
    pub d_model: i32,
    pub num_heads: i32,
    pub attention: sparse_model_attention,
    pub head_mode: sparse_head_mode,
    pub stride: i64,
    pub summary: i64,
    pub block_size: i32,
    pub layer_cycle: [c_char; 16],
    pub half_qk: i32,
    pub half_ff: i32,
    pub dropout: f32,
    pub tied_embeddings: i32,
    pub num_position_dims: i32,
    pub position_shape: [i64; 4],
    pub recompute: i32,
    pub seed: u64,
    pub output_init_std: f32,
    pub row_attention: sparse_row_attention,
    pub summary_variants: i32,
    pub reserved: [u8; 52],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_train_config {
    pub struct_size: u32,
    pub optimizer: sparse_optimizer,
    pub learning_rate: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    pub warmup_steps: i64,
    pub total_steps: i64,
    pub clip_norm: f32,
    pub micro_batch: i32,
    pub dtype: sparse_dtype,
    pub loss_scale: f32,
    pub loss_scale_window: i32,
    pub reserved: [u8; 52],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct sparse_train_stats {
    pub struct_size: u32,
    pub step: i64,
    pub loss: f64,
    pub bits_per_dim: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    pub tokens: i64,
    pub seconds: f64,
    pub peak_activation_bytes: i64,
    pub loss_scale: f64,
    pub skipped_steps: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_sample_params {
    pub struct_size: u32,
    pub temperature: f32,
    pub seed: u64,
    pub reserved: [u8; 32],
}

/// Opaque: only ever behind a pointer.
#[repr(C)]
pub struct sparse_model {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

// ------------------------------------------------------------------ datasets.h

pub type sparse_dataset_kind = c_int;
pub const SPARSE_DATASET_SYNTHETIC_IMAGE: sparse_dataset_kind = 0;
pub const SPARSE_DATASET_SYNTHETIC_TEXT: sparse_dataset_kind = 1;
pub const SPARSE_DATASET_CIFAR10: sparse_dataset_kind = 2;
pub const SPARSE_DATASET_ENWIK8: sparse_dataset_kind = 3;
pub const SPARSE_DATASET_TEXT: sparse_dataset_kind = 4;
pub const SPARSE_DATASET_IMAGENET64: sparse_dataset_kind = 5;
pub const SPARSE_DATASET_AUDIO: sparse_dataset_kind = 6;

pub type sparse_split = c_int;
pub const SPARSE_SPLIT_TRAIN: sparse_split = 0;
pub const SPARSE_SPLIT_VALID: sparse_split = 1;
pub const SPARSE_SPLIT_TEST: sparse_split = 2;

pub type sparse_token_type = c_int;
pub const SPARSE_TOKENS_U8: sparse_token_type = 0;
pub const SPARSE_TOKENS_I32: sparse_token_type = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sparse_dataset_desc {
    pub struct_size: u32,
    pub kind: sparse_dataset_kind,
    pub path: *const c_char,
    pub split: sparse_split,
    pub seq_len: i64,
    pub seed: u64,
    pub shuffle: i32,
    pub vocab: i32,
    pub num_sequences: i64,
    pub image_width: i32,
    pub image_height: i32,
    pub noise_scale: f64,
    pub copy_offset: i64,
    pub copy_prob: f64,
    pub successor_bias: f64,
    pub sample_rate: i32,
    pub reserved0: i32,
    pub valid_fraction: f64,
    pub test_fraction: f64,
    pub reserved: [u8; 64],
}

/// Opaque: only ever behind a pointer.
#[repr(C)]
pub struct sparse_dataset {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

extern "C" {
    // common.h
    pub fn sparse_status_string(status: sparse_status) -> *const c_char;
    pub fn sparse_last_error() -> *const c_char;
    pub fn sparse_clear_error();
    pub fn sparse_api_version() -> u32;
    pub fn sparse_version_string() -> *const c_char;
    pub fn sparse_build_info() -> *const c_char;
    pub fn sparse_tensor_contiguous(
        out: *mut sparse_tensor,
        data: *mut c_void,
        dtype: sparse_dtype,
        ndim: i32,
        shape: *const i64,
    ) -> sparse_status;
    pub fn sparse_dtype_size(dtype: sparse_dtype) -> usize;

    // context.h
    pub fn sparse_backend_name(backend: sparse_backend) -> *const c_char;
    pub fn sparse_backend_from_name(name: *const c_char, out: *mut sparse_backend)
        -> sparse_status;
    pub fn sparse_backend_available(
        backend: sparse_backend,
        available: *mut c_int,
    ) -> sparse_status;
    pub fn sparse_cuda_device_count(count: *mut c_int) -> sparse_status;
    pub fn sparse_settings_default(settings: *mut sparse_settings) -> sparse_status;
    pub fn sparse_context_create(
        settings: *const sparse_settings,
        out: *mut *mut sparse_context,
    ) -> sparse_status;
    pub fn sparse_context_destroy(context: *mut sparse_context);
    pub fn sparse_context_backend(
        context: *const sparse_context,
        out: *mut sparse_backend,
    ) -> sparse_status;
    pub fn sparse_context_num_threads(
        context: *const sparse_context,
        out: *mut i32,
    ) -> sparse_status;
    pub fn sparse_context_synchronize(context: *mut sparse_context) -> sparse_status;
    pub fn sparse_context_alloc(
        context: *mut sparse_context,
        bytes: usize,
        out: *mut *mut c_void,
    ) -> sparse_status;
    pub fn sparse_context_free(context: *mut sparse_context, ptr: *mut c_void);
    pub fn sparse_context_memory(
        context: *const sparse_context,
        out: *mut sparse_memory,
    ) -> sparse_status;
    pub fn sparse_context_copy(
        context: *mut sparse_context,
        dst: *mut c_void,
        dst_memory: sparse_memory,
        src: *const c_void,
        src_memory: sparse_memory,
        bytes: usize,
    ) -> sparse_status;

    // layout.h
    pub fn sparse_pattern_kind_name(kind: sparse_pattern_kind) -> *const c_char;
    pub fn sparse_pattern_kind_from_name(
        name: *const c_char,
        out: *mut sparse_pattern_kind,
    ) -> sparse_status;
    pub fn sparse_pattern_default(
        pattern: *mut sparse_pattern,
        kind: sparse_pattern_kind,
    ) -> sparse_status;
    pub fn sparse_layout_desc_default(desc: *mut sparse_layout_desc) -> sparse_status;
    pub fn sparse_layout_create(
        desc: *const sparse_layout_desc,
        out: *mut *mut sparse_layout,
    ) -> sparse_status;
    pub fn sparse_layout_create_from_blocks(
        seq_len: i64,
        block_size: i32,
        num_heads: i32,
        block_mask: *const u8,
        element_mask: *const u8,
        causal: i32,
        out: *mut *mut sparse_layout,
    ) -> sparse_status;
    pub fn sparse_layout_destroy(layout: *mut sparse_layout);
    pub fn sparse_layout_get_stats(
        layout: *const sparse_layout,
        head: i32,
        stats: *mut sparse_layout_stats,
    ) -> sparse_status;
    pub fn sparse_layout_block_mask(
        layout: *const sparse_layout,
        head: i32,
        out: *mut u8,
        size: usize,
    ) -> sparse_status;
    pub fn sparse_layout_row_mask(
        layout: *const sparse_layout,
        head: i32,
        query: i64,
        out: *mut u8,
        size: usize,
    ) -> sparse_status;

    // attention.h
    pub fn sparse_attention_params_default(params: *mut sparse_attention_params) -> sparse_status;
    pub fn sparse_attention_forward(
        context: *mut sparse_context,
        layout: *const sparse_layout,
        params: *const sparse_attention_params,
        q: *const sparse_tensor,
        k: *const sparse_tensor,
        v: *const sparse_tensor,
        out: *mut sparse_tensor,
        lse: *mut sparse_tensor,
    ) -> sparse_status;
    pub fn sparse_attention_backward(
        context: *mut sparse_context,
        layout: *const sparse_layout,
        params: *const sparse_attention_params,
        q: *const sparse_tensor,
        k: *const sparse_tensor,
        v: *const sparse_tensor,
        out: *const sparse_tensor,
        lse: *const sparse_tensor,
        dout: *const sparse_tensor,
        dq: *mut sparse_tensor,
        dk: *mut sparse_tensor,
        dv: *mut sparse_tensor,
    ) -> sparse_status;
    pub fn sparse_attention_workspace_size(
        context: *mut sparse_context,
        layout: *const sparse_layout,
        batch: i64,
        head_dim: i64,
        backward: i32,
        bytes: *mut usize,
    ) -> sparse_status;
    pub fn sparse_attention_workspace_size_params(
        context: *mut sparse_context,
        layout: *const sparse_layout,
        params: *const sparse_attention_params,
        batch: i64,
        head_dim: i64,
        backward: i32,
        bytes: *mut usize,
    ) -> sparse_status;

    // model.h
    pub fn sparse_model_config_default(config: *mut sparse_model_config) -> sparse_status;
    pub fn sparse_model_config_preset(
        name: *const c_char,
        config: *mut sparse_model_config,
    ) -> sparse_status;
    pub fn sparse_model_config_parameter_count(
        config: *const sparse_model_config,
        count: *mut i64,
    ) -> sparse_status;
    pub fn sparse_train_config_default(config: *mut sparse_train_config) -> sparse_status;
    pub fn sparse_model_create(
        context: *mut sparse_context,
        config: *const sparse_model_config,
        train: *const sparse_train_config,
        out: *mut *mut sparse_model,
    ) -> sparse_status;
    pub fn sparse_model_destroy(model: *mut sparse_model);
    pub fn sparse_model_parameter_count(
        model: *const sparse_model,
        count: *mut i64,
    ) -> sparse_status;
    pub fn sparse_model_get_config(
        model: *const sparse_model,
        config: *mut sparse_model_config,
    ) -> sparse_status;
    pub fn sparse_model_get_train_config(
        model: *const sparse_model,
        config: *mut sparse_train_config,
    ) -> sparse_status;
    pub fn sparse_model_step(model: *const sparse_model, step: *mut i64) -> sparse_status;
    pub fn sparse_model_train_step(
        model: *mut sparse_model,
        tokens: *const u8,
        batch: i64,
        stats: *mut sparse_train_stats,
    ) -> sparse_status;
    pub fn sparse_model_evaluate(
        model: *mut sparse_model,
        tokens: *const u8,
        batch: i64,
        bits_per_dim: *mut f64,
    ) -> sparse_status;
    pub fn sparse_model_token_bits(
        model: *mut sparse_model,
        tokens: *const u8,
        batch: i64,
        bits: *mut f64,
        count: usize,
    ) -> sparse_status;
    pub fn sparse_model_measure_memory(
        model: *mut sparse_model,
        tokens: *const u8,
        batch: i64,
        peak_bytes: *mut i64,
    ) -> sparse_status;
    pub fn sparse_sample_params_default(params: *mut sparse_sample_params) -> sparse_status;
    pub fn sparse_model_sample(
        model: *mut sparse_model,
        params: *const sparse_sample_params,
        prompt: *const u8,
        prompt_len: i64,
        out: *mut u8,
        length: i64,
    ) -> sparse_status;
    pub fn sparse_model_save(model: *const sparse_model, path: *const c_char) -> sparse_status;
    pub fn sparse_model_load(
        context: *mut sparse_context,
        path: *const c_char,
        out: *mut *mut sparse_model,
    ) -> sparse_status;
    pub fn sparse_model_restore(model: *mut sparse_model, path: *const c_char) -> sparse_status;
    pub fn sparse_train_progress_line(
        stats: *const sparse_train_stats,
        total_steps: i64,
        elapsed_seconds: f64,
        buffer: *mut c_char,
        size: usize,
    ) -> sparse_status;

    // datasets.h
    pub fn sparse_dataset_kind_name(kind: sparse_dataset_kind) -> *const c_char;
    pub fn sparse_dataset_kind_from_name(
        name: *const c_char,
        out: *mut sparse_dataset_kind,
    ) -> sparse_status;
    pub fn sparse_dataset_desc_default(
        desc: *mut sparse_dataset_desc,
        kind: sparse_dataset_kind,
    ) -> sparse_status;
    pub fn sparse_dataset_open(
        desc: *const sparse_dataset_desc,
        out: *mut *mut sparse_dataset,
    ) -> sparse_status;
    pub fn sparse_dataset_destroy(dataset: *mut sparse_dataset);
    pub fn sparse_dataset_num_sequences(
        dataset: *const sparse_dataset,
        out: *mut i64,
    ) -> sparse_status;
    pub fn sparse_dataset_seq_len(dataset: *const sparse_dataset, out: *mut i64) -> sparse_status;
    pub fn sparse_dataset_vocab_size(
        dataset: *const sparse_dataset,
        out: *mut i32,
    ) -> sparse_status;
    pub fn sparse_dataset_read(
        dataset: *const sparse_dataset,
        first: i64,
        count: i64,
        token_type: sparse_token_type,
        out: *mut c_void,
        out_bytes: usize,
    ) -> sparse_status;
    pub fn sparse_dataset_next_batch(
        dataset: *mut sparse_dataset,
        batch_size: i64,
        token_type: sparse_token_type,
        out: *mut c_void,
        out_bytes: usize,
        indices: *mut i64,
    ) -> sparse_status;
    pub fn sparse_dataset_position(
        dataset: *const sparse_dataset,
        epoch: *mut u64,
        position: *mut i64,
    ) -> sparse_status;
    pub fn sparse_dataset_seek(
        dataset: *mut sparse_dataset,
        epoch: u64,
        position: i64,
    ) -> sparse_status;
    pub fn sparse_dataset_label(
        dataset: *const sparse_dataset,
        index: i64,
        out: *mut i32,
    ) -> sparse_status;
    pub fn sparse_dataset_entropy(
        dataset: *const sparse_dataset,
        bits_per_dim: *mut f64,
        nll_bits_per_dim: *mut f64,
    ) -> sparse_status;
    pub fn sparse_mulaw_encode(input: *const f32, n: usize, out: *mut u8) -> sparse_status;
    pub fn sparse_mulaw_decode(input: *const u8, n: usize, out: *mut f32) -> sparse_status;
    pub fn sparse_dataset_audio_supported() -> c_int;
}
