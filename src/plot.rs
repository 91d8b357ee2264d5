//! The notebook's two charts, as PNG and SVG: every curve raw, and the same curves smoothed with a
//! moving average. Each chart has a loss panel (a reference line at the objective's equilibrium
//! loss: ln 2, the cross-entropy when D outputs 0.5, or 0.25 for least squares; none for hinge
//! and Wasserstein) and an accuracy panel (reference line at 0.5, D's accuracy at equilibrium).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::metrics::{Getter, IterationRecord};

/// Most points drawn per curve; longer curves are reduced to a min/max envelope, which keeps
/// every spike visible.
const MAX_POINTS: usize = 2400;
const SIZE: (u32, u32) = (1200, 900);
const FONT: &str = "sans-serif";

/// Centred moving average over `window` points. Near the ends the window shrinks to the points
/// that exist (no zero padding), so the curve neither dips nor lags at the edges.
pub fn moving_average(values: &[f64], window: usize) -> Vec<f64> {
    let n = values.len();
    let half_lo = window.saturating_sub(1) / 2;
    let half_hi = window.max(1) - 1 - half_lo;
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for v in values {
        prefix.push(prefix.last().unwrap() + v);
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(half_lo);
            let hi = (i + half_hi + 1).min(n);
            (prefix[hi] - prefix[lo]) / (hi - lo) as f64
        })
        .collect()
}

/// Reduce `(x, y)` points to at most about `max_points` by keeping each bucket's minimum and
/// maximum in x order.
pub fn envelope(points: &[(f64, f64)], max_points: usize) -> Vec<(f64, f64)> {
    if points.len() <= max_points {
        return points.to_vec();
    }
    let buckets = (max_points / 2).max(1);
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets * 2);
    for chunk in points.chunks(per) {
        let (mut lo, mut hi) = (chunk[0], chunk[0]);
        for &p in chunk {
            if p.1 < lo.1 {
                lo = p;
            }
            if p.1 > hi.1 {
                hi = p;
            }
        }
        if lo.0 <= hi.0 {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    }
    out
}

struct Curve {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Write `curves_raw.{png,svg}` and `curves_smoothed.{png,svg}` into `dir`; returns their paths.
pub fn write_curves(
    dir: &Path,
    records: &[IterationRecord],
    window: usize,
    loss: crate::objective::Loss,
) -> Result<Vec<PathBuf>> {
    let reference = loss.equilibrium_loss().map(|v| (v, loss.equilibrium_label()));
    register_font();
    let mut written = Vec::new();
    for (stem, smooth) in [("curves_raw", false), ("curves_smoothed", true)] {
        let title = if smooth {
            format!("Training curves, {window}-iteration moving average")
        } else {
            "Training curves (raw)".to_string()
        };
        let curves = |getters: &[(&'static str, RGBColor, Getter)]| -> Vec<Curve> {
            getters
                .iter()
                .map(|&(name, color, get)| {
                    let raw: Vec<f64> = records.iter().map(|r| get(r) as f64).collect();
                    let ys = if smooth { moving_average(&raw, window) } else { raw };
                    let pts: Vec<(f64, f64)> =
                        records.iter().zip(ys).map(|(r, y)| (r.iteration as f64, y)).collect();
                    Curve { name, color, points: envelope(&pts, MAX_POINTS) }
                })
                .collect()
        };
        let losses = curves(&[
            ("d_loss", RGBColor(31, 119, 180), |r| r.d_loss),
            ("g_loss", RGBColor(214, 39, 40), |r| r.g_loss),
            ("d_loss_real", RGBColor(44, 160, 44), |r| r.d_loss_real),
            ("d_loss_fake", RGBColor(255, 127, 14), |r| r.d_loss_fake),
        ]);
        let accs = curves(&[
            ("acc", RGBColor(31, 119, 180), |r| r.acc),
            ("acc_real", RGBColor(44, 160, 44), |r| r.acc_real),
            ("acc_fake", RGBColor(255, 127, 14), |r| r.acc_fake),
        ]);
        let x_max = records.last().map(|r| r.iteration as f64).unwrap_or(0.0).max(1.0);

        let png = dir.join(format!("{stem}.png"));
        let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw(area, &title, &losses, &accs, x_max, reference)
            .map_err(|problem| Error::Render { path: png.clone(), problem })?;
        let svg = dir.join(format!("{stem}.svg"));
        let area = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(area, &title, &losses, &accs, x_max, reference)
            .map_err(|problem| Error::Render { path: svg.clone(), problem })?;
        written.extend([png, svg]);
    }
    Ok(written)
}

/// Write `quality.{png,svg}` into `dir` from the sample-quality rows (`eval.csv`): FID in the
/// judge's feature space (0 = real data's statistics) above, precision and recall below (1 = real).
pub fn write_quality(dir: &Path, rows: &[crate::metrics::quality::QualityRecord]) -> Result<Vec<PathBuf>> {
    register_font();
    let points = |get: fn(&crate::metrics::quality::QualityRecord) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.iteration as f64, get(r))).collect()
    };
    let fid =
        [Curve { name: "FID (judge features)", color: RGBColor(214, 39, 40), points: points(|r| r.fid) }];
    let manifold = [
        Curve { name: "precision", color: RGBColor(31, 119, 180), points: points(|r| r.precision) },
        Curve { name: "recall", color: RGBColor(44, 160, 44), points: points(|r| r.recall) },
    ];
    let x_max = rows.last().map(|r| r.iteration as f64).unwrap_or(0.0).max(1.0);
    let fid_max = rows.iter().map(|r| r.fid).filter(|v| v.is_finite()).fold(1.0, f64::max) * 1.1;
    let png = dir.join("quality.png");
    draw_quality(BitMapBackend::new(&png, SIZE).into_drawing_area(), &fid, &manifold, x_max, fid_max)
        .map_err(|problem| Error::Render { path: png.clone(), problem })?;
    let svg = dir.join("quality.svg");
    draw_quality(SVGBackend::new(&svg, SIZE).into_drawing_area(), &fid, &manifold, x_max, fid_max)
        .map_err(|problem| Error::Render { path: svg.clone(), problem })?;
    Ok(vec![png, svg])
}

fn draw_quality<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    fid: &[Curve],
    manifold: &[Curve],
    x_max: f64,
    fid_max: f64,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled("Sample quality (gantry's judge, fixed noise)", (FONT, 26)).map_err(e)?;
    let (top, bottom) = root.split_vertically(SIZE.1 as i32 * 50 / 100);
    panel(&top, "FID", fid, x_max, 0.0..fid_max, Some((0.0, "0 (real)"))).map_err(e)?;
    panel(&bottom, "precision / recall", manifold, x_max, 0.0..1.02, Some((1.0, "1 (real)"))).map_err(e)?;
    root.present().map_err(e)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    losses: &[Curve],
    accs: &[Curve],
    x_max: f64,
    reference: Option<(f64, &str)>,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, (FONT, 26)).map_err(e)?;
    let (top, bottom) = root.split_vertically(SIZE.1 as i32 * 55 / 100);
    // Loss panel: clip the y range at high and low quantiles so one early spike does not flatten
    // the rest; it includes 0 and the equilibrium line (signed losses such as WGAN's go below 0).
    let values = || losses.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    let reach = reference.map_or(1.0, |(v, _)| v * 1.5);
    let y_max = quantile(values(), 0.995).map(|q| (q * 1.15).max(reach)).unwrap_or(2.0);
    let y_min = quantile(values(), 0.005).map(|q| (q * 1.15).min(0.0)).unwrap_or(0.0);
    panel(&top, "loss", losses, x_max, y_min..y_max, reference).map_err(e)?;
    panel(&bottom, "accuracy", accs, x_max, 0.0..1.02, Some((0.5, "0.5"))).map_err(e)?;
    root.present().map_err(e)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    y_desc: &str,
    curves: &[Curve],
    x_max: f64,
    y_range: std::ops::Range<f64>,
    reference: Option<(f64, &str)>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (y_lo, y_hi) = (y_range.start, y_range.end);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, y_range)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .label_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for c in curves {
        let clipped = c.points.iter().map(|&(x, y)| (x, y.clamp(y_lo, y_hi)));
        chart
            .draw_series(LineSeries::new(clipped, c.color.stroke_width(1)))?
            .label(c.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.color.stroke_width(3)));
    }
    if let Some((reference, reference_label)) = reference {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, reference), (x_max, reference)],
                8,
                5,
                BLACK.stroke_width(1),
            ))?
            .label(reference_label.to_string())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    Ok(())
}

fn quantile(values: impl Iterator<Item = f64>, q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() - 1) as f64 * q).round() as usize])
}

/// Register the embedded DejaVu Sans font for bitmap text (no system fonts needed).
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; a failure would only lose the text.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_average_has_no_edge_artefacts() {
        // A constant stays constant everywhere, edges included (zero padding would pull them down).
        let c = vec![0.7; 50];
        assert!(moving_average(&c, 100).iter().all(|&v| (v - 0.7).abs() < 1e-12));
        // A ramp's centred average is the ramp itself away from the edges.
        let ramp: Vec<f64> = (0..200).map(|i| i as f64).collect();
        let m = moving_average(&ramp, 11);
        assert!((m[100] - 100.0).abs() < 1e-9);
        assert_eq!(m[0], (0..=5).sum::<i32>() as f64 / 6.0);
        assert_eq!(moving_average(&ramp, 1), ramp);
    }

    #[test]
    fn envelope_keeps_extremes() {
        let pts: Vec<(f64, f64)> =
            (0..10_000).map(|i| (i as f64, if i == 4321 { 99.0 } else { 0.0 })).collect();
        let e = envelope(&pts, 100);
        assert!(e.len() <= 100);
        assert!(e.iter().any(|p| p.1 == 99.0));
        assert!(e.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn writes_both_charts_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<IterationRecord> = (0..300)
            .map(|i| IterationRecord {
                iteration: i,
                d_loss: 0.6,
                g_loss: 0.9,
                acc: 0.6,
                ..Default::default()
            })
            .collect();
        let files = write_curves(dir.path(), &recs, 100, crate::objective::Loss::Ns).unwrap();
        assert_eq!(files.len(), 4);
        for f in files {
            assert!(std::fs::metadata(&f).unwrap().len() > 1000, "{}", f.display());
        }
    }
}
