//! Reconstruction error and true bits per weight of every 4-bit-class format on a Gaussian and
//! a heavy-tailed (Student-t, ν = 3) matrix: the table in docs/benchmarks.md.
//!
//! `cargo run --release --example format_table [-- ROWS COLS SEED]` (default 512 4096 20261124).

use candle_core::{Device, Tensor};
use quantlens::quant::Reconstruction;
use quantlens::rng::SplitMix64;
use quantlens::{
    CompandingQuantizer, FloatQuantizer, KMeansQuantizer, Nf4Quantizer, QuantSpec, Quantizer,
    UniformQuantizer,
};

fn matrix(rows: usize, cols: usize, seed: u64, heavy: bool) -> quantlens::Result<Tensor> {
    let mut rng = SplitMix64::new(seed);
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            // Scaled to the size of a trained layer's weights; scale does not change the table.
            0.02 * if heavy {
                rng.student_t(3)
            } else {
                rng.normal()
            } as f32
        })
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
}

/// The schemes of the table, in order.
fn schemes() -> quantlens::Result<Vec<Box<dyn Quantizer>>> {
    Ok(vec![
        Box::new(UniformQuantizer::new(
            QuantSpec::int4().per_group(128).asymmetric(),
        )?),
        Box::new(UniformQuantizer::new(QuantSpec::int4().per_group(128))?),
        Box::new(Nf4Quantizer::new()),
        Box::new(Nf4Quantizer::new().double_quant()),
        Box::new(KMeansQuantizer::new(4)?.per_tensor().scaled_per_group(128)),
        Box::new(KMeansQuantizer::new(4)?.per_group(128)),
        Box::new(CompandingQuantizer::new(4)?.per_group(128)),
        Box::new(CompandingQuantizer::new(4)?.exponent(0.5)?.per_group(128)),
        Box::new(CompandingQuantizer::new(4)?),
        Box::new(FloatQuantizer::fp4_e2m1()),
        Box::new(FloatQuantizer::fp4_e2m1().per_group(128)),
        Box::new(FloatQuantizer::mxfp4()),
        Box::new(FloatQuantizer::fp8_e4m3()),
        Box::new(FloatQuantizer::mxfp8()),
    ])
}

fn main() -> quantlens::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (rows, cols, seed) = (
        arg(0, 512) as usize,
        arg(1, 4096) as usize,
        arg(2, 20261124),
    );
    let gauss = matrix(rows, cols, seed, false)?;
    let heavy = matrix(rows, cols, seed, true)?;
    println!("{rows}×{cols}, seed {seed}\n");
    println!("| scheme | bits/weight | rel. error, Gaussian | rel. error, Student-t ν=3 |");
    println!("|---|---|---|---|");
    for q in schemes()? {
        let g = Reconstruction::measure(q.as_ref(), &gauss)?;
        let h = Reconstruction::measure(q.as_ref(), &heavy)?;
        println!(
            "| `{}` | {:.3} | {:.4} | {:.4} |",
            g.quantizer, g.bits_per_weight, g.relative_error, h.relative_error
        );
    }
    Ok(())
}
