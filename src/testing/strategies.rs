//! Proptest strategies for weight matrices.

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;

use crate::error::Result;
use crate::rng::SplitMix64;

/// What family of values a generated matrix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// i.i.d. Gaussian-like values.
    Gaussian,
    /// A bulk 10–1000× smaller than a few outliers (as in real LLM weights).
    Outliers,
    /// Every row constant (a different constant per row).
    ConstantRows,
    /// Gaussian with some rows entirely zero.
    ZeroRows,
    /// All elements equal, possibly zero.
    Constant,
}

/// A generated weight matrix: `rows × cols` row-major values, meant to be used at `dtype`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightMatrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Row-major values, exactly representable in `dtype`.
    pub data: Vec<f32>,
    /// The dtype of the tensor to build.
    pub dtype: DType,
    /// The family the values came from.
    pub kind: WeightKind,
}

impl WeightMatrix {
    /// The matrix as a CPU tensor of its dtype.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(
            Tensor::from_vec(self.data.clone(), (self.rows, self.cols), &Device::Cpu)?
                .to_dtype(self.dtype)?,
        )
    }
}

/// Round f32 values through `dtype` so the stored data equals what the tensor holds.
fn representable(mut v: Vec<f32>, dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => v
            .iter_mut()
            .for_each(|x| *x = half::f16::from_f32(*x).to_f32()),
        DType::BF16 => v
            .iter_mut()
            .for_each(|x| *x = half::bf16::from_f32(*x).to_f32()),
        _ => {}
    }
    v
}

/// Matrices of `rows` rows and `cols_multiple_of · k` columns (`k` in `col_blocks`), with
/// magnitudes `10^e` for `e` in `log10_magnitude`, in one of `dtypes`.
///
/// Values are built from uniform draws by a Box–Muller-free recipe (sum of three uniforms,
/// close to Gaussian), so shrinking stays meaningful.
pub fn weight_matrix(
    rows: std::ops::RangeInclusive<usize>,
    cols_multiple_of: usize,
    col_blocks: std::ops::RangeInclusive<usize>,
    log10_magnitude: std::ops::RangeInclusive<f64>,
    dtypes: Vec<DType>,
) -> impl Strategy<Value = WeightMatrix> {
    let kinds = prop_oneof![
        3 => Just(WeightKind::Gaussian),
        2 => Just(WeightKind::Outliers),
        1 => Just(WeightKind::ConstantRows),
        1 => Just(WeightKind::ZeroRows),
        1 => Just(WeightKind::Constant),
    ];
    (
        rows,
        col_blocks,
        log10_magnitude,
        proptest::sample::select(dtypes),
        kinds,
        any::<u64>(),
    )
        .prop_map(move |(rows, blocks, log_mag, dtype, kind, seed)| {
            let cols = cols_multiple_of * blocks;
            let mag = 10f64.powf(log_mag) as f32;
            let mut rng = SplitMix64::new(seed);
            let gauss =
                |r: &mut SplitMix64| (r.next_f32() + r.next_f32() + r.next_f32() - 1.5) * 2.0;
            let mut data: Vec<f32> = (0..rows * cols).map(|_| gauss(&mut rng) * mag).collect();
            match kind {
                WeightKind::Gaussian => {}
                WeightKind::Outliers => {
                    // The bulk 10–1000× below the magnitude, a few outliers at it, so the
                    // largest value stays within the requested magnitude range.
                    let bulk = 10f32.powf(1.0 + 2.0 * rng.next_f32());
                    data.iter_mut().for_each(|x| *x /= bulk);
                    for _ in 0..1 + data.len() / 64 {
                        let i = (rng.next_u64() % data.len() as u64) as usize;
                        let sign = if rng.next_u64().is_multiple_of(2) {
                            1.0
                        } else {
                            -1.0
                        };
                        data[i] = sign * mag * (1.0 + 2.0 * rng.next_f32());
                    }
                }
                WeightKind::ConstantRows => {
                    for r in 0..rows {
                        let c = gauss(&mut rng) * mag;
                        data[r * cols..(r + 1) * cols].fill(c);
                    }
                }
                WeightKind::ZeroRows => {
                    for r in (0..rows).step_by(2) {
                        data[r * cols..(r + 1) * cols].fill(0.0);
                    }
                }
                WeightKind::Constant => {
                    let c = if rng.next_u64().is_multiple_of(3) {
                        0.0
                    } else {
                        gauss(&mut rng) * mag
                    };
                    data.fill(c);
                }
            }
            WeightMatrix {
                rows,
                cols,
                data: representable(data, dtype),
                dtype,
                kind,
            }
        })
}
