//! The trainer's state in and out: the final weights, a checkpoint's snapshot, and loading one
//! back (each part checked against what the recipe keeps).

use super::*;

impl Gan {
    /// Save the sampling generator (the moving average when the run keeps one) and D (inference
    /// snapshots, so BatchNorm statistics are current), and that generator as safetensors for use
    /// outside gantry.
    pub(crate) fn save_weights(&self, nets: &Networks, run: &RunDir) -> Result<()> {
        let sampler = self.sampler(nets);
        for (path, bytes) in [
            (run.generator_weights(), sampler.clone().record_bytes()),
            (run.discriminator_weights(), nets.d.valid().record_bytes()),
        ] {
            let bytes = bytes
                .map_err(|e| Error::Serialize { what: path.display().to_string(), problem: e.to_string() })?;
            crate::durable::write_synced(&path, &bytes)?;
        }
        crate::durable::write_synced(&run.generator_safetensors(), &sampler.safetensors(&self.architecture))
    }

    /// The whole training state as a checkpoint: `state` with spectral norm's vectors added, and
    /// the records. Weights are taken from `valid()` snapshots: reading BatchNorm's running
    /// statistics right after a step would give values one update stale, and a resume from them
    /// would drift.
    pub(crate) fn snapshot(&self, nets: &Networks, mut state: TrainingState) -> Result<Snapshot> {
        let iteration = state.iteration;
        state.spectral_norm =
            self.spectral.as_ref().map(|s| s.iter().map(SpectralState::to_vectors).collect());
        let fail = |what: &str, e: burn::store::RecordError| Error::Training {
            iteration,
            problem: format!("cannot serialize the {what}: {e}"),
        };
        let generator_ema = match &self.ema {
            Some(ema) => {
                Some(ema.clone().record_bytes().map_err(|e| fail("moving average of the generator", e))?)
            }
            None => None,
        };
        Ok(Snapshot {
            generator: nets.g.valid().record_bytes().map_err(|e| fail("generator", e))?,
            discriminator: nets.d.valid().record_bytes().map_err(|e| fail("discriminator", e))?,
            optimizer_g: self.opt_g.into_bytes().map_err(|e| fail("generator's optimizer", e))?.to_vec(),
            optimizer_d: self.opt_d.into_bytes().map_err(|e| fail("discriminator's optimizer", e))?.to_vec(),
            generator_ema,
            state,
        })
    }

    /// Replace the networks' weights, the optimizer states, the moving average and spectral
    /// norm's vectors with a checkpoint's; each checked against what this recipe keeps.
    pub(crate) fn load(
        mut self,
        nets: Networks,
        snapshot: &Snapshot,
        path: &Path,
    ) -> Result<(Self, Networks)> {
        let bad = |file: &str, problem: String| Error::Checkpoint { path: path.join(file), problem };
        let loaded = |file: &str, e: burn::store::RecordError| bad(file, format!("cannot be loaded: {e}"));
        let bytes = |v: &Vec<u8>| burn::tensor::Bytes::from_bytes_vec(v.clone());
        let generator = |g: Generator, file: &str, data: &Vec<u8>| -> Result<Generator> {
            g.with_record(data.clone()).map_err(|e| loaded(file, e))
        };
        // `valid()` snapshots were saved; `train()` puts the modules back on the autodiff device.
        let g = generator(nets.g.valid(), checkpoint::GENERATOR_FILE, &snapshot.generator)?.train();
        let d = nets
            .d
            .valid()
            .with_record(snapshot.discriminator.clone())
            .map_err(|e| loaded(checkpoint::DISCRIMINATOR_FILE, e))?;
        let d = d.train();
        self.opt_g = self
            .opt_g
            .from_bytes(bytes(&snapshot.optimizer_g))
            .map_err(|e| loaded(checkpoint::OPTIMIZER_G_FILE, e))?;
        self.opt_d = self
            .opt_d
            .from_bytes(bytes(&snapshot.optimizer_d))
            .map_err(|e| loaded(checkpoint::OPTIMIZER_D_FILE, e))?;
        let ema_file = checkpoint::EMA_FILE;
        self.ema = match (self.ema.take(), &snapshot.generator_ema) {
            (Some(ema), Some(data)) => Some(generator(ema, ema_file, data)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(ema_file, "is missing: this run keeps a moving average of G".into()));
            }
            (None, Some(_)) => {
                return Err(bad(ema_file, "is there, but this run keeps no moving average".into()));
            }
        };
        self.spectral = match (self.spectral.take(), &snapshot.state.spectral_norm) {
            (None, None) => None,
            (Some(_), Some(saved)) => {
                let shapes = d.layer_shapes();
                let fits = saved.len() == shapes.len()
                    && saved.iter().zip(&shapes).all(|(sv, &(i, o))| sv.v.len() == i && sv.u.len() == o);
                if !fits {
                    return Err(bad(
                        "state.json",
                        format!("spectral norm's vectors do not fit D's layers {shapes:?}"),
                    ));
                }
                Some(saved.iter().map(|sv| SpectralState::from_vectors(sv, &self.plain_device)).collect())
            }
            (want, _) => {
                return Err(bad(
                    "state.json",
                    format!(
                        "spectral norm's vectors are {}",
                        if want.is_some() { "missing" } else { "there, but D has none" }
                    ),
                ));
            }
        };
        Ok((self, Networks { g, d }))
    }
}
