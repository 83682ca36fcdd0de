//! Classifier evaluation on any split: accuracy, per-class accuracy, calibration error, loss.

use candle_core::{D, DType, Tensor};

use crate::error::{Error, Result};
use crate::model::QuantizableModel;

/// How a classifier does on one split.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Evaluation {
    /// Number of examples.
    pub n: usize,
    /// Fraction of examples whose arg-max class is the label.
    pub accuracy: f64,
    /// Accuracy within each class (indexed by label); `None` for a class absent from the split.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// Expected calibration error of the top-label confidence, 15 equal-width bins.
    pub ece: f64,
    /// Mean cross-entropy.
    pub mean_loss: f64,
}

/// Evaluate a classifier's logits on `(x, labels)`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{Mlp, MlpConfig, evaluate};
///
/// let dev = Device::Cpu;
/// let mlp = Mlp::new(MlpConfig::new(2, &[4], 3), 0, &dev)?;
/// let e = evaluate(&mlp, &Tensor::zeros((6, 2), candle_core::DType::F32, &dev)?, &Tensor::new(&[0u32, 1, 2, 0, 1, 2], &dev)?)?;
/// assert_eq!(e.n, 6);
/// assert_eq!(e.per_class_accuracy.len(), 3);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn evaluate<M: QuantizableModel + ?Sized>(
    model: &M,
    x: &Tensor,
    labels: &Tensor,
) -> Result<Evaluation> {
    let logits = model.forward(x)?.to_dtype(DType::F32)?;
    if logits.rank() != 2 {
        return Err(Error::RankMismatch {
            what: "classifier output",
            expected: 2,
            shape: logits.dims().to_vec(),
        });
    }
    let (n, classes) = (logits.dims()[0], logits.dims()[1]);
    if labels.dtype() != DType::U32 || labels.dims() != [n] {
        return Err(Error::ShapeMismatch(format!(
            "labels must be u32 of shape [{n}], got {:?} {:?}",
            labels.dtype(),
            labels.dims()
        )));
    }
    if n == 0 {
        return Err(Error::TooFewSamples {
            what: "evaluation split",
            needed: 1,
            got: 0,
        });
    }
    let y = labels.to_vec1::<u32>()?;
    if let Some(&bad) = y.iter().find(|&&c| c as usize >= classes) {
        return Err(Error::InvalidParameter {
            name: "labels",
            reason: format!("label {bad} but the model has {classes} outputs"),
        });
    }
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let lp = log_probs.to_vec2::<f32>()?;
    let mut correct = 0usize;
    let mut per_class = vec![(0usize, 0usize); classes];
    let mut confidence = Vec::with_capacity(n);
    let mut hit = Vec::with_capacity(n);
    let mut loss = 0.0f64;
    for (row, &label) in lp.iter().zip(&y) {
        let (arg, &best) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &f32::NEG_INFINITY));
        let ok = arg == label as usize;
        correct += ok as usize;
        per_class[label as usize].0 += ok as usize;
        per_class[label as usize].1 += 1;
        confidence.push((best as f64).exp());
        hit.push(ok);
        loss -= row[label as usize] as f64;
    }
    Ok(Evaluation {
        n,
        accuracy: correct as f64 / n as f64,
        per_class_accuracy: per_class
            .iter()
            .map(|&(c, t)| (t > 0).then(|| c as f64 / t as f64))
            .collect(),
        ece: expected_calibration_error(&confidence, &hit, 15)?,
        mean_loss: loss / n as f64,
    })
}

/// Expected calibration error: `Σ_b (|B_b| / n) · |accuracy(B_b) − mean confidence(B_b)|` over
/// `bins` equal-width confidence bins on `[0, 1]` (a confidence of exactly 1 falls in the
/// last bin).
///
/// ```
/// use quantlens::model::expected_calibration_error;
/// // Always 80% sure, right 80% of the time: perfectly calibrated.
/// let conf = [0.8; 5];
/// let hit = [true, true, true, true, false];
/// assert!(expected_calibration_error(&conf, &hit, 10)? < 1e-12);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn expected_calibration_error(
    confidence: &[f64],
    correct: &[bool],
    bins: usize,
) -> Result<f64> {
    if confidence.len() != correct.len() {
        return Err(Error::ShapeMismatch(format!(
            "{} confidences but {} outcomes",
            confidence.len(),
            correct.len()
        )));
    }
    if bins == 0 {
        return Err(Error::InvalidParameter {
            name: "bins",
            reason: "must be at least 1".into(),
        });
    }
    if confidence.is_empty() {
        return Err(Error::TooFewSamples {
            what: "calibration error",
            needed: 1,
            got: 0,
        });
    }
    if let Some(i) = confidence
        .iter()
        .position(|c| !(c.is_finite() && (0.0..=1.0).contains(c)))
    {
        return Err(Error::InvalidParameter {
            name: "confidence",
            reason: format!("value {} at index {i} is not in [0, 1]", confidence[i]),
        });
    }
    let mut sum_conf = vec![0.0f64; bins];
    let mut sum_hit = vec![0.0f64; bins];
    let mut count = vec![0usize; bins];
    for (&c, &h) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        sum_conf[b] += c;
        sum_hit[b] += h as u8 as f64;
        count[b] += 1;
    }
    let n = confidence.len() as f64;
    Ok((0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (sum_hit[b] - sum_conf[b]).abs() / n)
        .sum())
}
