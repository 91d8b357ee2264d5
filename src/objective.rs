//! The GAN objectives: what D minimizes on its scores of real and of fake images, what G
//! minimizes on D's scores of its images, and what the metric columns mean under each.
//!
//! D returns an unbounded score `s` (a logit for the cross-entropy objectives). With `σ` the
//! sigmoid, `t` the real label (1, or less for one-sided label smoothing) and means over the batch:
//!
//! | objective | D on real                  | D on fake      | G on its fakes | D's decision boundary |
//! |-----------|----------------------------|----------------|----------------|-----------------------|
//! | `ns`      | -t·log σ(s) - (1-t)·log σ(-s) | -log σ(-s)  | -log σ(s)      | s = 0                 |
//! | `minimax` | as `ns`                    | as `ns`        | log σ(-s)      | s = 0                 |
//! | `lsgan`   | (s - t)²                   | s²             | (s - 1)²       | s = t / 2             |
//! | `hinge`   | relu(1 - s)                | relu(1 + s)    | -s             | s = 0                 |
//! | `wgan`    | -s                         | s              | -s             | s = 0                 |
//!
//! `ns` is Goodfellow et al.'s non-saturating loss (Keras-GAN's gan.py), `minimax` the 2014
//! paper's original form (G minimizes log(1 - D(G(z)))), `lsgan` Mao et al. 2017 (targets 0 for
//! fake, 1 for real and for G), `hinge` Lim & Ye 2017 / Miyato et al. 2018, `wgan` Arjovsky et al.
//! 2017 (a critic whose weights are clipped to [-c, c] after every update).
//!
//! Metric columns: `d_loss_real` and `d_loss_fake` are D's two terms above, `d_loss` their mean;
//! `acc_real` / `acc_fake` the share of real / fake images on the right side of D's decision
//! boundary; `d_out_real` / `d_out_fake` D's mean output: σ(s) for the cross-entropy objectives
//! (a probability, 0.5 at equilibrium), the raw score otherwise (for `wgan` the difference of the
//! two is the critic's estimate of the Wasserstein distance). `g_loss` is G's term.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, relu};
use serde::{Deserialize, Serialize};

/// Which batch D scored: the real images, or G's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Real,
    Fake,
}

/// A GAN objective (`train.loss`, `--loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Non-saturating cross-entropy (the default, Keras-GAN's).
    #[default]
    Ns,
    /// The original minimax cross-entropy.
    Minimax,
    /// Least squares.
    Lsgan,
    /// Hinge.
    Hinge,
    /// Wasserstein with weight clipping.
    Wgan,
    /// Wasserstein with a gradient penalty (needs second derivatives: refused).
    WganGp,
    /// R1 gradient penalty (needs second derivatives: refused).
    R1,
    /// DRAGAN's gradient penalty (needs second derivatives: refused).
    Dragan,
}

impl Loss {
    /// The name in config files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Loss::Ns => "ns",
            Loss::Minimax => "minimax",
            Loss::Lsgan => "lsgan",
            Loss::Hinge => "hinge",
            Loss::Wgan => "wgan",
            Loss::WganGp => "wgan-gp",
            Loss::R1 => "r1",
            Loss::Dragan => "dragan",
        }
    }

    /// Why this objective cannot be trained here, if it cannot.
    pub fn unsupported(self) -> Option<&'static str> {
        match self {
            Loss::WganGp | Loss::R1 | Loss::Dragan => Some(
                "needs a gradient penalty, which takes second derivatives; burn 0.22's autodiff \
                 supports only first-order derivatives",
            ),
            _ => None,
        }
    }

    /// Whether D's output is a logit read through a sigmoid (the cross-entropy objectives).
    pub fn is_cross_entropy(self) -> bool {
        matches!(self, Loss::Ns | Loss::Minimax)
    }

    /// Whether one-sided label smoothing (`train.real_label` < 1) means anything here.
    pub fn takes_real_label(self) -> bool {
        matches!(self, Loss::Ns | Loss::Minimax | Loss::Lsgan)
    }

    /// D's decision boundary on its score (see the module table).
    pub fn boundary(self, real_label: f32) -> f32 {
        match self {
            Loss::Lsgan => real_label / 2.0,
            _ => 0.0,
        }
    }

    /// The losses' value where D cannot tell real from fake, when the objective has one that the
    /// charts can draw: ln 2 for the cross-entropy objectives, 0.25 for least squares (D answers
    /// 1/2 everywhere). None for hinge and Wasserstein, whose losses have no such fixed point.
    pub fn equilibrium_loss(self) -> Option<f64> {
        match self {
            Loss::Ns | Loss::Minimax => Some(std::f64::consts::LN_2),
            Loss::Lsgan => Some(0.25),
            _ => None,
        }
    }

    /// How the charts label [`Loss::equilibrium_loss`].
    pub fn equilibrium_label(self) -> &'static str {
        match self {
            Loss::Ns | Loss::Minimax => "ln 2",
            _ => "0.25",
        }
    }

    /// D's mean output where it cannot tell real from fake: 1/2 (σ of the logit 0 for the
    /// cross-entropy objectives, halfway between the targets for least squares); None for hinge
    /// and Wasserstein scores, whose level is arbitrary.
    pub fn equilibrium_output(self) -> Option<f64> {
        match self {
            Loss::Ns | Loss::Minimax | Loss::Lsgan => Some(0.5),
            _ => None,
        }
    }

    /// D's loss on its scores of real images [b, 1]; shape [1].
    pub fn d_real(self, s: Tensor<2>, real_label: f32) -> Tensor<1> {
        match self {
            // Exactly the classic expression when there is no smoothing (bit-identical records).
            Loss::Ns | Loss::Minimax if real_label == 1.0 => log_sigmoid(s).mean().neg(),
            Loss::Ns | Loss::Minimax => {
                let t = real_label;
                (log_sigmoid(s.clone()) * t + log_sigmoid(s.neg()) * (1.0 - t)).mean().neg()
            }
            Loss::Lsgan => (s - real_label).powi_scalar(2).mean(),
            Loss::Hinge => relu(s.neg() + 1.0).mean(),
            Loss::Wgan | Loss::WganGp | Loss::R1 | Loss::Dragan => s.mean().neg(),
        }
    }

    /// D's loss on its scores of fake images [b, 1]; shape [1].
    pub fn d_fake(self, s: Tensor<2>) -> Tensor<1> {
        match self {
            Loss::Ns | Loss::Minimax => log_sigmoid(s.neg()).mean().neg(),
            Loss::Lsgan => s.powi_scalar(2).mean(),
            Loss::Hinge => relu(s + 1.0).mean(),
            Loss::Wgan | Loss::WganGp | Loss::R1 | Loss::Dragan => s.mean(),
        }
    }

    /// G's loss on D's scores of its images [b, 1]; shape [1].
    pub fn g(self, s: Tensor<2>) -> Tensor<1> {
        match self {
            Loss::Ns => log_sigmoid(s).mean().neg(),
            Loss::Minimax => log_sigmoid(s.neg()).mean(),
            Loss::Lsgan => (s - 1.0).powi_scalar(2).mean(),
            Loss::Hinge | Loss::Wgan | Loss::WganGp | Loss::R1 | Loss::Dragan => s.mean().neg(),
        }
    }

    /// (share on the right side of the boundary, mean output) of D's scores of one batch, real
    /// or fake (`side`).
    pub fn batch_stats(self, scores: &[f32], side: Side, real_label: f32) -> (f32, f32) {
        let real = side == Side::Real;
        let n = scores.len() as f32;
        let boundary = self.boundary(real_label);
        let correct = scores.iter().filter(|&&s| (s > boundary) == real).count() as f32;
        let mean_out = if self.is_cross_entropy() {
            scores.iter().map(|&s| 1.0 / (1.0 + (-s).exp())).sum::<f32>() / n
        } else {
            scores.iter().sum::<f32>() / n
        };
        (correct / n, mean_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn scores(v: &[f32]) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(v.to_vec(), [v.len(), 1]), &Device::flex())
    }

    fn value(t: Tensor<1>) -> f64 {
        t.into_scalar::<f32>() as f64
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }

    /// Fixed logits and every objective's three losses, computed by hand (f64).
    #[test]
    fn each_objective_matches_hand_computed_losses() {
        let s = [-2.0f32, -0.5, 0.0, 1.5];
        let ln_sig = |x: f64| -(1.0 + (-x).exp()).ln();
        let mean = |f: &dyn Fn(f64) -> f64| s.iter().map(|&x| f(x as f64)).sum::<f64>() / 4.0;
        // ns / minimax, no smoothing.
        let bce_real = mean(&|x| -ln_sig(x));
        let bce_fake = mean(&|x| -ln_sig(-x));
        close(value(Loss::Ns.d_real(scores(&s), 1.0)), bce_real);
        close(value(Loss::Ns.d_fake(scores(&s))), bce_fake);
        close(value(Loss::Ns.g(scores(&s))), bce_real);
        close(value(Loss::Minimax.d_real(scores(&s), 1.0)), bce_real);
        close(value(Loss::Minimax.g(scores(&s))), mean(&|x| ln_sig(-x)));
        // With one-sided label smoothing 0.9.
        let smooth = mean(&|x| -(0.9 * ln_sig(x) + 0.1 * ln_sig(-x)));
        close(value(Loss::Ns.d_real(scores(&s), 0.9)), smooth);
        // Least squares: (s - 1)², s², (s - 1)²; smoothed target 0.9.
        close(value(Loss::Lsgan.d_real(scores(&s), 1.0)), (9.0 + 2.25 + 1.0 + 0.25) / 4.0);
        close(value(Loss::Lsgan.d_real(scores(&s), 0.9)), mean(&|x| (x - 0.9).powi(2)));
        close(value(Loss::Lsgan.d_fake(scores(&s))), (4.0 + 0.25 + 0.0 + 2.25) / 4.0);
        close(value(Loss::Lsgan.g(scores(&s))), (9.0 + 2.25 + 1.0 + 0.25) / 4.0);
        // Hinge: relu(1 - s), relu(1 + s), -s.
        close(value(Loss::Hinge.d_real(scores(&s), 1.0)), (3.0 + 1.5 + 1.0 + 0.0) / 4.0);
        close(value(Loss::Hinge.d_fake(scores(&s))), (0.0 + 0.5 + 1.0 + 2.5) / 4.0);
        close(value(Loss::Hinge.g(scores(&s))), 1.0 / 4.0);
        // Wasserstein: -s, s, -s (mean s = -0.25).
        close(value(Loss::Wgan.d_real(scores(&s), 1.0)), 0.25);
        close(value(Loss::Wgan.d_fake(scores(&s))), -0.25);
        close(value(Loss::Wgan.g(scores(&s))), 0.25);
    }

    #[test]
    fn the_classic_real_term_is_the_classic_expression() {
        let s = [0.3f32, -1.7, 2.2];
        let classic: f32 = log_sigmoid(scores(&s)).mean().neg().into_scalar();
        assert_eq!(Loss::Ns.d_real(scores(&s), 1.0).into_scalar::<f32>().to_bits(), classic.to_bits());
    }

    #[test]
    fn accuracy_is_the_side_of_the_boundary_and_outputs_follow_the_objective() {
        let s = [-1.0f32, 0.2, 0.6, 2.0];
        assert_eq!(Loss::Ns.batch_stats(&s, Side::Real, 1.0).0, 0.75);
        assert_eq!(Loss::Ns.batch_stats(&s, Side::Fake, 1.0).0, 0.25);
        // Least squares separates at 0.5 (targets 0 and 1).
        assert_eq!(Loss::Lsgan.batch_stats(&s, Side::Real, 1.0).0, 0.5);
        assert_eq!(Loss::Wgan.batch_stats(&s, Side::Real, 1.0).1, 0.45);
        let (_, p) = Loss::Ns.batch_stats(&[0.0], Side::Real, 1.0);
        assert_eq!(p, 0.5);
    }

    #[test]
    fn penalties_are_refused_with_the_reason() {
        for loss in [Loss::WganGp, Loss::R1, Loss::Dragan] {
            assert!(loss.unsupported().unwrap().contains("second derivatives"), "{loss:?}");
        }
        assert!(Loss::Wgan.unsupported().is_none());
        assert_eq!(Loss::Lsgan.equilibrium_loss(), Some(0.25));
        assert_eq!(Loss::Hinge.equilibrium_loss(), None);
    }
}
