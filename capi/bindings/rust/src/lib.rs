//! Safe Rust bindings to libsparse, the Sparse Transformer library (Child et al., 2019), over its
//! C ABI (`capi/include/sparse/*.h`).
//!
//! ```no_run
//! use sparse::{Backend, Context, Layout, Pattern};
//! let ctx = Context::new(Backend::Cpu)?;
//! let layout = Layout::builder(256).block_size(32).heads(2)
//!     .pattern(Pattern::strided_row(16).head(0))
//!     .pattern(Pattern::strided_column(16).head(1))
//!     .build()?;
//! let shape = [1, 2, 256, 64]; // [batch, heads, seq_len, head_dim]
//! let q = vec![0.1f32; 2 * 256 * 64];
//! let (out, lse) = ctx.attention(&layout, &q, &q, &q, shape)?;
//! # Ok::<(), sparse::Error>(())
//! ```
//!
//! * Handles (`Context`, `Layout`, `Buffer`) own what the library created and free it on drop.
//! * Every failing call returns `Err(Error)` carrying the library's status code and the message
//!   of `sparse_last_error()`; checks made on the Rust side (a slice too short for its shape)
//!   return `Status::InvalidArgument` with a message of their own. Nothing panics on bad input.
//! * Tensors are borrowed slices with a shape and element strides (`View`, `ViewMut`): a view is
//!   only created when every index of its shape lies inside the slice.
//! * A `Context` is `Send` but not `Sync` (the C contract: one context per thread).
//!
//! The model and trainer (`Model`) and the datasets (`Dataset`) are bound the same way.
//! The raw declarations are in [`ffi`].

// `x % n != 0` reads the same on every toolchain (is_multiple_of is recent).
#![allow(unknown_lints, clippy::manual_is_multiple_of)]

mod datasets;
pub mod ffi;
mod model;

pub use datasets::{mulaw_decode, mulaw_encode, Dataset, DatasetDesc, DatasetKind, Split};
pub use model::{
    model_config_default, model_config_preset, parameter_count, progress_line,
    train_config_default, Model, ModelConfig, SampleParams, TrainConfig, TrainStats,
};

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr::{self, NonNull};

// ------------------------------------------------------------------ errors

/// The status of a failed call (`sparse_status` without `SPARSE_OK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    InvalidArgument,
    OutOfMemory,
    Unsupported,
    Device,
    Io,
    Format,
    Internal,
    BufferTooSmall,
    /// A code this crate does not know (a newer library).
    Other(i32),
}

impl Status {
    /// `None` for `SPARSE_OK`.
    pub fn from_code(code: i32) -> Option<Status> {
        Some(match code {
            ffi::SPARSE_OK => return None,
            ffi::SPARSE_ERR_INVALID_ARGUMENT => Status::InvalidArgument,
            ffi::SPARSE_ERR_OUT_OF_MEMORY => Status::OutOfMemory,
            ffi::SPARSE_ERR_UNSUPPORTED => Status::Unsupported,
            ffi::SPARSE_ERR_DEVICE => Status::Device,
            ffi::SPARSE_ERR_IO => Status::Io,
            ffi::SPARSE_ERR_FORMAT => Status::Format,
            ffi::SPARSE_ERR_INTERNAL => Status::Internal,
            ffi::SPARSE_ERR_BUFFER_TOO_SMALL => Status::BufferTooSmall,
            other => Status::Other(other),
        })
    }

    /// The library's numeric code (negative).
    pub fn code(self) -> i32 {
        match self {
            Status::InvalidArgument => ffi::SPARSE_ERR_INVALID_ARGUMENT,
            Status::OutOfMemory => ffi::SPARSE_ERR_OUT_OF_MEMORY,
            Status::Unsupported => ffi::SPARSE_ERR_UNSUPPORTED,
            Status::Device => ffi::SPARSE_ERR_DEVICE,
            Status::Io => ffi::SPARSE_ERR_IO,
            Status::Format => ffi::SPARSE_ERR_FORMAT,
            Status::Internal => ffi::SPARSE_ERR_INTERNAL,
            Status::BufferTooSmall => ffi::SPARSE_ERR_BUFFER_TOO_SMALL,
            Status::Other(c) => c,
        }
    }

    /// The library's short name ("invalid argument", ...).
    pub fn name(self) -> String {
        cstr(unsafe { ffi::sparse_status_string(self.code()) })
    }
}

/// A failed call: the status and the library's detail message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

impl Error {
    /// The numeric status code.
    pub fn code(&self) -> i32 {
        self.status.code()
    }

    pub(crate) fn from_library(code: c_int) -> Error {
        let status = Status::from_code(code).unwrap_or(Status::Internal);
        Error { status, message: last_error() }
    }

    pub(crate) fn invalid(message: String) -> Error {
        Error { status: Status::InvalidArgument, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status.name(), self.code(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn check(code: c_int) -> Result<()> {
    if code == ffi::SPARSE_OK {
        Ok(())
    } else {
        Err(Error::from_library(code))
    }
}

pub(crate) fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub(crate) fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{s:?} contains a NUL byte")))
}

pub(crate) fn to_i64(x: usize, what: &str) -> Result<i64> {
    i64::try_from(x).map_err(|_| Error::invalid(format!("{what} = {x} does not fit in int64_t")))
}

pub(crate) fn to_i32(x: usize, what: &str) -> Result<i32> {
    i32::try_from(x).map_err(|_| Error::invalid(format!("{what} = {x} does not fit in int32_t")))
}

/// The detail message of the last failing call on this thread (empty if none).
pub fn last_error() -> String {
    cstr(unsafe { ffi::sparse_last_error() })
}

/// "MAJOR.MINOR.PATCH" of the loaded library.
pub fn version() -> String {
    cstr(unsafe { ffi::sparse_version_string() })
}

/// `SPARSE_API_VERSION` of the loaded library: (major << 16) | (minor << 8) | patch.
pub fn api_version() -> u32 {
    unsafe { ffi::sparse_api_version() }
}

/// How the library was built (compiler, CUDA, OpenMP, build type).
pub fn build_info() -> String {
    cstr(unsafe { ffi::sparse_build_info() })
}

// ------------------------------------------------------------------ enums

/// Compute backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// CUDA when this build has it and a GPU is present, else CPU.
    Auto,
    /// The Eigen reference; always available.
    Cpu,
    /// NVIDIA GPU.
    Cuda,
}

impl Backend {
    fn raw(self) -> ffi::sparse_backend {
        match self {
            Backend::Auto => ffi::SPARSE_BACKEND_AUTO,
            Backend::Cpu => ffi::SPARSE_BACKEND_CPU,
            Backend::Cuda => ffi::SPARSE_BACKEND_CUDA,
        }
    }

    fn from_raw(raw: ffi::sparse_backend) -> Result<Backend> {
        match raw {
            ffi::SPARSE_BACKEND_AUTO => Ok(Backend::Auto),
            ffi::SPARSE_BACKEND_CPU => Ok(Backend::Cpu),
            ffi::SPARSE_BACKEND_CUDA => Ok(Backend::Cuda),
            other => Err(Error {
                status: Status::Internal,
                message: format!("unknown backend value {other}"),
            }),
        }
    }

    /// Parses "auto", "cpu" or "cuda" (case-insensitive) through the library.
    pub fn from_name(name: &str) -> Result<Backend> {
        let c = c_string(name)?;
        let mut raw: ffi::sparse_backend = 0;
        check(unsafe { ffi::sparse_backend_from_name(c.as_ptr(), &mut raw) })?;
        Backend::from_raw(raw)
    }

    /// "auto", "cpu" or "cuda".
    pub fn name(self) -> String {
        cstr(unsafe { ffi::sparse_backend_name(self.raw()) })
    }

    /// Whether this backend is compiled in and can run on this machine now.
    pub fn available(self) -> Result<bool> {
        let mut a: c_int = 0;
        check(unsafe { ffi::sparse_backend_available(self.raw(), &mut a) })?;
        Ok(a != 0)
    }
}

/// Number of CUDA devices visible to this process (0 without CUDA).
pub fn cuda_device_count() -> Result<i32> {
    let mut n: c_int = 0;
    check(unsafe { ffi::sparse_cuda_device_count(&mut n) })?;
    Ok(n)
}

/// Where a tensor's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Memory {
    Host,
    Device,
}

impl Memory {
    fn raw(self) -> ffi::sparse_memory {
        match self {
            Memory::Host => ffi::SPARSE_MEMORY_HOST,
            Memory::Device => ffi::SPARSE_MEMORY_DEVICE,
        }
    }
}

/// Element types the safe layer can describe from Rust slices.
pub trait Element: Copy + Default + 'static {
    const DTYPE: ffi::sparse_dtype;
}

impl Element for f32 {
    const DTYPE: ffi::sparse_dtype = ffi::SPARSE_DTYPE_F32;
}

impl Element for f64 {
    const DTYPE: ffi::sparse_dtype = ffi::SPARSE_DTYPE_F64;
}

// ------------------------------------------------------------------ contexts

/// Settings of a context; starts from the library's defaults (`sparse_settings_default`).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    raw: ffi::sparse_settings,
}

impl Default for Settings {
    fn default() -> Settings {
        let mut raw = ffi::sparse_settings {
            struct_size: 0,
            backend: 0,
            num_threads: 0,
            device_index: 0,
            seed: 0,
            cuda_stream: ptr::null_mut(),
            reserved: [0; 64],
        };
        // Fails only for a NULL pointer.
        unsafe { ffi::sparse_settings_default(&mut raw) };
        Settings { raw }
    }
}

impl Settings {
    pub fn backend(mut self, backend: Backend) -> Settings {
        self.raw.backend = backend.raw();
        self
    }
    /// CPU threads; 0 = all hardware threads.
    pub fn num_threads(mut self, n: i32) -> Settings {
        self.raw.num_threads = n;
        self
    }
    pub fn device_index(mut self, index: i32) -> Settings {
        self.raw.device_index = index;
        self
    }
    pub fn seed(mut self, seed: u64) -> Settings {
        self.raw.seed = seed;
        self
    }
    /// A `cudaStream_t` to run on.
    ///
    /// # Safety
    /// `stream` must be a valid CUDA stream of the chosen device that outlives the context.
    pub unsafe fn cuda_stream(mut self, stream: *mut c_void) -> Settings {
        self.raw.cuda_stream = stream;
        self
    }
    pub fn as_raw(&self) -> &ffi::sparse_settings {
        &self.raw
    }
}

/// A compute context (one backend, its threads and seed). Freed on drop.
pub struct Context {
    raw: NonNull<ffi::sparse_context>,
    // The device ordinal of the memory `alloc` returns: the settings' device_index on a CUDA
    // context, 0 on the CPU (what `Buffer` views tell the library).
    device: i32,
}

// A context may move between threads but not be shared: the C contract is one context per thread
// (or serialised calls). Not being `Sync` makes `&self` methods race-free.
unsafe impl Send for Context {}

impl Context {
    /// A context on `backend` with the default settings.
    pub fn new(backend: Backend) -> Result<Context> {
        Context::with_settings(&Settings::default().backend(backend))
    }

    pub fn with_settings(settings: &Settings) -> Result<Context> {
        let mut out: *mut ffi::sparse_context = ptr::null_mut();
        check(unsafe { ffi::sparse_context_create(&settings.raw, &mut out) })?;
        let mut ctx =
            NonNull::new(out).map(|raw| Context { raw, device: 0 }).ok_or_else(|| Error {
                status: Status::Internal,
                message: "sparse_context_create returned NULL".into(),
            })?;
        if ctx.memory()? == Memory::Device {
            ctx.device = settings.raw.device_index;
        }
        Ok(ctx)
    }

    /// The device ordinal of the memory `alloc` returns (the CUDA device; 0 on the CPU).
    pub fn device_index(&self) -> i32 {
        self.device
    }

    pub fn as_ptr(&self) -> *mut ffi::sparse_context {
        self.raw.as_ptr()
    }

    /// The backend the context runs on (never `Auto`).
    pub fn backend(&self) -> Result<Backend> {
        let mut raw: ffi::sparse_backend = 0;
        check(unsafe { ffi::sparse_context_backend(self.as_ptr(), &mut raw) })?;
        Backend::from_raw(raw)
    }

    pub fn num_threads(&self) -> Result<i32> {
        let mut n = 0i32;
        check(unsafe { ffi::sparse_context_num_threads(self.as_ptr(), &mut n) })?;
        Ok(n)
    }

    /// The kind of memory `alloc` returns (host for the CPU backend, device for CUDA).
    pub fn memory(&self) -> Result<Memory> {
        let mut raw: ffi::sparse_memory = 0;
        check(unsafe { ffi::sparse_context_memory(self.as_ptr(), &mut raw) })?;
        Ok(if raw == ffi::SPARSE_MEMORY_DEVICE { Memory::Device } else { Memory::Host })
    }

    pub fn synchronize(&self) -> Result<()> {
        check(unsafe { ffi::sparse_context_synchronize(self.as_ptr()) })
    }

    /// `bytes` of memory where the context computes (device memory on a CUDA context).
    pub fn alloc(&self, bytes: usize) -> Result<Buffer<'_>> {
        let memory = self.memory()?;
        let mut p: *mut c_void = ptr::null_mut();
        check(unsafe { ffi::sparse_context_alloc(self.as_ptr(), bytes, &mut p) })?;
        Ok(Buffer { ctx: self, ptr: p, bytes, memory })
    }

    /// Block-sparse attention forward: `out` (and `lse` when given) from q, k, v, all
    /// `[batch, heads, seq_len, head_dim]` (`lse`: `[batch, heads, seq_len]`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_forward<T: Element>(
        &self,
        layout: &Layout,
        params: Option<&AttentionParams>,
        q: &View<'_, T>,
        k: &View<'_, T>,
        v: &View<'_, T>,
        out: &mut ViewMut<'_, T>,
        lse: Option<&mut ViewMut<'_, f32>>,
    ) -> Result<()> {
        let p = params.map(AttentionParams::raw);
        let lse_ptr = lse.map_or(ptr::null_mut(), |l| &mut l.raw as *mut ffi::sparse_tensor);
        check(unsafe {
            ffi::sparse_attention_forward(
                self.as_ptr(),
                layout.as_ptr(),
                p.as_ref().map_or(ptr::null(), |p| p as *const _),
                &q.raw,
                &k.raw,
                &v.raw,
                &mut out.raw,
                lse_ptr,
            )
        })
    }

    /// Gradients of the forward pass (same layout and params): writes dq, dk, dv.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward<T: Element>(
        &self,
        layout: &Layout,
        params: Option<&AttentionParams>,
        q: &View<'_, T>,
        k: &View<'_, T>,
        v: &View<'_, T>,
        out: &View<'_, T>,
        lse: &View<'_, f32>,
        dout: &View<'_, T>,
        dq: &mut ViewMut<'_, T>,
        dk: &mut ViewMut<'_, T>,
        dv: &mut ViewMut<'_, T>,
    ) -> Result<()> {
        let p = params.map(AttentionParams::raw);
        check(unsafe {
            ffi::sparse_attention_backward(
                self.as_ptr(),
                layout.as_ptr(),
                p.as_ref().map_or(ptr::null(), |p| p as *const _),
                &q.raw,
                &k.raw,
                &v.raw,
                &out.raw,
                &lse.raw,
                &dout.raw,
                &mut dq.raw,
                &mut dk.raw,
                &mut dv.raw,
            )
        })
    }

    /// Scratch bytes one forward (or backward) pass allocates beyond the caller's tensors.
    pub fn attention_workspace_size(
        &self,
        layout: &Layout,
        batch: usize,
        head_dim: usize,
        backward: bool,
    ) -> Result<usize> {
        let mut bytes = 0usize;
        check(unsafe {
            ffi::sparse_attention_workspace_size(
                self.as_ptr(),
                layout.as_ptr(),
                to_i64(batch, "batch")?,
                to_i64(head_dim, "head_dim")?,
                backward as i32,
                &mut bytes,
            )
        })?;
        Ok(bytes)
    }

    /// The same for the algorithm in `params` (the unfused one stores every computed block).
    pub fn attention_workspace_size_params(
        &self,
        layout: &Layout,
        params: &AttentionParams,
        batch: usize,
        head_dim: usize,
        backward: bool,
    ) -> Result<usize> {
        let mut bytes = 0usize;
        let p = params.raw();
        check(unsafe {
            ffi::sparse_attention_workspace_size_params(
                self.as_ptr(),
                layout.as_ptr(),
                &p,
                to_i64(batch, "batch")?,
                to_i64(head_dim, "head_dim")?,
                backward as i32,
                &mut bytes,
            )
        })?;
        Ok(bytes)
    }

    /// Convenience: forward pass on contiguous slices of `shape` = [batch, heads, seq_len,
    /// head_dim] with the default scale; returns (out, lse).
    pub fn attention<T: Element>(
        &self,
        layout: &Layout,
        q: &[T],
        k: &[T],
        v: &[T],
        shape: [usize; 4],
    ) -> Result<(Vec<T>, Vec<f32>)> {
        let count = |dims: &[usize]| {
            dims.iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .ok_or_else(|| Error::invalid(format!("shape {shape:?} overflows")))
        };
        let mut out = vec![T::default(); count(&shape)?];
        // lse is [batch, heads, seq_len]: counted from those (with head_dim 0, elements / head_dim
        // would give an empty lse, refused as too short instead of the library naming head_dim).
        let mut lse = vec![0f32; count(&shape[..3])?];
        {
            let mut o = ViewMut::new(&mut out, &shape)?;
            let mut l = ViewMut::new(&mut lse, &shape[..3])?;
            self.attention_forward(
                layout,
                None,
                &View::new(q, &shape)?,
                &View::new(k, &shape)?,
                &View::new(v, &shape)?,
                &mut o,
                Some(&mut l),
            )?;
        }
        Ok((out, lse))
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("raw", &self.raw)
            .field("backend", &self.backend().ok())
            .finish()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { ffi::sparse_context_destroy(self.raw.as_ptr()) }
    }
}

/// Memory from `Context::alloc` (device memory on a CUDA context); freed on drop.
pub struct Buffer<'c> {
    ctx: &'c Context,
    ptr: *mut c_void,
    bytes: usize,
    memory: Memory,
}

impl<'c> Buffer<'c> {
    pub fn len(&self) -> usize {
        self.bytes
    }
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
    pub fn memory(&self) -> Memory {
        self.memory
    }
    pub fn as_ptr(&self) -> *mut c_void {
        self.ptr
    }

    fn same_size<T>(&self, n: usize) -> Result<usize> {
        let bytes = n.saturating_mul(std::mem::size_of::<T>());
        if bytes != self.bytes {
            return Err(Error::invalid(format!(
                "host slice has {bytes} bytes, the buffer {}",
                self.bytes
            )));
        }
        Ok(bytes)
    }

    /// Copies a host slice of exactly `len()` bytes into the buffer.
    pub fn copy_from<T: Element>(&mut self, src: &[T]) -> Result<()> {
        let bytes = self.same_size::<T>(src.len())?;
        check(unsafe {
            ffi::sparse_context_copy(
                self.ctx.as_ptr(),
                self.ptr,
                self.memory.raw(),
                src.as_ptr() as *const c_void,
                ffi::SPARSE_MEMORY_HOST,
                bytes,
            )
        })
    }

    /// Copies the buffer into a host slice of exactly `len()` bytes.
    pub fn copy_to<T: Element>(&self, dst: &mut [T]) -> Result<()> {
        let bytes = self.same_size::<T>(dst.len())?;
        check(unsafe {
            ffi::sparse_context_copy(
                self.ctx.as_ptr(),
                dst.as_mut_ptr() as *mut c_void,
                ffi::SPARSE_MEMORY_HOST,
                self.ptr,
                self.memory.raw(),
                bytes,
            )
        })
    }

    fn describe<T: Element>(&self, shape: &[usize]) -> Result<ffi::sparse_tensor> {
        if (self.ptr as usize) & (std::mem::align_of::<T>() - 1) != 0 {
            return Err(Error::invalid("buffer is not aligned for the element type".into()));
        }
        let mut raw = describe::<T>(self.ptr, self.bytes / std::mem::size_of::<T>(), shape, None)?;
        raw.memory = self.memory.raw();
        raw.device = self.ctx.device;
        Ok(raw)
    }

    /// A row-major view of the buffer's first elements (checked against its size).
    pub fn view<T: Element>(&self, shape: &[usize]) -> Result<View<'_, T>> {
        Ok(View { raw: self.describe::<T>(shape)?, _data: PhantomData })
    }

    pub fn view_mut<T: Element>(&mut self, shape: &[usize]) -> Result<ViewMut<'_, T>> {
        Ok(ViewMut { raw: self.describe::<T>(shape)?, _data: PhantomData })
    }
}

impl fmt::Debug for Buffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("ptr", &self.ptr)
            .field("bytes", &self.bytes)
            .field("memory", &self.memory)
            .finish()
    }
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        unsafe { ffi::sparse_context_free(self.ctx.as_ptr(), self.ptr) }
    }
}

// ------------------------------------------------------------------ tensors

fn describe<T: Element>(
    data: *mut c_void,
    len: usize,
    shape: &[usize],
    strides: Option<&[usize]>,
) -> Result<ffi::sparse_tensor> {
    let ndim = shape.len();
    if ndim == 0 || ndim > ffi::SPARSE_TENSOR_MAX_DIMS {
        return Err(Error::invalid(format!(
            "{ndim} dimensions: must be 1 to {}",
            ffi::SPARSE_TENSOR_MAX_DIMS
        )));
    }
    let mut st = vec![0usize; ndim];
    match strides {
        Some(s) if s.len() != ndim => {
            return Err(Error::invalid(format!(
                "shape {shape:?} and strides {s:?} differ in \
                                               length"
            )))
        }
        Some(s) => st.copy_from_slice(s),
        None => {
            let mut acc = 1usize;
            for i in (0..ndim).rev() {
                st[i] = acc;
                acc = acc.saturating_mul(shape[i].max(1));
            }
        }
    }
    // Elements the view reaches: 1 + sum (n_i - 1) * s_i, or 0 for an empty shape.
    let needed = if shape.contains(&0) {
        0
    } else {
        shape
            .iter()
            .zip(&st)
            .try_fold(1usize, |acc, (&n, &s)| {
                (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .ok_or_else(|| {
                Error::invalid(format!("shape {shape:?} with strides {st:?} overflows"))
            })?
    };
    if needed > len {
        return Err(Error::invalid(format!(
            "a slice of {len} elements is too short for shape {shape:?} with strides {st:?} \
             ({needed} needed)"
        )));
    }
    let mut raw = ffi::sparse_tensor {
        data,
        dtype: T::DTYPE,
        memory: ffi::SPARSE_MEMORY_HOST,
        device: 0,
        ndim: ndim as i32,
        shape: [0; ffi::SPARSE_TENSOR_MAX_DIMS],
        strides: [0; ffi::SPARSE_TENSOR_MAX_DIMS],
    };
    for i in 0..ndim {
        raw.shape[i] = to_i64(shape[i], "shape")?;
        raw.strides[i] = to_i64(st[i], "stride")?;
    }
    Ok(raw)
}

/// A read-only tensor: a borrowed slice with a shape and element strides.
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T: Element> {
    raw: ffi::sparse_tensor,
    _data: PhantomData<&'a [T]>,
}

impl<'a, T: Element> View<'a, T> {
    /// Row-major view; errors if `data` is shorter than the shape needs.
    pub fn new(data: &'a [T], shape: &[usize]) -> Result<View<'a, T>> {
        Ok(View {
            raw: describe::<T>(data.as_ptr() as *mut c_void, data.len(), shape, None)?,
            _data: PhantomData,
        })
    }
    /// View with element strides; errors if an index of the shape falls outside `data`.
    pub fn strided(data: &'a [T], shape: &[usize], strides: &[usize]) -> Result<View<'a, T>> {
        Ok(View {
            raw: describe::<T>(data.as_ptr() as *mut c_void, data.len(), shape, Some(strides))?,
            _data: PhantomData,
        })
    }
    pub fn shape(&self) -> Vec<usize> {
        self.raw.shape[..self.raw.ndim as usize].iter().map(|&x| x as usize).collect()
    }
    pub fn strides(&self) -> Vec<usize> {
        self.raw.strides[..self.raw.ndim as usize].iter().map(|&x| x as usize).collect()
    }
    pub fn as_raw(&self) -> &ffi::sparse_tensor {
        &self.raw
    }
}

/// A writable tensor: a mutably borrowed slice with a shape and element strides.
#[derive(Debug)]
pub struct ViewMut<'a, T: Element> {
    raw: ffi::sparse_tensor,
    _data: PhantomData<&'a mut [T]>,
}

impl<'a, T: Element> ViewMut<'a, T> {
    pub fn new(data: &'a mut [T], shape: &[usize]) -> Result<ViewMut<'a, T>> {
        Ok(ViewMut {
            raw: describe::<T>(data.as_mut_ptr() as *mut c_void, data.len(), shape, None)?,
            _data: PhantomData,
        })
    }
    pub fn strided(
        data: &'a mut [T],
        shape: &[usize],
        strides: &[usize],
    ) -> Result<ViewMut<'a, T>> {
        Ok(ViewMut {
            raw: describe::<T>(data.as_mut_ptr() as *mut c_void, data.len(), shape, Some(strides))?,
            _data: PhantomData,
        })
    }
    pub fn shape(&self) -> Vec<usize> {
        self.raw.shape[..self.raw.ndim as usize].iter().map(|&x| x as usize).collect()
    }
    /// A read-only view of the same elements (borrows this one).
    pub fn as_view(&self) -> View<'_, T> {
        View { raw: self.raw, _data: PhantomData }
    }
    pub fn as_raw(&self) -> &ffi::sparse_tensor {
        &self.raw
    }
}

// ------------------------------------------------------------------ patterns and layouts

/// Pattern kinds (see layout.h for the token-level definitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PatternKind {
    Dense,
    Local,
    StridedRow,
    StridedColumn,
    FixedBlock,
    FixedSummary,
    SlidingWindow,
    Longformer,
    BigBird,
}

impl PatternKind {
    pub const ALL: [PatternKind; 9] = [
        PatternKind::Dense,
        PatternKind::Local,
        PatternKind::StridedRow,
        PatternKind::StridedColumn,
        PatternKind::FixedBlock,
        PatternKind::FixedSummary,
        PatternKind::SlidingWindow,
        PatternKind::Longformer,
        PatternKind::BigBird,
    ];

    pub fn raw(self) -> ffi::sparse_pattern_kind {
        PatternKind::ALL.iter().position(|&k| k == self).unwrap() as ffi::sparse_pattern_kind
    }

    /// "dense", "strided_row", ... (the library's names).
    pub fn name(self) -> String {
        cstr(unsafe { ffi::sparse_pattern_kind_name(self.raw()) })
    }

    pub fn from_name(name: &str) -> Result<PatternKind> {
        let c = c_string(name)?;
        let mut raw: ffi::sparse_pattern_kind = 0;
        check(unsafe { ffi::sparse_pattern_kind_from_name(c.as_ptr(), &mut raw) })?;
        PatternKind::ALL.get(raw as usize).copied().ok_or_else(|| Error {
            status: Status::Internal,
            message: format!("unknown pattern kind {raw}"),
        })
    }
}

/// One pattern on one head (or every head). Fields the kind does not use are ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    pub kind: PatternKind,
    /// Head index, or -1 for every head.
    pub head: i32,
    pub window: i64,
    pub stride: i64,
    pub summary: i64,
    pub summary_variants: i32,
    pub causal: bool,
    pub global_tokens: Vec<i64>,
    pub random_blocks: i64,
    pub seed: u64,
}

impl Pattern {
    pub fn new(kind: PatternKind) -> Pattern {
        Pattern {
            kind,
            head: -1,
            window: 0,
            stride: 0,
            summary: 0,
            summary_variants: 1,
            causal: true,
            global_tokens: Vec::new(),
            random_blocks: 0,
            seed: 0,
        }
    }
    /// j <= i (every j when not causal).
    pub fn dense() -> Pattern {
        Pattern::new(PatternKind::Dense)
    }
    pub fn local(window: i64) -> Pattern {
        Pattern { window, ..Pattern::new(PatternKind::Local) }
    }
    /// The paper's strided head type 1.
    pub fn strided_row(stride: i64) -> Pattern {
        Pattern { stride, ..Pattern::new(PatternKind::StridedRow) }
    }
    /// The paper's strided head type 2.
    pub fn strided_column(stride: i64) -> Pattern {
        Pattern { stride, ..Pattern::new(PatternKind::StridedColumn) }
    }
    /// The paper's fixed head type 1.
    pub fn fixed_block(stride: i64) -> Pattern {
        Pattern { stride, ..Pattern::new(PatternKind::FixedBlock) }
    }
    /// The paper's fixed head type 2.
    pub fn fixed_summary(stride: i64, summary: i64) -> Pattern {
        Pattern { stride, summary, ..Pattern::new(PatternKind::FixedSummary) }
    }
    pub fn sliding_window(window: i64) -> Pattern {
        Pattern { window, ..Pattern::new(PatternKind::SlidingWindow) }
    }
    pub fn longformer(window: i64, global_tokens: &[i64]) -> Pattern {
        Pattern {
            window,
            global_tokens: global_tokens.to_vec(),
            ..Pattern::new(PatternKind::Longformer)
        }
    }
    pub fn bigbird(window: i64, global_tokens: &[i64], random_blocks: i64, seed: u64) -> Pattern {
        Pattern {
            window,
            global_tokens: global_tokens.to_vec(),
            random_blocks,
            seed,
            ..Pattern::new(PatternKind::BigBird)
        }
    }
    pub fn head(mut self, head: i32) -> Pattern {
        self.head = head;
        self
    }
    pub fn causal(mut self, causal: bool) -> Pattern {
        self.causal = causal;
        self
    }
    pub fn summary_variants(mut self, v: i32) -> Pattern {
        self.summary_variants = v;
        self
    }

    /// The raw struct; it points into `self.global_tokens`, so `self` must outlive its use.
    fn raw(&self) -> Result<ffi::sparse_pattern> {
        let mut p = ffi::sparse_pattern {
            kind: 0,
            head: 0,
            window: 0,
            stride: 0,
            summary: 0,
            summary_variants: 0,
            causal: 0,
            global_tokens: ptr::null(),
            num_global_tokens: 0,
            random_blocks: 0,
            seed: 0,
        };
        check(unsafe { ffi::sparse_pattern_default(&mut p, self.kind.raw()) })?;
        p.head = self.head;
        p.window = self.window;
        p.stride = self.stride;
        p.summary = self.summary;
        p.summary_variants = self.summary_variants;
        p.causal = self.causal as i32;
        p.global_tokens =
            if self.global_tokens.is_empty() { ptr::null() } else { self.global_tokens.as_ptr() };
        p.num_global_tokens = to_i64(self.global_tokens.len(), "num_global_tokens")?;
        p.random_blocks = self.random_blocks;
        p.seed = self.seed;
        Ok(p)
    }
}

/// Statistics of a layout (one head or all): `sparse_layout_stats`.
pub type LayoutStats = ffi::sparse_layout_stats;

/// Describes a layout; `build()` creates it.
#[derive(Clone, Debug)]
pub struct LayoutBuilder {
    seq_len: usize,
    block_size: usize,
    num_heads: usize,
    patterns: Vec<Pattern>,
    transpose_strided_column: bool,
}

impl LayoutBuilder {
    /// 16, 32, 64 or 128 (default 64).
    pub fn block_size(mut self, b: usize) -> LayoutBuilder {
        self.block_size = b;
        self
    }
    pub fn heads(mut self, h: usize) -> LayoutBuilder {
        self.num_heads = h;
        self
    }
    pub fn pattern(mut self, p: Pattern) -> LayoutBuilder {
        self.patterns.push(p);
        self
    }
    pub fn patterns(mut self, ps: &[Pattern]) -> LayoutBuilder {
        self.patterns.extend_from_slice(ps);
        self
    }
    /// Compute pure strided-column heads in the paper's transposed order (default true).
    pub fn transpose_strided_column(mut self, t: bool) -> LayoutBuilder {
        self.transpose_strided_column = t;
        self
    }

    pub fn build(&self) -> Result<Layout> {
        let raw_patterns = self.patterns.iter().map(Pattern::raw).collect::<Result<Vec<_>>>()?;
        let mut desc = ffi::sparse_layout_desc {
            struct_size: 0,
            seq_len: 0,
            block_size: 0,
            num_heads: 0,
            patterns: ptr::null(),
            num_patterns: 0,
            pattern_struct_size: 0,
            transpose_strided_column: 0,
            reserved: [0; 60],
        };
        check(unsafe { ffi::sparse_layout_desc_default(&mut desc) })?;
        desc.seq_len = to_i64(self.seq_len, "seq_len")?;
        desc.block_size = to_i32(self.block_size, "block_size")?;
        desc.num_heads = to_i32(self.num_heads, "num_heads")?;
        desc.patterns = if raw_patterns.is_empty() { ptr::null() } else { raw_patterns.as_ptr() };
        desc.num_patterns = to_i32(raw_patterns.len(), "num_patterns")?;
        desc.transpose_strided_column = self.transpose_strided_column as i32;
        let mut out: *mut ffi::sparse_layout = ptr::null_mut();
        check(unsafe { ffi::sparse_layout_create(&desc, &mut out) })?;
        Layout::wrap(out, self.seq_len, self.num_heads, self.block_size)
    }
}

/// A block layout (what the kernels compute). Freed on drop.
pub struct Layout {
    raw: NonNull<ffi::sparse_layout>,
    seq_len: usize,
    num_heads: usize,
    block_size: usize,
}

// Immutable after creation; may move between threads.
unsafe impl Send for Layout {}

impl Layout {
    /// A builder for a layout of `seq_len` positions (block 64, one head, transposed columns).
    pub fn builder(seq_len: usize) -> LayoutBuilder {
        LayoutBuilder {
            seq_len,
            block_size: 64,
            num_heads: 1,
            patterns: Vec::new(),
            transpose_strided_column: true,
        }
    }

    fn wrap(
        out: *mut ffi::sparse_layout,
        seq_len: usize,
        num_heads: usize,
        block_size: usize,
    ) -> Result<Layout> {
        NonNull::new(out).map(|raw| Layout { raw, seq_len, num_heads, block_size }).ok_or_else(
            || Error { status: Status::Internal, message: "layout creation returned NULL".into() },
        )
    }

    /// A layout from a block mask (`num_heads` x nb x nb bytes, non-zero = computed) and an
    /// optional element mask (block_size^2 bytes per computed block, in (head, I, J) order).
    pub fn from_blocks(
        seq_len: usize,
        block_size: usize,
        num_heads: usize,
        block_mask: &[u8],
        element_mask: Option<&[u8]>,
        causal: bool,
    ) -> Result<Layout> {
        if block_size == 0 {
            return Err(Error::invalid("block_size = 0".into()));
        }
        let nb = seq_len / block_size + usize::from(seq_len % block_size > 0);
        let need = num_heads.saturating_mul(nb.saturating_mul(nb));
        if block_mask.len() != need {
            return Err(Error::invalid(format!(
                "block_mask has {} bytes, {num_heads} heads x {nb} x {nb} blocks need {need}",
                block_mask.len()
            )));
        }
        if let Some(em) = element_mask {
            let computed = block_mask.iter().filter(|&&b| b != 0).count();
            let need = computed.saturating_mul(block_size * block_size);
            if em.len() != need {
                return Err(Error::invalid(format!(
                    "element_mask has {} bytes, {computed} computed blocks need {need}",
                    em.len()
                )));
            }
        }
        let mut out: *mut ffi::sparse_layout = ptr::null_mut();
        check(unsafe {
            ffi::sparse_layout_create_from_blocks(
                to_i64(seq_len, "seq_len")?,
                to_i32(block_size, "block_size")?,
                to_i32(num_heads, "num_heads")?,
                block_mask.as_ptr(),
                element_mask.map_or(ptr::null(), |e| e.as_ptr()),
                causal as i32,
                &mut out,
            )
        })?;
        Layout::wrap(out, seq_len, num_heads, block_size)
    }

    pub fn as_ptr(&self) -> *const ffi::sparse_layout {
        self.raw.as_ptr()
    }
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Statistics of one head, or of all heads together for `None`.
    pub fn stats(&self, head: Option<usize>) -> Result<LayoutStats> {
        let h = match head {
            Some(h) => to_i32(h, "head")?,
            None => -1,
        };
        let mut s = LayoutStats {
            struct_size: std::mem::size_of::<LayoutStats>() as u32,
            ..Default::default()
        };
        check(unsafe { ffi::sparse_layout_get_stats(self.as_ptr(), h, &mut s) })?;
        Ok(s)
    }

    /// The block mask of `head` in computed order: nb x nb bytes (0 skipped, 1 partial, 2 full).
    pub fn block_mask(&self, head: usize) -> Result<Vec<u8>> {
        let nb = self.stats(Some(head))?.num_blocks as usize;
        let mut out = vec![0u8; nb * nb];
        check(unsafe {
            ffi::sparse_layout_block_mask(
                self.as_ptr(),
                to_i32(head, "head")?,
                out.as_mut_ptr(),
                out.len(),
            )
        })?;
        Ok(out)
    }

    /// The keys query `query` of `head` attends to (seq_len flags).
    pub fn row_mask(&self, head: usize, query: usize) -> Result<Vec<bool>> {
        let mut out = vec![0u8; self.seq_len];
        check(unsafe {
            ffi::sparse_layout_row_mask(
                self.as_ptr(),
                to_i32(head, "head")?,
                to_i64(query, "query")?,
                out.as_mut_ptr(),
                out.len(),
            )
        })?;
        Ok(out.into_iter().map(|b| b != 0).collect())
    }
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("raw", &self.raw)
            .field("seq_len", &self.seq_len)
            .field("num_heads", &self.num_heads)
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        unsafe { ffi::sparse_layout_destroy(self.raw.as_ptr()) }
    }
}

/// Attention parameters; `scale` 0 (default) means 1 / sqrt(head_dim); `unfused` selects the
/// 2019-style unfused algorithm (SPARSE_ATTENTION_UNFUSED) instead of the fused default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionParams {
    pub scale: f32,
    pub unfused: bool,
}

impl AttentionParams {
    pub fn with_scale(scale: f32) -> AttentionParams {
        AttentionParams { scale, unfused: false }
    }

    fn raw(&self) -> ffi::sparse_attention_params {
        let mut p = ffi::sparse_attention_params {
            struct_size: 0,
            scale: 0.0,
            algorithm: 0,
            reserved: [0; 56],
        };
        unsafe { ffi::sparse_attention_params_default(&mut p) };
        p.scale = self.scale;
        p.algorithm =
            if self.unfused { ffi::SPARSE_ATTENTION_UNFUSED } else { ffi::SPARSE_ATTENTION_FUSED };
        p
    }
}
