//! Special functions behind the Clopper–Pearson interval: ln Γ, the regularized incomplete
//! beta function `I_x(a, b)` and its inverse in `x`.
//!
//! Written here rather than pulled in: three short, well-known algorithms (Lanczos; the
//! continued fraction of Numerical Recipes §6.4 with the modified Lentz method; Newton's
//! method safeguarded by bisection), tested against naive binomial sums.

use std::f64::consts::PI;

/// Lanczos coefficients for g = 7, n = 9 (relative error below 1e-15 for x ≥ ½).
const LANCZOS: [f64; 9] = [
    0.999_999_999_999_809_9,
    676.520_368_121_885_1,
    -1_259.139_216_722_402_8,
    771.323_428_777_653_1,
    -176.615_029_162_140_6,
    12.507_343_278_686_905,
    -0.138_571_095_265_720_12,
    9.984_369_578_019_572e-6,
    1.505_632_735_149_311_6e-7,
];

/// `ln Γ(x)` for `x > 0`.
pub(crate) fn ln_gamma(x: f64) -> f64 {
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx); the series is accurate only for x ≥ ½.
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let z = x - 1.0;
    let mut s = LANCZOS[0];
    for (k, &c) in LANCZOS.iter().enumerate().skip(1) {
        s += c / (z + k as f64);
    }
    let t = z + 7.5;
    0.5 * (2.0 * PI).ln() + (z + 0.5) * t.ln() - t + s.ln()
}

/// `ln B(a, b)`.
pub(crate) fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `x ∈ [0, 1]`.
pub(crate) fn reg_inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() + b * (-x).ln_1p() - ln_beta(a, b);
    // The continued fraction converges fast only left of the mode; use the symmetry
    // I_x(a, b) = 1 − I_{1−x}(b, a) on the right.
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Continued fraction of `I_x(a, b)` (Numerical Recipes `betacf`), modified Lentz.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    // Convergence takes O(√max(a, b)) terms near the mode; the cap only guards the loop.
    let max_iter = 1000 + 10 * (a.max(b).sqrt() as usize);
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=max_iter {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// The `x ∈ [0, 1]` with `I_x(a, b) = p`, for `a, b > 0`.
pub(crate) fn inv_reg_inc_beta(a: f64, b: f64, p: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // Closed forms: I_x(1, b) = 1 − (1 − x)^b and I_x(a, 1) = x^a (the x = 0 and x = n cases
    // of Clopper–Pearson land here).
    if a == 1.0 {
        return -((-p).ln_1p() / b).exp_m1();
    }
    if b == 1.0 {
        return (p.ln() / a).exp();
    }
    let lb = ln_beta(a, b);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut x = initial_guess(a, b, p, lb).clamp(1e-300, 1.0 - 1e-16);
    for _ in 0..300 {
        let f = reg_inc_beta(a, b, x) - p;
        if f == 0.0 {
            return x;
        }
        // I_x is increasing in x: keep a bracket around the root.
        if f < 0.0 {
            lo = x;
        } else {
            hi = x;
        }
        let pdf = ((a - 1.0) * x.ln() + (b - 1.0) * (-x).ln_1p() - lb).exp();
        let mut next = x - f / pdf;
        if !(next > lo && next < hi) {
            // Newton left the bracket (or the density under- or overflowed): bisect.
            next = 0.5 * (lo + hi);
        }
        if (next - x).abs() <= 2.0 * f64::EPSILON * x || hi - lo <= 2.0 * f64::EPSILON * hi {
            return next;
        }
        x = next;
    }
    x
}

/// A starting point for Newton (Numerical Recipes `invbetai`): a normal approximation when
/// both shapes are at least 1, otherwise the power-law behaviour of either tail.
fn initial_guess(a: f64, b: f64, p: f64, ln_beta_ab: f64) -> f64 {
    if a >= 1.0 && b >= 1.0 {
        let pp = if p < 0.5 { p } else { 1.0 - p };
        let t = (-2.0 * pp.ln()).sqrt();
        let mut z = (2.307_53 + t * 0.270_61) / (1.0 + t * (0.992_29 + t * 0.044_81)) - t;
        if p < 0.5 {
            z = -z;
        }
        let al = (z * z - 3.0) / 6.0;
        let h = 2.0 / (1.0 / (2.0 * a - 1.0) + 1.0 / (2.0 * b - 1.0));
        let w = z * (al + h).sqrt() / h
            - (1.0 / (2.0 * b - 1.0) - 1.0 / (2.0 * a - 1.0)) * (al + 5.0 / 6.0 - 2.0 / (3.0 * h));
        a / (a + b * (2.0 * w).exp())
    } else {
        let lna = (a / (a + b)).ln();
        let lnb = (b / (a + b)).ln();
        let t = (a * lna - ln_beta_ab).exp() / a;
        let u = (b * lnb - ln_beta_ab).exp() / b;
        let w = t + u;
        if p < t / w {
            (a * w * p).powf(1.0 / a)
        } else {
            1.0 - (b * w * (1.0 - p)).powf(1.0 / b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut fact = 1.0f64;
        for n in 1..30 {
            // Γ(n) = (n − 1)!
            assert!((ln_gamma(n as f64) - fact.ln()).abs() < 1e-13 * fact.ln().max(1.0));
            fact *= n as f64;
        }
        assert!((ln_gamma(0.5) - PI.sqrt().ln()).abs() < 1e-14);
        assert!((ln_gamma(0.1) - 2.252_712_651_734_206).abs() < 1e-13);
    }

    #[test]
    fn incomplete_beta_closed_forms() {
        for &x in &[1e-6, 0.01, 0.3, 0.5, 0.77, 0.999] {
            // I_x(a, 1) = x^a, I_x(1, b) = 1 − (1 − x)^b, I_x(2, 2) = 3x² − 2x³.
            assert!((reg_inc_beta(3.5, 1.0, x) - x.powf(3.5)).abs() < 1e-14);
            assert!((reg_inc_beta(1.0, 4.0, x) - (1.0 - (1.0 - x).powi(4))).abs() < 1e-14);
            assert!((reg_inc_beta(2.0, 2.0, x) - (3.0 * x * x - 2.0 * x * x * x)).abs() < 1e-14);
        }
    }

    #[test]
    fn inverse_round_trips() {
        for &(a, b) in &[
            (0.5, 0.5),
            (2.0, 3.0),
            (1.0, 7.0),
            (30.0, 1.0),
            (10.0, 990.0),
            (5000.0, 5001.0),
            (0.2, 40.0),
        ] {
            for &p in &[1e-10, 1e-4, 0.025, 0.5, 0.975, 1.0 - 1e-6] {
                let x = inv_reg_inc_beta(a, b, p);
                let back = reg_inc_beta(a, b, x);
                // The best any x can do: a few ulps of x times the density there (near x = 1
                // with a = b = ½, one ulp of x moves I_x by ~1e-11).
                let pdf = ((a - 1.0) * x.ln() + (b - 1.0) * (-x).ln_1p() - ln_beta(a, b)).exp();
                let floor = 4.0 * f64::EPSILON * x * pdf;
                assert!(
                    (back - p).abs() <= 1e-11 * p.max(1e-3) + floor,
                    "a={a} b={b} p={p}: x={x} gives {back}"
                );
            }
        }
    }
}

/// The `p`-quantile of Student's t distribution with `nu > 0` degrees of freedom.
///
/// From the incomplete beta function: for `t > 0`, `P(|T| > t) = I_x(ν/2, ½)` with
/// `x = ν / (ν + t²)`, so `t = √(ν (1 − x) / x)` at `x = I⁻¹(ν/2, ½; 2(1 − p))`.
pub(crate) fn student_t_quantile(p: f64, nu: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    let upper = p.max(1.0 - p);
    let x = inv_reg_inc_beta(0.5 * nu, 0.5, 2.0 * (1.0 - upper));
    let t = (nu * (1.0 - x) / x).sqrt();
    if p > 0.5 { t } else { -t }
}

#[cfg(test)]
mod student_t_tests {
    use super::student_t_quantile;

    /// Two-sided 95 % and 99 % critical values from published t tables (e.g. NIST/SEMATECH
    /// e-Handbook, table 1.3.6.7.2), to the 3 decimals they print.
    #[test]
    fn matches_published_critical_values() {
        let table = [
            (1.0, 0.975, 12.706),
            (2.0, 0.975, 4.303),
            (3.0, 0.975, 3.182),
            (5.0, 0.975, 2.571),
            (10.0, 0.975, 2.228),
            (30.0, 0.975, 2.042),
            (1.0, 0.995, 63.657),
            (4.0, 0.995, 4.604),
            (20.0, 0.995, 2.845),
        ];
        for (nu, p, t) in table {
            let got = student_t_quantile(p, nu);
            assert!((got - t).abs() < 6e-4, "t({p}; {nu}) = {got}, table {t}");
            assert!((student_t_quantile(1.0 - p, nu) + t).abs() < 6e-4);
        }
        // Large ν tends to the normal quantile 1.959964.
        assert!((student_t_quantile(0.975, 1e7) - 1.959_964).abs() < 1e-5);
    }
}
