//! Training-failure alerts from the GAN folklore (ganhacks): D winning outright for a long stretch,
//! G's loss running away, NaN or Inf, the fixed-noise samples collapsing to near-identical
//! images, and for a Wasserstein critic its estimate of the distance collapsing to 0 or
//! exploding. A [`Monitor`] watches the records as they come and raises each kind of alert once, with
//! the iteration where the trouble began; the rules are pure and tested on constructed runs.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::metrics::IterationRecord;

/// Write alerts as JSON (an empty list when the run is healthy).
pub fn save(path: &Path, alerts: &[Alert]) -> Result<()> {
    let text = serde_json::to_string_pretty(alerts).expect("alerts serialize");
    std::fs::write(path, text + "\n").at("write", path)
}

/// Read a run's `alerts.json`.
pub fn load(path: &Path) -> Result<Vec<Alert>> {
    let text = crate::durable::read_text_limited(path, 16 << 20, "alerts file")?;
    serde_json::from_str(&text).map_err(|e| Error::bad_data(path, e.to_string()))
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A metric became NaN or infinite.
    NonFinite,
    /// D's loss near 0 / accuracy near 1 for a long stretch: G gets no useful gradient.
    DiscriminatorWins,
    /// G's loss high and not coming down: D rejects everything G makes.
    GeneratorLossRunaway,
    /// The fixed-noise samples are nearly identical: mode collapse.
    SampleCollapse,
    /// A Wasserstein critic's estimate fell to almost nothing of its peak: it no longer tells
    /// real from fake (the clip too tight, or its updates too few).
    CriticCollapse,
    /// A Wasserstein critic's estimate grew beyond any clipped critic's range: it is unbounded.
    CriticExplodes,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// Iteration where the condition began.
    pub began_at: usize,
    /// Iteration where it was confirmed (raised).
    pub raised_at: usize,
    pub message: String,
}

/// Thresholds of the rules.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Iterations a condition must hold before it is an alert.
    pub stretch: usize,
    /// Moving-average window of the loss rules.
    pub window: usize,
    /// "D wins": smoothed D loss below this, or smoothed accuracy above `d_acc_high`.
    pub d_loss_low: f64,
    pub d_acc_high: f64,
    /// "G runs away": smoothed G loss above this.
    pub g_loss_high: f64,
    /// "Collapse": mean pairwise distance of the grid's samples below this fraction of that of
    /// real images (about 20 for MNIST digits in [-1, 1]; a trained G's grid is close to it).
    pub diversity_low: f64,
    /// Wasserstein critics: watch the smoothed estimate `d_out_real - d_out_fake`, which
    /// collapses when it stays below `critic_collapse` of its peak for a stretch and explodes
    /// when it passes `critic_high` (a critic of the classic widths clipped to 0.01 scores
    /// within about ±100, so its estimate stays below about 200).
    pub critic: bool,
    pub critic_collapse: f64,
    pub critic_high: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            stretch: 1000,
            window: 100,
            d_loss_low: 0.05,
            d_acc_high: 0.99,
            g_loss_high: 5.0,
            diversity_low: 0.25,
            critic: false,
            critic_collapse: 0.01,
            critic_high: 1e3,
        }
    }
}

impl Rules {
    /// The rules for an objective. The loss thresholds are cross-entropy's: for least squares D's
    /// loss near 0 still means D wins and G's loss is at most about 1 when D rejects everything;
    /// hinge and Wasserstein losses are signed or unbounded, so no loss threshold applies there
    /// (NaN and collapse still do, and for hinge the accuracy, whose margin sits at 0). A
    /// Wasserstein critic's scores have no meaningful sign (its loss ignores a shift), so its
    /// rules watch the critic's estimate instead of the accuracy.
    pub fn for_loss(loss: crate::objective::Loss) -> Self {
        use crate::objective::Loss;
        let classic = Self::default();
        match loss {
            Loss::Ns => classic,
            // Minimax G's loss is log σ(-s) <= 0; it saturates at 0 when D rejects every fake.
            Loss::Minimax => Self { g_loss_high: -0.01, ..classic },
            Loss::Lsgan => Self { d_loss_low: 0.01, g_loss_high: 0.9, ..classic },
            Loss::Wgan | Loss::WganGp => Self {
                d_loss_low: f64::NEG_INFINITY,
                d_acc_high: f64::INFINITY,
                g_loss_high: f64::INFINITY,
                critic: true,
                ..classic
            },
            _ => Self { d_loss_low: f64::NEG_INFINITY, g_loss_high: f64::INFINITY, ..classic },
        }
    }
}

/// Watches a run; call [`Monitor::observe`] for each record and [`Monitor::observe_grid`] for each
/// sample grid.
#[derive(Debug, Clone)]
pub struct Monitor {
    rules: Rules,
    recent: std::collections::VecDeque<IterationRecord>,
    d_wins_since: Option<usize>,
    g_runaway_since: Option<usize>,
    critic_peak: f64,
    critic_low_since: Option<usize>,
    baseline_diversity: Option<f64>,
    raised: Vec<Alert>,
}

impl Monitor {
    /// A monitor; `real_images` (`[n, pixels]`, a grid's worth of training images) set the
    /// diversity a healthy grid is compared with.
    pub fn new(rules: Rules, real_images: &[f32], pixels: usize) -> Self {
        Self {
            rules,
            recent: Default::default(),
            d_wins_since: None,
            g_runaway_since: None,
            critic_peak: 0.0,
            critic_low_since: None,
            baseline_diversity: mean_pairwise_distance(real_images, pixels),
            raised: Vec::new(),
        }
    }

    /// Take back alerts raised before a resume (only those up to `iteration`, which the resumed
    /// run keeps), so they are neither lost nor raised twice.
    pub fn restore(&mut self, earlier: Vec<Alert>, iteration: usize) {
        self.raised.extend(earlier.into_iter().filter(|a| a.raised_at <= iteration));
    }

    /// Every alert raised so far.
    pub fn alerts(&self) -> &[Alert] {
        &self.raised
    }

    /// Feed one iteration's record; returns a newly raised alert.
    pub fn observe(&mut self, r: &IterationRecord) -> Option<Alert> {
        let it = r.iteration;
        let values = [r.d_loss_real, r.d_loss_fake, r.g_loss, r.acc, r.d_out_real, r.d_out_fake];
        if values.iter().any(|v| !v.is_finite()) {
            return self.raise(
                AlertKind::NonFinite,
                it,
                it,
                format!("a metric is NaN or infinite at iteration {it}"),
            );
        }
        self.recent.push_back(*r);
        if self.recent.len() > self.rules.window {
            self.recent.pop_front();
        }
        if self.recent.len() < self.rules.window {
            return None;
        }
        let mean = |f: fn(&IterationRecord) -> f32| {
            self.recent.iter().map(|r| f(r) as f64).sum::<f64>() / self.recent.len() as f64
        };
        let (d_loss, acc, g_loss) = (mean(|r| r.d_loss), mean(|r| r.acc), mean(|r| r.g_loss));
        if self.rules.critic {
            let estimate = mean(|r| r.d_out_real) - mean(|r| r.d_out_fake);
            if let Some(alert) = self.observe_critic(it, estimate) {
                return Some(alert);
            }
        }

        let d_wins = d_loss < self.rules.d_loss_low || acc > self.rules.d_acc_high;
        let since = track(&mut self.d_wins_since, d_wins, it + 1 - self.rules.window);
        if let Some(start) = since.filter(|&s| it + 1 - s >= self.rules.stretch) {
            let msg = format!(
                "D is winning outright since iteration {start} (D loss {d_loss:.3}, accuracy {acc:.3}): \
                 G gets almost no gradient. Try a lower D learning rate or label smoothing."
            );
            if let Some(a) = self.raise(AlertKind::DiscriminatorWins, start, it, msg) {
                return Some(a);
            }
        }
        let runaway = g_loss > self.rules.g_loss_high;
        let since = track(&mut self.g_runaway_since, runaway, it + 1 - self.rules.window);
        if let Some(start) = since.filter(|&s| it + 1 - s >= self.rules.stretch) {
            let msg = format!(
                "G's loss has stayed above {} since iteration {start} (now {g_loss:.2}): D rejects \
                 everything G makes.",
                self.rules.g_loss_high
            );
            return self.raise(AlertKind::GeneratorLossRunaway, start, it, msg);
        }
        None
    }

    /// The Wasserstein critic's rules on its smoothed estimate after iteration `it`.
    fn observe_critic(&mut self, it: usize, estimate: f64) -> Option<Alert> {
        if estimate.abs() > self.rules.critic_high {
            let msg = format!(
                "the critic's estimate of the Wasserstein distance is {estimate:.3e} at iteration {it}, \
                 beyond what a clipped critic can score: it is unbounded. Lower train.clip."
            );
            return self.raise(AlertKind::CriticExplodes, it, it, msg);
        }
        self.critic_peak = self.critic_peak.max(estimate);
        let low = self.critic_peak > 0.0 && estimate < self.rules.critic_collapse * self.critic_peak;
        let since = track(&mut self.critic_low_since, low, it + 1 - self.rules.window);
        if let Some(start) = since.filter(|&s| it + 1 - s >= self.rules.stretch) {
            let msg = format!(
                "the critic's estimate of the Wasserstein distance has stayed below {:.0}% of its peak \
                 ({:.3e}) since iteration {start} (now {estimate:.3e}): it no longer tells real from fake. \
                 Try a looser train.clip or more train.d_steps.",
                100.0 * self.rules.critic_collapse,
                self.critic_peak
            );
            return self.raise(AlertKind::CriticCollapse, start, it, msg);
        }
        None
    }

    /// Feed the fixed-noise grid drawn after `iteration` iterations (`images` [n, pixels]).
    pub fn observe_grid(&mut self, iteration: usize, images: &[f32], pixels: usize) -> Option<Alert> {
        let diversity = mean_pairwise_distance(images, pixels)?;
        let baseline = self.baseline_diversity?;
        if baseline > 0.0 && diversity < self.rules.diversity_low * baseline {
            let msg = format!(
                "the fixed-noise samples at iteration {iteration} are nearly identical (diversity {:.0}% of \
                 real images'): mode collapse.",
                100.0 * diversity / baseline
            );
            return self.raise(AlertKind::SampleCollapse, iteration, iteration, msg);
        }
        None
    }

    fn raise(
        &mut self,
        kind: AlertKind,
        began_at: usize,
        raised_at: usize,
        message: String,
    ) -> Option<Alert> {
        if self.raised.iter().any(|a| a.kind == kind) {
            return None;
        }
        let alert = Alert { kind, began_at, raised_at, message };
        self.raised.push(alert.clone());
        Some(alert)
    }
}

/// Update the start of a stretch where `holds` is true; returns the start while it holds.
fn track(since: &mut Option<usize>, holds: bool, now: usize) -> Option<usize> {
    if holds {
        Some(*since.get_or_insert(now))
    } else {
        *since = None;
        None
    }
}

/// Mean Euclidean distance between all pairs of images (`[n, pixels]`); `None` for fewer than two.
pub fn mean_pairwise_distance(images: &[f32], pixels: usize) -> Option<f64> {
    let n = images.len() / pixels.max(1);
    if n < 2 {
        return None;
    }
    let img = |i: usize| &images[i * pixels..(i + 1) * pixels];
    let mut total = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            let d2: f64 = img(i).iter().zip(img(j)).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            total += d2.sqrt();
        }
    }
    Some(total / (n * (n - 1) / 2) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(i: usize) -> IterationRecord {
        // The plateau of a real classic run: D loss ~0.64, accuracy ~0.63, G loss ~1.0.
        let wobble = ((i * 37) % 11) as f32 / 100.0;
        IterationRecord {
            iteration: i,
            d_loss_real: 0.63 + wobble,
            d_loss_fake: 0.64 - wobble,
            d_loss: 0.635,
            acc_real: 0.62,
            acc_fake: 0.64,
            acc: 0.63,
            g_loss: 1.0 + wobble,
            d_out_real: 0.56,
            d_out_fake: 0.44,
        }
    }

    fn diverse() -> Vec<f32> {
        (0..25 * 4).map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0).collect()
    }

    fn run(records: impl Iterator<Item = IterationRecord>) -> Vec<Alert> {
        let mut m = Monitor::new(Rules::default(), &diverse(), 4);
        for r in records {
            m.observe(&r);
        }
        m.alerts().to_vec()
    }

    #[test]
    fn healthy_run_stays_quiet_including_the_usual_start() {
        // Real runs start with D winning for a few hundred iterations (see the README's curves).
        let start = (0..400).map(|i| IterationRecord { d_loss: 0.01, acc: 1.0, g_loss: 4.0, ..healthy(i) });
        assert!(run(start.chain((400..20_000).map(healthy))).is_empty());
    }

    #[test]
    fn discriminator_winning_for_long_is_raised_with_its_start() {
        let records = (0..5000).map(|i| {
            if i >= 2000 { IterationRecord { d_loss: 0.002, acc: 1.0, ..healthy(i) } } else { healthy(i) }
        });
        let alerts = run(records);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::DiscriminatorWins);
        // The smoothed loss crosses the threshold within a window of the real start.
        assert!((1900..=2100).contains(&alerts[0].began_at), "{:?}", alerts[0]);
        assert!(alerts[0].raised_at >= alerts[0].began_at + 999);
    }

    #[test]
    fn runaway_generator_loss_and_nan_are_raised() {
        let runaway = (0..4000)
            .map(|i| if i >= 1000 { IterationRecord { g_loss: 9.0, ..healthy(i) } } else { healthy(i) });
        let alerts = run(runaway);
        assert_eq!(alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), vec![AlertKind::GeneratorLossRunaway]);

        let nan = (0..300)
            .map(|i| if i == 250 { IterationRecord { g_loss: f32::NAN, ..healthy(i) } } else { healthy(i) });
        let alerts = run(nan);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].kind, alerts[0].began_at), (AlertKind::NonFinite, 250));
    }

    /// A critic at work: scores of real above fake by `gap`, the shift of both arbitrary.
    fn critic(i: usize, gap: f32) -> IterationRecord {
        let shift = 3.0 + ((i * 13) % 7) as f32 * 0.1;
        IterationRecord {
            d_loss: -gap,
            acc: 1.0,
            g_loss: -shift,
            d_out_real: shift + gap,
            d_out_fake: shift,
            ..healthy(i)
        }
    }

    fn run_wgan(records: impl Iterator<Item = IterationRecord>) -> Vec<Alert> {
        let mut m = Monitor::new(Rules::for_loss(crate::objective::Loss::Wgan), &diverse(), 4);
        records.for_each(|r| {
            m.observe(&r);
        });
        m.alerts().to_vec()
    }

    #[test]
    fn a_working_critic_raises_nothing_though_its_losses_and_accuracy_would_under_bce_rules() {
        // Signed losses, accuracy 1 (all scores positive) and a slowly falling estimate: healthy.
        let alerts = run_wgan((0..6000).map(|i| critic(i, 0.05 - 0.04 * i as f32 / 6000.0)));
        assert!(alerts.is_empty(), "{alerts:?}");
        // The same records under the classic rules would call D a winner.
        assert!(!run((0..6000).map(|i| critic(i, 0.05))).is_empty());
    }

    #[test]
    fn a_critic_estimate_that_collapses_or_explodes_is_raised() {
        let collapse = (0..5000).map(|i| critic(i, if i < 2000 { 0.05 } else { 0.0001 }));
        let alerts = run_wgan(collapse);
        assert_eq!(alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), vec![AlertKind::CriticCollapse]);
        assert!((1900..=2100).contains(&alerts[0].began_at), "{:?}", alerts[0]);
        let explode = (0..3000).map(|i| critic(i, if i < 1000 { 0.05 } else { 5e3 }));
        let alerts = run_wgan(explode);
        assert_eq!(alerts.iter().map(|a| a.kind).collect::<Vec<_>>(), vec![AlertKind::CriticExplodes]);
    }

    #[test]
    fn collapsed_samples_are_raised_and_diverse_ones_are_not() {
        let mut m = Monitor::new(Rules::default(), &diverse(), 4);
        assert!(m.observe_grid(0, &diverse(), 4).is_none());
        assert!(m.observe_grid(200, &diverse(), 4).is_none());
        let same: Vec<f32> =
            (0..25 * 4).map(|i| (i % 4) as f32 / 4.0 + ((i / 4) % 2) as f32 * 0.01).collect();
        let alert = m.observe_grid(400, &same, 4).expect("collapse raised");
        assert_eq!((alert.kind, alert.began_at), (AlertKind::SampleCollapse, 400));
    }
}
