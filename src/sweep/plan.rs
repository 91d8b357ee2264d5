//! Planning a sweep, a pure function of its spec: the spec file's format, its checks (each refusal
//! names the key), and the runs it asks for, in the order array tasks are numbered.
//!
//! ```toml
//! name = "order"                  # default: the spec file's name
//! combine = "grid"                # or "zip": the i-th value of every axis together
//! seeds = [0, 1, 2, 3, 4]         # every combination once per seed (train.seed); default [0]
//! config = "base.toml"            # optional gantry config the runs start from (relative to this file)
//!
//! [base]                          # config keys set in every run (over `config`)
//! train.iterations = 5000
//!
//! [axes]                          # config keys and the values to try
//! "train.order" = ["d-first", "g-first"]
//! ```
//!
//! Runs are numbered combination by combination (axes in key order, the last key varying
//! fastest), each combination's seeds in the order given; a run's folder is named from its axis
//! values and seed (`order=g-first_seed=3`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};

/// Most runs one sweep may plan.
pub const MAX_RUNS: usize = 10_000;

/// How the axes combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Combine {
    /// Every value of every axis with every value of the others.
    #[default]
    Grid,
    /// The i-th values of all axes together (axes of equal length).
    Zip,
}

/// The spec file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Option<String>,
    #[serde(default)]
    combine: Combine,
    seeds: Option<Vec<u64>>,
    config: Option<PathBuf>,
    #[serde(default)]
    base: toml::Table,
    #[serde(default)]
    axes: toml::Table,
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// Its array-task index (0-based).
    pub index: usize,
    /// Its folder's name in the sweep folder.
    pub name: String,
    /// The axis keys and the values this run takes, as written in the folder name.
    pub values: Vec<(String, String)>,
    pub seed: u64,
    /// The whole, validated configuration of the run.
    pub config: Config,
}

/// Everything a sweep will run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    /// The axis keys, in the order runs are numbered.
    pub axes: Vec<String>,
    pub combine: Combine,
    pub seeds: Vec<u64>,
    pub runs: Vec<PlannedRun>,
    /// The base configuration every run starts from (without its seed).
    base: toml::Table,
    /// Each axis with its values.
    axis_values: Vec<(String, Vec<toml::Value>)>,
}

impl Plan {
    /// Run `index` (an array task's number), or the error naming the range.
    pub fn task(&self, index: usize) -> Result<&PlannedRun> {
        self.runs.get(index).ok_or_else(|| {
            Error::usage(
                "--task",
                format!(
                    "the sweep `{}` has runs 0 to {}, found {index}",
                    self.name,
                    self.runs.len().saturating_sub(1)
                ),
            )
        })
    }

    /// The spec as one self-contained file (the base written out in full, no `config = ...` to
    /// find): what a sweep folder keeps as `sweep.toml`, and what its tasks plan from. Planning
    /// it again gives this same plan.
    pub fn resolved_spec(&self) -> String {
        let mut doc = toml::Table::new();
        doc.insert("name".into(), toml::Value::String(self.name.clone()));
        let combine = match self.combine {
            Combine::Grid => "grid",
            Combine::Zip => "zip",
        };
        doc.insert("combine".into(), toml::Value::String(combine.into()));
        doc.insert(
            "seeds".into(),
            toml::Value::Array(self.seeds.iter().map(|&s| toml::Value::Integer(s as i64)).collect()),
        );
        doc.insert("base".into(), toml::Value::Table(self.base.clone()));
        let axes: toml::Table =
            self.axis_values.iter().map(|(k, v)| (k.clone(), toml::Value::Array(v.clone()))).collect();
        doc.insert("axes".into(), toml::Value::Table(axes));
        format!(
            "# gantry sweep (resolved: the spec with its base written out in full)\n\n{}",
            toml::to_string_pretty(&doc).expect("a TOML table serializes")
        )
    }

    /// Read and plan the spec file at `path` (a config it names is read relative to it).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |problem: String| Error::Sweep { path: path.to_path_buf(), problem };
        let bytes = crate::durable::read_limited(path, crate::config::MAX_CONFIG_BYTES)
            .map_err(|e| bad(format!("cannot be read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text".into()))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let base_dir = path.parent().unwrap_or(Path::new("."));
        plan(&text, &stem, base_dir).map_err(|e| match e {
            // A spec's error may quote its line or a value: never a 200 KB one back to the terminal.
            SpecError::Spec(problem) => bad(crate::config::cut_long_lines(&problem)),
            SpecError::Other(e) => e,
        })
    }
}

/// A problem of the spec itself (reported as the spec file's) or of a file it names.
#[derive(Debug)]
pub enum SpecError {
    Spec(String),
    Other(Error),
}

impl From<String> for SpecError {
    fn from(s: String) -> Self {
        SpecError::Spec(s)
    }
}

/// Plan the spec `text`; `stem` is the default sweep name, `base_dir` where a `config = ...` is
/// found.
pub fn plan(text: &str, stem: &str, base_dir: &Path) -> std::result::Result<Plan, SpecError> {
    let spec: SpecFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    let name = spec.name.clone().unwrap_or_else(|| stem.to_string());
    check_name(&name)?;
    let seeds = spec.seeds.clone().unwrap_or_else(|| vec![0]);
    if seeds.is_empty() {
        return Err("seeds: the list is empty (leave it out for the one seed 0)".to_string().into());
    }
    if seeds.iter().collect::<BTreeSet<_>>().len() != seeds.len() {
        return Err(format!("seeds: {seeds:?} repeats a seed").into());
    }

    // The base: the defaults, then the named config file, then [base].
    let mut base = match &spec.config {
        Some(file) => {
            let path = base_dir.join(file);
            let config = Config::from_file(&path).map_err(SpecError::Other)?;
            to_table(&config)
        }
        None => to_table(&Config::default()),
    };
    for (key, value) in flatten(&spec.base) {
        if key == "train.seed" {
            return Err("base: train.seed is set by `seeds`, not in [base]".to_string().into());
        }
        set_dotted(&mut base, "base", &key, value.clone())?;
    }
    check_config(&base, "[base]")?;

    let axes = read_axes(&spec, &base)?;
    // Counted before anything is built: three axes of 1,000 values are a billion runs.
    let total = count_runs(&axes, spec.combine, seeds.len());
    if total > MAX_RUNS as u128 {
        return Err(format!("plans {total} runs; a sweep holds at most {MAX_RUNS}").into());
    }
    let total = total as usize;
    let combinations = combinations(&axes, spec.combine);
    let runs = build_runs(&base, &combinations, &seeds, total)?;
    if let Some(toml::Value::Table(train)) = base.get_mut("train") {
        train.remove("seed");
    }
    Ok(Plan {
        name,
        axes: axes.iter().map(|(k, _)| k.clone()).collect(),
        combine: spec.combine,
        seeds,
        runs,
        base,
        axis_values: axes,
    })
}

/// The spec's axes: each a non-empty list of values (train.seed is `seeds`' alone), each value
/// valid on the base alone; zipped axes of equal length.
fn read_axes(
    spec: &SpecFile,
    base: &toml::Table,
) -> std::result::Result<Vec<(String, Vec<toml::Value>)>, SpecError> {
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for (key, value) in flatten(&spec.axes) {
        if key == "train.seed" {
            return Err("axes: train.seed is an axis of its own: list the seeds in `seeds`"
                .to_string()
                .into());
        }
        let toml::Value::Array(values) = value else {
            return Err(format!("axes: `{key}` must be a list of values, found {value}").into());
        };
        if values.is_empty() {
            return Err(format!("axes: `{key}` is an empty list").into());
        }
        for v in values {
            let mut one = base.clone();
            set_dotted(&mut one, &format!("axes.{key}"), &key, v.clone())?;
            check_config(&one, &format!("axes: `{key}` = {v}"))?;
        }
        axes.push((key.clone(), values.clone()));
    }
    if spec.combine == Combine::Zip
        && let Some((first, first_values)) = axes.first()
        && let Some((other, other_values)) = axes.iter().find(|(_, v)| v.len() != first_values.len())
    {
        return Err(format!(
            "axes: combine = \"zip\" needs axes of equal length; `{first}` has {}, `{other}` has {}",
            first_values.len(),
            other_values.len()
        )
        .into());
    }

    Ok(axes)
}

/// Every run of the combinations, each with every seed, validated and named (two runs may not
/// share a folder name).
fn build_runs(
    base: &toml::Table,
    combinations: &[Vec<(String, toml::Value)>],
    seeds: &[u64],
    total: usize,
) -> std::result::Result<Vec<PlannedRun>, SpecError> {
    let mut runs = Vec::with_capacity(total);
    let mut names = BTreeSet::new();
    for combination in combinations {
        for &seed in seeds {
            let mut table = base.clone();
            let mut values = Vec::new();
            for (key, value) in combination {
                set_dotted(&mut table, key, key, value.clone())?;
                values.push((key.clone(), display_value(value)));
            }
            set_dotted(&mut table, "seeds", "train.seed", toml::Value::Integer(seed as i64))?;
            let name = run_name(&values, seed);
            let mut config = check_config(&table, &format!("run {name}"))?;
            config.validate().map_err(|e| format!("run {name}: {e}"))?;
            config.train.resolve_defaults();
            if !names.insert(name.clone()) {
                return Err(format!("two runs would share the folder name `{name}`; make the values differ in more than punctuation").into());
            }
            runs.push(PlannedRun { index: runs.len(), name, values, seed, config });
        }
    }
    Ok(runs)
}

/// Longest sweep name: it names a folder (`sweeps/<name>`), and file names stop at 255 bytes.
pub const MAX_NAME: usize = 100;

/// Longest run folder name; longer ones are cut and given a hash of the whole name
/// ([`run_name`]).
pub const MAX_RUN_NAME: usize = 200;

/// A sweep's name is one path component of safe characters: letters, digits, `.`, `_`, `+`, `-`,
/// at most [`MAX_NAME`] of them, and not `.` or `..` (which would name the current folder or the
/// one above it).
fn check_name(name: &str) -> std::result::Result<(), SpecError> {
    if name.is_empty() || sanitize(name) != name {
        return Err(format!(
            "name `{}`: use letters, digits, `.`, `_`, `+` and `-` only",
            name.chars().take(MAX_NAME).collect::<String>()
        )
        .into());
    }
    if name.bytes().all(|b| b == b'.') {
        return Err(format!("name `{name}`: names the current folder or one above it; choose a name").into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("name: {} characters, at most {MAX_NAME}", name.len()).into());
    }
    Ok(())
}

/// How many runs the axes and seeds plan, without building them (saturating, in u128).
fn count_runs(axes: &[(String, Vec<toml::Value>)], combine: Combine, seeds: usize) -> u128 {
    let combinations = match combine {
        Combine::Zip => axes.first().map_or(1, |(_, v)| v.len() as u128),
        Combine::Grid => axes.iter().fold(1u128, |n, (_, v)| n.saturating_mul(v.len() as u128)),
    };
    combinations.saturating_mul(seeds as u128)
}

/// The config as a TOML table (the form axes and [base] are written into).
fn to_table(config: &Config) -> toml::Table {
    config.to_table().expect("a spec's config holds no path that is not UTF-8 (it was read from TOML)")
}

/// Deserialize `table` as a config (unknown keys and wrong types refused), `what` naming it.
fn check_config(table: &toml::Table, what: &str) -> std::result::Result<Config, SpecError> {
    toml::Value::Table(table.clone())
        .try_into::<Config>()
        .map_err(|e| SpecError::Spec(format!("{what}: {}", e.to_string().trim_end())))
}

/// The leaves of a table as dotted keys: `[train] loss = "ns"` and `"train.loss" = "ns"` alike.
fn flatten(table: &toml::Table) -> Vec<(String, &toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::Table(inner) => {
                out.extend(flatten(inner).into_iter().map(|(ik, iv)| (format!("{k}.{ik}"), iv)))
            }
            _ => out.push((k.clone(), v)),
        }
    }
    out
}

/// Set `key` (dotted) in `table` ([`crate::config::set_dotted`]); `origin` names where the key
/// came from in errors.
fn set_dotted(
    table: &mut toml::Table,
    origin: &str,
    key: &str,
    value: toml::Value,
) -> std::result::Result<(), SpecError> {
    crate::config::set_dotted(table, key, value).map_err(|problem| format!("{origin}: {problem}").into())
}

/// Every combination of axis values, in run order.
fn combinations(axes: &[(String, Vec<toml::Value>)], combine: Combine) -> Vec<Vec<(String, toml::Value)>> {
    match combine {
        Combine::Zip => {
            let n = axes.first().map_or(1, |(_, v)| v.len());
            (0..n).map(|i| axes.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect()).collect()
        }
        Combine::Grid => {
            let mut out: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
            for (key, values) in axes {
                out = out
                    .into_iter()
                    .flat_map(|prefix| {
                        values.iter().map(move |v| {
                            let mut c = prefix.clone();
                            c.push((key.clone(), v.clone()));
                            c
                        })
                    })
                    .collect();
            }
            out
        }
    }
}

/// A value as it appears in a folder name: strings bare, lists joined with `x` (`[256, 512]` ->
/// `256x512`).
fn display_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => sanitize(s),
        toml::Value::Array(items) => items.iter().map(display_value).collect::<Vec<_>>().join("x"),
        other => sanitize(&other.to_string()),
    }
}

/// Keep letters, digits, `.`, `_`, `+` and `-`; anything else becomes `-`.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '-' }).collect()
}

/// `order=g-first_seed=3`: each axis by its last key segment (the whole key where two axes share
/// one), then the seed.
fn run_name(values: &[(String, String)], seed: u64) -> String {
    let short = |key: &str| key.rsplit('.').next().unwrap_or(key).to_string();
    let mut parts = Vec::new();
    for (key, value) in values {
        let clash = values.iter().filter(|(k, _)| short(k) == short(key)).count() > 1;
        let label = if clash { key.clone() } else { short(key) };
        parts.push(format!("{label}={value}"));
    }
    parts.push(format!("seed={seed}"));
    shorten(parts.join("_"))
}

/// A run folder name of at most [`MAX_RUN_NAME`] bytes: a longer one keeps its start and ends in
/// `~` and 16 hex digits of the SHA-256 of the whole name (the same name every time, and two long
/// names that share their start still differ). Names are ASCII ([`sanitize`]).
fn shorten(name: String) -> String {
    if name.len() <= MAX_RUN_NAME {
        return name;
    }
    let hash = crate::durable::sha256_hex(name.as_bytes());
    format!("{}~{}", &name[..MAX_RUN_NAME - 17], &hash[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(text: &str) -> std::result::Result<Plan, String> {
        plan(text, "spec", Path::new(".")).map_err(|e| match e {
            SpecError::Spec(s) => s,
            SpecError::Other(e) => e.to_string(),
        })
    }

    #[test]
    fn a_grid_crosses_the_axes_and_every_combination_gets_each_seed() {
        let p = plan_of(
            r#"
            seeds = [3, 1]
            [base]
            train.iterations = 500
            [axes]
            "train.order" = ["d-first", "g-first"]
            "train.loss" = ["ns", "hinge"]
            "#,
        )
        .unwrap();
        assert_eq!(p.name, "spec");
        assert_eq!(p.axes, ["train.loss", "train.order"]);
        let names: Vec<&str> = p.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "loss=ns_order=d-first_seed=3",
                "loss=ns_order=d-first_seed=1",
                "loss=ns_order=g-first_seed=3",
                "loss=ns_order=g-first_seed=1",
                "loss=hinge_order=d-first_seed=3",
                "loss=hinge_order=d-first_seed=1",
                "loss=hinge_order=g-first_seed=3",
                "loss=hinge_order=g-first_seed=1",
            ]
        );
        let r = &p.runs[6];
        assert_eq!((r.index, r.seed, r.config.train.seed), (6, 3, 3));
        assert_eq!(r.config.train.iterations, 500);
        assert_eq!(r.config.train.loss, crate::config::Loss::Hinge);
        assert_eq!(r.config.train.order, crate::config::UpdateOrder::GFirst);
    }

    #[test]
    fn zip_pairs_the_ith_values_and_lists_name_folders() {
        let p = plan_of(
            r#"
            combine = "zip"
            [axes]
            model.g_hidden = [[128, 256], [256, 512]]
            model.d_hidden = [[256], [512]]
            "#,
        )
        .unwrap();
        let names: Vec<&str> = p.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["d_hidden=256_g_hidden=128x256_seed=0", "d_hidden=512_g_hidden=256x512_seed=0"]);
        assert_eq!(p.runs[1].config.model.g_hidden, [256, 512]);
    }

    #[test]
    fn the_resolved_spec_plans_the_same_runs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("base.toml"), "[train]\niterations = 700\nloss = \"lsgan\"\n")
            .unwrap();
        let text = "config = \"base.toml\"\nseeds = [5, 6]\n[base]\noutput.sample_interval = 50\n[axes]\n\"train.d_steps\" = [1, 2]\n";
        let p = plan(text, "s", tmp.path()).map_err(|e| format!("{e:?}")).unwrap();
        assert_eq!(p.runs[0].config.train.iterations, 700);
        assert_eq!(p.runs[0].config.output.sample_interval, 50);
        // Planned again from elsewhere, without base.toml.
        let again = plan(&p.resolved_spec(), "other", Path::new("/nonexistent"))
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn no_axes_is_a_sweep_over_seeds() {
        let p = plan_of("seeds = [0, 1, 2]").unwrap();
        assert_eq!(p.runs.len(), 3);
        assert_eq!(p.runs[2].name, "seed=2");
        assert_eq!(p.runs[2].config.train.iterations, Config::default().train.iterations);
    }

    /// Each bad spec of the issue, refused before anything runs, naming the key.
    #[test]
    fn bad_specs_are_refused_naming_the_key() {
        let cases = [
            ("[axes]\n\"train.lossy\" = [\"ns\"]", "train.lossy"),
            ("[axes]\n\"train.loss\" = []", "train.loss"),
            ("[axes]\n\"train.batch_size\" = [\"big\"]", "train.batch_size"),
            ("[axes]\n\"train.loss\" = \"ns\"", "train.loss"),
            (
                "combine = \"zip\"\n[axes]\n\"train.loss\" = [\"ns\", \"hinge\"]\n\"train.d_steps\" = [1]",
                "train.d_steps",
            ),
            ("[axes]\n\"train.batch_size\" = [32, 0]", "train.batch_size"),
            ("[axes]\n\"train.seed\" = [1, 2]", "train.seed"),
            ("[base]\ntrain.seed = 4", "train.seed"),
            ("[base]\ntrain.iteratons = 4", "iteratons"),
            ("seeds = []", "seeds"),
            ("seeds = [1, 1]", "seeds"),
            ("[axes]\ntrain = [1]", "train"),
            ("sweeps = 3", "sweeps"),
            // A combination that fails validation: label smoothing with hinge.
            (
                "[axes]\n\"train.loss\" = [\"ns\", \"hinge\"]\n\"train.real_label\" = [0.9]",
                "train.real_label",
            ),
        ];
        for (text, key) in cases {
            let err = plan_of(text).expect_err(text);
            assert!(err.contains(key), "{text}\n-> {err}");
        }
    }

    #[test]
    fn a_sweep_of_a_billion_runs_is_counted_before_it_is_built() {
        let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let axis = format!("[{}]", values.join(", "));
        let text = format!(
            "[axes]\n\"train.iterations\" = {axis}\n\"output.sample_interval\" = {axis}\n\"eval.every\" = {axis}\n"
        );
        let err = plan_of(&text).unwrap_err();
        assert!(err.contains("1000000000 runs"), "{err}");
        assert_eq!(count_runs(&[], Combine::Grid, 3), 3);
    }

    #[test]
    fn a_sweep_named_dot_or_dot_dot_is_refused() {
        for name in [".", "..", "...", ""] {
            let err = plan_of(&format!("name = \"{name}\"")).unwrap_err();
            assert!(err.contains("name"), "{name}: {err}");
        }
        let long = "a".repeat(MAX_NAME + 1);
        assert!(plan_of(&format!("name = \"{long}\"")).unwrap_err().contains("at most"));
        assert!(plan_of("name = \"ok.v2\"").is_ok());
    }

    #[test]
    fn long_run_names_are_shortened_deterministically_before_any_folder_is_made() {
        let long = "x".repeat(300);
        let widths = |n: usize| vec!["65536"; n].join(", ");
        let text = format!(
            "[axes]\n\"model.g_hidden\" = [[{}], [{}]]\n\"model.d_hidden\" = [[{}]]\n",
            widths(30),
            widths(31),
            widths(30)
        );
        let p = plan_of(&text).unwrap();
        for r in &p.runs {
            assert!(r.name.len() <= MAX_RUN_NAME, "{} bytes", r.name.len());
        }
        assert_ne!(p.runs[0].name, p.runs[1].name);
        assert_eq!(plan_of(&text).unwrap().runs[0].name, p.runs[0].name, "the same name every time");
        assert_eq!(shorten(long.clone()), shorten(long));
    }

    #[test]
    fn a_spec_error_never_echoes_a_long_line() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join("s.toml");
        std::fs::write(&spec, format!("name = \"a\" {}\n", "x".repeat(200_000))).unwrap();
        let err = Plan::from_file(&spec).unwrap_err().to_string();
        assert!(err.len() < 2000, "{} bytes", err.len());
    }

    #[test]
    fn values_that_name_the_same_folder_are_refused() {
        let err = plan_of("[axes]\n\"train.lr_d\" = [0.5, 0.50]").unwrap_err();
        assert!(err.contains("share the folder name"), "{err}");
    }
}
