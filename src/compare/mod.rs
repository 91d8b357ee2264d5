//! `gantry compare`: several runs side by side. Runs are gathered from run folders, sweep folders
//! and folders of runs, grouped by configuration (runs that differ only in their seed form one
//! group; the keys that differ between groups name them), and summarised per group: each
//! metric's plateau (its mean over the last part of the run) and the final judge scores, as mean ±
//! std with a 95% confidence interval over seeds ([`stats`]), and every group's difference from
//! the first with Welch's interval. Written as a text table, `compare.csv` (one row per group and
//! metric), `compare-runs.csv` (one row per run), `compare.json`, `compare-curves.{png,svg}` (the
//! runs' curves overlaid, raw and smoothed, and FID over time) and `compare.html` (all of it in one
//! file).

mod plot;
pub mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::durable::write_atomic;
use crate::error::{Error, IoContext, Result};
use crate::metrics::quality::{self, QualityRecord};
use crate::metrics::{self, IterationRecord};
use crate::run_dir::{RunDir, RunInfo};
use crate::sweep::local::SweepState;
use stats::{Difference, Summary};

/// One run, as read for a comparison.
#[derive(Debug, Clone)]
pub struct RunData {
    pub name: String,
    pub path: PathBuf,
    pub config: Config,
    pub records: Vec<IterationRecord>,
    pub quality: Vec<QualityRecord>,
    /// Wall time of its training loop, seconds (run.json).
    pub wall_seconds: Option<f64>,
}

impl RunData {
    pub fn read(path: &Path, name: String) -> Result<Self> {
        let run = RunDir::open(path)?;
        let config = Config::from_file(&run.config())?;
        let records = metrics::read_csv(&run.metrics_csv())?;
        let quality = quality::read(&run.eval_csv())?;
        let wall_seconds = RunInfo::read(&run).ok().map(|i| i.wall_seconds);
        Ok(Self { name, path: path.to_path_buf(), config, records, quality, wall_seconds })
    }

    /// Whether it reached its last iteration.
    pub fn complete(&self) -> bool {
        self.records.len() == self.config.train.iterations
    }

    /// Each metric of the comparison for this run: the plateau means of the last `tail` of the
    /// iterations, then the final judge scores (if it was judged at its last iteration) and the
    /// wall time.
    pub fn values(&self, tail: f64) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = if self.records.is_empty() {
            Vec::new()
        } else {
            metrics::tail_means(&self.records, tail).into_iter().map(|(n, v)| (n.to_string(), v)).collect()
        };
        if let Some(q) = self.quality.last().filter(|q| q.iteration == self.records.len()) {
            out.extend([
                ("fid".to_string(), q.fid),
                ("kid".to_string(), q.kid),
                ("precision".to_string(), q.precision),
                ("recall".to_string(), q.recall),
                ("separability".to_string(), q.separability),
            ]);
        }
        if let Some(w) = self.wall_seconds {
            out.push(("wall_s".to_string(), w));
        }
        out
    }
}

/// Runs that share a configuration but for their seed.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `order=g-first` (the keys that differ between groups), or `all`.
    pub label: String,
    /// Those keys and this group's values.
    pub values: BTreeMap<String, String>,
    /// Indices into the runs.
    pub runs: Vec<usize>,
}

/// Gather the runs under `paths`: a sweep folder's runs (those that exist), a run folder, or the
/// run folders inside a folder.
pub fn gather(paths: &[PathBuf]) -> Result<Vec<RunData>> {
    let mut runs = Vec::new();
    for path in paths {
        if path.join(crate::sweep::local::STATE_FILE).is_file() {
            let state = SweepState::read(path)?;
            for r in &state.runs {
                let folder = path.join(&r.name);
                let run = RunDir::from_path(&folder);
                if run.config().is_file() && run.metrics_csv().is_file() {
                    runs.push(RunData::read(&folder, r.name.clone())?);
                }
            }
        } else if path.join(crate::run_dir::CONFIG).is_file() {
            let name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| ".".into());
            runs.push(RunData::read(path, name)?);
        } else if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .at("list", path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join(crate::run_dir::CONFIG).is_file())
                .collect();
            found.sort();
            for p in found {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                runs.push(RunData::read(&p, name)?);
            }
        } else {
            return Err(Error::RunDir { path: path.clone(), problem: "does not exist".into() });
        }
    }
    if runs.is_empty() {
        return Err(Error::RunDir {
            path: paths.first().cloned().unwrap_or_default(),
            problem: "holds no runs to compare (no run folders with metrics)".into(),
        });
    }
    Ok(runs)
}

/// Group runs by configuration, seeds aside; groups in the order their first run came.
pub fn group(runs: &[RunData]) -> Vec<Group> {
    let key = |c: &Config| {
        let mut settings = c.run_settings();
        settings.remove("train.seed");
        settings
    };
    let mut groups: Vec<(BTreeMap<String, String>, Vec<usize>)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let k = key(&r.config);
        match groups.iter_mut().find(|(gk, _)| *gk == k) {
            Some((_, members)) => members.push(i),
            None => groups.push((k, vec![i])),
        }
    }
    // The keys that tell the groups apart, among those chosen (not implied by another key).
    let chosen: Vec<BTreeMap<String, String>> =
        groups.iter().map(|(_, members)| runs[members[0]].config.chosen_settings()).collect();
    let mut differing: Vec<String> = Vec::new();
    for a in &chosen {
        for b in &chosen {
            differing.extend(crate::config::differing_keys(a, b));
        }
    }
    differing.retain(|k| k != "train.seed");
    differing.sort();
    differing.dedup();
    let short = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    groups
        .into_iter()
        .zip(chosen)
        .map(|((_, runs), k)| {
            let values: BTreeMap<String, String> = differing
                .iter()
                .map(|d| {
                    (
                        d.clone(),
                        k.get(d).cloned().unwrap_or_else(|| "(default)".into()).trim_matches('"').to_string(),
                    )
                })
                .collect();
            let label = if values.is_empty() {
                "all".to_string()
            } else {
                values.iter().map(|(k, v)| format!("{}={v}", short(k))).collect::<Vec<_>>().join(",")
            };
            Group { label, values, runs }
        })
        .collect()
}

/// One metric of one group.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub group: String,
    pub metric: String,
    #[serde(flatten)]
    pub summary: Summary,
    /// This group minus the first group (Welch), for every group after the first.
    pub vs_first: Option<Difference>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub tail: f64,
    pub groups: Vec<Group>,
    pub run_names: Vec<String>,
    /// Each run's metric values.
    pub run_values: Vec<BTreeMap<String, f64>>,
    pub rows: Vec<Row>,
    /// The objectives (`train.loss`) the runs train, each once, in run order.
    pub objectives: Vec<String>,
}

/// Summarise grouped runs (a pure function of what was read).
pub fn compare(runs: &[RunData], tail: f64) -> Comparison {
    let groups = group(runs);
    let values: Vec<Vec<(String, f64)>> = runs.iter().map(|r| r.values(tail)).collect();
    // Metrics in a fixed order: the plateau's, then the judge's, then wall time.
    let mut metric_names: Vec<String> = Vec::new();
    for (name, _) in values.iter().flatten() {
        if !metric_names.contains(name) {
            metric_names.push(name.clone());
        }
    }
    let run_values: Vec<BTreeMap<String, f64>> =
        values.into_iter().map(|v| v.into_iter().collect()).collect();
    let mut rows = Vec::new();
    for metric in &metric_names {
        let summary_of = |g: &Group| {
            let xs: Vec<f64> = g.runs.iter().filter_map(|&i| run_values[i].get(metric).copied()).collect();
            stats::summarize(&xs)
        };
        let first = groups.first().map(summary_of);
        for (gi, g) in groups.iter().enumerate() {
            let summary = summary_of(g);
            let vs_first =
                if gi == 0 { None } else { first.as_ref().and_then(|f| stats::welch(f, &summary)) };
            rows.push(Row { group: g.label.clone(), metric: metric.clone(), summary, vs_first });
        }
    }
    let mut objectives: Vec<String> = Vec::new();
    for name in runs.iter().map(|r| r.config.train.loss.name().to_string()) {
        if !objectives.contains(&name) {
            objectives.push(name);
        }
    }
    let run_names = runs.iter().map(|r| r.name.clone()).collect();
    Comparison { tail, groups, run_names, run_values, rows, objectives }
}

impl Comparison {
    /// The text table: one line per metric, a column per group (mean ± std [95% CI], n), and
    /// each later group's difference from the first.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} runs in {} groups; plateau = mean over the last {:.0}% of each run's iterations\n",
            self.run_names.len(),
            self.groups.len(),
            self.tail * 100.0
        );
        for (i, g) in self.groups.iter().enumerate() {
            s.push_str(&format!("  [{}] {} ({} runs)\n", i + 1, g.label, g.runs.len()));
        }
        let metrics: Vec<&String> = {
            let mut m: Vec<&String> = Vec::new();
            for r in &self.rows {
                if !m.contains(&&r.metric) {
                    m.push(&r.metric);
                }
            }
            m
        };
        let mut header = format!("{:<13}", "metric");
        for i in 0..self.groups.len() {
            header.push_str(&format!("  {:<30}", format!("[{}] mean ± std [95% CI]", i + 1)));
        }
        for i in 1..self.groups.len() {
            header.push_str(&format!("  {:<22}", format!("[{}]-[1] (Welch 95%)", i + 1)));
        }
        s.push_str(&header);
        s.push('\n');
        for m in metrics {
            let mut line = format!("{m:<13}");
            let rows: Vec<&Row> = self.rows.iter().filter(|r| &r.metric == m).collect();
            for r in &rows {
                line.push_str(&format!("  {:<30}", cell(&r.summary)));
            }
            for r in rows.iter().skip(1) {
                let d = r.vs_first.map_or("-".to_string(), |d| {
                    format!("{}{:+.4} ± {:.4}", if d.excludes_zero() { "*" } else { " " }, d.diff, d.ci95)
                });
                line.push_str(&format!("  {d:<22}"));
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        if self.rows.iter().any(|r| r.vs_first.is_some_and(|d| d.excludes_zero())) {
            s.push_str("* the 95% interval of the difference excludes 0\n");
        }
        s
    }

    /// Sentences for the differences whose interval excludes 0 ("[2] order=g-first lowers acc
    /// by 0.0200 ± 0.0100 against [1] order=d-first"), the judge's scores first, then D's
    /// accuracy, then the rest. Where the groups train different objectives their losses and D's
    /// outputs are on different scales: those differences are left out, and the first sentence
    /// says so.
    pub fn findings(&self) -> Vec<String> {
        let first = self.groups.first().map(|g| g.label.clone()).unwrap_or_default();
        let mixed = self.objectives.len() > 1;
        let mut found: Vec<(u8, String)> = self
            .rows
            .iter()
            .filter(|r| !(mixed && on_the_objectives_scale(&r.metric)))
            .filter_map(|r| {
                let d = r.vs_first?;
                d.excludes_zero().then(|| {
                    let sentence = format!(
                        "{} {} {} by {:.4} ± {:.4} (95% CI, Welch) against {first}",
                        r.group,
                        if d.diff < 0.0 { "lowers" } else { "raises" },
                        r.metric,
                        d.diff.abs(),
                        d.ci95
                    );
                    (finding_rank(&r.metric), sentence)
                })
            })
            .collect();
        found.sort_by_key(|(rank, _)| *rank);
        let mut out: Vec<String> = Vec::new();
        if mixed {
            out.push(format!(
                "the groups train different objectives ({}): their losses and D's outputs are on different \
                 scales, so d_loss*, g_loss and d_out* are not compared; the judge's scores and D's accuracy are",
                self.objectives.join(", ")
            ));
        }
        out.extend(found.into_iter().map(|(_, sentence)| sentence));
        out
    }

    /// `compare.csv`: group, its values, metric, n, mean, std, the interval's ends, the difference
    /// from the first group and its interval.
    pub fn csv(&self) -> String {
        let keys: Vec<String> =
            self.groups.first().map(|g| g.values.keys().cloned().collect()).unwrap_or_default();
        let mut s = String::from("group");
        for k in &keys {
            s.push(',');
            s.push_str(k);
        }
        s.push_str(",metric,n,mean,std,ci95_low,ci95_high,diff_vs_first,diff_ci95\n");
        for r in &self.rows {
            let g = self.groups.iter().find(|g| g.label == r.group).expect("a row's group exists");
            s.push_str(&csv_field(&r.group));
            for k in &keys {
                s.push(',');
                s.push_str(&csv_field(g.values.get(k).map(String::as_str).unwrap_or("")));
            }
            let (lo, hi) = r.summary.ci95.map_or((String::new(), String::new()), |h| {
                (num(r.summary.mean - h), num(r.summary.mean + h))
            });
            let (d, dc) = r.vs_first.map_or((String::new(), String::new()), |d| (num(d.diff), num(d.ci95)));
            s.push_str(&format!(
                ",{},{},{},{},{lo},{hi},{d},{dc}\n",
                r.metric,
                r.summary.n,
                num(r.summary.mean),
                num(r.summary.std)
            ));
        }
        s
    }

    /// `compare-runs.csv`: one row per run, its group and every metric value.
    pub fn runs_csv(&self) -> String {
        let mut metrics: Vec<&String> = Vec::new();
        for v in &self.run_values {
            for k in v.keys() {
                if !metrics.contains(&k) {
                    metrics.push(k);
                }
            }
        }
        let mut s = String::from("run,group");
        for m in &metrics {
            s.push(',');
            s.push_str(m);
        }
        s.push('\n');
        for (i, name) in self.run_names.iter().enumerate() {
            let group =
                self.groups.iter().find(|g| g.runs.contains(&i)).map(|g| g.label.as_str()).unwrap_or("");
            s.push_str(&format!("{},{}", csv_field(name), csv_field(group)));
            for m in &metrics {
                s.push(',');
                if let Some(v) = self.run_values[i].get(*m) {
                    s.push_str(&num(*v));
                }
            }
            s.push('\n');
        }
        s
    }
}

fn cell(s: &Summary) -> String {
    match s.ci95 {
        Some(h) => format!("{:.4} ± {:.4} [{:.4}, {:.4}]", s.mean, s.std, s.mean - h, s.mean + h),
        None if s.n == 1 => format!("{:.4} (1 run)", s.mean),
        None => "-".to_string(),
    }
}

/// A float without float noise (as eval.csv writes them).
fn num(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    format!("{}", (v * 1e9).round() / 1e9)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// What `gantry compare` wrote.
pub struct Written {
    pub table: String,
    pub files: Vec<PathBuf>,
}

/// `gantry compare PATHS`: gather, compare, write everything into `out` (default, for one sweep
/// folder: SWEEP/compare).
pub fn run(paths: &[PathBuf], out: Option<&Path>, tail: f64) -> Result<Written> {
    if !(tail > 0.0 && tail <= 1.0) {
        return Err(Error::usage("--tail", format!("a fraction in (0, 1], found {tail}")));
    }
    let out = match out {
        Some(o) => o.to_path_buf(),
        None if paths.len() == 1 && paths[0].join(crate::sweep::local::STATE_FILE).is_file() => {
            paths[0].join("compare")
        }
        None => {
            return Err(Error::usage(
                "--out",
                "name the folder to write into (the default is only for one sweep folder)",
            ));
        }
    };
    let runs = gather(paths)?;
    let comparison = compare(&runs, tail);
    std::fs::create_dir_all(&out).at("create", &out)?;
    let mut table = comparison.table();
    let unfinished: Vec<&str> = runs.iter().filter(|r| !r.complete()).map(|r| r.name.as_str()).collect();
    if !unfinished.is_empty() {
        table.push_str(&format!(
            "note: {} runs are unfinished (their plateau is where they are now): {}\n",
            unfinished.len(),
            unfinished.join(", ")
        ));
    }
    for f in comparison.findings() {
        table.push_str(&f);
        table.push('\n');
    }
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = out.join(name);
        write_atomic(&p, bytes)?;
        files.push(p);
        Ok(())
    };
    put("compare.csv", comparison.csv().as_bytes())?;
    put("compare-runs.csv", comparison.runs_csv().as_bytes())?;
    let json = serde_json::to_vec_pretty(&comparison)
        .map_err(|e| Error::Serialize { what: "comparison".into(), problem: e.to_string() })?;
    put("compare.json", &json)?;
    let svg = plot::write_overlay(&out, &runs, &comparison.groups)?;
    put("compare.html", html(&comparison, &table, &svg).as_bytes())?;
    files.extend([out.join("compare-curves.png"), out.join("compare-curves.svg")]);
    Ok(Written { table, files })
}

/// One self-contained HTML page: the table and the overlaid curves.
fn html(c: &Comparison, table: &str, svg: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut rows = String::new();
    for r in &c.rows {
        let d = r.vs_first.map_or(String::new(), |d| format!("{:+.4} ± {:.4}", d.diff, d.ci95));
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&r.metric),
            esc(&r.group),
            r.summary.n,
            esc(&cell(&r.summary)),
            esc(&d)
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>gantry compare</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style>\n\
         </head><body>\n<h1>gantry compare: {} runs in {} groups</h1>\n<pre>{}</pre>\n\
         <table><tr><th>metric</th><th>group</th><th>runs</th><th>mean ± std [95% CI]</th><th>minus the first group (Welch 95%)</th></tr>\n{}</table>\n\
         <h2>Curves</h2>\n{}\n</body></html>\n",
        c.run_names.len(),
        c.groups.len(),
        esc(table),
        rows,
        svg
    )
}

/// Whether a metric's value depends on the objective's scale (the losses, D's mean outputs), so
/// that runs of different objectives cannot be compared on it.
fn on_the_objectives_scale(metric: &str) -> bool {
    metric.starts_with("d_loss") || metric == "g_loss" || metric.starts_with("d_out")
}

/// The order findings are told in: the judge's scores (comparable across any runs of one data
/// set), then D's accuracy, then the rest.
fn finding_rank(metric: &str) -> u8 {
    match metric {
        "fid" | "kid" | "precision" | "recall" | "separability" => 0,
        m if m.starts_with("acc") => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, order: crate::config::UpdateOrder, seed: u64, acc: f32) -> RunData {
        let mut config = Config::default();
        config.train.order = order;
        config.train.seed = seed;
        config.train.iterations = 10;
        let records = (0..10).map(|i| IterationRecord { iteration: i, acc, ..Default::default() }).collect();
        RunData {
            name: name.into(),
            path: name.into(),
            config,
            records,
            quality: Vec::new(),
            wall_seconds: Some(1.0),
        }
    }

    #[test]
    fn runs_differing_only_in_seed_are_one_group_named_by_what_differs() {
        use crate::config::UpdateOrder::{DFirst, GFirst};
        let runs = [
            run("a0", DFirst, 0, 0.63),
            run("b0", GFirst, 0, 0.61),
            run("a1", DFirst, 1, 0.64),
            run("b1", GFirst, 1, 0.60),
            run("a2", DFirst, 2, 0.62),
            run("b2", GFirst, 2, 0.62),
        ];
        let c = compare(&runs, 0.5);
        assert_eq!(c.groups.len(), 2);
        assert_eq!(c.groups[0].label, "order=d-first");
        assert_eq!(c.groups[1].label, "order=g-first");
        assert_eq!(c.groups[1].runs, [1, 3, 5]);
        let acc: Vec<&Row> = c.rows.iter().filter(|r| r.metric == "acc").collect();
        assert!((acc[0].summary.mean - 0.63).abs() < 1e-6);
        let d = acc[1].vs_first.unwrap();
        assert!((d.diff - (-0.02)).abs() < 1e-6, "{d:?}");
        assert!(c.table().contains("order=g-first (3 runs)"));
        assert!(c.csv().lines().any(|l| l.starts_with("order=g-first,g-first,acc,3,")), "{}", c.csv());
        assert_eq!(c.runs_csv().lines().count(), 7);
    }

    /// The bug: `gantry compare` stated "lsgan lowers d_loss by 0.63 against ns", though the two
    /// objectives put their losses on different scales. Now such differences are left out, said
    /// so, and the comparable ones lead, the judge's first.
    #[test]
    fn losses_of_different_objectives_are_not_findings_and_the_judges_scores_lead() {
        use crate::config::{Loss, UpdateOrder::DFirst};
        let with = |name: &str, loss: Loss, seed: u64, (d_loss, acc, fid): (f32, f32, f64)| {
            let mut r = run(name, DFirst, seed, acc);
            r.config.train.loss = loss;
            for rec in &mut r.records {
                rec.d_loss = d_loss;
            }
            r.quality = vec![QualityRecord {
                iteration: 10,
                fid,
                kid: 0.0,
                precision: 0.5,
                recall: 0.5,
                inception_score: 9.0,
                classes_present: 10,
                separability: 0.5,
                class_accuracy: None,
            }];
            r
        };
        let runs = [
            with("ns0", Loss::Ns, 0, (0.70, 0.63, 9.0)),
            with("ns1", Loss::Ns, 1, (0.71, 0.64, 9.2)),
            with("ns2", Loss::Ns, 2, (0.69, 0.62, 9.1)),
            with("ls0", Loss::Lsgan, 0, (0.07, 0.53, 5.0)),
            with("ls1", Loss::Lsgan, 1, (0.08, 0.54, 5.2)),
            with("ls2", Loss::Lsgan, 2, (0.06, 0.52, 5.1)),
        ];
        let findings = compare(&runs, 0.5).findings();
        assert!(findings[0].contains("different objectives (ns, lsgan)"), "{findings:?}");
        assert!(findings[1].contains("lowers fid"), "{findings:?}");
        assert!(findings[2].contains("lowers acc"), "{findings:?}");
        assert!(!findings.iter().any(|f| f.contains("lowers d_loss")), "{findings:?}");
        // One objective (the groups differ in their update order): the losses are comparable.
        let same: Vec<RunData> = runs
            .iter()
            .cloned()
            .map(|mut r| {
                if r.config.train.loss == Loss::Lsgan {
                    r.config.train.order = crate::config::UpdateOrder::GFirst;
                }
                r.config.train.loss = Loss::Ns;
                r
            })
            .collect();
        let findings = compare(&same, 0.5).findings();
        assert!(findings.iter().any(|f| f.contains("lowers d_loss")), "{findings:?}");
        assert!(!findings.iter().any(|f| f.contains("objectives")), "{findings:?}");
    }
}
