//! Quantize a small MLP trained on real handwritten digits, and see what each scheme costs.
//!
//! `cargo run --release --example quantize_digits`
//!
//! Trains a 64-128-10 MLP on the UCI digits (embedded, 1,797 images, seeded 70/30 split), then
//! fake-quantizes both weight matrices with a range of uniform schemes and reports, per scheme:
//! true storage in bits per weight, relative weight error, test accuracy, and how many test
//! predictions agree with the full-precision model.

use std::io::Read;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, loss};
use quantlens::rng::SplitMix64;
use quantlens::{QuantSpec, Quantizer, UniformQuantizer};

const DIGITS_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");
const SEED: u64 = 20261124;

fn load_digits() -> anyhow::Result<(Vec<f32>, Vec<u32>)> {
    let mut csv = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ).read_to_string(&mut csv)?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for line in csv.lines().filter(|l| !l.is_empty()) {
        let v: Vec<f32> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        anyhow::ensure!(v.len() == 65, "expected 65 columns, got {}", v.len());
        x.extend(v[..64].iter().map(|p| p / 16.0));
        y.push(v[64] as u32);
    }
    Ok((x, y))
}

struct Mlp {
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

impl Mlp {
    fn new(rng: &mut SplitMix64, dev: &Device) -> anyhow::Result<Self> {
        let mut init = |rows: usize, cols: usize| -> anyhow::Result<Var> {
            let std = (2.0 / cols as f32).sqrt();
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| rng.normal() as f32 * std)
                .collect();
            Ok(Var::from_tensor(&Tensor::from_vec(v, (rows, cols), dev)?)?)
        };
        Ok(Mlp {
            w1: init(128, 64)?,
            b1: Var::zeros(128, DType::F32, dev)?,
            w2: init(10, 128)?,
            b2: Var::zeros(10, DType::F32, dev)?,
        })
    }
    fn logits(&self, x: &Tensor, w1: &Tensor, w2: &Tensor) -> candle_core::Result<Tensor> {
        let h = x.matmul(&w1.t()?)?.broadcast_add(&self.b1)?.relu()?;
        h.matmul(&w2.t()?)?.broadcast_add(&self.b2)
    }
}

fn accuracy(pred: &[u32], y: &[u32]) -> f64 {
    pred.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64
}

fn rel_error(w: &Tensor, w_hat: &Tensor) -> anyhow::Result<f64> {
    let num = (w - w_hat)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let den = w.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((num / den).sqrt())
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let (x, y) = load_digits()?;
    let n = y.len();
    let mut rng = SplitMix64::new(SEED);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let n_train = n * 7 / 10;
    let take = |idx: &[usize]| -> anyhow::Result<(Tensor, Vec<u32>)> {
        let xs: Vec<f32> = idx
            .iter()
            .flat_map(|&i| x[i * 64..(i + 1) * 64].to_vec())
            .collect();
        Ok((
            Tensor::from_vec(xs, (idx.len(), 64), &dev)?,
            idx.iter().map(|&i| y[i]).collect(),
        ))
    };
    let (x_train, y_train) = take(&order[..n_train])?;
    let (x_test, y_test) = take(&order[n_train..])?;
    let y_train_t = Tensor::new(y_train.as_slice(), &dev)?;

    // Full-batch AdamW: deterministic given the seed.
    let mlp = Mlp::new(&mut rng, &dev)?;
    let params = vec![
        mlp.w1.clone(),
        mlp.b1.clone(),
        mlp.w2.clone(),
        mlp.b2.clone(),
    ];
    let mut opt = AdamW::new(
        params,
        ParamsAdamW {
            lr: 1e-2,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    for _ in 0..300 {
        let logits = mlp.logits(&x_train, mlp.w1.as_tensor(), mlp.w2.as_tensor())?;
        opt.backward_step(&loss::cross_entropy(&logits, &y_train_t)?)?;
    }
    let predict = |w1: &Tensor, w2: &Tensor| -> anyhow::Result<Vec<u32>> {
        Ok(mlp
            .logits(&x_test, w1, w2)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?)
    };
    let (w1, w2) = (mlp.w1.as_tensor().clone(), mlp.w2.as_tensor().clone());
    let fp_pred = predict(&w1, &w2)?;
    println!(
        "digits: {n_train} train / {} test, MLP 64-128-10, full-precision test accuracy {:.2}%\n",
        n - n_train,
        100.0 * accuracy(&fp_pred, &y_test)
    );

    let specs = [
        QuantSpec::int8().per_channel(),
        QuantSpec::int4().per_group(32),
        QuantSpec::int4().per_group(32).asymmetric(),
        QuantSpec::int4().per_channel(),
        QuantSpec::int4().per_tensor(),
        QuantSpec::int4().per_group(32).stochastic(SEED),
        QuantSpec::int3().per_group(32).asymmetric(),
        QuantSpec::int2().per_group(32).asymmetric(),
        QuantSpec::binary().per_group(32),
    ];
    println!("| scheme | bits/weight | rel. weight error | test accuracy | agrees with fp32 |");
    println!("|---|---|---|---|---|");
    for spec in specs {
        let q = UniformQuantizer::new(spec)?;
        let (q1, q2) = (q.quantize(&w1, None)?, q.quantize(&w2, None)?);
        let bits = (q1.storage_bytes() + q2.storage_bytes()) as f64 * 8.0
            / (q1.numel() + q2.numel()) as f64;
        let (w1q, w2q) = (q1.dequantize(&dev)?, q2.dequantize(&dev)?);
        let err = rel_error(
            &Tensor::cat(&[w1.flatten_all()?, w2.flatten_all()?], 0)?,
            &Tensor::cat(&[w1q.flatten_all()?, w2q.flatten_all()?], 0)?,
        )?;
        let pred = predict(&w1q, &w2q)?;
        println!(
            "| {} | {bits:.3} | {:.2}% | {:.2}% | {:.2}% |",
            q.name(),
            100.0 * err,
            100.0 * accuracy(&pred, &y_test),
            100.0 * accuracy(&pred, &fp_pred)
        );
    }
    Ok(())
}
