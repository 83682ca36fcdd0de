//! Explanation and interpretability probes: does a quantized model explain itself the way the
//! full-precision one does, and does it still know what it knew?
//!
//! | file | concept |
//! |---|---|
//! | `attribution.rs` | [`Attributor`]: gradient × input and integrated gradients (midpoint or trapezoid rule, zero or given baseline) of a logit or log-probability, for any differentiable `[m, …] → [m, classes]` function |
//! | `tokens.rs` | [`Attributor::attribute_tokens`]: per-token attributions of a [`Llama`](crate::model::Llama)'s next-token prediction, through its input embeddings |
//! | `rank.rs` | [`spearman`], [`kendall_tau_b`], [`top_k_jaccard`], [`cosine_similarity`] |
//! | `agreement.rs` | [`Agreement`] of two attribution vectors, [`AgreementSummary`] over samples |
//! | `mean.rs` | [`MeanEstimate`]: a mean with a seeded percentile-bootstrap interval |
//! | `faithfulness.rs` | [`Faithfulness`]: deletion / insertion curves, AUCs, comprehensiveness, sufficiency |
//! | `counterfactual.rs` | [`CounterfactualSearch`] (elastic-net ISTA), [`validity_on`] another model, [`CounterfactualSummary`] |
//! | `facts.rs` | [`FACTS`]: 48 cloze facts written for this crate; [`FactPrompt`] |
//! | `recall.rs` | [`recall`]: greedy exact match and teacher-forced answer log-probability; [`RecallSummary`] |
//! | `neurons.rs` | [`NeuronScores`]: FFN-neuron contributions to the answer logit; [`NeuronRetention`] against a reference top-k threshold |
//! | `logit_lens.rs` | [`LogitLens`]: the answer's log-probability and rank after every block |
//! | `columns.rs` | audit columns: [`ClassifierExplanations`] (attribution agreement, counterfactual validity), [`FactRecallColumns`] |
//!
//! Every `…Summary` is one report row: plain `f64` means with `Option<Interval>` bootstrap
//! intervals ([`Bootstrap`](crate::mis::Bootstrap), seeded).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use quantlens::explain::{Agreement, Attributor, Target};
//! use quantlens::model::{Mlp, MlpConfig, QuantizableModel, SequentialQuantization, StoreAs};
//! use quantlens::{QuantSpec, UniformQuantizer};
//!
//! let dev = Device::Cpu;
//! let mlp = Mlp::new(MlpConfig::new(8, &[32], 4), 7, &dev)?;
//! let mut q = mlp.clone();
//! SequentialQuantization::new(&UniformQuantizer::new(QuantSpec::int4().per_channel())?)
//!     .store_as(StoreAs::FakeQuantized)
//!     .run(&mut q)?;
//! let x = Tensor::new(&[0.3f32, -1.2, 0.8, 2.0, -0.4, 0.0, 1.1, -0.9], &dev)?;
//! let ig = Attributor::integrated_gradients(32);
//! let a = ig.attribute(|b| mlp.forward(b), &x, Target::Class(2))?;
//! let b = ig.attribute(|b| q.forward(b), &x, Target::Class(2))?;
//! let agreement = Agreement::between(&a.values, &b.values, 3)?;
//! assert!(agreement.cosine > 0.5); // 4-bit barely moves this toy's explanation
//! # Ok::<(), quantlens::Error>(())
//! ```

mod agreement;
mod attribution;
mod columns;
mod counterfactual;
mod facts;
mod faithfulness;
mod logit_lens;
mod mean;
mod neurons;
mod rank;
mod recall;
mod tokens;

pub use agreement::{Agreement, AgreementSummary};
pub use attribution::{
    Attribution, Attributor, Baseline, IntegratedGradients, Method, PathRule, Score, Target,
};
pub use columns::{ClassifierExplanations, FactRecallColumns};
pub use counterfactual::{
    Counterfactual, CounterfactualSearch, CounterfactualSummary, CounterfactualValidity, Goal,
    validity_on,
};
pub use facts::{FACTS, Fact, FactCategory, FactPrompt};
pub use faithfulness::{Faithfulness, FaithfulnessCurves, FaithfulnessSummary};
pub use logit_lens::{LogitLens, LogitLensSummary};
pub use mean::MeanEstimate;
pub use neurons::{NeuronRetention, NeuronRetentionSummary, NeuronScores};
pub use rank::{cosine_similarity, kendall_tau_b, spearman, top_k_jaccard};
pub use recall::{FactOutcome, RecallSummary, recall};
