//! Seeded membership splits: who is trained on (members), who never is (non-members), what
//! calibrates data-aware quantizers, and what reference (shadow) models train on.

use std::fmt;

use crate::error::{Error, Result};
use crate::rng::{self, SplitMix64};

/// How reference models for likelihood-ratio attacks draw their training rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceMode {
    /// Reference models train on the audited rows (members ∪ non-members) in a balanced
    /// design: every audited row is IN for exactly half of the models (LiRA online), so each
    /// model trains on about half the audited rows.
    Online,
    /// Each reference model trains on a random half of the population rows, which are never
    /// audited: no reference model has seen an audited row (LiRA offline, RMIA).
    Offline,
}

/// The training rows of one reference model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceSplit {
    /// The seed its rows were drawn with (and a natural training seed for it).
    pub seed: u64,
    /// Row indices it trains on, sorted.
    pub train: Vec<usize>,
}

impl ReferenceSplit {
    /// Whether row `row` is in this reference model's training set.
    pub fn contains(&self, row: usize) -> bool {
        self.train.binary_search(&row).is_ok()
    }
}

/// A seeded partition of a data set's rows for a membership experiment.
///
/// Parts are disjoint: members (the target model trains on them), non-members (same
/// distribution, never seen), calibration rows (for data-aware quantizers, disjoint from the
/// members so that calibration cannot leak them), and population rows (for offline reference
/// models and RMIA's population samples). Sizes and the seed are kept, and [`Display`]
/// states them for a report.
///
/// ```
/// use quantlens::data::MembershipSplit;
///
/// let split = MembershipSplit::builder(1000)
///     .members(400)
///     .non_members(400)
///     .calibration(100)
///     .seed(7)
///     .build()?;
/// assert_eq!(split.members().len(), 400);
/// assert_eq!(split.population().len(), 100); // what is left
/// assert!(split.members().iter().all(|m| !split.non_members().contains(m)));
/// # Ok::<(), quantlens::Error>(())
/// ```
///
/// [`Display`]: std::fmt::Display
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipSplit {
    seed: u64,
    n_rows: usize,
    stratified: bool,
    members: Vec<usize>,
    non_members: Vec<usize>,
    calibration: Vec<usize>,
    population: Vec<usize>,
    reference_mode: Option<ReferenceMode>,
    references: Vec<ReferenceSplit>,
}

/// Builds a [`MembershipSplit`]; see [`MembershipSplit::builder`].
#[derive(Debug, Clone)]
pub struct MembershipSplitBuilder<'a> {
    n_rows: usize,
    members: Option<usize>,
    non_members: Option<usize>,
    calibration: usize,
    seed: u64,
    strata: Option<&'a [u32]>,
    references: Option<(usize, ReferenceMode)>,
}

impl MembershipSplit {
    /// Start a split of `n_rows` rows. Defaults: half the rows are members, the other half
    /// non-members, no calibration, population or reference models, seed 0.
    pub fn builder<'a>(n_rows: usize) -> MembershipSplitBuilder<'a> {
        MembershipSplitBuilder {
            n_rows,
            members: None,
            non_members: None,
            calibration: 0,
            seed: 0,
            strata: None,
            references: None,
        }
    }

    /// Rows the target model trains on.
    pub fn members(&self) -> &[usize] {
        &self.members
    }
    /// Rows never trained on, from the same distribution.
    pub fn non_members(&self) -> &[usize] {
        &self.non_members
    }
    /// Rows reserved for calibrating data-aware quantizers.
    pub fn calibration(&self) -> &[usize] {
        &self.calibration
    }
    /// The remaining rows: never audited; offline reference models and population samples.
    pub fn population(&self) -> &[usize] {
        &self.population
    }
    /// Reference-model training sets.
    pub fn references(&self) -> &[ReferenceSplit] {
        &self.references
    }
    /// How the reference sets were drawn, when there are any.
    pub fn reference_mode(&self) -> Option<ReferenceMode> {
        self.reference_mode
    }
    /// The seed everything was drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Size of the data set split.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
    /// Whether the parts keep the class proportions.
    pub fn is_stratified(&self) -> bool {
        self.stratified
    }
}

impl fmt::Display for MembershipSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rows, seed {}{}: {} members, {} non-members, {} calibration, {} population",
            self.n_rows,
            self.seed,
            if self.stratified { ", stratified" } else { "" },
            self.members.len(),
            self.non_members.len(),
            self.calibration.len(),
            self.population.len()
        )?;
        if let Some(mode) = self.reference_mode
            && !self.references.is_empty()
        {
            let sizes = self.references.iter().map(|r| r.train.len());
            let (lo, hi) = (sizes.clone().min().unwrap_or(0), sizes.max().unwrap_or(0));
            let rows = if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            };
            write!(
                f,
                "; {} {} reference models of {rows} rows",
                self.references.len(),
                match mode {
                    ReferenceMode::Online => "online",
                    ReferenceMode::Offline => "offline",
                },
            )?;
        }
        Ok(())
    }
}

impl<'a> MembershipSplitBuilder<'a> {
    /// Number of members.
    pub fn members(mut self, count: usize) -> Self {
        self.members = Some(count);
        self
    }
    /// Number of non-members.
    pub fn non_members(mut self, count: usize) -> Self {
        self.non_members = Some(count);
        self
    }
    /// Number of calibration rows.
    pub fn calibration(mut self, count: usize) -> Self {
        self.calibration = count;
        self
    }
    /// The seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Keep each class's share (labels per row) in every part.
    pub fn stratify(mut self, labels: &'a [u32]) -> Self {
        self.strata = Some(labels);
        self
    }
    /// Draw `count` reference-model training sets.
    pub fn reference_models(mut self, count: usize, mode: ReferenceMode) -> Self {
        self.references = Some((count, mode));
        self
    }

    /// Draw the split.
    pub fn build(self) -> Result<MembershipSplit> {
        let n = self.n_rows;
        let bad = |reason: String| Error::InvalidParameter {
            name: "membership split",
            reason,
        };
        let members = self.members.unwrap_or(n / 2);
        let non_members = self
            .non_members
            .unwrap_or_else(|| n.saturating_sub(members + self.calibration));
        if members == 0 || non_members == 0 {
            return Err(bad(format!(
                "needs at least one member and one non-member, got {members} and {non_members} of {n} rows"
            )));
        }
        let used = members + non_members + self.calibration;
        if used > n {
            return Err(bad(format!(
                "{members} members + {non_members} non-members + {} calibration = {used} > {n} rows",
                self.calibration
            )));
        }
        if let Some(labels) = self.strata
            && labels.len() != n
        {
            return Err(bad(format!("{} labels for {n} rows", labels.len())));
        }
        let order = match self.strata {
            Some(labels) => stratified_order(labels, self.seed),
            None => {
                let mut order: Vec<usize> = (0..n).collect();
                SplitMix64::new(self.seed).shuffle(&mut order);
                order
            }
        };
        let mut parts = [members, non_members, self.calibration, n - used]
            .into_iter()
            .scan(0, |start, len| {
                let part = order[*start..*start + len].to_vec();
                *start += len;
                Some(part)
            })
            .map(|mut part| {
                part.sort_unstable();
                part
            });
        let (members, non_members, calibration, population) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );

        let mut references = Vec::new();
        if let Some((count, mode)) = self.references {
            let ref_seed =
                |k: usize| rng::mix(self.seed ^ rng::mix(0x5eed_0000u64.wrapping_add(k as u64)));
            match mode {
                ReferenceMode::Online => {
                    // Balanced design (as in LiRA): every audited row is IN for exactly half
                    // the models (odd counts round by a coin flip), so each row has both an IN
                    // and an OUT fit; each model trains on about half the audited rows.
                    if count < 2 {
                        return Err(bad(format!(
                            "online reference models need at least 2 models (IN and OUT for every row), got {count}"
                        )));
                    }
                    let mut pool = [members.as_slice(), non_members.as_slice()].concat();
                    pool.sort_unstable();
                    let mut trains: Vec<Vec<usize>> = vec![Vec::new(); count];
                    let mut rng = SplitMix64::new(ref_seed(usize::MAX));
                    let mut keys: Vec<(u64, usize)> = Vec::with_capacity(count);
                    for &row in &pool {
                        keys.clear();
                        keys.extend((0..count).map(|k| (rng.next_u64(), k)));
                        keys.sort_unstable();
                        let ins = count / 2 + (count % 2 == 1 && rng.next_u64() & 1 == 1) as usize;
                        for &(_, k) in &keys[..ins] {
                            trains[k].push(row);
                        }
                    }
                    references = trains
                        .into_iter()
                        .enumerate()
                        .map(|(k, train)| ReferenceSplit {
                            seed: ref_seed(k),
                            train,
                        })
                        .collect();
                }
                ReferenceMode::Offline => {
                    let size = population.len() / 2;
                    if count > 0 && size == 0 {
                        return Err(bad(format!(
                            "offline reference models train on half the population rows, and there are {}; \
                             leave rows unassigned (fewer members / non-members) to form a population",
                            population.len()
                        )));
                    }
                    for k in 0..count {
                        let seed = ref_seed(k);
                        let mut rng = SplitMix64::new(seed);
                        let mut pool = population.clone();
                        // Partial Fisher–Yates: the first `size` entries are a uniform subset.
                        for i in 0..size {
                            let j = i + (rng.next_u64() % (pool.len() - i) as u64) as usize;
                            pool.swap(i, j);
                        }
                        let mut train = pool[..size].to_vec();
                        train.sort_unstable();
                        references.push(ReferenceSplit { seed, train });
                    }
                }
            }
        }
        Ok(MembershipSplit {
            seed: self.seed,
            n_rows: n,
            stratified: self.strata.is_some(),
            members,
            non_members,
            calibration,
            population,
            reference_mode: self.references.map(|r| r.1),
            references,
        })
    }
}

/// A seeded order of the rows in which every prefix (hence every contiguous part) holds each
/// class in close to its overall proportion: rows are shuffled within their class, then
/// ordered by their relative position `(rank + u) / class_size` with a random jitter `u`.
fn stratified_order(labels: &[u32], seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut keyed: Vec<(f64, usize)> = Vec::with_capacity(labels.len());
    for rows in &mut by_class {
        rng.shuffle(rows);
        let size = rows.len() as f64;
        for (rank, &row) in rows.iter().enumerate() {
            keyed.push(((rank as f64 + rng.next_f64()) / size, row));
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, row)| row).collect()
}
