//! [`AuditReport::aggregate_trainings`]: one row per scheme over K repeated trainings.
//!
//! A membership split is one draw of a random quantity — which samples were members, how the
//! training run went — so one split's interval (a bootstrap over samples) misses most of the
//! spread. Repeating the training on K seeded splits and taking the mean with a Student-t
//! interval over the K values gives an interval for the procedure, not the one model.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::mis::special::student_t_quantile;

use super::report::{AuditReport, AuditRow, Ci, LayerErrorSummary};

/// Confidence level of the across-training intervals.
const LEVEL: f64 = 0.95;

impl AuditReport {
    /// One row per scheme, aggregated over the report's K trainings (K ≥ 2).
    ///
    /// Each aggregated row takes the index, scheme, kind and configuration of its training-0
    /// row and `training = None`. MIS, advantage and AUC become the mean over the K trainings
    /// with a 95 % Student-t interval `mean ± t(0.975, K − 1)·s/√K` over the K values (which
    /// replaces the per-training bootstrap intervals). Utilities, TPRs, bits per weight,
    /// model size and extra metrics become their means (a figure missing from any training
    /// stays missing); the layer error keeps the mean of the means and the worst layer
    /// overall; times add up. The per-sample losses are pooled, so the ROC and histograms of
    /// the aggregated report are those of one attacker with one threshold for all K models.
    ///
    /// Errors: fewer than 2 trainings in the provenance ([`Error::TooFewSamples`]), a row
    /// already aggregated, or a scheme without a row for every training (a partial report:
    /// merge the shards first) ([`Error::InvalidParameter`]).
    pub fn aggregate_trainings(&self) -> Result<AuditReport> {
        let k = self.provenance.trainings;
        if k < 2 {
            return Err(Error::TooFewSamples {
                what: "trainings to aggregate",
                needed: 2,
                got: k,
            });
        }
        // Rows of one scheme, grouped by (scheme, kind), in training order.
        let mut groups: BTreeMap<(String, &'static str), Vec<&AuditRow>> = BTreeMap::new();
        for row in &self.rows {
            if row.training.is_none() {
                return Err(Error::InvalidParameter {
                    name: "report",
                    reason: format!("row {} ({:?}) is already aggregated", row.index, row.scheme),
                });
            }
            groups
                .entry((row.scheme.clone(), row.kind.as_str()))
                .or_default()
                .push(row);
        }
        let mut out = AuditReport::new(self.provenance.clone());
        for ((scheme, _), mut rows) in groups {
            rows.sort_by_key(|r| r.training);
            let trainings: Vec<Option<usize>> = rows.iter().map(|r| r.training).collect();
            if trainings != (0..k).map(Some).collect::<Vec<_>>() {
                return Err(Error::InvalidParameter {
                    name: "report",
                    reason: format!(
                        "scheme {scheme:?} has rows for trainings {trainings:?}, not one for each of the {k}: merge every shard before aggregating"
                    ),
                });
            }
            out.push(aggregate(&rows))?;
        }
        Ok(out)
    }
}

fn aggregate(rows: &[&AuditRow]) -> AuditRow {
    let first = rows[0];
    let mut agg = AuditRow::new(first.index, first.scheme.clone(), first.kind)
        .with_config(first.config.clone());
    agg.training = None;
    agg.seed = first.seed;
    let all = |f: fn(&AuditRow) -> Option<f64>| -> Option<Vec<f64>> {
        rows.iter().map(|r| f(r)).collect()
    };
    let mean_of = |f: fn(&AuditRow) -> Option<f64>| all(f).map(|v| mean(&v));
    let with_ci = |f: fn(&AuditRow) -> Option<f64>| -> (Option<f64>, Option<Ci>) {
        match all(f) {
            Some(v) => (Some(mean(&v)), Some(t_interval(&v))),
            None => (None, None),
        }
    };
    (agg.mis, agg.mis_ci) = with_ci(|r| r.mis);
    (agg.advantage, agg.advantage_ci) = with_ci(|r| r.advantage);
    (agg.auc, agg.auc_ci) = with_ci(|r| r.auc);
    agg.tpr_at_1pct = mean_of(|r| r.tpr_at_1pct);
    agg.tpr_at_01pct = mean_of(|r| r.tpr_at_01pct);
    agg.accuracy = mean_of(|r| r.accuracy);
    agg.perplexity = mean_of(|r| r.perplexity);
    agg.embedding_cosine = mean_of(|r| r.embedding_cosine);
    agg.bits_per_weight = mean_of(|r| r.bits_per_weight);
    agg.model_bytes = rows
        .iter()
        .map(|r| r.model_bytes)
        .collect::<Option<Vec<u64>>>()
        .map(|v| (v.iter().map(|&b| b as f64).sum::<f64>() / v.len() as f64).round() as u64);
    agg.seconds = all(|r| r.seconds).map(|v| v.iter().sum());
    agg.layer_error = rows
        .iter()
        .map(|r| r.layer_error.clone())
        .collect::<Option<Vec<LayerErrorSummary>>>()
        .and_then(|v| {
            let worst = v
                .iter()
                .max_by(|a, b| a.max_relative_error.total_cmp(&b.max_relative_error))?;
            Some(LayerErrorSummary {
                mean_relative_error: mean(
                    &v.iter().map(|l| l.mean_relative_error).collect::<Vec<_>>(),
                ),
                max_relative_error: worst.max_relative_error,
                worst_layer: worst.worst_layer.clone(),
                layers: worst.layers,
            })
        });
    for name in first.metrics.keys() {
        if let Some(v) = rows
            .iter()
            .map(|r| r.metrics.get(name).copied())
            .collect::<Option<Vec<f64>>>()
        {
            agg.metrics.insert(name.clone(), mean(&v));
        }
    }
    agg.member_losses = rows.iter().flat_map(|r| r.member_losses.clone()).collect();
    agg.non_member_losses = rows
        .iter()
        .flat_map(|r| r.non_member_losses.clone())
        .collect();
    if agg.member_losses.is_empty() {
        agg.member_loss_mean = mean_of(|r| r.member_loss_mean);
        agg.non_member_loss_mean = mean_of(|r| r.non_member_loss_mean);
    } else {
        agg.member_loss_mean = Some(mean(&agg.member_losses));
        agg.non_member_loss_mean = Some(mean(&agg.non_member_losses));
    }
    agg
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `mean ± t(½ + level/2, n − 1) · s / √n`, `s` the sample standard deviation (n ≥ 2).
fn t_interval(v: &[f64]) -> Ci {
    let n = v.len() as f64;
    let m = mean(v);
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    let half = student_t_quantile(0.5 + LEVEL / 2.0, n - 1.0) * (var / n).sqrt();
    Ci {
        lower: m - half,
        upper: m + half,
        level: LEVEL,
    }
}
