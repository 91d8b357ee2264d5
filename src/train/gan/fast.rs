//! The fast schedules, each tested to give the reference step's bits on the same kernels
//! (`super::tests`): the classic recipe's passes side by side on the rayon pool, and the
//! simultaneous step with D's convolutions over the fakes computed once.

use super::step::Simultaneous;
use super::*;

impl Gan {
    /// The fast path of the classic recipe: D on a real batch, D on a fake batch, G through a
    /// frozen D, with independent passes side by side on the rayon pool. Tested to give the same
    /// records as [`Gan::reference_step`] (`tests/recipes.rs`).
    pub(super) fn fast_step(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        let (b, latent, pixels) = (self.batch, self.latent, self.pixels);
        let (dev, plain_dev) = (self.train_device.clone(), self.plain_device.clone());
        let Streams { data: data_stream, noise: noise_stream, .. } = streams;
        let Networks { g, d } = nets;
        // [b, latent] from N(0, 1).
        let draw_noise = |stream: &mut rand_chacha::ChaCha8Rng, device: &Device| {
            let mut z = Vec::with_capacity(b * latent);
            rng::normal(stream, b * latent, &mut z);
            Tensor::<2>::from_data(TensorData::new(z, [b, latent]), device)
        };

        // A random batch of real images [b, pixels], and noise for the fakes D sees: each from its
        // own stream, so side by side.
        let indices = &mut self.indices;
        let (real, z_fake) = rayon::join(
            || {
                rng::indices(data_stream, b, images.count, indices);
                let mut real = Vec::with_capacity(b * pixels);
                images.gather_into(indices, &mut real);
                Tensor::<2>::from_data(TensorData::new(real, [b, pixels]), &dev)
            },
            || draw_noise(noise_stream, &plain_dev),
        );

        // D update on the real batch (label 1), then on the fake batch (label 0). The G passes
        // need only G, which the D updates leave alone, so each runs beside one of them: on a
        // batch of 32 the products are too small to split well across two cores, whole passes
        // side by side are not. (Order within G is kept: the fakes read BatchNorm's moving
        // statistics before the training pass updates them.) The G update's fresh noise is drawn
        // beside the fakes, after theirs in the same stream.
        let Self { opt_d, lr_d, .. } = self;
        let ((fake, z), (d, on_real)) = rayon::join(
            || {
                rayon::join(
                    // Fakes from G in inference mode (moving statistics), no graph: [b, pixels].
                    || Tensor::from_inner(g.valid().forward(z_fake)),
                    || draw_noise(noise_stream, &dev),
                )
            },
            || d_update(d, opt_d, *lr_d, real, true),
        );
        let (generated, (d, on_fake)) = rayon::join(
            || g.forward(z), // [b, pixels], with its graph, for the G update
            || d_update(d, opt_d, *lr_d, fake, false),
        );

        // G update through D with its weights untouched (label 1).
        let logits = d.clone().no_grad().forward(generated); // [b, 1]
        let loss = Loss::Ns.g(logits);
        let g_loss = scalar(&loss);
        let grads = GradientsParams::from_grads(loss.backward(), &g);
        // The module moves into the step (no clone), so that the optimizer owns the only reference
        // to each parameter and can update it without copying.
        let g = self.opt_g.step(self.lr_g, g, grads);

        (
            Networks { g, d },
            StepRecord::Read(IterationRecord::from_terms(iteration, on_real, on_fake, g_loss)),
        )
    }
}

impl Gan {
    /// [`Gan::simultaneous_step`] with D's convolutions over the fakes computed once: G's pass
    /// through D keeps their outputs and D's pass over the same fakes replays them (the same images
    /// at the same weights with the same dropout masks, so the same values; [`replays_fakes`] says
    /// when that holds). The rest is the reference step's, in its order: G's gradient (and its
    /// graphs freed) before D's forward passes, so that no more is held at once than there.
    pub(super) fn simultaneous_step_replayed(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        let Networks { g, d } = nets;
        let Simultaneous { real, generated, fake, masks } = self.simultaneous_batches(&g, images, streams);
        let mut outputs = Vec::new(); // D's convolutions over the fakes, before their biases
        let keep = ConvPass::Keep(&mut outputs);
        let (g_grads, g_loss) = self.g_grads_through(&g, &d, generated, &masks, streams, keep);
        let fakes = ConvPass::Replay(&outputs);
        let (d, passes) = self.d_update(d, [Some(real), Some(fake)], Some(masks), streams, fakes);
        let g = self.opt_g.step(self.lr_g, g, g_grads);
        (Networks { g, d }, StepRecord::OnDevice { iteration, passes, g_loss })
    }
}

/// Whether the simultaneous step's two passes of D over its fakes see the same images at the same
/// weights, so that the second may replay the first's convolutions
/// ([`Gan::simultaneous_step_replayed`]): the simultaneous order with one joint D update (split
/// updates move D between them), a dcgan D on gantry's kernels (where convolutions can be
/// replayed), no augmentation (drawn anew for each pass) and no spectral norm (its power iteration
/// comes between them).
pub(super) fn replays_fakes(model: &ModelConfig, t: &TrainConfig) -> bool {
    t.order == UpdateOrder::Simultaneous
        && t.d_update == DUpdate::Joint
        && t.kernels == Kernels::Fused
        && model.kind == ModelKind::Dcgan
        && t.augment.is_empty()
        && !model.d_spectral_norm
}

/// The fast path's D update on one batch, real or fake, under the classic objective (`ns`, real
/// label 1); returns D and the (loss, accuracy, mean output) of the forward pass before the update.
fn d_update(
    d: Discriminator,
    optimizer: &mut ModuleOptimizer,
    lr: f64,
    x: Tensor<2>,
    real: bool,
) -> (Discriminator, [f32; 3]) {
    let logits = d.forward(x); // [b, 1]
    let values: Vec<f32> = logits.to_data().try_into_vec().expect("the model computes in f32");
    let loss = if real { Loss::Ns.d_real(logits, 1.0) } else { Loss::Ns.d_fake(logits) };
    let loss_value = scalar(&loss);
    let grads = GradientsParams::from_grads(loss.backward(), &d);
    let d = optimizer.step(lr, d, grads);
    let side = if real { Side::Real } else { Side::Fake };
    let (accuracy, mean_out) = Loss::Ns.batch_stats(&values, side, 1.0);
    (d, [loss_value, accuracy, mean_out])
}

pub(super) fn scalar(t: &Tensor<1>) -> f32 {
    t.clone().into_scalar::<f32>()
}
