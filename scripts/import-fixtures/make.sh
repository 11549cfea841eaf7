#!/usr/bin/env bash
# Rebuild the import fixtures in tests/import/ with the real frameworks, in a
# throwaway venv (TensorFlow/Keras 3, tf-keras 2, PyTorch, ONNX). Not run by
# CI: the fixtures are checked in. Needs network access to PyPI (~3 GB).
#   scripts/import-fixtures/make.sh [OUT_DIR] [--full-alexnet] [--only-geometry] [--only-groups] [--only-graphs]
#   scripts/import-fixtures/make.sh --only-tflite
# --only-tflite writes tests/tflite/ (make_tflite.py): the converter's
# full-integer models with every tensor from TFLite's reference interpreter,
# their float versions, TensorFlow Lite Micro's outputs and arenas, an
# unsupported-operator file, then builds the host and runs its `host export
# --tflite` files through TFLite (tests/tflite/exported/).
# --only-geometry writes only the operator-graph/geometry fixtures (see
# make_fixtures.py) and leaves the older ones alone; --only-groups likewise
# writes only the grouped/depthwise/separable convolution fixtures, and --only-graphs
# only the Functional (Add, Concatenate) fixtures.
# tflite_op_vectors.py (run alone, same venv) writes tests/tflite/op_vectors.json:
# SOFTMAX and MEAN bytes from TFLite's reference interpreter, which
# tests/tflite_ops.rs holds the engine to byte for byte.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${FIXTURE_VENV:-/tmp/import-fixtures-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q tensorflow-cpu tf-keras torch torchvision onnx onnxscript onnxruntime tflite-micro
fi
if [ "${1:-}" = "--only-tflite" ]; then
  tfl() { "$venv/bin/python" scripts/import-fixtures/make_tflite.py tests/tflite "$@"; }
  tfl
  tfl --float
  tfl --unsupported
  tfl --tflm
  "$venv/bin/python" scripts/import-fixtures/tflite_op_vectors.py
  cargo build --release -p host
  tfl --exported "${CARGO_TARGET_DIR:-target}/release/host"
  echo "fixtures written to tests/tflite"
  exit 0
fi
out="${1:-tests/import}"
shift || true
"$venv/bin/python" scripts/import-fixtures/make_fixtures.py "$out" "$@"
echo "fixtures written to $out"
