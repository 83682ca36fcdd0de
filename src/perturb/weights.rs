//! Perturbing a model's weights, layer by layer, with per-layer seeds and a report of how far
//! each weight moved. (Activations are perturbed during the forward pass by
//! [`PerturbActivations`](crate::model::PerturbActivations).)

use std::fmt;

use candle_core::Tensor;

use crate::error::Result;
use crate::model::{LayerFilter, LayerWeight, QuantizableModel, unknown_layer};
use crate::perturb::Perturbation;
use crate::perturb::values;
use crate::rng;

/// The seed layer `index` (its position in [`QuantizableModel::layer_names`]) is perturbed
/// with: the `index + 1`-th output of the SplitMix64 stream of `seed`.
///
/// Depends on the layer's position in the model, not among the selected layers, so changing the
/// [`LayerFilter`] does not change the noise any other layer receives.
pub fn layer_seed(seed: u64, index: usize) -> u64 {
    rng::nth(seed, index as u64 + 1)
}

/// How far one layer's weight moved.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LayerPerturbation {
    /// Position in [`QuantizableModel::layer_names`].
    pub index: usize,
    /// The layer's name.
    pub name: String,
    /// The seed its perturbation used ([`layer_seed`]).
    pub seed: u64,
    /// `‖W′ − W‖_F` (f64, from the stored values).
    pub delta_norm: f64,
    /// `‖W‖_F`.
    pub weight_norm: f64,
    /// `‖W′ − W‖_F / ‖W‖_F`: 0 when nothing moved, +∞ for a moved all-zero weight.
    pub relative: f64,
}

/// What [`perturb_weights`] did, layer by layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PerturbationReport {
    /// The perturbation's name.
    pub perturbation: String,
    /// The seed layer seeds were derived from.
    pub seed: u64,
    /// One entry per perturbed layer, in execution order.
    pub layers: Vec<LayerPerturbation>,
}

impl PerturbationReport {
    /// `‖ΔW‖` over all perturbed layers together.
    pub fn delta_norm(&self) -> f64 {
        values::l2(self.layers.iter().map(|l| l.delta_norm))
    }

    /// `‖W‖` over all perturbed layers together.
    pub fn weight_norm(&self) -> f64 {
        values::l2(self.layers.iter().map(|l| l.weight_norm))
    }

    /// `‖ΔW‖ / ‖W‖` over all perturbed layers (0 when nothing moved).
    pub fn relative(&self) -> f64 {
        relative(self.delta_norm(), self.weight_norm())
    }
}

fn relative(delta: f64, norm: f64) -> f64 {
    if delta == 0.0 { 0.0 } else { delta / norm }
}

impl fmt::Display for PerturbationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (seed {})", self.perturbation, self.seed)?;
        writeln!(
            f,
            "{:<24} {:>12} {:>12} {:>10}",
            "layer", "‖ΔW‖", "‖W‖", "relative"
        )?;
        for l in &self.layers {
            writeln!(
                f,
                "{:<24} {:>12.4e} {:>12.4e} {:>10.4}",
                l.name, l.delta_norm, l.weight_norm, l.relative
            )?;
        }
        write!(
            f,
            "{:<24} {:>12.4e} {:>12.4e} {:>10.4}",
            "all",
            self.delta_norm(),
            self.weight_norm(),
            self.relative()
        )
    }
}

/// Apply `perturbation` to the weights of the layers `filter` selects, layer `i` with seed
/// [`layer_seed`]`(seed, i)`, and store the results as dense weights.
///
/// Dense weights are perturbed in their stored dtype; packed weights are dequantized to f32
/// first, and become dense. All perturbed weights are computed before any is stored, so an
/// error (an unknown layer in the filter, a perturbation that fails or changes a shape) leaves
/// the model untouched.
///
/// ```
/// use candle_core::Device;
/// use quantlens::model::{LayerFilter, Mlp, MlpConfig, QuantizableModel};
/// use quantlens::perturb::{Noise, perturb_weights};
///
/// let mut mlp = Mlp::new(MlpConfig::new(8, &[16], 3), 7, &Device::Cpu)?;
/// let noise = Noise::gaussian().relative(0.05);
/// let report = perturb_weights(&mut mlp, &noise, &LayerFilter::All, 1)?;
/// assert_eq!(report.layers.len(), 2);
/// assert!((report.layers[0].relative - 0.05).abs() < 1e-4);
/// println!("{report}");
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn perturb_weights<M, P>(
    model: &mut M,
    perturbation: &P,
    filter: &LayerFilter,
    seed: u64,
) -> Result<PerturbationReport>
where
    M: QuantizableModel + ?Sized,
    P: Perturbation + ?Sized,
{
    let names = model.layer_names();
    if let LayerFilter::Only(listed) | LayerFilter::Except(listed) = filter
        && let Some(missing) = listed.iter().find(|n| !names.contains(n))
    {
        return Err(unknown_layer(missing, &names));
    }
    let mut updates: Vec<(String, Tensor)> = Vec::new();
    let mut layers = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if !filter.matches(name) {
            continue;
        }
        let w = match model.linear_layer(name)?.weight() {
            LayerWeight::Dense(t) => t.clone(),
            LayerWeight::Packed(_) => model.weight(name)?,
        };
        let layer_seed = layer_seed(seed, index);
        let moved = perturbation.apply(&w, layer_seed)?;
        values::check_same_dims(&moved, &w, &perturbation.name())?;
        let before = values::read(&w, "layer weight")?;
        let after = values::read(&moved, "perturbed layer weight")?;
        let delta_norm = values::l2_diff(&after, &before);
        let weight_norm = values::l2(before.iter().copied());
        layers.push(LayerPerturbation {
            index,
            name: name.clone(),
            seed: layer_seed,
            delta_norm,
            weight_norm,
            relative: relative(delta_norm, weight_norm),
        });
        updates.push((name.clone(), moved));
    }
    for (name, w) in updates {
        model.set_weight(&name, LayerWeight::Dense(w))?;
    }
    Ok(PerturbationReport {
        perturbation: perturbation.name(),
        seed,
        layers,
    })
}
