//! The reference step, top to bottom like the algorithm, for every objective and recipe option:
//! D's update on a real and a fake batch (or the simultaneous step's one forward pass), then G's,
//! with the batches, noise, dropout masks and class terms they need.

use super::*;

impl Gan {
    /// The reference step, top to bottom, for every objective and recipe option. With the
    /// classic recipe it computes what [`Gan::fast_step`] computes, in the same order, drawing the
    /// same random numbers from the same streams.
    pub(super) fn reference_step(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        if self.recipe.order == UpdateOrder::Simultaneous {
            return self.simultaneous_step(nets, iteration, images, streams);
        }
        let Networks { mut g, mut d } = nets;
        let (order, steps) = (self.recipe.order, self.recipe.d_steps);
        let mut g_loss = None;
        if order == UpdateOrder::GFirst {
            let loss;
            (g, loss) = self.g_update(g, &d, streams);
            g_loss = Some(loss);
        }
        // D's updates; the record carries the mean of their forward passes' (loss, accuracy,
        // mean output) on the real and on the fake batches.
        let mut passes = Vec::with_capacity(2 * steps);
        for _ in 0..steps {
            let real = self.real_batch(images, &mut streams.data); // [b, pixels], labels
            let (z, y) = self.noise(streams, &self.plain_device.clone()); // [b, latent (+ classes)]
            let fake = Batch { x: Tensor::from_inner(self.g_forward(&g.valid(), z)), y }; // no graph
            let terms;
            (d, terms) = self.d_step(d, real, fake, (None, ConvPass::Compute), streams);
            passes.extend(terms);
        }
        if order == UpdateOrder::DFirst {
            let loss;
            (g, loss) = self.g_update(g, &d, streams);
            g_loss = Some(loss);
        }
        let g_loss = g_loss.expect("the order puts G's update before or after D's");
        (Networks { g, d }, StepRecord::OnDevice { iteration, passes, g_loss })
    }

    /// TensorFlow's DCGAN tutorial step (`train.order = "simultaneous"`): one batch of noise
    /// through G in training mode; D on the real batch and on those fakes; G's loss from D's
    /// scores of the fakes and D's from both batches, every gradient taken at the same weights;
    /// then both updates. burn's autodiff has no `retain_graph`, so D passes over the fakes
    /// twice, once for each gradient, with the same weights and the same dropout masks: the same
    /// values as one pass. Where [`replays_fakes`] says the two passes see the same values
    /// (`self.replay_fakes`), G's pass keeps D's convolutions' outputs over the fakes and D's pass
    /// replays them instead of computing them again: the same bits (a test runs both ways).
    pub(super) fn simultaneous_step(
        &mut self,
        nets: Networks,
        iteration: usize,
        images: &TrainingImages,
        streams: &mut Streams,
    ) -> (Networks, StepRecord) {
        let Networks { g, d } = nets;
        let real = self.real_batch(images, &mut streams.data); // [b, pixels], labels
        let (z, y) = self.noise(streams, &self.train_device.clone()); // [b, latent (+ classes)]
        let generated = Batch { x: self.g_forward(&g, z), y }; // [b, pixels], training mode, with its graph
        let fake = Batch { x: generated.x.clone().detach(), y: generated.y.clone() };
        let masks = self.dropout_masks(&mut streams.dropout);
        let mut outputs = Vec::new(); // D's convolutions over the fakes, before their biases

        // G's gradient through D at its current weights (D's own gradient is not taken here).
        let keep = if self.replay_fakes { ConvPass::Keep(&mut outputs) } else { ConvPass::Compute };
        let (g_grads, g_loss) = self.g_grads_through(&g, &d, generated, &masks, streams, keep);

        // D's update on the real batch and the same fakes (one update on the summed losses, as
        // the tutorial, with `d_update = "joint"`), then G's.
        let replay = if self.replay_fakes { ConvPass::Replay(&outputs) } else { ConvPass::Compute };
        let (d, passes) = self.d_step(d, real, fake, (Some(masks), replay), streams);
        let g = self.opt_g.step(self.lr_g, g, g_grads);
        (Networks { g, d }, StepRecord::OnDevice { iteration, passes, g_loss })
    }

    /// G's gradient, and its loss [1], from D's scores of `generated` (G's batch with its graph)
    /// at D's weights as they are, D's own gradient not taken; `masks`: D's dropout masks for it,
    /// `pass`: what D does with its convolutions' outputs.
    pub(super) fn g_grads_through(
        &self,
        g: &Generator,
        d: &Discriminator,
        generated: Batch,
        masks: &[Tensor<4>],
        streams: &mut Streams,
        pass: ConvPass<'_>,
    ) -> (GradientsParams, Tensor<1>) {
        let asked = generated.y.clone();
        let frozen = d.clone().no_grad();
        let (scores, classes) = self.d_forward(&frozen, generated, &mut streams.augment, masks, pass); // [b, 1]
        let loss = self.recipe.loss.g(scores);
        let g_loss = loss.clone().inner();
        let loss = with_class_term(loss, classes, asked.as_ref(), self.recipe.aux_weight);
        (GradientsParams::from_grads(loss.backward(), g), g_loss)
    }

    /// Dropout masks for one pass of D over a batch: per convolution [b, c, s, s] of 0 (dropped,
    /// with probability `model.d_dropout`) and 1 / (1 - rate), from the dropout stream. None
    /// (an empty list) without dropout.
    pub(super) fn dropout_masks(&self, stream: &mut rand_chacha::ChaCha8Rng) -> Vec<Tensor<4>> {
        let Some((rate, shapes)) = &self.dropout else {
            return Vec::new();
        };
        let (rate, b) = (*rate, self.batch);
        let keep = 1.0 / (1.0 - rate);
        shapes
            .iter()
            .map(|&[c, h, w]| {
                let mut values = Vec::new();
                crate::rng::dropout_mask(stream, b * c * h * w, rate, keep, &mut values);
                Tensor::<4>::from_data(TensorData::new(values, [b, c, h, w]), &self.train_device)
            })
            .collect()
    }

    /// A random batch of real images [b, pixels] (with replacement, from the data stream), with
    /// their one-hot labels in a conditional run.
    pub(super) fn real_batch(
        &mut self,
        images: &TrainingImages,
        stream: &mut rand_chacha::ChaCha8Rng,
    ) -> Batch {
        let (b, pixels) = (self.batch, self.pixels);
        rng::indices(stream, b, images.count, &mut self.indices);
        let mut real = Vec::with_capacity(b * pixels);
        images.gather_into(&self.indices, &mut real);
        let x = Tensor::<2>::from_data(TensorData::new(real, [b, pixels]), &self.train_device);
        // Loaded only for a conditional run.
        let y = images.labels.as_ref().map(|labels| {
            let batch: Vec<u8> = self.indices.iter().map(|&i| labels[i]).collect();
            self.one_hot(&batch)
        });
        Batch { x, y }
    }

    /// G's input for one batch on `device`: noise [b, latent] from N(0, 1) (the noise stream);
    /// in a conditional run with one-hot classes drawn from the label stream joined to it
    /// ([b, latent + classes]), and those labels for D ([b, classes], on the training device).
    pub(super) fn noise(&self, streams: &mut Streams, device: &Device) -> (Tensor<2>, Option<Tensor<2>>) {
        let (b, latent) = (self.batch, self.latent);
        let mut z = Vec::with_capacity(b * latent);
        rng::normal(&mut streams.noise, b * latent, &mut z);
        if self.conditions.ids() == 0 {
            return (crate::model::g_input(&z, latent, &[], 0, device), None);
        }
        let mut labels = Vec::with_capacity(b);
        self.conditions.draw(&mut streams.labels, b, &mut labels);
        let input = crate::model::g_input(&z, latent, &labels, self.conditions.ids(), device);
        (input, Some(self.one_hot(&labels)))
    }

    /// One-hot rows [labels.len(), classes] on the training device.
    pub(super) fn one_hot(&self, labels: &[u8]) -> Tensor<2> {
        let ids = self.conditions.ids();
        Tensor::<2>::from_data(
            TensorData::new(crate::model::one_hot(labels, ids), [labels.len(), ids]),
            &self.train_device,
        )
    }

    pub(super) fn g_forward(&self, g: &Generator, z: Tensor<2>) -> Tensor<2> {
        match self.recipe.kernels {
            Kernels::Reference => g.forward_reference(z),
            kernels => g.forward_with(z, kernels),
        }
    }

    /// D's scores [b, 1] of a batch [b, pixels] (and its labels, in a conditional run) as D
    /// sees it: augmented when the recipe asks (drawing from the augmentation stream), through
    /// spectrally normalized layers when D has them; and an acgan D's class logits [b, classes].
    pub(super) fn d_forward(
        &self,
        d: &Discriminator,
        batch: Batch,
        augment: &mut rand_chacha::ChaCha8Rng,
        dropout: &[Tensor<4>],
        pass: ConvPass<'_>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let x = augment::apply(batch.x, &self.recipe.augment, self.shape, augment);
        let (y, kernels, spectral) = (batch.y.as_ref(), self.recipe.kernels, self.spectral.as_deref());
        d.score_and_classes_in(x, y, Some(dropout), kernels, spectral, pass)
    }

    /// One D step on a real and a fake batch: one update on their summed losses
    /// (`d_update = "joint"`) or one on each, real first (`"split"`); returns D and both batches'
    /// terms, real first. The fake batch's dropout masks are `fake_masks` when given, and a joint
    /// update's fake pass does with D's convolutions what `fake_pass` says (split updates move D
    /// between the passes: theirs compute).
    pub(super) fn d_step(
        &mut self,
        d: Discriminator,
        real: Batch,
        fake: Batch,
        (fake_masks, fake_pass): (Option<Vec<Tensor<4>>>, ConvPass<'_>),
        streams: &mut Streams,
    ) -> (Discriminator, Vec<PassTerms>) {
        match self.recipe.d_update {
            DUpdate::Joint => self.d_update(d, [Some(real), Some(fake)], fake_masks, streams, fake_pass),
            DUpdate::Split => {
                let (d, mut passes) = self.d_update(d, [Some(real), None], None, streams, ConvPass::Compute);
                let (d, on_fake) =
                    self.d_update(d, [None, Some(fake)], fake_masks, streams, ConvPass::Compute);
                passes.extend(on_fake);
                (d, passes)
            }
        }
    }

    /// One D update on the real batch, the fake batch, or both (their losses summed: one update);
    /// returns D and each batch's loss and scores from the forward pass before it, real first. With
    /// spectral norm, one power iteration on D's weights comes first. Each pass draws its dropout
    /// masks, but the fake batch's when they are given (`fake_masks`); `fake_pass`: what the fake
    /// batch's pass does with D's convolutions' outputs.
    pub(super) fn d_update(
        &mut self,
        d: Discriminator,
        [real, fake]: [Option<Batch>; 2],
        mut fake_masks: Option<Vec<Tensor<4>>>,
        streams: &mut Streams,
        fake_pass: ConvPass<'_>,
    ) -> (Discriminator, Vec<PassTerms>) {
        let (loss, label) = (self.recipe.loss, self.recipe.real_label);
        if let Some(vectors) = &mut self.spectral {
            d.power_iteration(vectors);
        }
        let (mut total, mut fake_pass): (Option<Tensor<1>>, _) = (None, Some(fake_pass));
        let mut passes = Vec::with_capacity(2);
        for (x, side) in [(real, Side::Real), (fake, Side::Fake)] {
            let Some(x) = x else { continue };
            let is_real = side == Side::Real;
            let given = if is_real { None } else { fake_masks.take() };
            let masks = given.unwrap_or_else(|| self.dropout_masks(&mut streams.dropout));
            let asked = x.y.clone();
            let pass =
                if is_real { ConvPass::Compute } else { fake_pass.take().unwrap_or(ConvPass::Compute) };
            let (scores, classes) = self.d_forward(&d, x, &mut streams.augment, &masks, pass); // [b, 1]
            let term = if is_real { loss.d_real(scores.clone(), label) } else { loss.d_fake(scores.clone()) };
            passes.push(PassTerms::new(side, &term, &scores));
            let term = with_class_term(term, classes, asked.as_ref(), self.recipe.aux_weight);
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        let total = total.expect("a D update has at least one batch");
        let grads = GradientsParams::from_grads(total.backward(), &d);
        let mut d = self.opt_d.step(self.lr_d, d, grads);
        if loss == Loss::Wgan {
            d = d.clipped(self.recipe.clip);
        }
        (d, passes)
    }

    /// One G update on fresh noise through D with its weights untouched; returns G and its loss
    /// [1] (on the device).
    pub(super) fn g_update(
        &mut self,
        g: Generator,
        d: &Discriminator,
        streams: &mut Streams,
    ) -> (Generator, Tensor<1>) {
        let (z, y) = self.noise(streams, &self.train_device.clone()); // [b, latent (+ classes)]
        let generated = Batch { x: self.g_forward(&g, z), y }; // [b, pixels], with its graph
        let masks = self.dropout_masks(&mut streams.dropout);
        let (grads, value) = self.g_grads_through(&g, d, generated, &masks, streams, ConvPass::Compute);
        (self.opt_g.step(self.lr_g, g, grads), value)
    }
}

/// Whether the simultaneous step's two passes of D over its fakes see the same images at the same
/// weights, so that the second may replay the first's convolutions: the simultaneous order with
/// one joint D update (split updates move D between them), a dcgan D on gantry's kernels (where
/// convolutions can be replayed), no augmentation (drawn anew for each pass) and no spectral norm
/// (its power iteration comes between them).
pub(super) fn replays_fakes(model: &ModelConfig, t: &TrainConfig) -> bool {
    t.order == UpdateOrder::Simultaneous
        && t.d_update == DUpdate::Joint
        && t.kernels.is_fused()
        && model.kind == ModelKind::Dcgan
        && t.augment.is_empty()
        && !model.d_spectral_norm
}

/// A batch D scores: images [b, pixels] and, in a conditional run, their one-hot labels
/// [b, classes] (the real images' own, or the classes G was asked for).
pub(super) struct Batch {
    x: Tensor<2>,
    y: Option<Tensor<2>>,
}

/// `term`, plus an acgan D's auxiliary term when `classes` (its class logits [b, classes]) are
/// given: the cross-entropy of the classes against `asked` (the one-hot labels [b, classes] of
/// the real images, or the classes G was asked for), a mean over the batch, times `weight`
/// (`train.aux_weight`; 1 weighs it as the adversarial term, as Odena et al. 2017 do). D
/// minimizes it on the real and the fake batches, G on its fakes. The metric columns keep the
/// adversarial term alone.
pub(super) fn with_class_term(
    term: Tensor<1>,
    classes: Option<Tensor<2>>,
    asked: Option<&Tensor<2>>,
    weight: f64,
) -> Tensor<1> {
    match (classes, asked) {
        (Some(logits), Some(y)) => {
            let cross_entropy = (y.clone() * log_softmax(logits, 1)).sum_dim(1).mean().neg();
            // No product at weight 1: the graph, and so the bytes, of the runs before the key.
            if weight == 1.0 { term + cross_entropy } else { term + cross_entropy.mul_scalar(weight) }
        }
        _ => term,
    }
}
