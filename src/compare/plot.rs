//! The overlay chart of a comparison, `compare-curves.{png,svg}`: D's loss, G's loss, D's
//! accuracy and FID over time, every run drawn in its group's colour, raw (faint) and smoothed.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Group, RunData};
use crate::error::{Error, Result};
use crate::plot::{envelope, moving_average};

const SIZE: (u32, u32) = (1400, 1000);
const FONT: &str = "sans-serif";
const MAX_POINTS: usize = 1200;
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];

/// One run's line in one panel.
struct Line {
    group: usize,
    raw: Vec<(f64, f64)>,
    smooth: Vec<(f64, f64)>,
}

/// Write the PNG and SVG into `dir`; returns the SVG's text (for the HTML page).
pub fn write_overlay(dir: &Path, runs: &[RunData], groups: &[Group]) -> Result<String> {
    crate::plot::register_font();
    let group_of = |i: usize| groups.iter().position(|g| g.runs.contains(&i)).unwrap_or(0);
    let longest = runs.iter().map(|r| r.records.len()).max().unwrap_or(0);
    let window = smoothing_window(longest);
    let series = |get: fn(&crate::metrics::IterationRecord) -> f32| -> Vec<Line> {
        runs.iter()
            .enumerate()
            .map(|(i, r)| {
                let raw: Vec<f64> = r.records.iter().map(|x| get(x) as f64).collect();
                let smooth = moving_average(&raw, window);
                let xs = r.records.iter().map(|x| x.iteration as f64);
                Line {
                    group: group_of(i),
                    raw: envelope(&xs.clone().zip(raw).collect::<Vec<_>>(), MAX_POINTS),
                    smooth: envelope(&xs.zip(smooth).collect::<Vec<_>>(), MAX_POINTS),
                }
            })
            .collect()
    };
    let panels = [
        ("D loss", series(|r| r.d_loss)),
        ("G loss", series(|r| r.g_loss)),
        ("D accuracy", series(|r| r.acc)),
        (
            "FID (judge)",
            runs.iter()
                .enumerate()
                .map(|(i, r)| {
                    let pts: Vec<(f64, f64)> =
                        r.quality.iter().map(|q| (q.iteration as f64, q.fid)).collect();
                    Line { group: group_of(i), raw: Vec::new(), smooth: pts }
                })
                .collect(),
        ),
    ];
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    let png = dir.join("compare-curves.png");
    let title =
        format!("gantry compare: raw (faint) and {window}-iteration moving average, a colour per group");
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), &title, &panels, &labels)
        .map_err(|problem| Error::Render { path: png.clone(), problem })?;
    let mut svg = String::new();
    draw(SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(), &title, &panels, &labels)
        .map_err(|problem| Error::Render { path: dir.join("compare-curves.svg"), problem })?;
    crate::durable::write_atomic(&dir.join("compare-curves.svg"), svg.as_bytes())?;
    Ok(svg)
}

/// The moving average's window: 2% of the longest run, between 1 and 200 iterations.
pub fn smoothing_window(iterations: usize) -> usize {
    (iterations / 50).clamp(1, 200)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    panels: &[(&str, Vec<Line>); 4],
    labels: &[String],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, (FONT, 22)).map_err(e)?;
    let areas = root.split_evenly((2, 2));
    for (area, (title, lines)) in areas.iter().zip(panels.iter()) {
        panel(area, title, lines, labels).map_err(e)?;
    }
    root.present().map_err(e)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    lines: &[Line],
    labels: &[String],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    if lines.iter().all(|l| l.smooth.is_empty()) {
        area.titled(title, (FONT, 18))?.draw_text(
            "no values (FID: the runs were not judged during training, eval.every = 0)",
            &(FONT, 15).into_text_style(area),
            (20, 40),
        )?;
        return Ok(());
    }
    let all = || lines.iter().flat_map(|l| l.smooth.iter().chain(&l.raw));
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let mut ys: Vec<f64> =
        lines.iter().flat_map(|l| l.smooth.iter().map(|p| p.1)).filter(|y| y.is_finite()).collect();
    ys.sort_by(f64::total_cmp);
    // The 1% and 99% quantiles of the smoothed curves, so one early spike does not flatten the rest.
    let (y_lo, y_hi) = if ys.is_empty() {
        (0.0, 1.0)
    } else {
        let q = |f: f64| ys[((ys.len() - 1) as f64 * f).round() as usize];
        let (lo, hi) = (q(0.01), q(0.99));
        let pad = ((hi - lo) * 0.1).max(1e-3);
        (lo - pad, hi + pad)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 13))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let clip = move |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        pts.iter().filter(|p| p.1.is_finite()).map(|&(x, y)| (x, y.clamp(y_lo, y_hi))).collect()
    };
    for l in lines {
        let c = PALETTE[l.group % PALETTE.len()];
        if !l.raw.is_empty() {
            chart.draw_series(LineSeries::new(clip(&l.raw), c.mix(0.15).stroke_width(1)))?;
        }
    }
    let mut labelled = vec![false; labels.len()];
    for l in lines {
        let c = PALETTE[l.group % PALETTE.len()];
        let points = clip(&l.smooth);
        // Few points (FID's evaluations): marked, so that a run judged once still shows.
        if points.len() <= 50 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
        let s = chart.draw_series(LineSeries::new(points, c.stroke_width(2)))?;
        if let Some(flag) = labelled.get_mut(l.group)
            && !*flag
        {
            *flag = true;
            s.label(labels[l.group].clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        }
    }
    if labelled.iter().any(|&f| f) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
    }
    Ok(())
}
