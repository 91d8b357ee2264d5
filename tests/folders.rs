//! Your own images: folders of PNG and JPEG files written here from MNIST and as coloured
//! synthetic pictures, and a small file in CIFAR-10's binary format, train end to end (grey and
//! colour, mlp and dcgan, conditional on the class sub-folders) and resume byte-identical; bad
//! files are skipped and named, bad folders refused with exit 2; the decoded images are cached
//! by content.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use gantry::config::{Conditioning, Config, Dataset, ModelKind, Overrides};
use gantry::data::{self, folder};
use gantry::run_dir::Existing;
use gantry::train::{self, Options};

/// A folder with class sub-folders `zero/` and `one/` of MNIST digits (the first `per_class` of
/// each), every third one as a JPEG.
fn mnist_folder(dir: &Path, per_class: usize) {
    let set = data::load_labelled(Dataset::Mnist, &common::mnist_dir(), data::Split::Test).unwrap();
    for (class, name) in [(0u8, "zero"), (1, "one")] {
        let sub = dir.join(name);
        fs::create_dir_all(&sub).unwrap();
        let picked = set.labels.iter().enumerate().filter(|(_, l)| **l == class).take(per_class);
        for (k, (i, _)) in picked.enumerate() {
            let pixels = set.images.bytes[i * 784..(i + 1) * 784].to_vec();
            let img = image::GrayImage::from_raw(28, 28, pixels).unwrap();
            let ext = if k % 3 == 0 { "jpg" } else { "png" };
            img.save(sub.join(format!("{k:03}.{ext}"))).unwrap();
        }
    }
}

/// Coloured pictures of mixed sizes: a red, green or blue square on black, by class folder.
fn colour_folder(dir: &Path, per_class: usize) {
    for (c, name) in ["red", "green", "blue"].iter().enumerate() {
        let sub = dir.join(name);
        fs::create_dir_all(&sub).unwrap();
        for k in 0..per_class {
            let (w, h) = [(40u32, 30u32), (64, 64), (33, 50)][k % 3];
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let inside = (x + k as u32 % 7) % w < w / 2 && (y + k as u32 % 5) % h < h / 2;
                let mut px = [0u8; 3];
                if inside {
                    px[c] = 220;
                }
                image::Rgb(px)
            });
            img.save(sub.join(format!("{k:03}.png"))).unwrap();
        }
    }
}

fn folder_config(dir: &Path, iterations: usize) -> Config {
    let mut c = common::tiny_config(iterations, 10, 4);
    c.data.dataset = Dataset::Folder;
    c.data.dir = Some(dir.to_path_buf());
    c.train.batch_size = 16;
    c
}

fn small_dcgan(c: &mut Config) {
    c.model.kind = ModelKind::Dcgan;
    c.model.g_channels = vec![16, 8];
    c.model.d_channels = vec![8, 16];
}

/// Train `config` straight and stopped at 13 then resumed: the same bytes.
fn trains_and_resumes_byte_identical(name: &str, config: &Config, tmp: &Path) -> std::path::PathBuf {
    let straight = tmp.join(format!("{name}-straight"));
    train::train(config, &straight).unwrap();
    let stopped = tmp.join(format!("{name}-stopped"));
    let options = Options { stop_after: Some(13), ..Default::default() };
    assert_eq!(train::start(config, &stopped, Existing::Keep, &options).unwrap().stopped_at, Some(13));
    train::resume(&stopped, None, &Overrides::default(), &Options::default()).unwrap();
    for file in ["metrics.csv", "weights/generator.bpk", "samples/step_000030.png", "timelapse.gif"] {
        assert_eq!(
            fs::read(straight.join(file)).unwrap(),
            fs::read(stopped.join(file)).unwrap(),
            "{name}: {file}"
        );
    }
    straight
}

fn png_info(path: &Path) -> (u32, u32, u8) {
    let bytes = fs::read(path).unwrap();
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20), bytes[25])
}

#[test]
fn image_folders_and_cifar_batches_train_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY of the environment: only this test binary reads GANTRY_CACHE_DIR (the decoded
    // folders' cache), and its tests all set the same value.
    unsafe { std::env::set_var("GANTRY_CACHE_DIR", tmp.path().join("cache")) };

    // Grey digits, PNG and JPEG, 28x28: an mlp, conditional on the two class folders.
    let digits = tmp.path().join("digits");
    mnist_folder(&digits, 30);
    let mut grey = folder_config(&digits, 30);
    grey.data.image_size = Some(28);
    grey.data.channels = Some(1);
    grey.model.conditional = Conditioning::Concat;
    grey.model.classes = 2;
    let run = trains_and_resumes_byte_identical("digits", &grey, tmp.path());
    let layout = gantry::grid::GridLayout { rows: 2, cols: 5, tile_h: 28, tile_w: 28, channels: 1 };
    let (w, h, colour) = png_info(&run.join("samples/step_000030.png"));
    assert_eq!(((w as usize, h as usize), colour), (layout.size(), 0), "one grey row per class");

    // Coloured pictures of three sizes, resized and cropped to 16x16 RGB: a conditional dcgan, its
    // D spectrally normalized and seeing DiffAugment's shifts and cutouts of the colour batches.
    let colours = tmp.path().join("colours");
    colour_folder(&colours, 12);
    let mut rgb = folder_config(&colours, 30);
    rgb.data.image_size = Some(16);
    small_dcgan(&mut rgb);
    rgb.model.conditional = Conditioning::Projection;
    rgb.model.classes = 3;
    rgb.model.d_spectral_norm = true;
    rgb.train.augment = vec![gantry::config::Augment::Translation, gantry::config::Augment::Cutout];
    let run = trains_and_resumes_byte_identical("colours", &rgb, tmp.path());
    let (_, _, colour) = png_info(&run.join("samples/step_000030.png"));
    assert_eq!(colour, 2, "an RGB grid");
    let info = gantry::run_dir::RunInfo::read(&gantry::run_dir::RunDir::open(&run).unwrap()).unwrap();
    assert_eq!((info.image_rows, info.image_cols, info.image_channels), (16, 16, 3));
    let out = tmp.path().join("blue.png");
    let o = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sample", "--n", "4", "--class", "0", "--out"])
        .arg(&out)
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_info(&out).2, 2, "gantry sample writes colour");

    // CIFAR-10's binary format: one small batch file of random 32x32 colour images.
    let cifar = tmp.path().join("cifar");
    fs::create_dir_all(cifar.join("cifar-10-batches-bin")).unwrap();
    let records: Vec<u8> = (0..40u32)
        .flat_map(|i| {
            let label = (i % 10) as u8;
            std::iter::once(label).chain((0..3072u32).map(move |p| ((p * 7 + i * 13) % 251) as u8))
        })
        .collect();
    fs::write(cifar.join("cifar-10-batches-bin/data_batch_1.bin"), records).unwrap();
    let mut c = common::tiny_config(20, 10, 6);
    c.data.dataset = Dataset::Cifar10;
    c.data.dir = Some(cifar.clone());
    c.model.g_hidden = vec![64];
    c.model.d_hidden = vec![64];
    c.train.batch_size = 8;
    let outcome = train::train(&c, &tmp.path().join("cifar-run")).unwrap();
    assert_eq!(outcome.records.len(), 20);
    assert_eq!(png_info(&tmp.path().join("cifar-run/samples/step_000020.png")).2, 2);
}

#[test]
fn bad_image_files_are_skipped_and_named_and_bad_folders_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dir = tmp.path().join("mixed");
    colour_folder(&dir, 3);
    fs::write(dir.join("red/empty.png"), b"").unwrap();
    fs::write(dir.join("red/words.jpg"), b"this is not a jpeg").unwrap();
    let good = fs::read(dir.join("green/000.png")).unwrap();
    fs::write(dir.join("green/cut.png"), &good[..good.len() / 2]).unwrap();
    fs::write(dir.join("blue/notes.txt"), b"hello").unwrap();
    // A decompression bomb: a valid PNG header announcing 20000 x 20000 pixels, refused before
    // anything is decoded (or allocated).
    // Its image data holds a few compressed rows of zeros, as a bomb's would begin.
    let mut bomb = Vec::new();
    let mut enc = png::Encoder::new(&mut bomb, 20_000, 20_000);
    enc.set_color(png::ColorType::Grayscale);
    let mut writer = enc.write_header().unwrap();
    let mut rows = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut rows, &vec![0u8; 4 * 20_001]).unwrap();
    writer.write_chunk(png::chunk::IDAT, &rows.finish().unwrap()).unwrap();
    drop(writer);
    assert!(bomb.len() < 1000, "a small file: {} bytes", bomb.len());
    fs::write(dir.join("blue/bomb.png"), &bomb).unwrap();

    let (images, report) = folder::load(&dir, 16, 3, &cache, gantry::data::Progress::Quiet).unwrap();
    assert_eq!((images.count, images.dim()), (9, 16 * 16 * 3));
    assert_eq!(report.classes, ["blue", "green", "red"]);
    assert_eq!(images.labels.as_deref(), Some(&[0, 0, 0, 1, 1, 1, 2, 2, 2][..]));
    let skipped: Vec<&str> = report.skipped.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(skipped.len(), 5, "{:?}", report.skipped);
    for (file, why) in &report.skipped {
        let expected = match file.as_str() {
            "red/empty.png" => "empty",
            "red/words.jpg" => "not a PNG or JPEG",
            "green/cut.png" => "cannot be decoded",
            "blue/notes.txt" => "not a .png",
            "blue/bomb.png" => "20000x20000 pixels",
            other => panic!("unexpected skip {other}: {why}"),
        };
        assert!(why.contains(expected), "{file}: {why}");
    }
    let lines = report.lines(16).join("\n");
    assert!(lines.contains("skipped 5 file(s)") && lines.contains("3 size(s)"), "{lines}");
    // Read again: from the cache, the same images.
    let (again, report) = folder::load(&dir, 16, 3, &cache, gantry::data::Progress::Quiet).unwrap();
    assert!(report.cached);
    assert_eq!((again.bytes, again.labels), (images.bytes.clone(), images.labels.clone()));
    // A changed file is noticed: decoded again, other pixels.
    colour_folder(&tmp.path().join("other"), 3);
    fs::copy(tmp.path().join("other/red/000.png"), dir.join("green/000.png")).unwrap();
    let (changed, report) = folder::load(&dir, 16, 3, &cache, gantry::data::Progress::Quiet).unwrap();
    assert!(!report.cached);
    assert_ne!(changed.bytes, images.bytes);

    // Refused with exit 2, naming the folder, before any run folder is made.
    let gantry = |data: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["train", "--dataset", "folder", "--iterations", "5", "--eval-every", "0", "--data"])
            .arg(data)
            .args(extra)
            .arg("--out")
            .arg(tmp.path().join("never"))
            .env("GANTRY_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let single = tmp.path().join("single/only");
    colour_folder(&tmp.path().join("single-src"), 2);
    fs::create_dir_all(&single).unwrap();
    fs::copy(tmp.path().join("single-src/red/000.png"), single.join("a.png")).unwrap();
    fs::copy(tmp.path().join("single-src/red/001.png"), single.join("b.png")).unwrap();
    let conditional = ["--set", "model.conditional=\"concat\"", "--set", "model.classes=2"];
    for (data, extra, says) in [
        (empty.as_path(), &[][..], "no PNG or JPEG files"),
        (
            tmp.path().join("single").as_path(),
            &conditional[..],
            "has 1 class folder(s) (only), but model.classes = 2",
        ),
        (tmp.path().join("missing").as_path(), &[][..], "not a folder"),
        (digits_without_classes(tmp.path()).as_path(), &conditional[..], "no class sub-folders"),
    ] {
        let o = gantry(data, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{says}: {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(!tmp.path().join("never").exists());
    }
}

/// A flat folder of two coloured pictures (no class sub-folders).
fn digits_without_classes(tmp: &Path) -> std::path::PathBuf {
    let src = tmp.join("flat-src");
    colour_folder(&src, 1);
    let flat = tmp.join("flat");
    fs::create_dir_all(&flat).unwrap();
    fs::copy(src.join("red/000.png"), flat.join("a.png")).unwrap();
    fs::copy(src.join("blue/000.png"), flat.join("b.png")).unwrap();
    flat
}

/// Rows of a run's metrics.csv on disk (header excluded).
fn rows(run: &Path) -> usize {
    fs::read_to_string(run.join("metrics.csv")).map(|t| t.lines().count().saturating_sub(1)).unwrap_or(0)
}

/// A colour folder run of the binary, SIGKILLed after its first checkpoint and resumed, ends with
/// the bytes of a straight run.
#[test]
fn a_sigkilled_colour_folder_run_resumes_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let pictures = tmp.path().join("pictures");
    colour_folder(&pictures, 6);
    let config = tmp.path().join("colour.toml");
    fs::write(
        &config,
        "[data]\ndataset = \"folder\"\nimage_size = 16\n[model]\nkind = \"dcgan\"\ng_channels = [16, 8]\n\
         d_channels = [8, 16]\nconditional = \"concat\"\nclasses = 3\n[train]\niterations = 300\n\
         batch_size = 16\nseed = 2\nthreads = 2\n[output]\nsample_interval = 20\n[checkpoint]\nevery = 20\n\
         [eval]\nevery = 0\n",
    )
    .unwrap();
    let gantry = |args: &[&str], out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .arg(out)
            .env("GANTRY_CACHE_DIR", &cache)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let config = config.to_str().unwrap();
    let data = pictures.to_str().unwrap();
    let train = ["train", "-q", "--config", config, "--data", data, "--out"];
    let straight = tmp.path().join("straight");
    assert!(gantry(&train, &straight).wait().unwrap().success());
    let killed = tmp.path().join("killed");
    let mut child = gantry(&train, &killed);
    let started = std::time::Instant::now();
    while rows(&killed) < 30 && started.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(rows(&killed) < 300, "the run ended before the kill");
    assert!(gantry(&["resume"], &killed).wait().unwrap().success());
    for f in ["metrics.csv", "weights/generator.bpk", "weights/discriminator.bpk", "samples/step_000300.png"]
    {
        assert!(fs::read(straight.join(f)).unwrap() == fs::read(killed.join(f)).unwrap(), "{f} differs");
    }
}

/// The hostile probe's image-folder cases: a FIFO, a link to a device, a link to nothing, a link
/// loop, a truncated JPEG, a stray sub-folder. Each is skipped and named; none is opened for
/// reading, so none blocks (a FIFO named x.png hung training for good).
#[test]
fn a_fifo_device_link_or_truncated_jpeg_in_a_folder_is_skipped_and_named_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    colour_folder(&tmp.path().join("src"), 2);
    let dir = tmp.path().join("flat");
    fs::create_dir_all(dir.join("thumbs")).unwrap();
    fs::create_dir_all(dir.join("y.png")).unwrap();
    for (i, class) in ["red", "green", "blue"].iter().enumerate() {
        fs::copy(tmp.path().join(format!("src/{class}/000.png")), dir.join(format!("{i}.png"))).unwrap();
    }
    fs::copy(tmp.path().join("src/red/001.png"), dir.join("thumbs/t.png")).unwrap();
    let c = std::ffi::CString::new(dir.join("x.png").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", dir.join("z.png")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), dir.join("gone.png")).unwrap();
    std::os::unix::fs::symlink(dir.join("l2.png"), dir.join("l1.png")).unwrap();
    std::os::unix::fs::symlink(dir.join("l1.png"), dir.join("l2.png")).unwrap();
    // A JPEG without its end marker: the decoder would fill it in grey without a word.
    let jpeg = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 90]));
    jpeg.save(dir.join("cut.jpg")).unwrap();
    let bytes = fs::read(dir.join("cut.jpg")).unwrap();
    fs::write(dir.join("cut.jpg"), &bytes[..bytes.len() - 2]).unwrap();

    let (images, report) = folder::load(&dir, 16, 3, &cache, gantry::data::Progress::Quiet).unwrap();
    assert_eq!((images.count, images.labels.is_none()), (3, true), "{:?}", report.skipped);
    assert!(report.classes.is_empty(), "a sub-folder beside images does not make classes");
    for (name, why) in [
        ("x.png", "a FIFO"),
        ("z.png", "a device"),
        ("gone.png", "link to nothing"),
        ("l1.png", "loop"),
        ("cut.jpg", "truncated JPEG"),
        ("thumbs/", "sub-folder beside 4 image files"),
        ("y.png/", "sub-folder"),
    ] {
        let found = report.skipped.iter().find(|(f, _)| f == name);
        assert!(found.is_some_and(|(_, w)| w.contains(why)), "{name}: {:?}", report.skipped);
    }

    // A damaged cache is noticed by its checksum, decoded again, and said.
    let bin = fs::read_dir(cache.join("folders"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bin"))
        .unwrap();
    let mut damaged = fs::read(&bin).unwrap();
    damaged[7] ^= 0xff;
    fs::write(&bin, damaged).unwrap();
    let (again, report) = folder::load(&dir, 16, 3, &cache, gantry::data::Progress::Quiet).unwrap();
    assert!(!report.cached && report.cache_note.as_deref().is_some_and(|n| n.contains("damaged")));
    assert!(report.lines(16).iter().any(|l| l.contains("decoded again")));
    assert_eq!(again.bytes, images.bytes);
    assert!(
        folder::load(&dir, 16, 3, &cache, gantry::data::Progress::Quiet).unwrap().1.cached,
        "the rebuilt cache is used"
    );
}

/// A class folder whose name is not UTF-8 is skipped and named (12 images went silently), and a
/// conditional run's `model.classes` must match the class folders found; a cluster refusal names
/// the user's folder and the fix, not gantry's cache file.
#[test]
fn a_non_utf8_class_folder_is_named_and_model_classes_must_match_the_folders() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dir = tmp.path().join("classes");
    colour_folder(&dir, 2);
    let odd = dir.join(std::ffi::OsStr::from_bytes(b"gr\xffy"));
    fs::rename(dir.join("blue"), &odd).unwrap();
    let (images, report) = folder::load(&dir, 16, 3, &cache, gantry::data::Progress::Quiet).unwrap();
    assert_eq!(report.classes, ["green", "red"]);
    assert_eq!(images.count, 4);
    assert!(
        report.skipped.iter().any(|(f, why)| f.starts_with("gr") && why.contains("not UTF-8")),
        "{:?}",
        report.skipped
    );
    let train = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["train", "--dataset", "folder", "--iterations", "5", "--eval-every", "0", "-q", "--data"])
            .arg(&dir)
            .args(["--set", "model.conditional=\"concat\""])
            .args(extra)
            .arg("--out")
            .arg(tmp.path().join("never"))
            .env("GANTRY_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let o = train(&["--set", "model.classes=3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("has 2 class folder(s) (green, red), but model.classes = 3"), "{err}");
    let o = train(&["--set", "model.classes=2", "--set", "model.clusters_per_class=5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(dir.to_str().unwrap()) && !err.contains(".bin"), "names the folder: {err}");
    assert!(err.contains("model.clusters_per_class = 0"), "says the fix: {err}");
    assert!(!tmp.path().join("never").exists());
}

/// `gantry train --data my_pngs/` without `--dataset`: the folder is found to be images and trained
/// on as one, said in a line (it answered "no mnist training images in my_pngs").
#[test]
fn a_folder_of_images_given_as_data_is_trained_on_without_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    colour_folder(&tmp.path().join("src"), 2);
    let flat = tmp.path().join("my_pngs");
    fs::create_dir_all(&flat).unwrap();
    for (i, class) in ["red", "green", "blue"].iter().enumerate() {
        fs::copy(tmp.path().join(format!("src/{class}/000.png")), flat.join(format!("{i}.png"))).unwrap();
    }
    let out = tmp.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "train",
            "--iterations",
            "3",
            "--eval-every",
            "0",
            "-q",
            "--set",
            "train.batch_size=2",
            "--data",
        ])
        .arg(&flat)
        .arg("--out")
        .arg(&out)
        .env("GANTRY_CACHE_DIR", tmp.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("holds 3 PNG/JPEG images") && err.contains("dataset = \"folder\""), "{err}");
    let saved = Config::from_file(&out.join("config.toml")).unwrap();
    assert_eq!(saved.data.dataset, Dataset::Folder);
}
