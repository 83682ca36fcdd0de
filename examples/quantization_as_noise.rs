//! How well does "quantization = noise" hold? For several 4-bit schemes, the error statistics
//! of the real quantizer next to those of matched noise injectors (step-matched uniform noise,
//! norm-matched Gaussian, M+ and M− noise), on a heavy-tailed (Student-t, ν = 3) matrix.
//!
//! `cargo run --release --example quantization_as_noise`

use candle_core::{Device, Tensor};
use quantlens::perturb::perturbation_equivalence;
use quantlens::rng::SplitMix64;
use quantlens::{
    CompandingQuantizer, FloatQuantizer, Nf4Quantizer, QuantSpec, Quantizer, UniformQuantizer,
};

fn main() -> quantlens::Result<()> {
    let mut rng = SplitMix64::new(20261124);
    let v: Vec<f32> = (0..256 * 1024)
        .map(|_| 0.02 * rng.student_t(3) as f32)
        .collect();
    let w = Tensor::from_vec(v, (256, 1024), &Device::Cpu)?;
    let schemes: Vec<Box<dyn Quantizer>> = vec![
        Box::new(UniformQuantizer::new(QuantSpec::int4().per_channel())?),
        Box::new(Nf4Quantizer::new()),
        Box::new(CompandingQuantizer::new(4)?),
        Box::new(FloatQuantizer::fp4_e2m1()),
    ];
    for q in &schemes {
        println!("{}\n", perturbation_equivalence(q.as_ref(), &w, 7)?);
    }
    Ok(())
}
