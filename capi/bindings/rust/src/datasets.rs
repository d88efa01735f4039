//! Datasets as fixed-length token sequences (capi/include/sparse/datasets.h).
use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr::{self, NonNull};

use crate::{c_string, check, cstr, ffi, to_i64, Error, Result, Status};

/// Dataset kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    SyntheticImage,
    SyntheticText,
    Cifar10,
    Enwik8,
    Text,
    Imagenet64,
    Audio,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 7] = [
        DatasetKind::SyntheticImage,
        DatasetKind::SyntheticText,
        DatasetKind::Cifar10,
        DatasetKind::Enwik8,
        DatasetKind::Text,
        DatasetKind::Imagenet64,
        DatasetKind::Audio,
    ];

    pub fn raw(self) -> ffi::sparse_dataset_kind {
        DatasetKind::ALL.iter().position(|&k| k == self).unwrap() as ffi::sparse_dataset_kind
    }

    /// "synthetic_image", ..., "audio" (the library's names).
    pub fn name(self) -> String {
        cstr(unsafe { ffi::sparse_dataset_kind_name(self.raw()) })
    }

    pub fn from_name(name: &str) -> Result<DatasetKind> {
        let c = c_string(name)?;
        let mut raw: ffi::sparse_dataset_kind = 0;
        check(unsafe { ffi::sparse_dataset_kind_from_name(c.as_ptr(), &mut raw) })?;
        DatasetKind::ALL.get(raw as usize).copied().ok_or_else(|| Error {
            status: Status::Internal,
            message: format!("unknown dataset kind {raw}"),
        })
    }
}

/// Splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Valid,
    Test,
}

/// `sparse_dataset_desc` (its `path` is set by [`Dataset::open`]).
pub type DatasetDesc = ffi::sparse_dataset_desc;

/// An open dataset split. Freed on drop.
pub struct Dataset {
    raw: NonNull<ffi::sparse_dataset>,
    seq_len: usize,
}

// Not thread-safe (one thread at a time), but may move between threads.
unsafe impl Send for Dataset {}

impl Dataset {
    /// Opens `kind` (`path` None for synthetic kinds) with the defaults of
    /// `sparse_dataset_desc_default`, changed by `configure` (e.g. `|d| d.seq_len = 1024`).
    pub fn open(
        kind: DatasetKind,
        path: Option<&str>,
        split: Split,
        configure: impl FnOnce(&mut DatasetDesc),
    ) -> Result<Dataset> {
        let mut d: DatasetDesc = unsafe { std::mem::zeroed() };
        check(unsafe { ffi::sparse_dataset_desc_default(&mut d, kind.raw()) })?;
        configure(&mut d);
        let path: Option<CString> = path.map(c_string).transpose()?;
        d.path = path.as_ref().map_or(ptr::null(), |p| p.as_ptr());
        d.split = match split {
            Split::Train => ffi::SPARSE_SPLIT_TRAIN,
            Split::Valid => ffi::SPARSE_SPLIT_VALID,
            Split::Test => ffi::SPARSE_SPLIT_TEST,
        };
        let mut out: *mut ffi::sparse_dataset = ptr::null_mut();
        check(unsafe { ffi::sparse_dataset_open(&d, &mut out) })?;
        let raw = NonNull::new(out).ok_or_else(|| Error {
            status: Status::Internal,
            message: "sparse_dataset_open returned NULL".into(),
        })?;
        let mut ds = Dataset { raw, seq_len: 0 };
        let mut n = 0i64;
        check(unsafe { ffi::sparse_dataset_seq_len(ds.as_ptr(), &mut n) })?;
        ds.seq_len = n as usize;
        Ok(ds)
    }

    pub fn as_ptr(&self) -> *mut ffi::sparse_dataset {
        self.raw.as_ptr()
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn num_sequences(&self) -> Result<usize> {
        let mut n = 0i64;
        check(unsafe { ffi::sparse_dataset_num_sequences(self.as_ptr(), &mut n) })?;
        Ok(n as usize)
    }

    pub fn vocab_size(&self) -> Result<i32> {
        let mut n = 0i32;
        check(unsafe { ffi::sparse_dataset_vocab_size(self.as_ptr(), &mut n) })?;
        Ok(n)
    }

    fn len_of(&self, count: usize) -> Result<usize> {
        count
            .checked_mul(self.seq_len)
            .ok_or_else(|| Error::invalid(format!("{count} sequences overflow")))
    }

    /// Sequences [first, first + count) as count x seq_len bytes.
    pub fn read(&self, first: usize, count: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.len_of(count)?];
        check(unsafe {
            ffi::sparse_dataset_read(
                self.as_ptr(),
                to_i64(first, "first")?,
                to_i64(count, "count")?,
                ffi::SPARSE_TOKENS_U8,
                out.as_mut_ptr() as *mut c_void,
                out.len(),
            )
        })?;
        Ok(out)
    }

    /// As [`Dataset::read`], as int32 tokens.
    pub fn read_i32(&self, first: usize, count: usize) -> Result<Vec<i32>> {
        let mut out = vec![0i32; self.len_of(count)?];
        check(unsafe {
            ffi::sparse_dataset_read(
                self.as_ptr(),
                to_i64(first, "first")?,
                to_i64(count, "count")?,
                ffi::SPARSE_TOKENS_I32,
                out.as_mut_ptr() as *mut c_void,
                out.len() * 4,
            )
        })?;
        Ok(out)
    }

    /// The next `batch` sequences of the seeded order and their indices.
    pub fn next_batch(&mut self, batch: usize) -> Result<(Vec<u8>, Vec<i64>)> {
        let mut out = vec![0u8; self.len_of(batch)?];
        let mut idx = vec![0i64; batch];
        check(unsafe {
            ffi::sparse_dataset_next_batch(
                self.as_ptr(),
                to_i64(batch, "batch")?,
                ffi::SPARSE_TOKENS_U8,
                out.as_mut_ptr() as *mut c_void,
                out.len(),
                idx.as_mut_ptr(),
            )
        })?;
        Ok((out, idx))
    }

    /// (epoch, sequences of it already served).
    pub fn position(&self) -> Result<(u64, i64)> {
        let (mut e, mut p) = (0u64, 0i64);
        check(unsafe { ffi::sparse_dataset_position(self.as_ptr(), &mut e, &mut p) })?;
        Ok((e, p))
    }

    pub fn seek(&mut self, epoch: u64, position: usize) -> Result<()> {
        check(unsafe {
            ffi::sparse_dataset_seek(self.as_ptr(), epoch, to_i64(position, "position")?)
        })
    }

    /// Class label of sequence `index`, or -1 for unlabelled data.
    pub fn label(&self, index: usize) -> Result<i32> {
        let mut l = 0i32;
        check(unsafe {
            ffi::sparse_dataset_label(self.as_ptr(), to_i64(index, "index")?, &mut l)
        })?;
        Ok(l)
    }

    /// Synthetic kinds: (exact entropy, mean -log2 p of the drawn tokens) in bits per token.
    pub fn entropy(&self) -> Result<(f64, f64)> {
        let (mut a, mut b) = (0f64, 0f64);
        check(unsafe { ffi::sparse_dataset_entropy(self.as_ptr(), &mut a, &mut b) })?;
        Ok((a, b))
    }
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset").field("raw", &self.raw).field("seq_len", &self.seq_len).finish()
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        unsafe { ffi::sparse_dataset_destroy(self.raw.as_ptr()) }
    }
}

/// 8-bit mu-law encoding of samples in [-1, 1].
pub fn mulaw_encode(samples: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; samples.len()];
    check(unsafe { ffi::sparse_mulaw_encode(samples.as_ptr(), samples.len(), out.as_mut_ptr()) })?;
    Ok(out)
}

/// The inverse of [`mulaw_encode`] at each level's value.
pub fn mulaw_decode(levels: &[u8]) -> Result<Vec<f32>> {
    let mut out = vec![0f32; levels.len()];
    check(unsafe { ffi::sparse_mulaw_decode(levels.as_ptr(), levels.len(), out.as_mut_ptr()) })?;
    Ok(out)
}
