//! The command-line flags that set config keys, each defined once: its name, help and value type
//! here, with the key it sets. A flag is lowered to its key ([`Overrides`]) and goes through the
//! same path as `--set KEY=VALUE`, so a named flag and its `--set` spelling cannot disagree.
//! `train` takes [`NewRunSettings`] and [`RunSettings`]; `resume` (what a continued run may
//! change) only [`RunSettings`]; `sample`, `eval` and `bench` take [`DeviceFlag`].

use std::path::PathBuf;

use crate::config::{Dataset, Loss, Overrides};
use crate::device::DeviceChoice;
use crate::error::Result;

/// Defines a struct of optional flags, each `field: Type => "section.key"`, with
/// `lowered()` (the flags given as (key, value), in order) and `given()` (their names). Flattened
/// structs of the same kind follow `flatten`.
macro_rules! setting_flags {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty => $key:literal, )*
        }
        $( flatten { $( $sub:ident : $subty:ty ),* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            $( $( #[command(flatten)] pub $sub: $subty, )* )?
        }

        impl $name {
            /// The flags given, lowered to their config keys, in order.
            pub fn lowered(&self) -> Result<Overrides> {
                let mut o = Overrides::default();
                $( if let Some(v) = &self.$field { o = o.with($key, v)?; } )*
                $( $( o.named.extend(self.$sub.lowered()?.named); )* )?
                Ok(o)
            }

            /// The flags given, as the command line spells them.
            pub fn given(&self) -> Vec<String> {
                let mut names = Vec::new();
                $( if self.$field.is_some() { names.push(format!("--{}", stringify!($field).replace('_', "-"))); } )*
                $( $( names.extend(self.$sub.given()); )* )?
                names
            }
        }
    };
}

setting_flags! {
    /// Where the tensors live (train, resume, sample, eval, bench).
    pub struct DeviceFlag {
        /// Compute device: cpu, or in a build with the `gpu` feature a wgpu adapter: wgpu (the best
        /// one), wgpu:discrete:N, wgpu:integrated:N, wgpu:virtual:N, wgpu:cpu (a software driver);
        /// `gantry devices` lists them [config: train.device, default cpu].
        #[arg(long, value_name = "DEVICE")]
        device: DeviceChoice => "train.device",
    }
}

setting_flags! {
    /// The settings `train` and `resume` share: what a continued run may change.
    pub struct RunSettings {
        /// The data's folder: MNIST's four IDX files (.gz or raw), CIFAR-10's batches
        /// (`--dataset cifar10`), or your images (`--dataset folder`, class sub-folders as labels).
        /// Default: the run's own data (resume), then $GANTRY_DATA, then the cache (MNIST-format only).
        #[arg(long, value_name = "DIR")]
        data: PathBuf => "data.dir",
        /// Number of training iterations [config: train.iterations, default 30000].
        #[arg(long, value_name = "N")]
        iterations: usize => "train.iterations",
        /// Write a sample grid every N iterations [config: output.sample_interval, default 200].
        #[arg(long, value_name = "N")]
        sample_interval: usize => "output.sample_interval",
        /// Compute threads; 0 = one per core (resume: keep the original number for a bit-identical
        /// continuation) [config: train.threads, default 0].
        #[arg(long, value_name = "N")]
        threads: usize => "train.threads",
        /// Judge sample quality every N iterations (FID, precision/recall... into eval.csv); 0 = off
        /// [config: eval.every, default 2000].
        #[arg(long, value_name = "N")]
        eval_every: usize => "eval.every",
    }
    flatten { device: DeviceFlag }
}

setting_flags! {
    /// The settings only a new run takes (a resumed run keeps its own).
    pub struct NewRunSettings {
        /// Data set to train on.
        #[arg(long, value_enum)]
        dataset: Dataset => "data.dataset",
        /// The objective [config: train.loss, default ns]. wgan-gp, r1 and dragan are refused: they
        /// need second derivatives.
        #[arg(long, value_enum)]
        loss: Loss => "train.loss",
        /// Images per batch [config: train.batch_size, default 32].
        #[arg(long, value_name = "N")]
        batch_size: usize => "train.batch_size",
        /// Seed of every random stream [config: train.seed, default 0].
        #[arg(long, value_name = "N")]
        seed: u64 => "train.seed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A named flag and its `--set` spelling set the same key to the same value.
    #[test]
    fn each_flag_sets_its_key_as_set_would() {
        let flags = NewRunSettings {
            dataset: Some(Dataset::FashionMnist),
            loss: Some(Loss::Hinge),
            batch_size: Some(64),
            seed: Some(9),
        };
        assert_eq!(flags.given(), ["--dataset", "--loss", "--batch-size", "--seed"]);
        let named = Config::default().with_overrides(&flags.lowered().unwrap()).unwrap();
        let set = Config::default()
            .with_settings(&[
                "data.dataset=fashion-mnist".into(),
                "train.loss=hinge".into(),
                "train.batch_size=64".into(),
                "train.seed=9".into(),
            ])
            .unwrap();
        assert_eq!(named.to_toml(), set.to_toml());
        let run = RunSettings { data: Some("/data/mnist".into()), iterations: Some(5), ..Default::default() };
        let o = run.lowered().unwrap();
        assert_eq!(o.data_dir(), Some(PathBuf::from("/data/mnist")));
        let c = Config::default().with_overrides(&o).unwrap();
        assert_eq!((c.train.iterations, c.data.dir), (5, Some(PathBuf::from("/data/mnist"))));
    }

    /// A value out of range is refused by the config's own check, naming the key.
    #[test]
    fn a_flag_out_of_range_is_refused_naming_its_key() {
        let run = RunSettings { threads: Some(100_000), ..Default::default() };
        let c = Config::default().with_overrides(&run.lowered().unwrap()).unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("train.threads"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}
