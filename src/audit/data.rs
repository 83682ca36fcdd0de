//! [`AuditData`]: the tensors one audited model is measured on — members, non-members,
//! calibration batches and the utility set — and [`Utility`], how utility is measured.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::PerplexityConfig;

use super::provenance::{SplitSizes, hash_bytes, hash_tensor};

/// How an audit measures what a quantized model is still good for.
///
/// Each kind fills its own column of the report ([`AuditRow::accuracy`](super::AuditRow),
/// `perplexity`, `embedding_cosine`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Utility {
    /// Top-1 accuracy of the model's outputs (`[n, classes]` logits) on held-out `inputs`
    /// against integer `labels` (`[n]`).
    Accuracy {
        /// Model inputs, first dimension = samples.
        inputs: Tensor,
        /// Class indices, `[n]`, any integer dtype.
        labels: Tensor,
    },
    /// Perplexity of a language model on a token stream, over sliding windows.
    Perplexity {
        /// The held-out token stream.
        tokens: Vec<u32>,
        /// Window, stride and batch size.
        config: PerplexityConfig,
    },
    /// Mean cosine similarity between the model's outputs and the full-precision model's on
    /// `inputs` (each output row flattened to one vector), e.g. sentence embeddings.
    EmbeddingCosine {
        /// Model inputs, first dimension = samples.
        inputs: Tensor,
    },
}

impl Utility {
    /// Top-1 accuracy on `inputs` / `labels`.
    pub fn accuracy(inputs: Tensor, labels: Tensor) -> Self {
        Utility::Accuracy { inputs, labels }
    }

    /// Perplexity on `tokens` with `config`.
    pub fn perplexity(tokens: Vec<u32>, config: PerplexityConfig) -> Self {
        Utility::Perplexity { tokens, config }
    }

    /// Cosine similarity to the full-precision outputs on `inputs`.
    pub fn embedding_cosine(inputs: Tensor) -> Self {
        Utility::EmbeddingCosine { inputs }
    }

    /// Hex SHA-256 of the utility data, prefixed by its kind.
    fn hash(&self) -> Result<String> {
        Ok(match self {
            Utility::Accuracy { inputs, labels } => {
                format!("accuracy:{}:{}", hash_tensor(inputs)?, hash_tensor(labels)?)
            }
            Utility::Perplexity { tokens, config } => {
                let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
                format!("perplexity:{config:?}:{}", hash_bytes(&bytes))
            }
            Utility::EmbeddingCosine { inputs } => {
                format!("embedding_cosine:{}", hash_tensor(inputs)?)
            }
        })
    }
}

/// `((member inputs, member targets), (non-member inputs, non-member targets))`.
type Membership = ((Tensor, Tensor), (Tensor, Tensor));

/// What one audited model is measured on: the members it was trained on and the non-members
/// held out from it (model inputs and loss targets for the [`LossProbe`](crate::LossProbe)),
/// plus optional calibration batches for data-aware quantizers and a [`Utility`].
///
/// The first dimension of every tensor counts samples. For a classifier, inputs are
/// `[n, features]` and targets `[n]` class indices; for a language model, inputs are token
/// windows `[n, t]` and targets the next tokens `[n, t]`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::audit::{AuditData, Utility};
///
/// let dev = Device::Cpu;
/// let x = Tensor::zeros((6, 4), candle_core::DType::F32, &dev)?;
/// let y = Tensor::new(&[0u32, 1, 0, 1, 0, 1], &dev)?;
/// let data = AuditData::new((x.narrow(0, 0, 3)?, y.narrow(0, 0, 3)?), (x.narrow(0, 3, 3)?, y.narrow(0, 3, 3)?))?
///     .with_utility(Utility::accuracy(x.narrow(0, 3, 3)?, y.narrow(0, 3, 3)?));
/// assert_eq!(data.split_sizes().members, 3);
/// // A target count that does not match the inputs is refused.
/// assert!(AuditData::new((x.clone(), y.narrow(0, 0, 5)?), (x, y)).is_err());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AuditData {
    /// Members and non-members; `None` for a utility-only audit.
    membership: Option<Membership>,
    calibration: Vec<Tensor>,
    utility: Option<Utility>,
    population: usize,
}

impl AuditData {
    /// Members and non-members as `(inputs, targets)` pairs.
    ///
    /// Errors: an empty set, or inputs and targets with different sample counts
    /// ([`Error::InvalidParameter`]).
    pub fn new(members: (Tensor, Tensor), non_members: (Tensor, Tensor)) -> Result<Self> {
        for (what, (x, y)) in [("members", &members), ("non_members", &non_members)] {
            let n = first_dim(x, what)?;
            let m = first_dim(y, what)?;
            if n != m {
                return Err(Error::InvalidParameter {
                    name: "audit data",
                    reason: format!("{what}: {n} inputs but {m} targets"),
                });
            }
            if n == 0 {
                return Err(Error::TooFewSamples {
                    what,
                    needed: 1,
                    got: 0,
                });
            }
        }
        let population = members.0.dims()[0] + non_members.0.dims()[0];
        Ok(AuditData {
            membership: Some((members, non_members)),
            calibration: Vec::new(),
            utility: None,
            population,
        })
    }

    /// Data for an audit without membership inference: only `utility` is measured (for a
    /// model whose training data is unknown, such as a downloaded checkpoint). The privacy
    /// columns of its rows stay empty.
    pub fn utility_only(utility: Utility) -> Self {
        AuditData {
            membership: None,
            calibration: Vec::new(),
            utility: Some(utility),
            population: 0,
        }
    }

    /// Model inputs (one tensor per batch) that data-aware quantizers calibrate on.
    pub fn with_calibration(mut self, batches: impl IntoIterator<Item = Tensor>) -> Self {
        self.calibration = batches.into_iter().collect();
        self
    }

    /// How utility is measured (none by default).
    pub fn with_utility(mut self, utility: Utility) -> Self {
        self.utility = Some(utility);
        self
    }

    /// The size of the population the split was drawn from, for the report (default:
    /// members + non-members).
    pub fn with_population(mut self, population: usize) -> Self {
        self.population = population;
        self
    }

    /// The members' `(inputs, targets)`.
    ///
    /// Errors: a utility-only audit has none ([`Error::InvalidParameter`]).
    pub fn members(&self) -> Result<(&Tensor, &Tensor)> {
        let ((x, y), _) = self.membership()?;
        Ok((x, y))
    }

    /// The non-members' `(inputs, targets)`.
    ///
    /// Errors: a utility-only audit has none ([`Error::InvalidParameter`]).
    pub fn non_members(&self) -> Result<(&Tensor, &Tensor)> {
        let (_, (x, y)) = self.membership()?;
        Ok((x, y))
    }

    /// Whether members and non-members were given (false for [`AuditData::utility_only`]).
    pub fn has_membership(&self) -> bool {
        self.membership.is_some()
    }

    fn membership(&self) -> Result<&Membership> {
        self.membership
            .as_ref()
            .ok_or_else(|| Error::InvalidParameter {
                name: "audit data",
                reason: "this audit data is utility-only: it has no members or non-members".into(),
            })
    }

    /// The calibration batches.
    pub fn calibration(&self) -> &[Tensor] {
        &self.calibration
    }

    /// The utility measurement, if any.
    pub fn utility(&self) -> Option<&Utility> {
        self.utility.as_ref()
    }

    /// Members, non-members, calibration samples (rows of all batches) and population.
    pub fn split_sizes(&self) -> SplitSizes {
        let calibration = self
            .calibration
            .iter()
            .map(|b| b.dims().first().copied().unwrap_or(0))
            .sum();
        let (members, non_members) = self
            .membership
            .as_ref()
            .map_or((0, 0), |(m, n)| (m.0.dims()[0], n.0.dims()[0]));
        SplitSizes::new(members, non_members, calibration, self.population)
    }

    /// Hex SHA-256 over the members, non-members and utility data (in that order).
    pub fn data_hash(&self) -> Result<String> {
        let mut parts = Vec::new();
        if let Some((members, non_members)) = &self.membership {
            for t in [&members.0, &members.1, &non_members.0, &non_members.1] {
                parts.push(hash_tensor(t)?);
            }
        }
        if let Some(u) = &self.utility {
            parts.push(u.hash()?);
        }
        Ok(hash_bytes(parts.join("\n").as_bytes()))
    }

    /// Hex SHA-256 over the calibration batches; empty when there are none.
    pub fn calibration_hash(&self) -> Result<String> {
        if self.calibration.is_empty() {
            return Ok(String::new());
        }
        let parts = self
            .calibration
            .iter()
            .map(hash_tensor)
            .collect::<Result<Vec<_>>>()?;
        Ok(hash_bytes(parts.join("\n").as_bytes()))
    }
}

fn first_dim(t: &Tensor, what: &'static str) -> Result<usize> {
    t.dims()
        .first()
        .copied()
        .ok_or_else(|| Error::InvalidParameter {
            name: "audit data",
            reason: format!("{what}: a scalar tensor has no sample dimension"),
        })
}
