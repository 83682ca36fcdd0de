//! Streaming statistics of a linear layer's inputs, for data-aware quantizers.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Statistics of the inputs `x` of one linear layer, gathered batch by batch without keeping
/// the activations: the Gram matrix `Σ xᵀx` (accumulated in f64), per-input-channel absmax
/// and mean |x|, and the number of rows seen.
///
/// Data-free quantizers ignore it; GPTQ uses [`hessian`](Self::hessian), AWQ and
/// SmoothQuant the per-channel statistics.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::Calibration;
///
/// let mut calib = Calibration::new(4);
/// calib.observe(&Tensor::new(&[[1f32, 0., 0., 2.], [1., 0., 0., 0.]], &Device::Cpu)?)?;
/// assert_eq!(calib.samples(), 2);
/// assert_eq!(calib.act_absmax(), &[1.0, 0.0, 0.0, 2.0]);
/// // H = 2·XᵀX/n: H[0][0] = 2·(1 + 1)/2
/// assert_eq!(calib.hessian()?.to_vec2::<f32>()?[0][0], 2.0);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    in_features: usize,
    samples: usize,
    gram: Vec<f64>,
    absmax: Vec<f32>,
    sum_abs: Vec<f64>,
}

impl Calibration {
    /// Empty statistics for a layer with `in_features` inputs.
    pub fn new(in_features: usize) -> Self {
        Calibration {
            in_features,
            samples: 0,
            gram: vec![0.0; in_features * in_features],
            absmax: vec![0.0; in_features],
            sum_abs: vec![0.0; in_features],
        }
    }

    /// Number of input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Rows (tokens or examples) seen so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Add a batch of inputs `[..., in_features]` (leading dimensions are flattened).
    pub fn observe(&mut self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        if dims.last() != Some(&self.in_features) {
            return Err(Error::ShapeMismatch(format!(
                "calibration input {dims:?} does not end in in_features = {}",
                self.in_features
            )));
        }
        let x = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape(((), self.in_features))?;
        let rows = x.dims()[0];
        if rows == 0 {
            return Ok(());
        }
        let data = x.to_vec2::<f32>()?;
        if let Some(i) = data.iter().flatten().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "calibration input",
                count: data.iter().flatten().filter(|v| !v.is_finite()).count(),
                first_index: i,
            });
        }
        // The batch Gram matrix in f32 through Candle's matmul, accumulated across batches in f64.
        let gram = x.t()?.matmul(&x)?.flatten_all()?.to_vec1::<f32>()?;
        for (acc, g) in self.gram.iter_mut().zip(gram) {
            *acc += g as f64;
        }
        for row in &data {
            for (j, &v) in row.iter().enumerate() {
                self.absmax[j] = self.absmax[j].max(v.abs());
                self.sum_abs[j] += v.abs() as f64;
            }
        }
        self.samples += rows;
        Ok(())
    }

    /// Fold in statistics gathered elsewhere (another batch stream or process).
    pub fn merge(&mut self, other: &Calibration) -> Result<()> {
        if other.in_features != self.in_features {
            return Err(Error::ShapeMismatch(format!(
                "cannot merge calibrations of {} and {} features",
                self.in_features, other.in_features
            )));
        }
        for (a, b) in self.gram.iter_mut().zip(&other.gram) {
            *a += b;
        }
        for (a, b) in self.absmax.iter_mut().zip(&other.absmax) {
            *a = a.max(*b);
        }
        for (a, b) in self.sum_abs.iter_mut().zip(&other.sum_abs) {
            *a += b;
        }
        self.samples += other.samples;
        Ok(())
    }

    /// The Hessian proxy of the layer-wise squared error, `H = 2·XᵀX / n`, as an f32
    /// `[in_features, in_features]` tensor.
    pub fn hessian(&self) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.hessian_f64()
                .into_iter()
                .map(|v| v as f32)
                .collect::<Vec<_>>(),
            (self.in_features, self.in_features),
            &Device::Cpu,
        )?)
    }

    /// `H = 2·XᵀX / n` in f64, row-major.
    pub fn hessian_f64(&self) -> Vec<f64> {
        let n = self.samples.max(1) as f64;
        self.gram.iter().map(|g| 2.0 * g / n).collect()
    }

    /// Per-input-channel max |x|.
    pub fn act_absmax(&self) -> &[f32] {
        &self.absmax
    }

    /// Per-input-channel mean |x| (zeros before any sample).
    pub fn act_mean_abs(&self) -> Vec<f32> {
        let n = self.samples.max(1) as f64;
        self.sum_abs.iter().map(|s| (s / n) as f32).collect()
    }

    /// The statistics of the inputs divided per channel by `s` (`X·diag(s)⁻¹`), without
    /// seeing them again: Gram `G_ij / (s_i s_j)`, absmax and Σ|x| divided by `s_j`. What a
    /// data-aware quantizer needs after AWQ or SmoothQuant moved `s` into the weight.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use quantlens::Calibration;
    /// let x = Tensor::new(&[[2f32, -4.0], [1.0, 8.0]], &Device::Cpu)?;
    /// let mut direct = Calibration::new(2);
    /// direct.observe(&(x.broadcast_div(&Tensor::new(&[2f32, 4.0], &Device::Cpu)?))?)?;
    /// let mut c = Calibration::new(2);
    /// c.observe(&x)?;
    /// assert_eq!(c.scaled(&[2.0, 4.0])?, direct);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn scaled(&self, s: &[f32]) -> Result<Calibration> {
        let d = self.in_features;
        if s.len() != d {
            return Err(Error::ShapeMismatch(format!(
                "{} channel scales for a calibration of {d} features",
                s.len()
            )));
        }
        if let Some(j) = s.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::InvalidParameter {
                name: "channel scales",
                reason: format!("scale {j} = {} is not finite and positive", s[j]),
            });
        }
        let mut out = self.clone();
        for i in 0..d {
            for j in 0..d {
                out.gram[i * d + j] /= s[i] as f64 * s[j] as f64;
            }
            out.absmax[i] /= s[i];
            out.sum_abs[i] /= s[i] as f64;
        }
        Ok(out)
    }

    /// The statistics as bytes, so a calibration run can be reused: the magic `QLCAL001`,
    /// then little-endian `u64` in_features and samples, the Gram (f64, row-major), absmax
    /// (f32) and Σ|x| (f64). Lossless: [`from_bytes`](Self::from_bytes) gives back an equal
    /// value.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use quantlens::Calibration;
    /// let mut c = Calibration::new(3);
    /// c.observe(&Tensor::new(&[[1f32, -2.0, 0.5]], &Device::Cpu)?)?;
    /// assert_eq!(Calibration::from_bytes(&c.to_bytes())?, c);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let d = self.in_features;
        let mut out = Vec::with_capacity(24 + d * d * 8 + d * 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(d as u64).to_le_bytes());
        out.extend_from_slice(&(self.samples as u64).to_le_bytes());
        self.gram
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        self.absmax
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        self.sum_abs
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        out
    }

    /// Read statistics written by [`to_bytes`](Self::to_bytes); errors (never panics) on a
    /// wrong magic, a length that does not match the header, or non-finite values.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::parse(bytes, "<bytes>")
    }

    /// Write [`to_bytes`](Self::to_bytes) to a file.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Read a file written by [`save`](Self::save).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    fn parse(bytes: &[u8], path: &str) -> Result<Self> {
        let bad = |reason: String| Error::Malformed {
            path: path.to_string(),
            reason,
        };
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(bad("not a quantlens calibration (magic QLCAL001)".into()));
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let (d, samples) = (word(8), word(16));
        let expected = d
            .checked_mul(d)
            .and_then(|dd| dd.checked_mul(8))
            .and_then(|g| g.checked_add(d.checked_mul(12)?))
            .and_then(|b| b.checked_add(24));
        if expected != Some(bytes.len() as u64) {
            return Err(bad(format!(
                "{} bytes do not hold a calibration of {d} features",
                bytes.len()
            )));
        }
        let d = d as usize;
        let mut at = 24;
        let mut f64s = |n: usize| -> Vec<f64> {
            let v = bytes[at..at + 8 * n]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            at += 8 * n;
            v
        };
        let gram = f64s(d * d);
        let absmax_at = 24 + 8 * d * d;
        let absmax: Vec<f32> = bytes[absmax_at..absmax_at + 4 * d]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect();
        let sum_abs: Vec<f64> = bytes[absmax_at + 4 * d..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if gram.iter().chain(&sum_abs).any(|v| !v.is_finite())
            || absmax.iter().any(|v| !v.is_finite())
        {
            return Err(bad("non-finite statistics".into()));
        }
        Ok(Calibration {
            in_features: d,
            samples: samples as usize,
            gram,
            absmax,
            sum_abs,
        })
    }
}

const MAGIC: &[u8; 8] = b"QLCAL001";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_matches_naive_f64() {
        let x = Tensor::randn(0f32, 1.0, (37, 5), &Device::Cpu).unwrap();
        let rows = x.to_vec2::<f32>().unwrap();
        let mut a = Calibration::new(5);
        a.observe(&x.narrow(0, 0, 20).unwrap()).unwrap();
        let mut b = Calibration::new(5);
        b.observe(&x.narrow(0, 20, 17).unwrap()).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.samples(), 37);
        let h = a.hessian_f64();
        for i in 0..5 {
            for j in 0..5 {
                let naive: f64 =
                    rows.iter().map(|r| r[i] as f64 * r[j] as f64).sum::<f64>() * 2.0 / 37.0;
                assert!((h[i * 5 + j] - naive).abs() < 1e-5 * (1.0 + naive.abs()));
            }
            let absmax = rows.iter().map(|r| r[i].abs()).fold(0f32, f32::max);
            assert_eq!(a.act_absmax()[i], absmax);
        }
    }

    #[test]
    fn bytes_round_trip_and_bad_files_are_errors() {
        let x = Tensor::new(&[[1f32, -2.0, 0.5], [0.25, 3.0, -1.0]], &Device::Cpu).unwrap();
        let mut c = Calibration::new(3);
        c.observe(&x).unwrap();
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), 24 + 9 * 8 + 3 * 12);
        assert_eq!(Calibration::from_bytes(&bytes).unwrap(), c);
        let path = std::env::temp_dir().join(format!("ql-calib-{}.bin", std::process::id()));
        c.save(&path).unwrap();
        assert_eq!(Calibration::load(&path).unwrap(), c);
        std::fs::remove_file(&path).ok();
        for cut in 0..bytes.len() {
            assert!(
                Calibration::from_bytes(&bytes[..cut]).is_err(),
                "prefix {cut}"
            );
        }
        let mut wrong = bytes.clone();
        wrong[0] = b'X';
        assert!(Calibration::from_bytes(&wrong).is_err());
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Calibration::from_bytes(&huge).is_err());
        let mut nan = bytes;
        nan[24..32].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(Calibration::from_bytes(&nan).is_err());
        assert!(matches!(
            Calibration::load("/nonexistent/calib.bin"),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn rejects_bad_batches() {
        let mut c = Calibration::new(3);
        let wrong = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(c.observe(&wrong), Err(Error::ShapeMismatch(_))));
        let nan = Tensor::new(&[[0f32, f32::NAN, 1.0]], &Device::Cpu).unwrap();
        assert!(matches!(
            c.observe(&nan),
            Err(Error::NonFinite { first_index: 1, .. })
        ));
        assert!(c.merge(&Calibration::new(2)).is_err());
    }
}
