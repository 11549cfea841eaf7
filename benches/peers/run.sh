#!/usr/bin/env bash
# Our benches and their peers (PyTorch, ONNX Runtime), alternately, in one
# sitting, then one table of ratios with the date and the CPU. Not run by CI.
#
#   benches/peers/run.sh [ROUNDS]          (default 2 rounds; ~15 min a round on 2 cores)
#   PEERS_TARGETS=1 benches/peers/run.sh 3 (issue 19's three ratios only, under
#                                           `HOST_CONV=auto`, each round's printed as it
#                                           ends; ~1.5 min a round, then the roofline)
#
# Sets up a venv with torch, onnx and onnxruntime (PEERS_VENV, default
# target/peers-venv; about 3 GB from PyPI), exports the tutorial's AlexNet
# from PyTorch to ONNX and quantizes it with ONNX Runtime (per-channel int8
# weights, int8 activations), then alternates: our int8/f16/fp32 inference
# (criterion, `benches/inference.rs`), ORT int8 and fp32, PyTorch fp32, our
# training step (`benches/train_step.rs`), PyTorch's. Absolute times on a
# shared machine move by 2x between days; only these ratios mean anything.
# Last, `benches/roofline.rs` prints this machine's peak multiply rates and
# bandwidth and the floors they put under each figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-2}"
venv="${PEERS_VENV:-target/peers-venv}"
work="${PEERS_DIR:-target/peers}"
target="${CARGO_TARGET_DIR:-target}"
py="$venv/bin/python"
here=benches/peers
if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch numpy onnx onnxruntime
fi
mkdir -p "$work"
[ -f "$work/alexnet_int8.onnx" ] || "$py" "$here/peers.py" export "$work"
results="$work/results-$(date +%Y%m%d-%H%M%S).jsonl"

# The median of a criterion benchmark's last run, as a result line.
ours() { # GROUP FUNCTION-DIR NAME PER
  local est="$target/criterion/$1/$2/new/estimates.json"
  "$py" - "$est" "$3" "$4" "$results" <<'PY'
import json, sys
est, name, per, results = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
e = json.load(open(est))
row = {"name": name, "median_s": e["median"]["point_estimate"] / 1e9, "per": per, "source": est}
open(results, "a").write(json.dumps(row) + "\n")
print(json.dumps(row))
PY
}

targets="${PEERS_TARGETS:-0}"
# The targets are `--conv auto`'s (unless HOST_CONV says otherwise).
[ "$targets" = 1 ] && export HOST_CONV="${HOST_CONV:-auto}"
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds"
  if [ "$targets" = 1 ]; then
    # int8 and fp32 batch 1 against ONNX Runtime, the training step against
    # PyTorch: ours then theirs, each pair back to back.
    cargo bench -q --bench inference -- 'alexnet227_int8_spin|alexnet227_f32_host' > /dev/null
    ours alexnet227_int8_spin engine ours_int8 1 > /dev/null
    ours alexnet227_f32_host nn ours_fp32 1 > /dev/null
    "$py" "$here/peers.py" ort "$work/alexnet_int8.onnx" ort_int8 "$results" > /dev/null
    "$py" "$here/peers.py" ort "$work/alexnet.onnx" ort_fp32 "$results" > /dev/null
    cargo bench -q --bench train_step -- 'train_step/alexnet/batch32' > /dev/null
    ours train_step alexnet_batch32 ours_train 32 > /dev/null
    "$py" "$here/peers.py" torch-train torch_train "$results" > /dev/null
    "$py" "$here/peers.py" ratios "$results"
    continue
  fi
  cargo bench --bench inference -- 'alexnet227_int8/|alexnet227_int8_spin|alexnet227_f16/|alexnet227_f16_spin|alexnet227_f32_host'
  ours alexnet227_int8_spin engine ours_int8 1
  ours alexnet227_f16_spin engine ours_f16 1
  ours alexnet227_int8 engine ours_int8_1thread 1
  ours alexnet227_f16 engine ours_f16_1thread 1
  ours alexnet227_f32_host nn ours_fp32 1
  "$py" "$here/peers.py" ort "$work/alexnet_int8.onnx" ort_int8 "$results"
  "$py" "$here/peers.py" ort "$work/alexnet.onnx" ort_fp32 "$results"
  "$py" "$here/peers.py" torch-infer torch_fp32 "$results"
  cargo bench --bench train_step -- 'train_step/alexnet/batch32'
  ours train_step alexnet_batch32 ours_train 32
  "$py" "$here/peers.py" torch-train torch_train "$results"
done
if [ "$targets" = 1 ]; then
  cargo bench --bench roofline
  echo "$results"
  exit 0
fi
# Memory: peak RSS of two batch-128 training steps, ours then PyTorch's.
cargo bench --bench train_memory -- 128 | tee /dev/stderr | grep '^{' >> "$results"
"$py" "$here/peers.py" torch-rss 128 torch_train_rss_batch128 "$results"
# What the machine allows at best, in this sitting (floors for the targets).
cargo bench --bench roofline | tee "${results%.jsonl}-roofline.txt"
{ "$py" "$here/peers.py" table "$results"; echo; sed 's/^/    /' "${results%.jsonl}-roofline.txt"; } | tee "${results%.jsonl}.md"
