//! Inference: a trained run's generator, loaded from verified weights (the final ones, checked
//! against `weights/manifest.json`, or a checkpoint's, checked against its manifest), drawing
//! images from seeded noise in slices, so that memory stays bounded however many are asked for.
//! `gantry sample` and `gantry eval` use it.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;

use crate::device::DeviceChoice;

use crate::checkpoint;
use crate::conditions::Conditions;
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::model::Generator;
use crate::rng::{self, Streams};
use crate::run_dir::{RunDir, RunInfo};

/// Images generated per slice: the memory of a slice is its activations ([slice, widest layer]).
pub const SLICE: usize = 500;

/// Where a generator's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weights {
    /// The run's final `weights/generator.bpk`.
    Final,
    /// The checkpoint after this many iterations (`checkpoints/step_NNNNNN/generator.bpk`).
    Checkpoint(usize),
}

/// A run's generator in inference mode, ready to draw images.
pub struct LoadedGenerator {
    g: Generator,
    device: Device,
    latent: usize,
    /// What G is conditioned on, with the sizes of a clustered run's ids (run.json): what its
    /// ids are asked for in proportion to.
    conditions: Conditions,
    /// The run's `[model]` section as JSON (what exported files carry as their architecture).
    architecture: String,
    /// Image size.
    pub rows: usize,
    pub cols: usize,
    pub channels: usize,
    /// What was loaded (a file or a checkpoint folder), for messages and reports.
    pub source: PathBuf,
    /// The truncation trick's bound on the noise ([`rng::truncated_normal`]); None: N(0, 1) as in
    /// training.
    truncation: Option<f32>,
}

impl LoadedGenerator {
    /// Load `run`'s generator from `weights`, verified before it is used, onto `device` (the
    /// CPU, or a wgpu adapter: weights are the same bytes on every device).
    pub fn load(run: &RunDir, weights: &Weights, device: DeviceChoice) -> Result<Self> {
        let config = Config::from_file(&run.config())?;
        // A hand-edited config is checked as a training's is, before a network is built from it.
        config.validate()?;
        let info = RunInfo::read(run)?;
        let (bytes, source) = match weights {
            Weights::Final => {
                let path = run.generator_weights();
                let missing = if info.format >= crate::run_dir::RUN_FORMAT {
                    checkpoint::MissingManifest::Refuse
                } else {
                    checkpoint::MissingManifest::Warn
                };
                (checkpoint::read_verified_weights(&path, missing)?, path)
            }
            Weights::Checkpoint(step) => {
                let folder = run.checkpoints_dir().join(checkpoint::folder_name(*step));
                if !folder.is_dir() {
                    let have: Vec<String> = checkpoint::list(&run.checkpoints_dir())?
                        .into_iter()
                        .rev()
                        .map(|(it, _)| it.to_string())
                        .collect();
                    return Err(Error::Checkpoint {
                        path: folder,
                        problem: format!(
                            "no checkpoint after {step} iterations; this run has checkpoints after: {}",
                            if have.is_empty() { "none".to_string() } else { have.join(", ") }
                        ),
                    });
                }
                // The same verification as a resume: every file against the manifest. A run that
                // keeps a moving average of G samples from it, as its training did.
                let snapshot = checkpoint::load(&folder)?;
                match snapshot.generator_ema {
                    Some(ema) => (ema, folder.join(checkpoint::EMA_FILE)),
                    None => (snapshot.generator, folder.join(checkpoint::GENERATOR_FILE)),
                }
            }
        };
        let device = crate::device::resolve(device)?;
        let pixels = info
            .image_rows
            .checked_mul(info.image_cols)
            .and_then(|p| p.checked_mul(info.image_channels))
            .filter(|&p| p > 0 && p <= 1 << 20 && matches!(info.image_channels, 1 | 3))
            .ok_or_else(|| Error::bad_data(run.info_path(), "implausible image size"))?;
        crate::model::check_memory(&config, pixels)?;
        let cluster_sizes = checked_cluster_sizes(run, &config, info.cluster_sizes)?;
        let conditions = Conditions::of(&config).with_sizes(cluster_sizes);
        let g = Generator::new(&config.model, pixels, &mut Streams::new(0).init, &device)
            .with_record(bytes)
            .map_err(|e| Error::Weights { path: source.clone(), problem: e.to_string() })?
            .valid();
        Ok(Self {
            g,
            device,
            latent: config.model.latent_dim,
            conditions,
            architecture: serde_json::to_string(&config.model).unwrap_or_default(),
            rows: info.image_rows,
            cols: info.image_cols,
            channels: info.image_channels,
            source,
            truncation: None,
        })
    }

    /// Draw the noise truncated to [-psi, psi] (the truncation trick: resampled, not clipped);
    /// psi must be finite and positive (0.1 to 3 are usual).
    pub fn truncated(mut self, psi: f32) -> Result<Self> {
        if !(psi.is_finite() && (0.05..=10.0).contains(&psi)) {
            return Err(Error::usage("--truncation", format!("must be within 0.05..=10, found {psi}")));
        }
        self.truncation = Some(psi);
        Ok(self)
    }

    /// This generator as an ONNX model (see [`Generator::onnx`]): inputs `z` [N, latent] and, for
    /// a conditional run, `class` [N] (its ids: the classes, or every class's clusters); output
    /// `image` [N, channels, rows, cols] in [-1, 1]. Its metadata: the architecture (the run's
    /// `[model]` section as JSON) and how many ids `class` takes (one outside them gives an
    /// all-zero one-hot, as ONNX's OneHot does).
    pub fn onnx(&self) -> Vec<u8> {
        let ids = self.conditions.ids();
        let metadata = vec![
            ("gantry.architecture".to_string(), self.architecture.clone()),
            ("gantry.class_ids".to_string(), ids.to_string()),
        ];
        self.g.onnx(self.latent, ids, (self.channels, self.rows, self.cols), metadata)
    }

    /// Classes of a conditional run's generator (0 when unconditional).
    pub fn classes(&self) -> usize {
        self.conditions.classes()
    }

    /// Width of G's noise input.
    pub fn latent(&self) -> usize {
        self.latent
    }

    /// Values per image (pixels times channels).
    pub fn pixels(&self) -> usize {
        self.rows * self.cols * self.channels
    }

    /// The ids asked for `n` images of a conditional generator: all `class`, or, without one,
    /// every class in turn (0, 1, ..., 0, 1, ...: as many of each, within one; a self-conditioned
    /// generator's clusters in proportion to their sizes, as it was trained). A generator with
    /// `model.clusters_per_class` is asked for clusters, in proportion to their sizes: all of
    /// `class`'s, or all of them. Empty for an unconditional generator, which takes no class
    /// (asking it for one is refused).
    pub fn asked_classes(&self, n: usize, class: Option<usize>) -> Result<Vec<u8>> {
        match (self.classes(), class) {
            (0, None) => Ok(Vec::new()),
            (0, Some(_)) => Err(Error::usage(
                "--class",
                format!(
                    "{} is not conditional (model.conditional = \"none\"): it takes no class",
                    self.source.display()
                ),
            )),
            (classes, Some(c)) if c >= classes => Err(Error::usage(
                "--class",
                format!("must be one of the model's classes 0..={}, found {c}", classes - 1),
            )),
            (_, Some(c)) => Ok(self.conditions.of_class(c, n)),
            (_, None) => Ok(self.conditions.spread(n)),
        }
    }

    /// The data set's class of each of `n` images drawn without a class (as
    /// [`LoadedGenerator::asked_classes`] asks for them), for the judge's class scores. None
    /// for an unconditional generator, and for a self-conditioned one, whose ids are clusters,
    /// not the data set's classes.
    pub fn judged_classes(&self, n: usize) -> Result<Option<Vec<u8>>> {
        Ok(self.conditions.judged(&self.asked_classes(n, None)?))
    }

    /// Draw `n` images from noise seeded by `seed` (and, from a conditional generator, of the
    /// classes [`LoadedGenerator::asked_classes`] gives for `class`), handing each slice of at
    /// most [`SLICE`] images ([k * pixels] in [-1, 1]) to `visit` in order. The noise is the same
    /// whatever the slicing and the classes.
    pub fn generate_slices(
        &self,
        n: usize,
        seed: u64,
        class: Option<usize>,
        visit: &mut dyn FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        let labels = self.asked_classes(n, class)?;
        let mut stream = Streams::new(seed).fixed;
        let mut noise = Vec::new();
        let mut done = 0;
        while done < n {
            let k = SLICE.min(n - done);
            self.draw_noise(&mut stream, k, &mut noise);
            let asked = labels.get(done..done + k).unwrap_or(&[]);
            let z = crate::model::g_input(&noise, self.latent, asked, self.conditions.ids(), &self.device);
            let images: Vec<f32> =
                self.g.forward(z).into_data().try_into_vec().expect("the model computes in f32");
            visit(&images)?;
            done += k;
        }
        Ok(())
    }

    /// `k` latent vectors from `stream`: N(0, 1), or truncated as the generator is.
    fn draw_noise(&self, stream: &mut rand_chacha::ChaCha8Rng, k: usize, out: &mut Vec<f32>) {
        match self.truncation {
            Some(psi) => rng::truncated_normal(stream, k * self.latent, psi, out),
            None => rng::normal(stream, k * self.latent, out),
        }
    }

    /// The latent vector `seed` gives first: the noise of the first image
    /// [`LoadedGenerator::generate_slices`] draws for that seed (truncated as the generator is).
    pub fn latent_of(&self, seed: u64) -> Vec<f32> {
        let mut noise = Vec::new();
        self.draw_noise(&mut Streams::new(seed).fixed, 1, &mut noise);
        noise
    }

    /// The images of the latent rows `noise` (`[k * latent]`, k at most 4096, drawn [`SLICE`] at
    /// a time) asking for the ids `labels` (one per row from a conditional generator, none from
    /// another).
    pub fn generate_latents(&self, noise: &[f32], labels: &[u8]) -> Result<Vec<f32>> {
        let k = noise.len() / self.latent.max(1);
        if k == 0 || k > 4096 || noise.len() != k * self.latent || (self.classes() > 0 && labels.len() != k) {
            return Err(Error::usage("--walk", format!("{k} frames; 1 to 4096 are drawn")));
        }
        let mut images = Vec::with_capacity(k * self.pixels());
        for start in (0..k).step_by(SLICE) {
            let end = (start + SLICE).min(k);
            let rows = &noise[start * self.latent..end * self.latent];
            let asked = labels.get(start..end).unwrap_or(&[]);
            let z = crate::model::g_input(rows, self.latent, asked, self.conditions.ids(), &self.device);
            images.extend(
                self.g.forward(z).into_data().try_into_vec::<f32>().expect("the model computes in f32"),
            );
        }
        Ok(images)
    }

    /// Draw `n` images at once (for a grid: `n` is small).
    pub fn generate(&self, n: usize, seed: u64, class: Option<usize>) -> Result<Vec<f32>> {
        let mut all = Vec::with_capacity(n.saturating_mul(self.pixels()).min(1 << 28));
        self.generate_slices(n, seed, class, &mut |slice| {
            all.extend_from_slice(slice);
            Ok(())
        })?;
        Ok(all)
    }
}

/// Load a trained run's generator (verified, on the CPU) and draw `n` images from noise seeded by
/// `seed`. Returns images [n * pixels] in [-1, 1] and the image size (rows, cols, channels).
/// A conditional run's generator draws every class in turn.
pub fn sample_from_run(run: &RunDir, n: usize, seed: u64) -> Result<(Vec<f32>, usize, usize, usize)> {
    sample_generator(run, &Weights::Final, n, seed, None, DeviceChoice::Cpu)
}

/// As [`sample_from_run`], with the generator's weights from `weights`, of class `class` only (a
/// conditional run's generator; see [`LoadedGenerator::asked_classes`]), computed on `device`.
pub fn sample_generator(
    run: &RunDir,
    weights: &Weights,
    n: usize,
    seed: u64,
    class: Option<usize>,
    device: DeviceChoice,
) -> Result<(Vec<f32>, usize, usize, usize)> {
    let g = LoadedGenerator::load(run, weights, device)?;
    Ok((g.generate(n, seed, class)?, g.rows, g.cols, g.channels))
}

/// The cluster sizes run.json records for a run whose ids are clusters (`data.clusters`, or
/// `model.clusters_per_class`), checked: one per id, and every class with images in some cluster
/// (G's ids are asked for in proportion to them); None for a run without clusters.
fn checked_cluster_sizes(
    run: &RunDir,
    config: &Config,
    recorded: Option<Vec<usize>>,
) -> Result<Option<Vec<usize>>> {
    let per_class = config.model.clusters_per_class.max(1);
    let clustered = if config.data.clusters > 0 || per_class > 1 {
        crate::model::conditioning::ids(&config.model)
    } else {
        0
    };
    // Each class's clusters (all of them, self-conditioned) must hold some images: the ids
    // asked for are drawn in proportion to these sizes.
    let group = if per_class > 1 { per_class } else { clustered.max(1) };
    Ok(match (clustered, recorded) {
        (0, _) => None,
        (k, Some(sizes)) if sizes.len() == k && sizes.chunks(group).all(|c| c.iter().any(|&s| s > 0)) => {
            Some(sizes)
        }
        (k, Some(sizes)) if sizes.len() == k => {
            return Err(Error::bad_data(
                run.info_path(),
                format!("cluster_sizes gives a class no image in any of its clusters: {sizes:?}"),
            ));
        }
        (k, _) => {
            return Err(Error::bad_data(
                run.info_path(),
                format!(
                    "lacks the sizes of the run's {k} clusters (cluster_sizes; data.clusters = {}, \
                     model.clusters_per_class = {})",
                    config.data.clusters, config.model.clusters_per_class
                ),
            ));
        }
    })
}

/// A latent walk's frames: rows of latent vectors and the ids each asks for, and how many frames
/// make one row of its picture.
pub struct Walk {
    pub noise: Vec<f32>,
    pub labels: Vec<u8>,
    pub frames_per_row: usize,
}

/// Spherical interpolation from `a` to `b` at `t` in [0, 1] (Shoemake 1985; White 2016 for GAN
/// latents): along the great circle between them, so the points between keep the length N(0, 1)
/// noise of this size has, where a straight line would pass through shorter, atypical vectors;
/// a straight line where the two are (nearly) parallel.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let cos = (dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    let t = f64::from(t);
    let (wa, wb) = if omega.sin().abs() < 1e-6 {
        (1.0 - t, t)
    } else {
        (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
    };
    a.iter().zip(b).map(|(x, y)| (wa * f64::from(*x) + wb * f64::from(*y)) as f32).collect()
}

/// A walk through the latents of `seeds` in turn, `steps` frames from each to the next (the last
/// seed's own frame closing it), each segment a row; every frame asks for `class` (a conditional
/// generator without one: its first class).
pub fn seed_walk(g: &LoadedGenerator, seeds: &[u64], steps: usize, class: Option<usize>) -> Result<Walk> {
    if seeds.len() < 2 || !(2..=64).contains(&steps) || seeds.len() > 65 {
        return Err(Error::usage("--walk", "give 2 to 65 seeds (--walk 0,1,2) and --steps of 2 to 64"));
    }
    let label = g.asked_classes(1, class.or((g.classes() > 0).then_some(0)))?;
    let mut noise = Vec::new();
    for pair in seeds.windows(2) {
        let (a, b) = (g.latent_of(pair[0]), g.latent_of(pair[1]));
        for k in 0..steps {
            noise.extend(slerp(&a, &b, k as f32 / (steps - 1) as f32));
        }
    }
    let frames = (seeds.len() - 1) * steps;
    Ok(Walk { noise, labels: label.repeat(if label.is_empty() { 0 } else { frames }), frames_per_row: steps })
}

/// A conditional generator's classes in turn, the noise of `seed` fixed: what the class alone
/// changes.
pub fn class_walk(g: &LoadedGenerator, seed: u64) -> Result<Walk> {
    if g.classes() == 0 {
        return Err(Error::usage("--walk-classes", format!("{} is not conditional", g.source.display())));
    }
    let z = g.latent_of(seed);
    let mut labels = Vec::new();
    for c in 0..g.classes() {
        labels.extend(g.asked_classes(1, Some(c))?);
    }
    Ok(Walk { noise: z.repeat(g.classes()), labels, frames_per_row: g.classes() })
}

/// Most images `gantry sample --format png|npy` draws (written slice by slice: memory stays that of
/// one slice).
pub const MAX_SAMPLES: usize = 1_000_000;

/// Write `n` images of `g` (noise seeded by `seed`, `class` as in [`LoadedGenerator::generate_slices`])
/// as single PNG files `000000.png`, `000001.png`, ... into the folder `dir` (made if missing), as
/// torch-fidelity and clean-fid read them; each written beside and renamed into place.
pub fn write_png_folder(
    g: &LoadedGenerator,
    n: usize,
    seed: u64,
    class: Option<usize>,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).at("create", dir)?;
    let (h, w, c) = (g.rows, g.cols, g.channels);
    let digits = n.saturating_sub(1).to_string().len().max(6);
    let mut k = 0usize;
    g.generate_slices(n, seed, class, &mut |slice| {
        for image in slice.chunks_exact(h * w * c) {
            let path = dir.join(format!("{k:0digits$}.png"));
            let pixels = crate::grid::interleaved(image, h, w, c);
            let png = if c == 3 {
                crate::grid::encode_rgb_png(&pixels, w, h)
            } else {
                crate::grid::encode_gray_png(&pixels, w, h)
            }
            .map_err(|e| Error::Render { path: path.clone(), problem: e.to_string() })?;
            let partial = crate::durable::partial_path(&path);
            std::fs::write(&partial, &png).at("write", &partial)?;
            std::fs::rename(&partial, &path).at("rename into place", &path)?;
            k += 1;
        }
        Ok(())
    })
}

/// Write `n` images of `g` as one `.npy` file at `path`: uint8 of shape `[n, h, w, c]` (numpy's
/// and PIL's layout; `np.load` reads it, and so does `gantry eval --samples`), streamed slice by
/// slice into `NAME.partial`, synced, and renamed into place (all or nothing).
pub fn write_npy(g: &LoadedGenerator, n: usize, seed: u64, class: Option<usize>, path: &Path) -> Result<()> {
    use npyz::WriterBuilder;
    let partial = crate::durable::partial_path(path);
    let result = (|| {
        let file = std::fs::File::create(&partial).at("create", &partial)?;
        let (h, w, c) = (g.rows, g.cols, g.channels);
        let shape = [n as u64, h as u64, w as u64, c as u64];
        let mut writer = npyz::WriteOptions::<u8>::new()
            .default_dtype()
            .shape(&shape)
            .writer(std::io::BufWriter::new(file))
            .begin_nd()
            .at("write", &partial)?;
        g.generate_slices(n, seed, class, &mut |slice| {
            for image in slice.chunks_exact(h * w * c) {
                writer.extend(crate::grid::interleaved(image, h, w, c)).at("write", &partial)?;
            }
            Ok(())
        })?;
        writer.finish().at("write", &partial)?;
        std::fs::File::open(&partial).and_then(|f| f.sync_all()).at("sync", &partial)?;
        std::fs::rename(&partial, path).at("rename into place", path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The default file of `gantry sample` on a run: `RUN/sample-seedS.png`.
pub fn default_out(run: &RunDir, seed: u64) -> PathBuf {
    run.root().join(format!("{}{seed}.png", crate::run_dir::SAMPLE_PREFIX))
}

#[cfg(test)]
mod walk_tests {
    use super::*;

    #[test]
    fn slerp_keeps_the_length_where_a_straight_line_would_shrink_it() {
        let (a, b) = (vec![1.0f32, 0.0], vec![0.0f32, 1.0]);
        assert_eq!(slerp(&a, &b, 0.0), a);
        let end = slerp(&a, &b, 1.0);
        assert!((end[0] - 0.0).abs() < 1e-6 && (end[1] - 1.0).abs() < 1e-6, "{end:?}");
        let mid = slerp(&a, &b, 0.5);
        let length = (mid[0] * mid[0] + mid[1] * mid[1]).sqrt();
        assert!((length - 1.0).abs() < 1e-6, "{length}");
        // Parallel vectors: a straight line.
        assert_eq!(slerp(&[2.0, 0.0], &[4.0, 0.0], 0.5), vec![3.0, 0.0]);
    }
}
