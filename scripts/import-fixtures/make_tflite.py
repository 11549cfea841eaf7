"""Full-integer .tflite fixtures from TensorFlow's own converter, with the bytes TFLite's
reference interpreter computes for every tensor (tests/tflite/, read by tests/tflite.rs).

Run by make.sh (`--only-tflite`) in the fixture venv; not by CI: the outputs are checked in.
`--exported HOST` instead runs our `host export --tflite` outputs through TFLite (see exported()),
`--tflm` runs every fixture in TensorFlow Lite Micro itself (see tflm()), `--float` writes the float
models a float .tflite import is checked on (see floats()).

- One small model per operator the importer takes (CONV_2D, DEPTHWISE_CONV_2D,
  FULLY_CONNECTED, ADD, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, PAD, RESHAPE, CONCATENATION,
  SOFTMAX, fused RELU/RELU6), built in Keras and converted with
  `TFLITE_BUILTINS_INT8`, int8 input and output.
- MLPerf Tiny's four reference architectures: ResNet-8, DS-CNN and MobileNetV1 0.25 from the
  Keras fixtures in tests/import (their Rescaling dropped: the .tflite takes what the network
  sees), and the anomaly-detection autoencoder (640 -> 4 x Dense 128 -> 8 -> 4 x Dense 128
  -> 640, BatchNormalization and ReLU after each hidden Dense) built here.

For each model NAME: NAME.tflite; NAME.tensors.bin, every tensor an operator writes (and the
input), for each test input, in TFLite's reference interpreter
(`OpResolverType.BUILTIN_REF`, `experimental_preserve_all_tensors`); NAME.expected.json
indexing that file, with the operators and, per tensor, whether TFLite's default (optimized)
kernels gave other bytes; NAME_input_K.npy, the int8 inputs.
"""
import json
import os
import sys

import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/tflite"
SRC = "tests/import"
rng = np.random.default_rng(2026)


def convert(keras_model, rep_inputs):
    import tensorflow as tf

    def rep():
        for x in rep_inputs:
            yield [x[None].astype(np.float32)]

    c = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = rep
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    return c.convert()


def interpreter(content, reference):
    import tensorflow as tf

    kind = tf.lite.experimental.OpResolverType
    it = tf.lite.Interpreter(
        model_content=content,
        experimental_op_resolver_type=kind.BUILTIN_REF if reference else kind.BUILTIN,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    return it


def run_all(it, x):
    """Every operator's output tensor (and the input) after one invoke on int8 `x`."""
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], x[None])
    it.invoke()
    tensors = {inp["index"]: x.copy()}
    for op in it._get_ops_details():
        for t in op["outputs"]:
            tensors[int(t)] = it.get_tensor(int(t)).copy()
    return tensors


def quantize_input(it, x):
    d = it.get_input_details()[0]
    scale, zp = d["quantization"]
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


def save(name, keras_model, rep_inputs, test_inputs):
    content = convert(keras_model, rep_inputs)
    with open(os.path.join(OUT, f"{name}.tflite"), "wb") as f:
        f.write(content)
    ref = interpreter(content, reference=True)
    opt = interpreter(content, reference=False)
    details = {d["index"]: d for d in ref.get_tensor_details()}
    ops = [
        {"index": int(o["index"]), "op": o["op_name"], "inputs": [int(i) for i in o["inputs"]], "outputs": [int(i) for i in o["outputs"]]}
        for o in ref._get_ops_details()
    ]
    runs, differs = [], {}
    for k, x in enumerate(test_inputs):
        q = quantize_input(ref, x)
        np.save(os.path.join(OUT, f"{name}_input_{k}.npy"), q)
        r = run_all(ref, q)
        o = run_all(opt, q)
        for t in r:
            if not np.array_equal(r[t], o[t]):
                d = differs.setdefault(t, {"inputs": 0, "values": 0, "max_abs": 0})
                diff = np.abs(r[t].astype(np.int32) - o[t].astype(np.int32))
                d["inputs"] += 1
                d["values"] += int((diff > 0).sum())
                d["max_abs"] = max(d["max_abs"], int(diff.max()))
        runs.append(r)
    blob, tensors, offset = bytearray(), [], 0
    for t in sorted(runs[0]):
        d = details[t]
        n = runs[0][t].size
        for r in runs:
            blob += r[t].astype(np.int8).tobytes()
        scales = d["quantization_parameters"]["scales"]
        zps = d["quantization_parameters"]["zero_points"]
        tensors.append(
            {
                "index": int(t),
                "name": d["name"],
                "shape": [int(s) for s in d["shape"]],
                "scale": float(scales[0]) if len(scales) else None,
                "zero_point": int(zps[0]) if len(zps) else None,
                "offset": offset,
                "bytes": int(n),
                "optimized_differs": differs.get(t),
            }
        )
        offset += n * len(runs)
    with open(os.path.join(OUT, f"{name}.tensors.bin"), "wb") as f:
        f.write(bytes(blob))
    import tensorflow as tf

    doc = {
        "tensorflow": tf.__version__,
        "inputs": len(runs),
        "input_tensor": int(ref.get_input_details()[0]["index"]),
        "output_tensor": int(ref.get_output_details()[0]["index"]),
        "ops": ops,
        "tensors": tensors,
    }
    with open(os.path.join(OUT, f"{name}.expected.json"), "w") as f:
        json.dump(doc, f, indent=1)
    kinds = sorted({o["op"] for o in ops})
    print(f"{name}.tflite: {len(content)} bytes, {len(ops)} operators {kinds}; optimized differs on {len(differs)} tensors")


def op_models(keras):
    """(name, model, input shape): one model per operator."""
    L = keras.layers

    def seq(shape, *layers):
        return keras.Sequential([keras.Input(shape), *layers])

    def functional(shape, body):
        inp = keras.Input(shape)
        return keras.Model(inp, body(inp))

    def add_body(x):
        a = L.Conv2D(6, 3, padding="same")(x)
        b = L.Conv2D(6, 1)(x)
        return L.Add()([a, b])

    def add_relu_body(x):
        a = L.Conv2D(6, 3, padding="same")(x)
        return L.ReLU()(L.Add()([a, x if x.shape[-1] == 6 else L.Conv2D(6, 1)(x)]))

    def concat_body(x):
        a = L.Conv2D(4, 3, padding="same", activation="relu")(x)
        b = L.Conv2D(5, 1)(x)
        return L.Concatenate()([a, b])

    return [
        ("op_conv", seq((9, 9, 3), L.Conv2D(8, 3, padding="same")), (9, 9, 3)),
        ("op_conv_relu_strided", seq((12, 11, 3), L.Conv2D(8, (5, 3), strides=2, padding="same", activation="relu")), (12, 11, 3)),
        ("op_conv_relu6_valid", seq((10, 10, 4), L.Conv2D(6, 3, strides=(2, 1), activation="relu6")), (10, 10, 4)),
        ("op_depthwise", seq((9, 9, 4), L.DepthwiseConv2D(3, padding="same", activation="relu6")), (9, 9, 4)),
        ("op_depthwise_multiplier", seq((10, 10, 3), L.DepthwiseConv2D(3, strides=2, depth_multiplier=2)), (10, 10, 3)),
        ("op_dense", seq((5, 4, 3), L.Flatten(), L.Dense(10, activation="relu")), (5, 4, 3)),
        ("op_dense_flat", seq((24,), L.Dense(7)), (24,)),
        ("op_add", functional((8, 8, 3), add_body), (8, 8, 3)),
        ("op_add_relu", functional((8, 8, 3), add_relu_body), (8, 8, 3)),
        ("op_avgpool", seq((9, 9, 4), L.AveragePooling2D(2)), (9, 9, 4)),
        ("op_avgpool_same", seq((9, 9, 4), L.AveragePooling2D(3, strides=2, padding="same")), (9, 9, 4)),
        ("op_maxpool", seq((9, 9, 4), L.MaxPooling2D(3, strides=2)), (9, 9, 4)),
        ("op_mean", seq((6, 5, 8), L.Conv2D(8, 1), L.GlobalAveragePooling2D()), (6, 5, 8)),
        ("op_pad", seq((8, 8, 3), L.ZeroPadding2D(((1, 2), (2, 1))), L.Conv2D(4, 3)), (8, 8, 3)),
        ("op_concat", functional((7, 7, 3), concat_body), (7, 7, 3)),
        ("op_softmax", seq((16,), L.Dense(10), L.Softmax()), (16,)),
    ]


def without_rescaling(keras, path):
    """The .keras model at `path` with its Rescaling replaced by the identity, weights kept."""
    model = keras.saving.load_model(path)

    def clone(layer):
        if type(layer).__name__ == "Rescaling":
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for a, b in zip(model.layers, copy.layers):
        b.set_weights(a.get_weights())
    return copy


def autoencoder(keras):
    """MLPerf Tiny anomaly detection's dense autoencoder (640 log-mel values in and out)."""
    L = keras.layers
    inp = keras.Input((640,), name="input")
    x = inp
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.Dense(units)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
    out = L.Dense(640)(x)
    model = keras.Model(inp, out, name="autoencoder")
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.get_weights()[0].shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)]
            )
    return model


def main():
    os.makedirs(OUT, exist_ok=True)
    import keras

    keras.utils.set_random_seed(7)
    for name, model, shape in op_models(keras):
        rep = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(32)]
        tests = [rng.normal(0, 1.2, shape).astype(np.float32) for _ in range(3)]
        save(name, model, rep, tests)

    def pngs(prefix, n, size):
        from PIL import Image

        return [np.asarray(Image.open(os.path.join(SRC, f"{prefix}_{i}.png")).convert("RGB"), np.float32) / 255.0 for i in range(n)][:size]

    images = pngs("image", 4, 4)
    rep = images + [rng.uniform(0, 1, (32, 32, 3)).astype(np.float32) for _ in range(28)]
    save("resnet8", without_rescaling(keras, os.path.join(SRC, "resnet8.keras")), rep, images[:2])

    with open(os.path.join(SRC, "dscnn.expected.json")) as f:
        features = [np.asarray(v, np.float32).reshape(49, 10, 1) for v in json.load(f)["inputs"]]
    rep = features + [rng.normal(0, 1.5, (49, 10, 1)).astype(np.float32) for _ in range(30)]
    save("dscnn", keras.saving.load_model(os.path.join(SRC, "dscnn.keras")), rep, features)

    mobile = [2 * p - 1 for p in pngs("mobilenet_image", 2, 2)]
    rep = mobile + [rng.uniform(-1, 1, (96, 96, 3)).astype(np.float32) for _ in range(30)]
    save("mobilenet_v1", without_rescaling(keras, os.path.join(SRC, "mobilenet_v1.keras")), rep, mobile[:1])

    model = autoencoder(keras)
    rep = [rng.normal(0, 1, (640,)).astype(np.float32) for _ in range(32)]
    save("autoencoder", model, rep, rep[:2])


def exported(host):
    """`host export --tflite` run through TFLite's interpreter: our golden AlexNet-micro model and
    every fixture above re-exported after `host import` (`host` is the host binary). Writes
    exported/NAME.tflite (the test re-exports and requires the same bytes), the int8 inputs
    exported/NAME_input_K.npy and exported/NAME.outputs.json: TFLite's output bytes per input
    under its reference kernels, and whether its default kernels agree."""
    import subprocess
    import tempfile

    import tensorflow as tf

    out = os.path.join(OUT, "exported")
    os.makedirs(out, exist_ok=True)
    names = sorted(f[: -len(".tflite")] for f in os.listdir(OUT) if f.endswith(".tflite") and not f.startswith(("unsupported_", "float_")))
    sources = [("micro", "tests/golden/micro.int8")] + [(n, os.path.join(OUT, f"{n}.tflite")) for n in names]
    tmp = tempfile.mkdtemp()
    for name, src in sources:
        model = src
        if src.endswith(".tflite"):
            model = os.path.join(tmp, f"{name}.int8")
            subprocess.run([host, "import", src, "--out", model], check=True, stdout=subprocess.DEVNULL)
        path = os.path.join(out, f"{name}.tflite")
        subprocess.run([host, "export", "--model", model, "--tflite", path], check=True, stdout=subprocess.DEVNULL)
        content = open(path, "rb").read()
        ref = interpreter(content, reference=True)
        opt = interpreter(content, reference=False)
        d = ref.get_input_details()[0]
        if src.endswith(".tflite"):
            inputs = [np.load(os.path.join(OUT, f"{name}_input_{k}.npy")) for k in range(3) if os.path.exists(os.path.join(OUT, f"{name}_input_{k}.npy"))]
        else:
            inputs = [rng.integers(-128, 128, d["shape"][1:]).astype(np.int8) for _ in range(2)]
        outputs, agree = [], True
        for k, x in enumerate(inputs):
            np.save(os.path.join(out, f"{name}_input_{k}.npy"), x)
            runs = []
            for it in (ref, opt):
                it.set_tensor(d["index"], x[None])
                it.invoke()
                runs.append(it.get_tensor(it.get_output_details()[0]["index"]).reshape(-1).astype(np.int8))
            outputs.append([int(v) for v in runs[0]])
            agree = agree and np.array_equal(runs[0], runs[1])
        doc = {"tensorflow": tf.__version__, "source": src, "outputs": outputs, "optimized_agrees": bool(agree)}
        with open(os.path.join(out, f"{name}.outputs.json"), "w") as f:
            json.dump(doc, f)
        print(f"exported/{name}.tflite: {len(content)} bytes, {len(ref._get_ops_details())} operators, TFLite ran it")


def tflm():
    """TensorFlow Lite Micro itself (the `tflite-micro` package's interpreter, its reference
    kernels on this machine) on every fixture: its output bytes on the stored inputs, whether they
    equal TFLite's reference interpreter's, and its arena (RecordingMicroAllocator's total, and
    the head: the activations' planned part). Added to NAME.expected.json under "tflm"."""
    import contextlib
    import io
    import re

    from tflite_micro.python.tflite_micro import runtime

    names = sorted(f[: -len(".tflite")] for f in os.listdir(OUT) if f.endswith(".tflite") and not f.startswith(("unsupported_", "float_")))
    for name in names:
        path = os.path.join(OUT, f"{name}.expected.json")
        with open(path) as f:
            doc = json.load(f)
        blob = open(os.path.join(OUT, f"{name}.tensors.bin"), "rb").read()
        out = [t for t in doc["tensors"] if t["index"] == doc["output_tensor"]][0]
        it = runtime.Interpreter.from_file(os.path.join(OUT, f"{name}.tflite"), arena_size=1 << 22)
        equal = True
        for k in range(doc["inputs"]):
            x = np.load(os.path.join(OUT, f"{name}_input_{k}.npy"))
            it.set_input(x[None], 0)
            it.invoke()
            got = it.get_output(0).reshape(-1).astype(np.int8).tobytes()
            want = blob[out["offset"] + k * out["bytes"] : out["offset"] + (k + 1) * out["bytes"]]
            equal = equal and got == want
        # print_allocations logs from C++ (MicroPrintf): capture file descriptors 1 and 2.
        r, w = os.pipe()
        saved = (os.dup(1), os.dup(2))
        sys.stdout.flush()
        os.dup2(w, 1)
        os.dup2(w, 2)
        it.print_allocations()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(w)
        text = os.read(r, 1 << 16).decode()
        os.close(r)
        grab = lambda what: int(re.search(rf"Arena allocation {what} (\d+) bytes", text).group(1))
        doc["tflm"] = {"output_equals_reference": equal, "arena_total": grab("total"), "arena_head": grab("head")}
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"{name}: TFLite Micro output equals the reference: {equal}; arena {doc['tflm']['arena_total']} B")


def floats():
    """float_NAME.tflite: the same architectures converted without quantization (a float .tflite
    imports as a checkpoint), with float_NAME.expected.json holding two float inputs and TFLite's
    outputs for them."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    models = [(n, m, sh) for n, m, sh in op_models(keras)]
    models.append(("resnet8", without_rescaling(keras, os.path.join(SRC, "resnet8.keras")), (32, 32, 3)))
    models.append(("dscnn", keras.saving.load_model(os.path.join(SRC, "dscnn.keras")), (49, 10, 1)))
    for name, model, shape in models:
        content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        with open(os.path.join(OUT, f"float_{name}.tflite"), "wb") as f:
            f.write(content)
        it = tf.lite.Interpreter(model_content=content)
        it.allocate_tensors()
        d, o = it.get_input_details()[0], it.get_output_details()[0]
        inputs = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(2)]
        outputs = []
        for x in inputs:
            it.set_tensor(d["index"], x[None])
            it.invoke()
            outputs.append(it.get_tensor(o["index"]).reshape(-1).astype(float).tolist())
        doc = {"tensorflow": tf.__version__, "input_shape": list(shape), "inputs": [x.reshape(-1).tolist() for x in inputs], "outputs": outputs}
        with open(os.path.join(OUT, f"float_{name}.expected.json"), "w") as f:
            json.dump(doc, f)
        ops = sorted({op["op_name"] for op in it._get_ops_details()})
        print(f"float_{name}.tflite: {len(content)} bytes, {ops}")


def unsupported():
    """unsupported_logistic.tflite: a Dense with a sigmoid (TFLite's LOGISTIC), which the
    importer must name."""
    import keras

    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, activation="sigmoid")])
    content = convert(model, [rng.normal(0, 1, (12,)).astype(np.float32) for _ in range(8)])
    with open(os.path.join(OUT, "unsupported_logistic.tflite"), "wb") as f:
        f.write(content)
    print(f"unsupported_logistic.tflite: {len(content)} bytes")


if __name__ == "__main__":
    if "--float" in sys.argv:
        floats()
    elif "--tflm" in sys.argv:
        tflm()
    elif "--unsupported" in sys.argv:
        unsupported()
    elif "--exported" in sys.argv:
        exported(sys.argv[sys.argv.index("--exported") + 1])
    else:
        main()
