//! The statistics of a comparison over seeds: mean, sample standard deviation and the 95%
//! confidence interval of the mean (Student's t), and the difference of two groups' means with
//! Welch's interval (unequal variances, Welch-Satterthwaite degrees of freedom).

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A metric over the runs of one group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for one run.
    pub std: f64,
    /// Half-width of the 95% confidence interval of the mean; None for fewer than two runs.
    pub ci95: Option<f64>,
}

/// The difference of two groups' means (`b - a`) with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    pub diff: f64,
    pub ci95: f64,
    /// Welch-Satterthwaite degrees of freedom.
    pub df: f64,
}

impl Difference {
    /// Whether the interval excludes 0.
    pub fn excludes_zero(&self) -> bool {
        self.diff.abs() > self.ci95
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom.
fn t975(df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df).map(|t| t.inverse_cdf(0.975)).unwrap_or(f64::NAN)
}

/// Mean, std and 95% interval of `xs` (non-finite values left out).
pub fn summarize(xs: &[f64]) -> Summary {
    let xs: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let n = xs.len();
    if n == 0 {
        return Summary { n, mean: f64::NAN, std: f64::NAN, ci95: None };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Summary { n, mean, std: 0.0, ci95: None };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    Summary { n, mean, std, ci95: Some(t975((n - 1) as f64) * std / (n as f64).sqrt()) }
}

/// Welch's 95% interval for `mean(b) - mean(a)`; None unless both have two runs or more.
pub fn welch(a: &Summary, b: &Summary) -> Option<Difference> {
    if a.n < 2 || b.n < 2 {
        return None;
    }
    let (va, vb) = (a.std.powi(2) / a.n as f64, b.std.powi(2) / b.n as f64);
    let se2 = va + vb;
    let diff = b.mean - a.mean;
    if se2 == 0.0 {
        return Some(Difference { diff, ci95: 0.0, df: f64::INFINITY });
    }
    let df = se2.powi(2) / (va.powi(2) / (a.n - 1) as f64 + vb.powi(2) / (b.n - 1) as f64);
    Some(Difference { diff, ci95: t975(df) * se2.sqrt(), df })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden values from scipy 1.17.1 (`python3 -c "from scipy import stats;
    // print(stats.t.ppf(0.975, 4))"`), tolerance 1e-9 relative.
    #[test]
    fn t_quantiles_match_scipy() {
        for (df, q) in [(1.0, 12.706204736174694), (4.0, 2.7764451051977934), (30.0, 2.0422724563012378)] {
            assert!((t975(df) - q).abs() < 1e-9 * q, "df {df}: {} vs {q}", t975(df));
        }
    }

    #[test]
    fn summary_of_five_seeds() {
        let s = summarize(&[0.62, 0.64, 0.63, 0.65, 0.61]);
        assert_eq!(s.n, 5);
        assert!((s.mean - 0.63).abs() < 1e-12);
        let std = 0.01581138830084191; // Python's statistics.stdev
        assert!((s.std - std).abs() < 1e-12);
        let half = 2.7764451051977934 * std / 5f64.sqrt();
        assert!((s.ci95.unwrap() - half).abs() < 1e-12);
        assert_eq!(summarize(&[1.0]).ci95, None);
        assert_eq!(summarize(&[f64::NAN, 2.0, 4.0]).n, 2);
    }

    /// Welch's test of two groups: df and the interval from scipy 1.17.1,
    /// `stats.ttest_ind(b, a, equal_var=False)`: df 7.860262008733623, confidence_interval()
    /// (-0.04391765645621652, -0.00808234354378352), tolerance 1e-9 relative.
    #[test]
    fn welch_interval_of_two_groups() {
        let a = summarize(&[0.63, 0.64, 0.62, 0.65, 0.63]);
        let b = summarize(&[0.61, 0.60, 0.62, 0.62, 0.59]);
        let d = welch(&a, &b).unwrap();
        assert!((d.diff - (-0.026)).abs() < 1e-12, "{d:?}");
        assert!((d.df - 7.860262008733623).abs() < 1e-9, "{d:?}");
        assert!((d.ci95 - 0.0179176564562165).abs() < 1e-9 * 0.018, "{d:?}");
        assert!((d.diff - d.ci95 - -0.04391765645621652).abs() < 1e-11, "{d:?}");
        assert!(d.excludes_zero());
        assert_eq!(welch(&summarize(&[1.0]), &b), None);
    }
}
