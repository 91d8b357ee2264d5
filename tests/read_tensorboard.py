"""Read a gantry run's TensorBoard event files with TensorBoard's own reader and print, as JSON,
every scalar tag with its steps and values, and every image tag with its steps and sizes.
Used by tests/tensorboard.rs; needs the `tensorboard` package from PyPI."""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator

acc = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
acc.Reload()
tags = acc.Tags()
out = {
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]},
}
json.dump(out, sys.stdout)
