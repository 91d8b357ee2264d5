#!/usr/bin/env python3
"""gantry's Inception features against pytorch-fid's, on shared random weights (needs PyTorch and
pytorch-fid: run it in a venv outside the repository, never in CI).

  fixture DIR   Write the tests' 1/16-width network (tests/fixtures/inception/): `tiny.pth` (the
                pytorch-fid state-dict keys, every width divided by 16, seeded random values),
                `images.npy` (six 28x28 grey images) and the features and unbiased logits this
                script's port computes for them, and `broken.pth` (two of its tensors, one of
                them the wrong shape). Before writing, the port at full width is checked
                against pytorch-fid's own network on the same weights.
  check DIR     Write `random.pth` (pytorch-fid's full network, seeded random values), two image
                sets `a.npy` and `b.npy` and pytorch-fid's pool features of them, and `narrow.pth`
                with pytorch-fid's FID of the two sets through it, for
                `GANTRY_INCEPTION_CHECK=DIR cargo test --release --test inception -- --ignored`.
  check-full DIR  The FID at full width through pytorch-fid's own network and distance: `full.pth`
                (BatchNorm statistics from stroke images, so no feature is dead), two sets of 2,100
                images (`full_a.npy`, `full_b.npy`), their features and pytorch-fid's FID, for the
                same test (it runs when these files are there; about 20 minutes on 2 cores).

Random weights are PyTorch's default initialisation with BatchNorm's statistics set from one
training-mode pass over noise images (so every layer's output stays at unit scale) and random
BatchNorm scales and shifts.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from pytorch_fid import inception as pfi
from pytorch_fid.fid_score import calculate_frechet_distance


class Conv(nn.Module):
    """torchvision's BasicConv2d."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def avg(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class A(nn.Module):
    def __init__(self, cin, pool, d):
        super().__init__()
        self.branch1x1 = Conv(cin, 64 // d, 1)
        self.branch5x5_1 = Conv(cin, 48 // d, 1)
        self.branch5x5_2 = Conv(48 // d, 64 // d, 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64 // d, 1)
        self.branch3x3dbl_2 = Conv(64 // d, 96 // d, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96 // d, 96 // d, 3, padding=1)
        self.branch_pool = Conv(cin, pool // d, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg(x))], 1)


class B(nn.Module):
    def __init__(self, cin, d):
        super().__init__()
        self.branch3x3 = Conv(cin, 384 // d, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64 // d, 1)
        self.branch3x3dbl_2 = Conv(64 // d, 96 // d, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96 // d, 96 // d, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class C(nn.Module):
    def __init__(self, cin, c7, d):
        super().__init__()
        c7 //= d
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(cin, 192 // d, 1)
        self.branch7x7_1 = Conv(cin, c7, 1)
        self.branch7x7_2 = Conv(c7, c7, **row)
        self.branch7x7_3 = Conv(c7, 192 // d, **col)
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2 = Conv(c7, c7, **col)
        self.branch7x7dbl_3 = Conv(c7, c7, **row)
        self.branch7x7dbl_4 = Conv(c7, c7, **col)
        self.branch7x7dbl_5 = Conv(c7, 192 // d, **row)
        self.branch_pool = Conv(cin, 192 // d, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        dbl = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = m(dbl)
        return torch.cat([self.branch1x1(x), b7, dbl, self.branch_pool(avg(x))], 1)


class D(nn.Module):
    def __init__(self, cin, d):
        super().__init__()
        self.branch3x3_1 = Conv(cin, 192 // d, 1)
        self.branch3x3_2 = Conv(192 // d, 320 // d, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192 // d, 1)
        self.branch7x7x3_2 = Conv(192 // d, 192 // d, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192 // d, 192 // d, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192 // d, 192 // d, 3, stride=2)

    def forward(self, x):
        b7 = x
        for m in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = m(b7)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class E(nn.Module):
    def __init__(self, cin, max_pool, d):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = Conv(cin, 320 // d, 1)
        self.branch3x3_1 = Conv(cin, 384 // d, 1)
        self.branch3x3_2a = Conv(384 // d, 384 // d, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384 // d, 384 // d, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Conv(cin, 448 // d, 1)
        self.branch3x3dbl_2 = Conv(448 // d, 384 // d, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384 // d, 384 // d, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384 // d, 384 // d, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, 192 // d, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        dbl = torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg(x)
        return torch.cat([self.branch1x1(x), b3, dbl, self.branch_pool(pool)], 1)


class Port(nn.Module):
    """pytorch-fid's FID InceptionV3 with every width divided by `d`, under the same key names."""

    def __init__(self, d):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32 // d, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32 // d, 32 // d, 3)
        self.Conv2d_2b_3x3 = Conv(32 // d, 64 // d, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64 // d, 80 // d, 1)
        self.Conv2d_4a_3x3 = Conv(80 // d, 192 // d, 3)
        self.Mixed_5b = A(192 // d, 32, d)
        self.Mixed_5c = A(256 // d, 64, d)
        self.Mixed_5d = A(288 // d, 64, d)
        self.Mixed_6a = B(288 // d, d)
        self.Mixed_6b = C(768 // d, 128, d)
        self.Mixed_6c = C(768 // d, 160, d)
        self.Mixed_6d = C(768 // d, 160, d)
        self.Mixed_6e = C(768 // d, 192, d)
        self.Mixed_7a = D(768 // d, d)
        self.Mixed_7b = E(1280 // d, False, d)
        self.Mixed_7c = E(2048 // d, True, d)
        self.fc = nn.Linear(2048 // d, 1008)

    def forward(self, images):
        """Images [b, 3, h, w] in [0, 1] -> (pool features, unbiased logits)."""
        x = 2 * F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, "Mixed_" + name)(x)
        pool = x.mean((2, 3))
        return pool, pool @ self.fc.weight.T


def randomise(model, seed, calibration=None):
    """Seeded default init, random BatchNorm scales and shifts, statistics from one pass over
    `calibration` images ([n, 3, h, w] in [0, 1]; noise when None)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.2)
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, 299, 299) if calibration is None else calibration)
    model.eval()
    return model


def as_unit_rgb(images_u8):
    """[n, 28, 28] uint8 -> [n, 3, 28, 28] float32 in [0, 1], grey repeated (as gantry takes it)."""
    x = torch.from_numpy(images_u8.astype(np.float32) / 255.0)
    return x[:, None].repeat(1, 3, 1, 1)


def digits(n, seed):
    """n MNIST-like images without MNIST: blurred random strokes, uint8."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        for _ in range(3):
            r0, c0 = rng.integers(4, 24, 2)
            dr, dc = rng.normal(0, 1, 2)
            for t in np.linspace(0, 8, 40):
                r, c = int(r0 + dr * t), int(c0 + dc * t)
                if 1 <= r < 27 and 1 <= c < 27:
                    img[i, r - 1:r + 2, c - 1:c + 2] = 1.0
    return (img * 255).astype(np.uint8)


def pytorch_fid_network(state):
    """pytorch-fid's own InceptionV3 (2048-d pool block) loaded with `state`."""
    pfi.load_state_dict_from_url = lambda *a, **k: state
    return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def fixture(out):
    full = randomise(Port(1), 1)
    reference = pytorch_fid_network(full.state_dict())
    x = as_unit_rgb(digits(4, 1))
    with torch.no_grad():
        ours, theirs = full(x)[0], reference(x)[0].flatten(1)
    err = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"port at full width vs pytorch-fid: max relative difference {err:.2e}")
    assert err < 1e-5, "the port is not pytorch-fid's network"
    tiny = randomise(Port(16), 2)
    images = digits(6, 2)
    with torch.no_grad():
        pool, logits = tiny(as_unit_rgb(images))
    out.mkdir(parents=True, exist_ok=True)
    torch.save(tiny.state_dict(), out / "tiny.pth")
    np.save(out / "images.npy", images)
    np.save(out / "features.npy", pool.numpy())
    np.save(out / "logits.npy", logits.numpy())
    # A file that starts like the network's and then does not fit it: one tensor of the wrong
    # shape, every other one missing.
    state = tiny.state_dict()
    broken = {k: state[k] for k in ["Conv2d_1a_3x3.conv.weight", "Conv2d_2a_3x3.bn.weight"]}
    broken["Conv2d_2a_3x3.bn.weight"] = torch.ones(5)
    torch.save(broken, out / "broken.pth")
    print(f"wrote {out}/tiny.pth, broken.pth, images.npy, features.npy, logits.npy")


def check_full(out, n=2100):
    """FID at full width through pytorch-fid's own network and its `calculate_frechet_distance`:
    n > 2048 images per set, BatchNorm statistics from stroke images so that no feature is dead
    (a full-rank covariance)."""
    out.mkdir(parents=True, exist_ok=True)
    state = randomise(Port(1), 5, as_unit_rgb(digits(32, 20))).state_dict()
    torch.save(state, out / "full.pth")
    net = pytorch_fid_network(state)
    stats, feats = [], {}
    sets = {"full_a": digits(n, 30), "full_b": digits(n, 31)}
    for name, images in sets.items():
        np.save(out / f"{name}.npy", images)
        with torch.no_grad():
            f = torch.cat([net(as_unit_rgb(images[i:i + 50]))[0].flatten(1) for i in range(0, n, 50)])
        feats[name] = f.double().numpy()
        np.save(out / f"{name}_features.npy", f.numpy())
        stats.append((feats[name].mean(0), np.cov(feats[name], rowvar=False)))
    dead = [int((f.std(0) == 0).sum()) for f in feats.values()]
    fid = calculate_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])
    (out / "pytorch_fid_full.json").write_text(json.dumps({"fid": float(fid), "n": n, "dead": dead}) + "\n")
    print(f"pytorch-fid FID(full_a, full_b) = {fid:.6f} on {n} + {n} images, dead features {dead}")


def check(out, n=200):
    """pytorch-fid's features of two image sets through full-width random weights, and its FID of
    them through a 1/16-width network (128-d features, where n images give a full-rank
    covariance; 2048-d features would need more than 2048 images per set)."""
    out.mkdir(parents=True, exist_ok=True)
    state = randomise(Port(1), 3).state_dict()
    torch.save(state, out / "random.pth")
    net = pytorch_fid_network(state)
    narrow = randomise(Port(16), 4)
    torch.save(narrow.state_dict(), out / "narrow.pth")
    sets = {"a": digits(n, 10), "b": digits(n, 11)}
    stats = []
    for name, images in sets.items():
        np.save(out / f"{name}.npy", images)
        with torch.no_grad():
            parts = [net(as_unit_rgb(images[i:i + 50]))[0].flatten(1) for i in range(0, n, 50)]
            small = narrow(as_unit_rgb(images))[0].double().numpy()
        np.save(out / f"{name}_features.npy", torch.cat(parts).numpy())
        stats.append((small.mean(0), np.cov(small, rowvar=False)))
    fid = calculate_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])
    (out / "pytorch_fid.json").write_text(json.dumps({"narrow_fid": float(fid), "n": n}) + "\n")
    print(f"pytorch-fid's FID(a, b) through narrow.pth = {fid:.6f} on {n} + {n} images; wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("fixture", "check", "check-full"):
        sys.exit(__doc__)
    {"fixture": fixture, "check": check, "check-full": check_full}[sys.argv[1]](Path(sys.argv[2]))
