"""gantry from Python: train GANs, read their runs and show them in a notebook.

The package ships the ``gantry`` binary (a maturin ``bindings = "bin"`` wheel, as ruff and uv ship
theirs) and drives it: nothing is trained in Python, and a run folder is the same whether a
notebook or the command line made it.

    import gantry_gan
    run = gantry_gan.train(out="runs/first", iterations=2000, eval_every=1000)
    run.metrics()["d_loss"]        # numpy arrays keyed by metrics.csv's columns
    run.show()                     # the newest grid and the curves, inline
    gantry_gan.dashboard("runs/")  # the live dashboard in the notebook
"""

from __future__ import annotations

import csv
import numbers
import os
import signal
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import numpy as np

__all__ = ["GantryError", "Run", "Dashboard", "binary", "train", "dashboard"]


class GantryError(RuntimeError):
    """A gantry command failed: its exit code (2: bad input, see `docs/reference.md`) and message."""

    def __init__(self, command: list[str], code: int, message: str):
        self.command, self.code, self.message = command, code, message
        super().__init__(f"gantry exited {code}: {message.strip()}")


def binary() -> str:
    """The gantry binary: `GANTRY_BIN`, else the one this package installed, else `gantry` on PATH."""
    named = os.environ.get("GANTRY_BIN")
    if named:
        return named
    exe = "gantry.exe" if sys.platform == "win32" else "gantry"
    installed = Path(sysconfig.get_path("scripts")) / exe
    if installed.is_file():
        return str(installed)
    found = shutil.which("gantry")
    if found is None:
        raise GantryError(["gantry"], 127, "the gantry binary was not found: pip install gantry-gan, or set GANTRY_BIN")
    return found


def _toml(v) -> str:
    """A Python value as a TOML value: booleans, integers and floats (numpy's too), strings and
    paths, and lists of them."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return repr(float(v))
    if isinstance(v, (str, os.PathLike)):
        text = os.fspath(v)
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return '"' + escaped + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    raise TypeError(f"a setting's value must be a bool, number, string, path or list, not {type(v).__name__}")


def _setting(key: str, value) -> str:
    """`--set` text of a setting: the key and its value written as TOML."""
    return f"{key}={_toml(value)}"


def _run(args: list[str], echo=None) -> str:
    """Run gantry with `args`; each line of its stderr goes to `echo` as it comes (progress in a
    notebook cell). Returns stderr; raises GantryError on a non-zero exit. Interrupting the cell
    stops gantry as Ctrl-C would (a training run checkpoints first) and waits for it."""
    command = [binary(), *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(process.stdout), daemon=True)
    reader.start()
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if echo is not None:
                echo(line.rstrip("\n"))
        code = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait()
        raise
    reader.join()
    if code != 0:
        raise GantryError(command, code, "".join(lines[-20:]))
    return "".join(lines) + "".join(stdout)


def train(out: str | os.PathLike = None, iterations: int = None, eval_every: int = None, preset: str = None,
          *, config: str | os.PathLike = None, data: str | os.PathLike = None, seed: int = None,
          batch_size: int = None, threads: int = None, quiet: bool = False, force: bool = False,
          settings: dict = None, **other_settings) -> "Run":
    """Train a run with `gantry train` and return it; its progress lines stream into the cell.

    `other_settings` are config keys with `__` for the section's dot (`train__g_ema=0.999` is
    `--set train.g_ema=0.999`); `settings` takes dotted keys as they are. Without `out`, gantry
    names the folder under `runs/`.
    """
    args = ["train"]
    for flag, value in [("--out", out), ("--iterations", iterations), ("--eval-every", eval_every),
                        ("--preset", preset), ("--config", config), ("--data", data), ("--seed", seed),
                        ("--batch-size", batch_size), ("--threads", threads)]:
        if value is not None:
            args += [flag, str(value)]
    if force:
        args.append("--force")
    merged = dict(settings or {})
    merged.update({k.replace("__", "."): v for k, v in other_settings.items()})
    for key, value in merged.items():
        args += ["--set", _setting(key, value)]
    try:
        said = _run(args, echo=None if quiet else print)
    except GantryError as e:
        if e.code != 130 or out is None:
            raise
        # Stopped by a signal after its checkpoint: the run is there, and `gantry resume` continues it.
        return Run(out)
    if out is None:
        # gantry says where: "gantry: training N iterations on mnist (...) -> runs/mnist-..."
        line = next(l for l in said.splitlines() if l.startswith("gantry: training") and " -> " in l)
        out = line.rsplit(" -> ", 1)[1].strip()
    return Run(out)


def _table(path: Path) -> dict[str, np.ndarray]:
    """A CSV file of numbers as a dict of numpy arrays keyed by its columns (empty when missing);
    the cut last line of a file being written is left out."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    columns = {}
    for i, name in enumerate(header):
        values = np.array([float(r[i]) if r[i] else np.nan for r in body], dtype=np.float64)
        columns[name] = values.astype(np.int64) if name in ("iteration", "classes_present") else values
    return columns


class Run:
    """A run folder gantry wrote (finished, stopped or still training)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "config.toml").is_file():
            raise GantryError(["Run"], 2, f"{self.path} is not a gantry run folder (no config.toml)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def metrics(self) -> dict[str, np.ndarray]:
        """Every iteration's record: numpy arrays keyed by metrics.csv's columns."""
        return _table(self.path / "metrics.csv")

    def frame(self):
        """metrics.csv as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd
        return pd.DataFrame(self.metrics())

    def quality(self) -> dict[str, np.ndarray]:
        """The judge's scores during training (eval.csv: FID, precision, recall, ...), by column."""
        return _table(self.path / "eval.csv")

    def eval(self, n: int = 10000, seed: int = 0, quiet: bool = True, features: str = "judge",
             inception_weights: str | os.PathLike = None, reference: str | os.PathLike = None) -> dict:
        """Judge `n` samples of the final generator with `gantry eval` and return its report;
        `features="inception"` scores them in pytorch-fid's InceptionV3 instead (Inception FID,
        KID, IS and the protocol; `inception_weights` the weights file, else gantry finds it);
        `reference` real images (.npy or PNG folder) in place of the data set's test images."""
        import json
        args = ["eval", str(self.path), "--n", str(n), "--seed", str(seed), "--features", features]
        for flag, value in [("--inception-weights", inception_weights), ("--reference", reference)]:
            if value is not None:
                args += [flag, str(value)]
        _run(args, echo=None if quiet else print)
        name = "eval-inception.json" if features == "inception" else "eval.json"
        report = json.loads((self.path / name).read_text())
        return report[0] if isinstance(report, list) and len(report) == 1 else report

    def samples(self) -> list[Path]:
        """The sample grids written during training, in order."""
        return sorted((self.path / "samples").glob("step_*.png"))

    def export(self, out: str | os.PathLike = None, force: bool = False) -> Path:
        """The generator as ONNX (`gantry export`): RUN/generator.onnx (replaced when there), or
        `out` (an existing file only with `force`); returns the file."""
        args = ["export", str(self.path)]
        if out is not None:
            args += ["--out", os.fspath(out)] + (["--force"] if force else [])
        _run(args)
        return Path(out) if out is not None else self.path / "generator.onnx"

    def show(self):
        """The newest grid and the smoothed curves, inline in a notebook (their paths elsewhere)."""
        shown = [p for p in (self.samples()[-1:] + [self.path / "plots" / "curves_smoothed.png"]) if p.is_file()]
        try:
            from IPython.display import Image, display
        except ImportError:
            return shown
        for p in shown:
            display(Image(filename=str(p)))
        return None


class Dashboard:
    """A `gantry serve` process: its address, and `stop()`."""

    def __init__(self, process: subprocess.Popen, url: str):
        self.process, self.url = process, url

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1].split("/")[0])

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)

    def __repr__(self) -> str:
        return f"Dashboard({self.url!r})"


def dashboard(path: str | os.PathLike, port: int = 0, height: int = 800, show: bool = True) -> Dashboard:
    """Serve the live dashboard of `path` (a run, or a folder of runs) and embed it: Colab's
    `serve_kernel_port_as_iframe` where it runs, an IFrame in other notebooks."""
    command = [binary(), "serve", str(path), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []
    for line in process.stderr:
        said.append(line)
        if "http://" in line:
            url = line[line.index("http://"):].split()[0]
            break
    else:
        code = process.wait()
        raise GantryError(command, code, "".join(said))
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    board = Dashboard(process, url)
    if show:
        _embed(board, height)
    return board


def _embed(board: Dashboard, height: int):
    try:
        from google.colab import output  # type: ignore
        output.serve_kernel_port_as_iframe(board.port, height=height)
        return
    except ImportError:
        pass
    try:
        from IPython.display import IFrame, display
    except ImportError:
        return
    display(IFrame(board.url, width="100%", height=height))
