//! A short real run on the MNIST files: every output exists, with the right shapes and formats.

mod common;

use std::fs;
use std::path::Path;

use gantry::metrics::read_csv;
use gantry::run_dir::{RunDir, RunInfo};
use gantry::train;

fn npy_shape(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    // The numpy format: magic, version 1.0, little-endian header length, a Python dict literal.
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{}", path.display());
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "numpy pads the header to 64 bytes");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f8'") && header.contains("'fortran_order': False"), "{header}");
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    let values: Vec<f64> = npy.into_vec().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    shape
}

fn png_info(path: &Path) -> png::OutputInfo {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap()
}

#[test]
fn short_real_run_leaves_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let config = common::tiny_config(300, 100, 0);
    let outcome = train::train(&config, &out).unwrap();
    let run = RunDir::open(&out).unwrap();

    // Metrics: one CSV row per iteration, in order, matching what train returned.
    let rows = read_csv(&run.metrics_csv()).unwrap();
    assert_eq!(rows.len(), 300);
    assert_eq!(rows, outcome.records);
    assert!(rows.iter().enumerate().all(|(i, r)| r.iteration == i));
    for r in &rows {
        assert!((0.0..=1.0).contains(&r.acc) && (0.0..=1.0).contains(&r.d_out_fake));
        assert!(r.d_loss_real.is_finite() && r.g_loss.is_finite());
        assert_eq!(r.d_loss, 0.5 * (r.d_loss_real + r.d_loss_fake));
    }
    // D separates perfectly at first and the game then tightens: the losses must move.
    assert!(rows[0].g_loss != rows[299].g_loss);

    // numpy files with the notebook's shapes.
    assert_eq!(npy_shape(&out.join("d_loss_real.npy")), vec![300, 2]);
    assert_eq!(npy_shape(&out.join("d_loss_fake.npy")), vec![300, 2]);
    assert_eq!(npy_shape(&out.join("g_loss.npy")), vec![300]);
    assert_eq!(npy_shape(&out.join("d_output.npy")), vec![300, 2]);

    // 5x5 grids at 0, 100, 200, 300: 28x28 tiles with a 2-pixel border, scaled 3x.
    let grids: Vec<_> = fs::read_dir(run.samples_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(grids.len(), 4, "{grids:?}");
    for step in [0, 100, 200, 300] {
        let info = png_info(&run.sample_grid(step));
        assert_eq!((info.width, info.height), ((5 * 30 + 2) * 3, (5 * 30 + 2) * 3));
        assert_eq!(info.color_type, png::ColorType::Grayscale);
    }

    // Both charts in both formats.
    for name in ["curves_raw", "curves_smoothed"] {
        let info = png_info(&run.plots_dir().join(format!("{name}.png")));
        assert!(info.width >= 800);
        let svg = fs::read_to_string(run.plots_dir().join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("g_loss"));
    }

    // The resolved config, the run facts and the weights.
    let saved = gantry::Config::from_file(&run.config()).unwrap();
    let mut resolved = config.clone();
    resolved.train.resolve_defaults(); // the saved config names every default choice
    assert_eq!(saved, resolved);
    let info = RunInfo::read(&run).unwrap();
    assert_eq!((info.iterations_done, info.image_rows, info.image_cols, info.threads), (300, 28, 28, 2));
    assert!(fs::metadata(run.generator_weights()).unwrap().len() > 1_000_000);
    assert!(fs::metadata(run.discriminator_weights()).unwrap().len() > 1_000_000);

    // The trained generator draws images from the saved weights.
    let (images, rows_px, cols_px, _) = train::sample_from_run(&run, 7, 1).unwrap();
    assert_eq!((images.len(), rows_px, cols_px), (7 * 784, 28, 28));
    assert!(images.iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn report_timelapse_and_alerts_of_a_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train::train(&common::tiny_config(200, 50, 2), &out).unwrap();
    let run = RunDir::open(&out).unwrap();

    // The timelapse has one frame per grid (0, 50, 100, 150, 200).
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let mut gif = options.read_info(fs::File::open(run.timelapse()).unwrap()).unwrap();
    let mut frames = 0;
    while gif.read_next_frame().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 5);

    // A short healthy run raises nothing.
    assert_eq!(gantry::alerts::load(&run.alerts()).unwrap(), vec![]);

    // One HTML file with everything inline and nothing fetched from elsewhere.
    let path = gantry::report::write(&run, None).unwrap();
    let html = fs::read_to_string(path).unwrap();
    for needle in
        ["<svg", "data:image/png;base64,", "data:image/gif;base64,", "d_out_fake", "latent_dim = 100"]
    {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    for external in ["src=\"http", "href=\"http", "url(http", "<script src", "<link"] {
        assert!(!html.contains(external), "report loads something from outside: {external}");
    }
}
