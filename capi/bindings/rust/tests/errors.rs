//! Bad input comes back as Err(Error) with the library's status and message, never a crash; and
//! the #[repr(C)] structs have the sizes the library itself reports.
use sparse::{
    ffi, AttentionParams, Backend, Context, Layout, Pattern, PatternKind, Status, View, ViewMut,
};

fn ctx() -> Context {
    Context::new(Backend::Cpu).unwrap()
}

fn layout() -> Layout {
    Layout::builder(64).block_size(16).heads(2).pattern(Pattern::strided_row(8)).build().unwrap()
}

#[test]
fn bad_layouts_are_errors_naming_the_field() {
    let cases: Vec<(Vec<Pattern>, usize, usize, &str)> = vec![
        (vec![Pattern::fixed_summary(8, 9)], 1, 16, "summary"),
        (vec![Pattern::strided_row(100)], 1, 16, "stride"),
        (vec![Pattern::local(0)], 1, 16, "window"),
        (vec![Pattern::dense().head(3)], 2, 16, "head"),
        (vec![Pattern::dense()], 1, 24, "block"),
        (vec![Pattern::longformer(4, &[64])], 1, 16, "global"),
        (vec![], 1, 16, "pattern"),
    ];
    for (pats, heads, block, word) in cases {
        let err = Layout::builder(64)
            .block_size(block)
            .heads(heads)
            .patterns(&pats)
            .build()
            .err()
            .unwrap_or_else(|| panic!("{pats:?} should fail"));
        assert_eq!(err.status, Status::InvalidArgument, "{err}");
        assert_eq!(err.code(), -1);
        assert!(err.message.contains(word), "message {:?} should name {word}", err.message);
        assert!(err.message.starts_with("sparse_layout_create"), "{}", err.message);
    }
}

#[test]
fn shape_mismatches_are_errors() {
    let (ctx, layout) = (ctx(), layout());
    let shape = [1, 2, 48, 32]; // the layout has seq_len 64
    let data = vec![0.5f32; 2 * 48 * 32];
    let mut out = vec![0f32; data.len()];
    let err = ctx
        .attention_forward(
            &layout,
            None,
            &View::new(&data, &shape).unwrap(),
            &View::new(&data, &shape).unwrap(),
            &View::new(&data, &shape).unwrap(),
            &mut ViewMut::new(&mut out, &shape).unwrap(),
            None,
        )
        .unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains("seq_len"), "{}", err.message);

    // k with a different head_dim
    let good = [1, 2, 64, 32];
    let q = vec![0.5f32; 2 * 64 * 32];
    let k = vec![0.5f32; 2 * 64 * 16];
    let mut out = vec![0f32; q.len()];
    let err = ctx
        .attention_forward(
            &layout,
            None,
            &View::new(&q, &good).unwrap(),
            &View::new(&k, &[1, 2, 64, 16]).unwrap(),
            &View::new(&q, &good).unwrap(),
            &mut ViewMut::new(&mut out, &good).unwrap(),
            None,
        )
        .unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains('k'), "{}", err.message);

    // lse of the wrong shape
    let mut lse = vec![0f32; 64];
    let err = ctx
        .attention_forward(
            &layout,
            None,
            &View::new(&q, &good).unwrap(),
            &View::new(&q, &good).unwrap(),
            &View::new(&q, &good).unwrap(),
            &mut ViewMut::new(&mut out, &good).unwrap(),
            Some(&mut ViewMut::new(&mut lse, &[1, 1, 64]).unwrap()),
        )
        .unwrap_err();
    assert!(err.message.contains("lse"), "{}", err.message);
}

#[test]
fn slices_are_checked_against_shapes() {
    let data = vec![0f32; 100];
    let err = View::new(&data, &[1, 2, 64, 32]).unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains("too short"), "{}", err.message);
    assert!(View::strided(&data, &[10, 10], &[10, 1]).is_ok());
    assert!(View::strided(&data, &[10, 10], &[11, 1]).is_err());
    assert!(View::strided(&data, &[10, 10], &[10]).is_err());
    assert!(View::<f32>::new(&[], &[0, 5]).is_ok());
    assert!(View::new(&data, &[]).is_err());
    assert!(View::new(&data, &[1; 9]).is_err());
    assert!(View::strided(&data, &[2, usize::MAX], &[usize::MAX, 1]).is_err());
    let mut out = vec![0f32; 10];
    assert!(ViewMut::new(&mut out, &[11]).is_err());
    assert_eq!(ViewMut::new(&mut out, &[2, 5]).unwrap().shape(), vec![2, 5]);
    assert!(Layout::from_blocks(40, 16, 1, &[1, 0, 0], None, true).is_err());
    assert!(
        Layout::from_blocks(40, 16, 1, &[1, 0, 0, 0, 0, 0, 0, 0, 0], Some(&[1; 10]), true).is_err()
    );
}

#[test]
fn allocating_attention_names_the_bad_dimension() {
    // lse was allocated as elements / head_dim: with head_dim 0 an empty lse, refused as "too
    // short" although the caller gave no lse; the library names head_dim.
    let (ctx, layout) = (ctx(), layout());
    let err = ctx.attention::<f32>(&layout, &[], &[], &[], [1, 2, 64, 0]).unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains("head_dim"), "{}", err.message);
    let err = ctx.attention::<f32>(&layout, &[], &[], &[], [0, 2, 64, 8]).unwrap_err();
    assert!(err.message.contains("batch"), "{}", err.message);
    let err = ctx.attention::<f32>(&layout, &[], &[], &[], [usize::MAX, 2, 64, 0]).unwrap_err();
    assert!(err.message.contains("overflows"), "{}", err.message);
    // 2^62 batches broadcast from one (stride 0): 2^75 elements, refused before any access.
    let q = vec![0.5f32; 2 * 64 * 8];
    let big = View::strided(&q, &[1 << 62, 2, 64, 8], &[0, 512, 8, 1]).unwrap();
    let mut out = vec![0f32; q.len()];
    let mut o = ViewMut::new(&mut out, &[1, 2, 64, 8]).unwrap();
    let err = ctx.attention_forward(&layout, None, &big, &big, &big, &mut o, None).unwrap_err();
    assert!(err.message.contains("64-bit"), "{}", err.message);
}

#[test]
fn unsupported_requests_are_errors() {
    let (ctx, layout) = (ctx(), layout());
    let shape = [1, 2, 64, 8];
    let q = vec![0.5f64; 2 * 64 * 8];
    let mut out = vec![0f64; q.len()];
    let err = ctx
        .attention_forward(
            &layout,
            None,
            &View::new(&q, &shape).unwrap(),
            &View::new(&q, &shape).unwrap(),
            &View::new(&q, &shape).unwrap(),
            &mut ViewMut::new(&mut out, &shape).unwrap(),
            None,
        )
        .unwrap_err();
    assert_eq!(err.status, Status::Unsupported, "{err}");
    if !Backend::Cuda.available().unwrap() {
        let err = match Context::new(Backend::Cuda) {
            Ok(_) => panic!("a CUDA context without a GPU"),
            Err(e) => e,
        };
        assert_eq!(err.status, Status::Unsupported);
        assert!(!err.message.is_empty());
        assert_eq!(Context::new(Backend::Auto).unwrap().backend().unwrap(), Backend::Cpu);
    }
}

#[test]
fn bad_parameters_are_errors() {
    let (ctx, layout) = (ctx(), layout());
    let shape = [1, 2, 64, 8];
    let q = vec![0.5f32; 2 * 64 * 8];
    let mut out = vec![0f32; q.len()];
    let nan = AttentionParams::with_scale(f32::NAN);
    let err = ctx
        .attention_forward(
            &layout,
            Some(&nan),
            &View::new(&q, &shape).unwrap(),
            &View::new(&q, &shape).unwrap(),
            &View::new(&q, &shape).unwrap(),
            &mut ViewMut::new(&mut out, &shape).unwrap(),
            None,
        )
        .unwrap_err();
    assert!(err.message.contains("scale"), "{}", err.message);
    // An output whose strides make elements overlap.
    let mut small = vec![0f32; 64 * 8];
    let err = ctx
        .attention_forward(
            &layout,
            None,
            &View::new(&q, &shape).unwrap(),
            &View::new(&q, &shape).unwrap(),
            &View::new(&q, &shape).unwrap(),
            &mut ViewMut::strided(&mut small, &shape, &[0, 0, 8, 1]).unwrap(),
            None,
        )
        .unwrap_err();
    assert_eq!(err.status, Status::InvalidArgument);
    assert!(err.message.contains("overlap"), "{}", err.message);
    assert!(ctx.attention_workspace_size(&layout, 0, 8, false).is_err());
    assert!(layout.row_mask(2, 0).is_err());
    assert!(layout.row_mask(0, 64).is_err());
    assert!(layout.stats(Some(5)).is_err());
    let err = Context::with_settings(&sparse::Settings::default().num_threads(-1)).err().unwrap();
    assert_eq!(err.status, Status::InvalidArgument);
    assert_eq!(Backend::from_name("tpu").unwrap_err().status, Status::InvalidArgument);
    assert!(Backend::from_name("cpu\0").is_err());
}

#[test]
fn names_versions_and_statuses() {
    assert_eq!(sparse::api_version() >> 16, ffi::SPARSE_API_VERSION_MAJOR);
    assert_eq!(sparse::version().split('.').count(), 3);
    assert!(!sparse::build_info().is_empty());
    assert_eq!(Backend::from_name("CPU").unwrap(), Backend::Cpu);
    assert_eq!(Backend::Cuda.name(), "cuda");
    for kind in PatternKind::ALL {
        assert_eq!(PatternKind::from_name(&kind.name()).unwrap(), kind);
    }
    assert_eq!(PatternKind::StridedColumn.name(), "strided_column");
    assert_eq!(Status::BufferTooSmall.name(), "buffer too small");
    assert_eq!(Status::from_code(-4), Some(Status::Device));
    assert_eq!(Status::from_code(0), None);
    assert_eq!(Status::from_code(-99).unwrap().name(), "unknown status");
    let ctx =
        Context::with_settings(&sparse::Settings::default().backend(Backend::Cpu).num_threads(3))
            .unwrap();
    assert_eq!(ctx.num_threads().unwrap(), 3);
    ctx.synchronize().unwrap();
    let err = Layout::builder(0).pattern(Pattern::dense()).build().unwrap_err();
    assert!(format!("{err}").starts_with("invalid argument (-1): "), "{err}");
}

#[test]
fn repr_c_sizes_match_the_library() {
    use std::mem::size_of;
    let mut s: ffi::sparse_settings = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { ffi::sparse_settings_default(&mut s) }, ffi::SPARSE_OK);
    assert_eq!(s.struct_size as usize, size_of::<ffi::sparse_settings>());
    let mut d: ffi::sparse_layout_desc = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { ffi::sparse_layout_desc_default(&mut d) }, ffi::SPARSE_OK);
    assert_eq!(d.struct_size as usize, size_of::<ffi::sparse_layout_desc>());
    assert_eq!(d.pattern_struct_size as usize, size_of::<ffi::sparse_pattern>());
    let mut p: ffi::sparse_attention_params = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { ffi::sparse_attention_params_default(&mut p) }, ffi::SPARSE_OK);
    assert_eq!(p.struct_size as usize, size_of::<ffi::sparse_attention_params>());
    // sparse_tensor: the library fills shape and strides where this struct has them.
    let mut t: ffi::sparse_tensor = unsafe { std::mem::zeroed() };
    let shape = [2i64, 3, 4];
    assert_eq!(
        unsafe {
            ffi::sparse_tensor_contiguous(
                &mut t,
                std::ptr::null_mut(),
                ffi::SPARSE_DTYPE_F64,
                3,
                shape.as_ptr(),
            )
        },
        ffi::SPARSE_OK
    );
    assert_eq!((t.ndim, t.dtype, t.memory), (3, ffi::SPARSE_DTYPE_F64, ffi::SPARSE_MEMORY_HOST));
    assert_eq!(&t.shape[..4], &[2, 3, 4, 0]);
    assert_eq!(&t.strides[..4], &[12, 4, 1, 0]);
    // sparse_layout_stats: a struct_size one byte short is rejected, the exact one accepted.
    let layout = layout();
    let mut st = ffi::sparse_layout_stats {
        struct_size: size_of::<ffi::sparse_layout_stats>() as u32 - 1,
        ..Default::default()
    };
    assert_ne!(
        unsafe { ffi::sparse_layout_get_stats(layout.as_ptr(), -1, &mut st) },
        ffi::SPARSE_OK
    );
    st.struct_size += 1;
    assert_eq!(
        unsafe { ffi::sparse_layout_get_stats(layout.as_ptr(), -1, &mut st) },
        ffi::SPARSE_OK
    );
    assert_eq!((st.seq_len, st.block_size, st.num_heads), (64, 16, 2));
    assert!(st.memory_bytes > 0 && st.density > 0.0 && st.density <= 1.0);
}
