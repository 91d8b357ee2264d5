//! `gantry report`: one self-contained HTML file per run (charts inline as SVG, sample grids and
//! the timelapse as data URIs, the summary table, alerts and config) that opens offline in any
//! browser and can be mailed as it is.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::alerts::{self, Alert};
use crate::error::{Error, IoContext, Result};
use crate::metrics::{self, IterationRecord};
use crate::plot;
use crate::run_dir::{RunDir, RunInfo};
use crate::timelapse;

/// Number of grids shown in the progression strip.
const STRIP: usize = 8;

/// Write the report of `run` to `out` (default `RUN/report.html`); returns its path.
pub fn write(run: &RunDir, out: Option<&Path>) -> Result<PathBuf> {
    let config_text =
        crate::durable::read_text_limited(&run.config(), crate::config::MAX_CONFIG_BYTES, "config")?;
    let config = crate::Config::from_toml_str(&config_text, &run.config())?;
    let records = metrics::read_csv(&run.metrics_csv())?;
    if records.is_empty() {
        return Err(Error::bad_data(run.metrics_csv(), "has no rows to report"));
    }
    let info = RunInfo::read(run).ok();
    let alerts = if run.alerts().is_file() { alerts::load(&run.alerts())? } else { Vec::new() };
    // Charts: drawn now if the run has none yet (a stopped run).
    let raw_svg = run.plots_dir().join("curves_raw.svg");
    if !raw_svg.is_file() {
        std::fs::create_dir_all(run.plots_dir()).at("create", run.plots_dir())?;
        plot::write_curves(&run.plots_dir(), &records, config.output.smoothing_window, config.train.loss)?;
    }
    let svg = |name: &str| -> Result<String> {
        let path = run.plots_dir().join(name);
        let text = std::fs::read_to_string(&path).at("read", &path)?;
        // Drop the XML prolog: the SVG is embedded in HTML.
        Ok(text.find("<svg").map(|i| text[i..].to_string()).unwrap_or(text))
    };
    let grids = timelapse::grid_files(run)?;
    let strip: Vec<&PathBuf> = if grids.len() <= STRIP {
        grids.iter().collect()
    } else {
        (0..STRIP).map(|k| &grids[k * (grids.len() - 1) / (STRIP - 1)]).collect()
    };

    let mut html = String::new();
    let name = run.root().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    html.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gantry run {}</title>\n<style>{}</style></head><body>\n",
        escape(&name),
        STYLE
    ));
    html.push_str(&format!("<h1>gantry run <code>{}</code></h1>\n", escape(&name)));
    html.push_str(&summary_html(&records, info.as_ref(), config.train.loss));
    html.push_str(&alerts_html(&alerts));
    html.push_str("<h2>Curves</h2>\n");
    html.push_str(&format!("<figure>{}</figure>\n", svg("curves_smoothed.svg")?));
    html.push_str(&format!(
        "<details><summary>Raw curves</summary><figure>{}</figure></details>\n",
        svg("curves_raw.svg")?
    ));
    html.push_str(&quality_html(run)?);
    html.push_str("<h2>Samples (the same noise throughout)</h2>\n<div class=\"strip\">\n");
    for path in &strip {
        let step =
            path.file_name().and_then(|n| crate::run_dir::grid_step(&n.to_string_lossy())).unwrap_or(0);
        html.push_str(&format!(
            "<figure><img alt=\"iteration {step}\" src=\"{}\"><figcaption>iteration {step}</figcaption></figure>\n",
            data_uri("image/png", path)?
        ));
    }
    html.push_str("</div>\n");
    if run.timelapse().is_file() {
        html.push_str(&format!(
            "<h2>Timelapse</h2>\n<img class=\"timelapse\" alt=\"timelapse of the sample grids\" src=\"{}\">\n",
            data_uri("image/gif", &run.timelapse())?
        ));
    }
    html.push_str(&format!("<h2>Configuration</h2>\n<pre>{}</pre>\n", escape(&config_text)));
    html.push_str("</body></html>\n");

    let out = out.map(Path::to_path_buf).unwrap_or_else(|| run.report());
    std::fs::write(&out, html).at("write", &out)?;
    Ok(out)
}

fn summary_html(records: &[IterationRecord], info: Option<&RunInfo>, loss: crate::objective::Loss) -> String {
    let n = records.len();
    let tail = metrics::tail_len(n, 0.1);
    let mut s = String::from("<h2>Summary</h2>\n<p>");
    s.push_str(&format!("{n} iterations"));
    if let Some(i) = info {
        s.push_str(&format!(
            " in {:.0} s ({:.2} ms/iteration, {} threads) on <code>{}</code>",
            i.wall_seconds,
            1e3 * i.wall_seconds / i.iterations_done.max(1) as f64,
            i.threads,
            escape(&i.data_file)
        ));
    }
    let equilibrium = match (loss.equilibrium_loss(), loss.equilibrium_output()) {
        (Some(l), Some(o)) => format!(
            "at equilibrium D's accuracy is 0.5, its outputs {o} and the losses {} = {l:.3}",
            loss.equilibrium_label()
        ),
        _ => format!(
            "at equilibrium D's accuracy is 0.5 ({} losses and scores have no fixed value there)",
            loss.name()
        ),
    };
    s.push_str(&format!(
        ". Objective <code>{}</code>. Means over the last {tail} iterations; {equilibrium}.</p>\n\
         <table><tr><th>metric</th><th>mean</th></tr>\n",
        loss.name()
    ));
    for (name, mean) in metrics::tail_means(records, 0.1) {
        s.push_str(&format!("<tr><td>{name}</td><td>{mean:.4}</td></tr>\n"));
    }
    s.push_str("</table>\n");
    s
}

fn alerts_html(alerts: &[Alert]) -> String {
    if alerts.is_empty() {
        return "<h2>Alerts</h2>\n<p class=\"ok\">None: no sign of a training failure.</p>\n".into();
    }
    let mut s = String::from("<h2>Alerts</h2>\n<ul class=\"alerts\">\n");
    for a in alerts {
        s.push_str(&format!(
            "<li><b>{:?}</b> from iteration {} (raised at {}): {}</li>\n",
            a.kind,
            a.began_at,
            a.raised_at,
            escape(&a.message)
        ));
    }
    s.push_str("</ul>\n");
    s
}

fn data_uri(mime: &str, path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).at("read", path)?;
    Ok(format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// Escape text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .8em;text-align:right}\
td:first-child{text-align:left}figure{margin:0}figure svg{max-width:100%;height:auto}\
.strip{display:flex;flex-wrap:wrap;gap:.5em}.strip img{width:150px;image-rendering:pixelated}\
figcaption{text-align:center;font-size:.85em}.timelapse{width:300px;image-rendering:pixelated}\
.alerts li{color:#a40000}.ok{color:#206020}pre{background:#f6f6f6;padding:1em;overflow:auto}";

/// Sample quality measured during training (eval.csv, with its chart) and by `gantry eval`
/// (eval.json), when the run has them.
fn quality_html(run: &RunDir) -> Result<String> {
    let rows = crate::metrics::quality::read(&run.eval_csv())?;
    let judged = run.root().join("eval.json");
    let mut html = String::new();
    if rows.is_empty() && !judged.is_file() {
        return Ok(html);
    }
    html.push_str("<h2>Sample quality (gantry's judge)</h2>\n");
    if !rows.is_empty() {
        let chart = run.plots_dir().join("quality.svg");
        if !chart.is_file() {
            plot::write_quality(&run.plots_dir(), &rows)?;
        }
        let text = std::fs::read_to_string(&chart).at("read", &chart)?;
        html.push_str(&format!(
            "<figure>{}</figure>\n",
            text.find("<svg").map(|i| &text[i..]).unwrap_or(&text)
        ));
        let conditional = rows.iter().any(|r| r.class_accuracy.is_some());
        html.push_str("<table><tr><th>iteration</th><th>FID</th><th>precision</th><th>recall</th><th>IS</th><th>classes</th><th>separability</th>");
        html.push_str(if conditional { "<th>class accuracy</th></tr>\n" } else { "</tr>\n" });
        for r in &rows {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{:.3}</td>",
                r.iteration,
                r.fid,
                r.precision,
                r.recall,
                // A rotation judge (unlabelled images) has no classes.
                if r.inception_score.is_finite() { format!("{:.2}", r.inception_score) } else { "-".into() },
                if r.inception_score.is_finite() { r.classes_present.to_string() } else { "-".into() },
                r.separability
            ));
            if let Some(a) = r.class_accuracy.filter(|_| conditional) {
                html.push_str(&format!("<td>{:.2}%</td>", 100.0 * a));
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</table>\n");
    }
    if judged.is_file() {
        let text = std::fs::read_to_string(&judged).at("read", &judged)?;
        let reports: Vec<crate::eval::EvalReport> =
            serde_json::from_str(&text).map_err(|e| Error::bad_data(&judged, e.to_string()))?;
        html.push_str(&format!(
            "<p><code>gantry eval</code> of the final generator:</p>\n<pre>{}</pre>\n",
            escape(&crate::eval::format_table(&reports))
        ));
    }
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
