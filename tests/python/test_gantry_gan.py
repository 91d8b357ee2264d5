"""gantry_gan, the Python package: trains, reads and shows a run through the gantry binary.

Run by .ci/run with the release build's binary (GANTRY_BIN=target/release/gantry) and the real
MNIST files (GANTRY_DATA): `python -m pytest tests/python` with `python/` on PYTHONPATH.
"""
import csv
import json
import os
import urllib.request

import numpy as np
import pytest

import gantry_gan

SMALL = dict(model__g_hidden=[16], model__d_hidden=[16], model__latent_dim=8, output__sample_interval=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "small"
    return gantry_gan.train(out=out, iterations=30, eval_every=0, threads=2, seed=3, **SMALL)


def test_train_returns_the_run_and_metrics_are_its_csv(run):
    m = run.metrics()
    with open(run.path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert list(m) == rows[0]
    assert len(m["iteration"]) == 30 and m["iteration"].dtype == np.int64
    assert np.allclose(m["d_loss"], [float(r[rows[0].index("d_loss")]) for r in rows[1:]])
    assert run.quality() == {}


def test_settings_reach_the_config(run):
    config = (run.path / "config.toml").read_text()
    assert "g_hidden = [16]" in config.replace("[\n    16,\n]", "[16]")


def test_frame_is_a_dataframe_of_the_same_columns(run):
    pd = pytest.importorskip("pandas")
    frame = run.frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(run.metrics()) and len(frame) == 30


def test_samples_and_show(run):
    grids = run.samples()
    assert [g.name for g in grids] == ["step_000000.png", "step_000010.png", "step_000020.png", "step_000030.png"]
    shown = run.show()
    if shown is not None:  # without IPython: the files it would show
        assert shown[0] == grids[-1] and shown[1].name == "curves_smoothed.png"


def test_export_writes_onnx(run, tmp_path):
    onnx = run.export(tmp_path / "g.onnx")
    assert onnx.is_file() and onnx.stat().st_size > 1000
    # An existing file only with force; the run's own default file is replaced.
    with pytest.raises(gantry_gan.GantryError) as e:
        run.export(tmp_path / "g.onnx")
    assert e.value.code == 2
    assert run.export(tmp_path / "g.onnx", force=True) == tmp_path / "g.onnx"
    assert run.export() == run.path / "generator.onnx" and run.export().is_file()


def test_settings_are_written_as_toml():
    assert gantry_gan._setting("train.g_ema", np.float64(0.999)) == "train.g_ema=0.999"
    assert gantry_gan._setting("model.g_hidden", [np.int64(8), 16]) == "model.g_hidden=[8, 16]"
    assert gantry_gan._setting("data.dir", __import__("pathlib").Path('/a "b"')) == 'data.dir="/a \\"b\\""'
    with pytest.raises(TypeError):
        gantry_gan._setting("train.seed", None)


def test_dashboard_serves_the_run(run):
    board = gantry_gan.dashboard(run.path, show=False)
    try:
        with urllib.request.urlopen(board.url + "api/runs", timeout=20) as r:
            runs = json.loads(r.read())
        assert run.path.name in json.dumps(runs), runs
    finally:
        board.stop()


def test_bad_settings_raise_with_gantrys_exit_code(tmp_path):
    with pytest.raises(gantry_gan.GantryError) as e:
        gantry_gan.train(out=tmp_path / "bad", iterations=1, train__no_such_key=1, quiet=True)
    assert e.value.code == 2 and "no_such_key" in e.value.message
    assert not (tmp_path / "bad").exists()
    with pytest.raises(gantry_gan.GantryError):
        gantry_gan.Run(tmp_path)


def test_eval_judges_the_final_generator(run):
    # .ci/run points GANTRY_CACHE_DIR at the judge the Rust tests trained (else one is trained here).
    report = run.eval(n=100)
    assert report["generated"] == 100 and np.isfinite(report["fid"]), report
    assert (run.path / "eval.json").is_file()


def test_eval_in_inception_features_returns_the_protocol(run, tmp_path):
    # The tests' 1/16-width network with pytorch-fid's keys (tests/fixtures/inception/).
    weights = os.path.join(os.path.dirname(__file__), "..", "fixtures", "inception", "tiny.pth")
    real = tmp_path / "real.npy"
    np.save(real, np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8))
    report = run.eval(n=30, features="inception", inception_weights=weights, reference=real)
    assert report["generated"] == 30 and np.isfinite(report["fid"]), report
    assert report["protocol"]["reference_count"] == 30 and not report["protocol"]["standard_weights"]
    assert (run.path / "eval-inception.json").is_file()
