"""Op vectors from TensorFlow Lite's own interpreter for SOFTMAX and MEAN (int8).

Run with the fixtures venv (scripts/import-fixtures/make.sh makes it):
    /tmp/import-fixtures-venv/bin/python scripts/import-fixtures/tflite_op_vectors.py [OUT.json]

Each case is a tiny Keras model (Input -> Softmax; Input -> GlobalAveragePooling2D;
Input -> Conv2D -> GlobalAveragePooling2D, whose MEAN gets an input scale of its own)
converted full-integer by tf.lite.TFLiteConverter. Random int8 inputs run through
tf.lite.Interpreter with the reference kernels (OpResolverType.BUILTIN_REF) and every
tensor kept, and we record the op's input and output quantization and shapes, its
input bytes and the reference kernel's output bytes (hex, row-major). The same inputs
also run with the optimized kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES) and with the
default resolver (AUTO: the optimized kernels plus the default XNNPACK delegate);
`optimized_differs` / `auto_differs` count the output bytes that differ from the
reference ones. tests/tflite_ops.rs holds our engine to the reference bytes.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/tflite/op_vectors.json"
rng = np.random.default_rng(2026)
RUNS = 3  # random inputs per case


def convert(model, shape, lo, hi):
    def rep():
        for _ in range(64):
            yield [rng.uniform(lo, hi, (1,) + shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def interpreter(content, kind, preserve=True):
    # (The default XNNPACK delegate aborts on some graphs when every tensor is kept.)
    it = tf.lite.Interpreter(
        model_content=content,
        experimental_op_resolver_type=kind,
        experimental_preserve_all_tensors=preserve,
    )
    it.allocate_tensors()
    return it


def quant(detail):
    scale, zp = detail["quantization"]
    return {"scale": float(np.float32(scale)), "zero_point": int(zp)}


def random_input(shape, style):
    if style == "uniform":
        return rng.integers(-128, 128, shape, dtype=np.int64).astype(np.int8)
    if style == "narrow":  # values close together: many equal maxima, large probabilities
        centre = int(rng.integers(-100, 100))
        return np.clip(centre + rng.integers(-6, 7, shape), -128, 127).astype(np.int8)
    # "peaked": one big value per row above a floor of noise
    x = rng.integers(-128, -60, shape, dtype=np.int64)
    idx = rng.integers(0, shape[-1], shape[:-1])
    np.put_along_axis(x, idx[..., None], rng.integers(0, 128, shape[:-1])[..., None], axis=-1)
    return x.astype(np.int8)


def same_quant_output(content):
    """The model with its output tensor (the MEAN's) given its input's scale and zero
    point, as a converter may: TFLite's MEAN takes another path then."""
    from tensorflow.lite.tools import flatbuffer_utils as fb

    m = fb.convert_bytearray_to_object(bytearray(content))
    g = m.subgraphs[0]
    (op,) = [o for o in g.operators if fb.opcode_to_name(m, o.opcodeIndex) == "MEAN"]
    src, dst = g.tensors[op.inputs[0]].quantization, g.tensors[op.outputs[0]].quantization
    dst.scale, dst.zeroPoint = list(src.scale), list(src.zeroPoint)
    return bytes(fb.convert_object_to_bytearray(m))


def case(name, op, model, shape, lo, hi, same_quant=False):
    content = convert(model, shape, lo, hi)
    if same_quant:
        content = same_quant_output(content)
    ref = interpreter(content, tf.lite.experimental.OpResolverType.BUILTIN_REF)
    ops = [o for o in ref._get_ops_details() if o["op_name"] == op]
    assert len(ops) == 1, (name, [o["op_name"] for o in ref._get_ops_details()])
    o = ops[0]
    details = {d["index"]: d for d in ref.get_tensor_details()}
    tin, tout = details[o["inputs"][0]], details[o["outputs"][0]]
    model_in = ref.get_input_details()[0]
    others = {
        "optimized": interpreter(content, tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
        "auto": interpreter(content, tf.lite.experimental.OpResolverType.AUTO, preserve=False),
    }
    runs = []
    differs = {k: 0 for k in others}
    for r in range(RUNS):
        style = ["uniform", "narrow", "peaked"][r % 3]
        if op == "SOFTMAX" and style == "narrow" and shape[-1] > 128:
            # TFLite's reference SOFTMAX aborts (RoundingDivideByPOT by more than 31) when a
            # row's exponentials sum to 256 or more, as hundreds of near-equal values do.
            style = "uniform"
        x = random_input((1,) + shape, style)
        ref.set_tensor(model_in["index"], x)
        ref.invoke()
        op_in = ref.get_tensor(tin["index"])
        op_out = ref.get_tensor(tout["index"])
        for k, it in others.items():
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            # The op's output is the model's output in every case here.
            other = it.get_tensor(it.get_output_details()[0]["index"])
            differs[k] += int(np.count_nonzero(other.astype(np.int8) != op_out.astype(np.int8)))
        runs.append({"input": op_in.astype(np.int8).tobytes().hex(), "output": op_out.astype(np.int8).tobytes().hex()})
    assert ref.get_output_details()[0]["index"] == tout["index"], name
    return {
        "name": name,
        "op": op,
        "input_shape": [int(d) for d in tin["shape"][1:]],
        "output_shape": [int(d) for d in tout["shape"][1:]],
        "input_quant": quant(tin),
        "output_quant": quant(tout),
        "runs": runs,
        "optimized_differs": differs["optimized"],
        "auto_differs": differs["auto"],
    }


def softmax_model(shape):
    x = tf.keras.Input(shape)
    return tf.keras.Model(x, tf.keras.layers.Softmax()(x))


def gap_model(shape):
    x = tf.keras.Input(shape)
    return tf.keras.Model(x, tf.keras.layers.GlobalAveragePooling2D()(x))


def conv_gap_model(shape, filters, seed):
    x = tf.keras.Input(shape)
    init = tf.keras.initializers.RandomNormal(stddev=0.5, seed=seed)
    y = tf.keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init, bias_initializer=init)(x)
    return tf.keras.Model(x, tf.keras.layers.GlobalAveragePooling2D()(y))


def main():
    tf.keras.utils.set_random_seed(7)
    cases = []
    # SOFTMAX: input ranges give the input scale and zero point.
    for shape, lo, hi in [
        ((10,), -8.0, 8.0),
        ((10,), -1.0, 1.0),
        ((5,), -30.0, 20.0),
        ((100,), -4.0, 12.0),
        ((1000,), -16.0, 16.0),
        ((2,), -0.05, 0.1),
        ((4, 4, 12), -6.0, 6.0),
        ((3, 5, 7), -64.0, 64.0),
        ((2, 3, 33), -2.5, 0.5),
    ]:
        name = f"softmax_{'x'.join(map(str, shape))}_{lo:g}_{hi:g}"
        cases.append(case(name, "SOFTMAX", softmax_model(shape), shape, lo, hi))
    # MEAN over height and width straight from the input.
    for shape, lo, hi in [
        ((4, 4, 8), -1.0, 1.0),
        ((7, 5, 3), -3.0, 9.0),
        ((1, 1, 16), -2.0, 2.0),
        ((12, 12, 10), 0.0, 6.0),
        ((3, 9, 64), -50.0, 10.0),
    ]:
        name = f"mean_{'x'.join(map(str, shape))}_{lo:g}_{hi:g}"
        cases.append(case(name, "MEAN", gap_model(shape), shape, lo, hi))
        cases.append(case(name + "_same_quant", "MEAN", gap_model(shape), shape, lo, hi, same_quant=True))
    # MEAN after a convolution: the MEAN's input scale is the conv's output scale.
    for i, (shape, filters, lo, hi) in enumerate(
        [((6, 6, 3), 8, -1.0, 1.0), ((9, 7, 4), 16, 0.0, 4.0), ((5, 5, 2), 5, -3.0, 3.0), ((16, 16, 3), 12, -1.0, 2.0)]
    ):
        name = f"conv_mean_{'x'.join(map(str, shape))}_{filters}"
        cases.append(case(name, "MEAN", conv_gap_model(shape, filters, 11 + i), shape, lo, hi))
    doc = {
        "generator": "scripts/import-fixtures/tflite_op_vectors.py",
        "tensorflow": tf.__version__,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT) or ".", exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
    for c in cases:
        print(
            f"{c['name']}: in {c['input_quant']} out {c['output_quant']} "
            f"optimized differs {c['optimized_differs']} auto differs {c['auto_differs']}"
        )
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
