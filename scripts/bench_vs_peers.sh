#!/usr/bin/env bash
# gantry's training step beside the PyTorch and Keras peers, measured in one session on this machine.
#
# usage: scripts/bench_vs_peers.sh [ITERS] [THREADS]
#   ITERS    timed iterations of each peer run and of gantry's bench (default 1000)
#   THREADS  thread count for all three (default 2)
# environment:
#   PEERS_VENV  Python venv with torch, tensorflow-cpu, numpy, pillow (default ../peers-venv; created
#               if missing, ~7 GB, outside the repository)
#   PEERS_DIR   the reference scripts (default ../shared/bench/peers)
#   OUT         where results go (default bench-out, ignored by git)
# Runs are alternated gantry / peers / gantry, since run-to-run noise here is ~20%.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ITERS="${1:-1000}"
THREADS="${2:-2}"
PEERS_VENV="${PEERS_VENV:-../peers-venv}"
PEERS_DIR="${PEERS_DIR:-../shared/bench/peers}"
OUT="${OUT:-bench-out}"
mkdir -p "$OUT"

if [[ ! -x "$PEERS_VENV/bin/python" ]]; then
  echo "== creating $PEERS_VENV (torch, tensorflow-cpu, numpy, pillow; several GB, once)"
  python3 -m venv "$PEERS_VENV"
  "$PEERS_VENV/bin/pip" install --quiet torch tensorflow-cpu numpy pillow
fi

cargo build --release --quiet
gantry=target/release/gantry
bench() { "$gantry" bench --batch 32 --threads "$THREADS" --warmup 50 --iterations "$ITERS" --json "$OUT/gantry_$1.json"; }

echo "== gantry (1/2)"; bench a
echo "== peers"
EXTRA_KERAS="--gen-call predict_on_batch" PYTHON="$PEERS_VENV/bin/python" \
  "$PEERS_DIR/run_peers.sh" "$ITERS" "$THREADS" "$OUT/peers"
echo "== gantry (2/2)"; bench b

python3 - "$OUT" "$THREADS" <<'PY'
import json, re, sys, pathlib
out, threads = pathlib.Path(sys.argv[1]), sys.argv[2]
runs = [json.load(open(out / f"gantry_{k}.json"))[0]["median_ms"] for k in "ab"]
ours = sum(runs) / len(runs)  # the mean of the runs before and after the peers
peers = {}
for line in open(out / "peers" / "summary.txt"):
    m = re.search(r"median_ms_per_iter=([\d.]+) framework=(\w+) threads=(\d+)", line)
    if m and m.group(3) == threads:
        peers[m.group(2)] = float(m.group(1))
print(f"\nbatch 32, {threads} threads, median ms/iteration")
print(f"  gantry   {ours:7.2f}   (runs before and after the peers: {runs[0]:.2f}, {runs[1]:.2f})")
for name, ms in sorted(peers.items()):
    print(f"  {name:<8} {ms:7.2f}   gantry/{name} = {ours / ms:.2f}x")
if peers:
    best = min(peers.values())
    print(f"  ratio to the faster peer: {ours / best:.2f}x (target <= 0.5x)")
PY
