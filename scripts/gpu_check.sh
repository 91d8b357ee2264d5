#!/usr/bin/env bash
# The GPU check, for the day a machine with a GPU is lent: one short script that prints a table for
# the README. It needs a gantry built with the `gpu` feature (wgpu) and a Vulkan loader and driver
# on the machine (libvulkan.so.1 and the GPU's ICD; NVIDIA's driver ships one).
#
#   bash scripts/gpu_check.sh [GANTRY_BINARY]
#
# GANTRY_BINARY: a gantry built with `cargo build --release --features gpu` (default
# target/release/gantry; built here with cargo when missing and cargo can build offline), or that
# binary stripped and gzipped (`.gz`): what the device tool can carry to a lent machine, which has
# no internet to fetch crates and takes at most 64 MiB of build outputs (the binary is ~545 MB
# with its line tables, 74 MB stripped, 20 MB gzipped). Prepared here:
#   cargo build --release --features gpu && strip -o target/gantry-gpu target/release/gantry \
#     && gzip -f target/gantry-gpu
#   then run `bash scripts/gpu_check.sh target/gantry-gpu.gz` there, carrying target/gantry-gpu.gz.
# It runs, each with a time limit:
#   - `gantry devices` (what wgpu finds);
#   - `gantry bench` of the classic preset at batch 32, 256 and 4096 on the best wgpu adapter, and
#     on this machine's CPU with 2 threads at 4096 (the issue's target: at least 10x its images/s);
#   - `gantry bench --preset dcgan-tf` at batch 256 on the GPU (target: one MNIST epoch, 235 steps,
#     under 10 s);
#   - with MNIST at $GANTRY_DATA, a short `gantry train --preset dcgan-tf --device wgpu` (235
#     iterations, one epoch), timed.
# Everything it writes goes to ${OUT:-target/gpu-check} (the device tool brings back $OUT).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${OUT:-target/gpu-check}"
mkdir -p "$out"
bin="${1:-target/release/gantry}"
device="${GANTRY_GPU_DEVICE:-wgpu}"
limit="${GANTRY_GPU_STEP_LIMIT:-240}"
# Smaller settings to try the script itself on a software driver (GANTRY_GPU_DEVICE=wgpu:cpu).
batches="${GANTRY_GPU_BATCHES:-32,256,4096}"
big="${batches##*,}"
iters="${GANTRY_GPU_ITERATIONS:-30}"
epoch="${GANTRY_GPU_EPOCH:-235}"

say() { echo "gpu_check: $*" | tee -a "$out/log.txt"; }

if [[ "$bin" == *.gz ]]; then
  gunzip -c "$bin" >"$out/gantry" && chmod +x "$out/gantry" && bin="$out/gantry"
fi
if [[ ! -x "$bin" ]]; then
  if command -v cargo >/dev/null; then
    say "building gantry with the gpu feature (offline)"
    timeout 1800 cargo build --release --offline --features gpu >>"$out/build.txt" 2>&1 || {
      say "build failed (see $out/build.txt)"; exit 1; }
  else
    say "no gantry at $bin and no cargo to build one"; exit 1
  fi
fi
if ! "$bin" devices >/dev/null 2>&1; then
  say "$bin does not run here"; exit 1
fi
say "machine: $(nproc) cores, $(uname -m), $(date -u +%Y-%m-%dT%H:%MZ)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$out/log.txt"
ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 || say "warning: no libvulkan.so.1 in the linker cache: wgpu may find no adapter"

say "gantry devices:"
"$bin" devices 2>&1 | tee "$out/devices.txt" | tee -a "$out/log.txt"

# One benchmark: its JSON into $out/NAME.json, its table lines into the log; the median ms.
bench() {
  local name=$1; shift
  if timeout "$limit" "$bin" bench --json "$out/$name.json" "$@" >"$out/$name.txt" 2>&1; then
    cat "$out/$name.txt" >>"$out/log.txt"
  else
    say "$name: failed or ran past ${limit}s (see $out/$name.txt)"
  fi
}
bench classic-gpu --device "$device" --batch "$batches" --threads 2 --warmup 5 --iterations "$iters"
bench classic-cpu --batch "$big" --threads 2 --warmup 2 --iterations 10
bench dcgan-tf-gpu --preset dcgan-tf --device "$device" --batch 256 --threads 2 --warmup 3 --iterations "$(( iters < 20 ? iters : 20 ))"

if [[ -n "${GANTRY_DATA:-}" && -d "$GANTRY_DATA" ]]; then
  start=$(date +%s.%N)
  if timeout "$limit" "$bin" train --preset dcgan-tf --device "$device" --iterations "$epoch" --eval-every 0 \
      --sample-interval "$epoch" --out "$out/dcgan-tf-epoch" --force -q >"$out/train.txt" 2>&1; then
    say "dcgan-tf, $epoch iterations of 256 (235 are one epoch) on $device: $(python3 -c "import time; print(round(time.time() - $start, 1))") s wall"
  else
    say "the dcgan-tf epoch failed or ran past ${limit}s (see $out/train.txt)"
  fi
else
  say "no MNIST at \$GANTRY_DATA: the one-epoch training is skipped (the bench above times its step)"
fi

# The table: images/s from each benchmark's JSON.
python3 - "$out" <<'EOF' | tee "$out/table.md"
import json, os, sys
out = sys.argv[1]
rows = []
for name in ["classic-gpu", "classic-cpu", "dcgan-tf-gpu"]:
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        continue
    for r in json.load(open(path)):
        rows.append((name, r["batch"], r["median_ms"], r["images_per_s"]))
print("| benchmark | batch | median ms/step | images/s |")
print("|---|---:|---:|---:|")
for name, batch, ms, ips in rows:
    print(f"| {name} | {batch} | {ms:.2f} | {ips:,.0f} |")
by = {(n, b): ips for n, b, _, ips in rows}
big = max((b for n, b in by if n == "classic-cpu"), default=None)
if big is not None and ("classic-gpu", big) in by:
    print(f"\nclassic at batch {big}: GPU {by[('classic-gpu', big)] / by[('classic-cpu', big)]:.2f}x the 2-thread CPU's images/s (target at 4096: >= 10x)")
for n, b, ms, _ in rows:
    if n == "dcgan-tf-gpu":
        print(f"dcgan-tf: one epoch of 235 steps at {ms:.1f} ms = {235 * ms / 1000:.1f} s (target < 10 s)")
EOF
