//! The README's example: strided attention (one row head, one column head) on the CPU.
//! `SPARSE_LIB_DIR=build cargo run --offline --example attention`
use sparse::{Backend, Context, Layout, Pattern, View, ViewMut};

fn main() -> Result<(), sparse::Error> {
    let ctx = Context::new(Backend::Cpu)?;
    let layout = Layout::builder(1024)
        .block_size(32)
        .heads(2)
        .pattern(Pattern::strided_row(32).head(0))
        .pattern(Pattern::strided_column(32).head(1))
        .build()?;
    let shape = [1, 2, 1024, 64]; // [batch, heads, seq_len, head_dim]
    let q: Vec<f32> = (0..2 * 1024 * 64).map(|i| ((i % 97) as f32 / 97.0) - 0.5).collect();
    let mut out = vec![0f32; q.len()];
    let qv = View::new(&q, &shape)?; // Err if the slice is too short for the shape
    ctx.attention_forward(
        &layout,
        None,
        &qv,
        &qv,
        &qv,
        &mut ViewMut::new(&mut out, &shape)?,
        None,
    )?;
    let (out2, lse) = ctx.attention(&layout, &q, &q, &q, shape)?; // allocating shorthand
    assert_eq!(out, out2);
    let stats = layout.stats(None)?;
    println!(
        "libsparse {}: {} of {} dense blocks computed; checksum {:.6}, lse[0] {}",
        sparse::version(),
        stats.nnz_blocks,
        stats.dense_blocks,
        out.iter().map(|x| x.abs() as f64).sum::<f64>(),
        lse[0]
    );
    match Layout::builder(1024).block_size(24).pattern(Pattern::dense()).build() {
        Err(e) => println!("block size 24: {e}"),
        Ok(_) => unreachable!("24 is not a supported block size"),
    }
    Ok(())
}
