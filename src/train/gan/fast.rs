//! The fast schedule of the classic recipe: the reference step's passes side by side on the rayon
//! pool, tested to give the same bits on the same kernels (`super::tests`).

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
