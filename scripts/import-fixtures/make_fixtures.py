"""Build the import fixtures in tests/import/ with the real frameworks.

Run through scripts/import-fixtures/make.sh (it makes the venv). Not run by CI:
the fixtures it writes are checked in, and the Rust tests compare our import
of each model with the probabilities the framework itself computed here.

Every model is tutorial-shaped (Conv -> ReLU -> BatchNorm -> MaxPool, twice,
Flatten, Dense + Dropout, Dense softmax) and small, with BatchNormalization
statistics far from 0/1 and some negative gammas, so a wrong import shows.

The geometry fixtures (geometry_fixtures(); `--only-geometry` writes just them
and leaves the older files alone) exercise the operator graph instead:
explicit and asymmetric pads, rectangular kernels and strides, dilation, ReLU6,
average and global average pooling, and torchvision's AlexNet.

The groups fixtures (groups_fixtures(); `--only-groups` writes just them, the same
way) exercise grouped convolution: Keras's DepthwiseConv2D (with a depth
multiplier), SeparableConv2D and Conv2D(groups=...), and PyTorch's Conv2d(groups=...)
(depthwise, pointwise, grouped), exported to ONNX Conv nodes with a group attribute.

The graph fixtures (graphs_fixtures(); `--only-graphs` writes just them) are Functional
Keras models and a PyTorch module with branches and merges: small-input versions of MLPerf
Tiny's reference models (ResNet-8, DS-CNN, MobileNetV1 0.25 from keras.applications), a small
model with Concatenate and BatchNormalization after activations, and a PyTorch residual Add
and torch.cat exported to ONNX. Their BatchNormalization statistics are random, so the
importer's folding of BN into the convolution before it is checked against the framework.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/import"
FULL = "--full-alexnet" in sys.argv
ONLY_GEOMETRY = "--only-geometry" in sys.argv
ONLY_GROUPS = "--only-groups" in sys.argv
ONLY_GRAPHS = "--only-graphs" in sys.argv
# The checked-in fixtures, read back by --only-geometry (their images, keras3_avgpool, torch_avgpool)
# and by --only-groups (their images).
CHECKED_IN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "import")
SIZE = 32
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
rng = np.random.default_rng(123)


def images(size=SIZE):
    """Four size x size RGB images (smooth gradients plus noise), uint8 HWC."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = []
    for k in range(4):
        r = 127 + 120 * np.sin(6.0 * xx + k)
        g = 127 + 120 * np.cos(5.0 * yy - k)
        b = 255 * (xx * yy) if k % 2 else 255 * (1 - xx)
        img = np.stack([r, g, b], -1) + rng.normal(0, 20, (size, size, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def write_png(path, img):
    import tensorflow as tf

    tf.io.write_file(path, tf.io.encode_png(img))


def keras_layers(keras, rescaling, pool="max"):
    L = keras.layers
    layers = [keras.Input(shape=(SIZE, SIZE, 3))]
    if rescaling:
        layers.append(L.Rescaling(1.0 / 255))
    pool_layer = (lambda: L.MaxPooling2D(3, 2)) if pool == "max" else (lambda: L.AveragePooling2D(3, 2))
    layers += [
        L.Conv2D(8, 5, strides=2, activation="relu"),
        L.BatchNormalization(),
        pool_layer(),
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.BatchNormalization(),
        L.MaxPooling2D(3, 2),
        L.Flatten(),
        L.Dense(32, activation="relu"),
        L.Dropout(0.5),
        L.Dense(len(CLASSES), activation="softmax"),
    ]
    return layers


def randomize(model, raw_input):
    """Random weights and BatchNorm statistics far from the defaults."""
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        name = type(layer).__name__
        if name == "BatchNormalization":
            c = ws[0].shape[0]
            gamma = rng.uniform(0.5, 1.5, c) * np.where(rng.random(c) < 0.3, -1, 1)
            beta = rng.normal(0, 0.3, c)
            mean = rng.normal(0, 2.0, c) + (20.0 if raw_input else 0.5)
            var = rng.uniform(0.3, 3.0, c) * (100.0 if raw_input else 1.0)
            layer.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])
        elif name in ("DepthwiseConv2D", "SeparableConv2D"):
            # Keras 3 weights: DepthwiseConv2D [kernel (kh, kw, in, multiplier), bias?];
            # SeparableConv2D [depthwise_kernel (kh, kw, in, multiplier), pointwise_kernel
            # (1, 1, in * multiplier, filters), bias?]. A depthwise kernel's fan-in is kh * kw.
            new = []
            for w, v in zip(ws, layer.weights):
                if "pointwise" in v.path:
                    scale = 1.0 / np.sqrt(np.prod(w.shape[:-1]))
                elif w.ndim == 4:
                    scale = 1.0 / np.sqrt(w.shape[0] * w.shape[1])
                else:
                    scale = 0.1  # bias
                new.append(rng.normal(0, scale, w.shape).astype(np.float32))
            layer.set_weights(new)
        else:
            k = ws[0]
            fan_in = np.prod(k.shape[:-1])
            scale = 1.0 / np.sqrt(fan_in) * (1.0 / 40.0 if raw_input and name == "Conv2D" and k.shape[2] == 3 else 1.0)
            new = [rng.normal(0, scale, k.shape).astype(np.float32)]
            new += [rng.normal(0, 0.1, w.shape).astype(np.float32) for w in ws[1:]]
            layer.set_weights(new)


def save_expected(name, probs, extra=None, images=None, key="probabilities"):
    if images is None:
        images = [f"image_{i}.png" for i in range(len(probs))]
    doc = {"classes": CLASSES, "images": images, key: probs.tolist()}
    doc.update(extra or {})
    with open(os.path.join(OUT, f"{name}.expected.json"), "w") as f:
        json.dump(doc, f, indent=1)


def main():
    import keras
    import tensorflow as tf

    os.makedirs(OUT, exist_ok=True)
    if ONLY_GEOMETRY:
        geometry_fixtures(CHECKED_IN)
        return
    if ONLY_GROUPS:
        groups_fixtures(CHECKED_IN)
        return
    if ONLY_GRAPHS:
        graphs_fixtures(CHECKED_IN)
        return
    imgs = images()
    for i, img in enumerate(imgs):
        write_png(os.path.join(OUT, f"image_{i}.png"), img)
    batch = np.stack(imgs).astype(np.float32)  # raw 0..255, as the tutorial feeds

    # Keras 3: .keras (and the legacy .h5 it still writes), with and without Rescaling.
    for rescaling in (True, False):
        tag = "rescaling" if rescaling else "raw"
        model = keras.Sequential(keras_layers(keras, rescaling))
        randomize(model, raw_input=not rescaling)
        probs = model.predict(batch, verbose=0)
        model.save(os.path.join(OUT, f"keras3_{tag}.keras"))
        save_expected(f"keras3_{tag}", probs, {"keras": keras.__version__})
        if rescaling:
            model.save(os.path.join(OUT, "keras3_legacy.h5"))
            save_expected("keras3_legacy", probs, {"keras": keras.__version__})
            with open(os.path.join(OUT, "keras3_rescaling.json"), "w") as f:
                f.write(model.to_json())
            # tf.keras (Keras 2): the same weights in its own .h5 format.
            import tf_keras

            m2 = tf_keras.Sequential(keras_layers(tf_keras, True))
            for a, b in zip(m2.layers, model.layers):
                a.set_weights(b.get_weights())
            probs2 = m2.predict(batch, verbose=0)
            m2.save(os.path.join(OUT, "keras2.h5"))
            save_expected("keras2", probs2, {"keras": tf_keras.__version__})
            keras3 = model

    # The unsupported layer: average pooling.
    bad = keras.Sequential(keras_layers(keras, True, pool="avg"))
    bad.save(os.path.join(OUT, "keras3_avgpool.keras"))

    # Weights only, from a subclassed model (how the tutorial's AlexNet class is saved),
    # with the alexnet-tiny preset's topology at 67x67.
    tiny_weights_only(keras, tf)

    # PyTorch -> ONNX, the same network with ImageNet-style normalisation outside the model.
    torch_fixtures(keras3, batch)

    # A tiny class-folder set for calibration (`host quantize --data`) and the README's commands.
    import shutil

    pictures = [f"image_{i}.png" for i in range(4)] + ["tiny_image_0.png"]
    for name, picture in zip(CLASSES, pictures):
        os.makedirs(os.path.join(OUT, "flowers", name), exist_ok=True)
        shutil.copy(os.path.join(OUT, picture), os.path.join(OUT, "flowers", name, picture))

    if FULL:
        full_alexnet(keras)

    geometry_fixtures(OUT)
    groups_fixtures(OUT)


def tiny_weights_only(keras, tf):
    L = keras.layers

    class AlexNet(keras.Model):
        """The tutorial's subclassed AlexNet, at alexnet-tiny's widths."""

        def __init__(self, classes, f=(4, 8, 8, 8, 8), hidden=16):
            super().__init__()
            self.c1 = L.Conv2D(f[0], 11, strides=4, activation="relu")
            self.b1 = L.BatchNormalization()
            self.p1 = L.MaxPooling2D(3, 2)
            self.c2 = L.Conv2D(f[1], 5, padding="same", activation="relu")
            self.b2 = L.BatchNormalization()
            self.p2 = L.MaxPooling2D(3, 2)
            self.c3 = L.Conv2D(f[2], 3, padding="same", activation="relu")
            self.b3 = L.BatchNormalization()
            self.c4 = L.Conv2D(f[3], 3, padding="same", activation="relu")
            self.b4 = L.BatchNormalization()
            self.c5 = L.Conv2D(f[4], 3, padding="same", activation="relu")
            self.b5 = L.BatchNormalization()
            self.p5 = L.MaxPooling2D(3, 2)
            self.flat = L.Flatten()
            self.d1 = L.Dense(hidden, activation="relu")
            self.drop1 = L.Dropout(0.5)
            self.d2 = L.Dense(hidden, activation="relu")
            self.drop2 = L.Dropout(0.5)
            self.out = L.Dense(classes, activation="softmax")

        def call(self, x, training=False):
            x = self.p1(self.b1(self.c1(x), training=training))
            x = self.p2(self.b2(self.c2(x), training=training))
            x = self.b3(self.c3(x), training=training)
            x = self.b4(self.c4(x), training=training)
            x = self.p5(self.b5(self.c5(x), training=training))
            x = self.drop1(self.d1(self.flat(x)), training=training)
            x = self.drop2(self.d2(x), training=training)
            return self.out(x)

    model = AlexNet(len(CLASSES))
    model(np.zeros((1, 67, 67, 3), np.float32))
    randomize(model, raw_input=False)
    imgs = [tf.image.resize(np.stack([i]), (67, 67)).numpy()[0] for i in images()[:2]]
    # Our trainer's convention: pixels in [0, 1] (what --arch presets take).
    x = np.stack([np.clip(np.round(i), 0, 255).astype(np.uint8) for i in imgs])
    for k, img in enumerate(x):
        write_png(os.path.join(OUT, f"tiny_image_{k}.png"), img)
    probs = model(x.astype(np.float32) / 255.0).numpy()
    model.save_weights(os.path.join(OUT, "tiny_subclassed.weights.h5"))
    doc = {"classes": CLASSES, "images": [f"tiny_image_{k}.png" for k in range(len(x))], "probabilities": probs.tolist()}
    with open(os.path.join(OUT, "tiny_subclassed.expected.json"), "w") as f:
        json.dump(doc, f, indent=1)


def torch_fixtures(keras_model, batch):
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2),
        nn.ReLU(),
        nn.BatchNorm2d(8),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(16),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, len(CLASSES)),
        nn.Softmax(dim=1),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c) * np.where(rng.random(c) < 0.3, -1, 1)))
                m.bias.copy_(torch.tensor(rng.normal(0, 0.3, c)))
                m.running_mean.copy_(torch.tensor(rng.normal(0.5, 1.0, c)))
                m.running_var.copy_(torch.tensor(rng.uniform(0.3, 3.0, c)))
    net.eval()
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    x = (batch / 255.0 - mean) / std  # NHWC, torchvision's Normalize
    x = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        probs = net(x).numpy()
    path = os.path.join(OUT, "torch.onnx")
    torch.onnx.export(net, x[:1], path, input_names=["input"], output_names=["probs"], dynamo=False)
    extra = {"torch": torch.__version__, "input_scale": (1 / std).tolist(), "input_offset": (-mean / std).tolist()}
    save_expected("torch", probs, extra)
    # The default exporter since PyTorch 2.9 (torch.export-based) writes other node patterns.
    # In a process of its own: TensorFlow and the torch.export path both load LLVM and clash in one process.
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"net": net, "x": x[:1]}, os.path.join(tmp, "net.pt"))
        code = (
            "import sys, torch; d = torch.load(sys.argv[1], weights_only=False); "
            "torch.onnx.export(d['net'], (d['x'],), sys.argv[2], input_names=['input'], dynamo=True, external_data=False)"
        )
        subprocess.run([sys.executable, "-c", code, os.path.join(tmp, "net.pt"), os.path.join(OUT, "torch_dynamo.onnx")], check=True)
    save_expected("torch_dynamo", probs, extra)

    bad = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 15 * 15, 5))
    bad.eval()
    torch.onnx.export(bad, x[:1], os.path.join(OUT, "torch_avgpool.onnx"), dynamo=False)


# --- Operator-graph / geometry fixtures ------------------------------------------------------

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def read_png(path):
    from PIL import Image  # not TensorFlow: the torch child process below must not load it

    return np.asarray(Image.open(path).convert("RGB"))


def imagenet_nchw(batch):
    """torchvision's Normalize on raw 0..255 NHWC pixels, as NCHW float32."""
    x = (batch / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def imagenet_extra():
    return {"input_scale": (1 / IMAGENET_STD).tolist(), "input_offset": (-IMAGENET_MEAN / IMAGENET_STD).tolist()}


def top1_margins(probs):
    s = np.sort(probs, axis=1)
    return s[:, -1] - s[:, -2]


def check_margins(name, probs, strict=True):
    """Top-1 margins over 1e-3, so an importer can compare top-1 robustly."""
    m = top1_margins(probs)
    print(f"{name}: top-1 {probs.argmax(1).tolist()}, margins {np.round(m, 5).tolist()}")
    assert not strict or (m > 1e-3).all(), f"{name}: a top-1 margin under 1e-3 ({m})"


def run_onnx(path, x):
    """Each image of x (NCHW) through the ONNX file, one at a time (the exports take batch 1),
    with onnxruntime and with onnx's reference evaluator; returns both."""
    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    onnx.checker.check_model(onnx.load(path), full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ort_out = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    ref = ReferenceEvaluator(path)
    ref_out = np.concatenate([ref.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return ort_out, ref_out


def onnx_ops(path):
    import onnx

    m = onnx.load(path)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    return [n.op_type for n in m.graph.node], opset


def export_checked(net, x, path, probs):
    """TorchScript export (dynamo=False) of net at batch 1, checked against PyTorch's probabilities."""
    import torch

    torch.onnx.export(net, torch.tensor(x[:1]), path, input_names=["input"], output_names=["probs"], dynamo=False)
    ort_out, ref_out = run_onnx(path, x)
    for what, out in (("onnxruntime", ort_out), ("onnx.reference", ref_out)):
        err = np.abs(out - probs).max()
        print(f"{os.path.basename(path)}: {what} vs torch max |diff| {err:.2e}")
        assert err < 1e-5, (path, what, err)
    ops, opset = onnx_ops(path)
    print(f"{os.path.basename(path)}: opset {opset}, ops {ops}")
    extra = {"onnx_ops": ops, "onnx_opset": opset}
    pads = pad_pads(path, x[:1])
    if pads:
        print(f"{os.path.basename(path)}: Pad pads {pads}")
        extra["onnx_pad_pads"] = pads
    return extra


def pad_pads(path, x):
    """The pads each Pad node gets: the exporter computes them in a subgraph of their own
    (Constant, ConstantOfShape, Concat, Reshape, Slice, Transpose, Reshape, Cast), not folded."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    names = [n.input[1] for n in onnx.load(path).graph.node if n.op_type == "Pad"]
    if not names:
        return []
    return [p.tolist() for p in ReferenceEvaluator(path).run(names, {"input": x})]


def torch_bn_stats(net):
    """BatchNorm statistics far from the defaults, as in torch_fixtures()."""
    import torch
    import torch.nn as nn

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c) * np.where(rng.random(c) < 0.3, -1, 1)))
                m.bias.copy_(torch.tensor(rng.normal(0, 0.3, c)))
                m.running_mean.copy_(torch.tensor(rng.normal(0.5, 1.0, c)))
                m.running_var.copy_(torch.tensor(rng.uniform(0.3, 3.0, c)))


def scale_default_init(net):
    """PyTorch's default init (kaiming_uniform, a=sqrt(5): std 1/sqrt(3 fan_in)) times sqrt(3):
    std 1/sqrt(fan_in), what randomize() gives the Keras models."""
    import torch
    import torch.nn as nn

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3**0.5)


def geometry_fixtures(src):
    """The operator-graph fixtures: explicit and asymmetric pads, rectangular kernels and
    strides, dilation, ReLU6, average pooling (Keras's same-padded one on odd sizes), global
    average pooling, and torchvision's AlexNet. `src` holds the 32x32 image_N.png and the
    keras3_avgpool / torch_avgpool models they read back (tests/import under --only-geometry)."""
    global rng
    rng = np.random.default_rng(123)  # the same files whether run alone or after the others
    import keras

    batch = np.stack([read_png(os.path.join(src, f"image_{i}.png")) for i in range(4)]).astype(np.float32)
    avgpool_expected(keras, src, batch)
    keras_geometry(keras, batch)
    for i, img in enumerate(images(224)):
        write_png(os.path.join(OUT, f"alexnet_image_{i}.png"), img)
    # In a process of its own: torchvision loads LLVM, which clashes with TensorFlow's in one process.
    import subprocess

    subprocess.run([sys.executable, os.path.abspath(__file__), OUT, "--torch-geometry", src], check=True)


def torch_geometry_child(src):
    """The PyTorch geometry fixtures, run without TensorFlow (see geometry_fixtures)."""
    global rng
    rng = np.random.default_rng(123)
    batch = np.stack([read_png(os.path.join(src, f"image_{i}.png")) for i in range(4)]).astype(np.float32)
    torch_geometry(batch)
    torch_alexnet()


def avgpool_expected(keras, src, batch):
    """Expected outputs for the checked-in keras3_avgpool.keras and torch_avgpool.onnx (not rewritten)."""
    import onnxruntime as ort

    model = keras.saving.load_model(os.path.join(src, "keras3_avgpool.keras"))
    probs = model.predict(batch, verbose=0)  # it has Rescaling(1/255) first: raw pixels
    check_margins("keras3_avgpool", probs, strict=False)  # unseeded Keras init when main() rewrote it
    save_expected("keras3_avgpool", probs, {"keras": keras.__version__})

    # No softmax in this one: the raw logits, from onnxruntime (checked with onnx's reference evaluator).
    ort_out, ref_out = run_onnx(os.path.join(src, "torch_avgpool.onnx"), imagenet_nchw(batch))
    err = np.abs(ort_out - ref_out).max()
    print(f"torch_avgpool: onnxruntime vs onnx.reference max |diff| {err:.2e}")
    assert err < 1e-4, err
    ops, opset = onnx_ops(os.path.join(src, "torch_avgpool.onnx"))
    extra = {"onnxruntime": ort.__version__, "onnx_ops": ops, "onnx_opset": opset}
    save_expected("torch_avgpool", ort_out, {**extra, **imagenet_extra()}, key="outputs")


def keras_geometry(keras, batch):
    """Keras 3 Functional model: rectangular kernel and stride with same padding, dilation,
    ReLU(max_value=6), asymmetric ZeroPadding2D, same-padded AveragePooling2D on an odd size
    (edge windows divided by their real taps), relu6 activation, global average pooling."""
    L = keras.layers
    inp = keras.Input(shape=(SIZE, SIZE, 3), name="input")
    x = L.Rescaling(1.0 / 255, name="rescaling")(inp)
    x = L.Conv2D(8, (3, 5), strides=(2, 1), padding="same", activation="relu", name="conv_rect")(x)
    x = L.BatchNormalization(name="bn_1")(x)
    x = L.Conv2D(8, 3, dilation_rate=2, padding="same", name="conv_dilated")(x)
    x = L.ReLU(max_value=6.0, name="relu6")(x)
    x = L.ZeroPadding2D(((2, 1), (1, 0)), name="zero_pad")(x)
    x = L.Conv2D(12, 3, padding="valid", name="conv_valid")(x)
    x = L.Activation("relu", name="relu")(x)
    x = L.AveragePooling2D(2, strides=2, padding="same", name="avg_pool_same")(x)  # on 17x31
    x = L.BatchNormalization(name="bn_2")(x)
    x = L.Conv2D(16, 1, activation="relu6", name="conv_1x1_relu6")(x)
    x = L.GlobalAveragePooling2D(name="global_avg_pool")(x)
    x = L.Dense(16, activation="relu", name="dense")(x)
    x = L.Dropout(0.5, name="dropout")(x)
    out = L.Dense(len(CLASSES), activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="geometry")
    # What the fixture is for: Keras's same-padded average pool divides an edge window by its real taps.
    ones = L.AveragePooling2D(2, strides=2, padding="same")(np.ones((1, 17, 31, 1), np.float32))
    assert np.allclose(np.asarray(ones), 1.0), "same-padded AveragePooling2D counted the padding"
    randomize(model, raw_input=False)
    shapes = {layer.name: list(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["zero_pad"][:2] == [19, 33] and shapes["conv_valid"][:2] == [17, 31], shapes
    print("keras3_geometry layer shapes:", shapes)
    probs = model.predict(batch, verbose=0)
    check_margins("keras3_geometry", probs)

    paths = {ext: os.path.join(OUT, f"keras3_geometry.{ext}") for ext in ("keras", "h5", "json")}
    model.save(paths["keras"])
    model.save(paths["h5"])  # the legacy format Keras 3 still writes
    with open(paths["json"], "w") as f:
        f.write(model.to_json())
    for ext in ("keras", "h5"):
        again = keras.saving.load_model(paths[ext]).predict(batch, verbose=0)
        assert np.abs(again - probs).max() < 1e-6, (ext, np.abs(again - probs).max())
    with open(paths["json"]) as f:
        again = keras.models.model_from_json(f.read())
    again.set_weights(model.get_weights())
    assert np.abs(again.predict(batch, verbose=0) - probs).max() < 1e-6
    save_expected("keras3_geometry", probs, {"keras": keras.__version__, "layer_shapes": shapes})


def torch_geometry(batch):
    """PyTorch: rectangular kernel and stride with explicit pads, dilation, ReLU6, an asymmetric
    ZeroPad2d (a Pad node), AvgPool2d without padding on odd sizes, Hardtanh(0, 6), GlobalAveragePool."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),  # 3x32x32 -> 8x16x32
        nn.ReLU(),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),  # 8x16x32
        nn.ReLU6(),
        nn.MaxPool2d(2, 2),  # 8x8x16
        nn.ZeroPad2d((1, 0, 2, 1)),  # left, right, top, bottom: 8x11x17
        nn.Conv2d(8, 12, 3),  # 12x9x15
        nn.ReLU(),
        nn.AvgPool2d(2, stride=2),  # 12x4x7
        nn.Conv2d(12, 16, 1),
        nn.Hardtanh(0.0, 6.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, len(CLASSES)),
        nn.Softmax(dim=1),
    )
    torch_bn_stats(net)
    scale_default_init(net)  # the images, not the biases, decide the class: top-1 is 0, 2, 0, 2
    net.eval()
    x = imagenet_nchw(batch)
    with torch.no_grad():
        probs = net(torch.tensor(x)).numpy()
    check_margins("torch_geometry", probs)
    extra = export_checked(net, x, os.path.join(OUT, "torch_geometry.onnx"), probs)
    save_expected("torch_geometry", probs, {"torch": torch.__version__, **imagenet_extra(), **extra})


def torch_alexnet():
    """torchvision's AlexNet (its own features and avgpool) with a 64-wide classifier, at 224x224."""
    import torch
    import torch.nn as nn
    import torchvision

    names = [f"alexnet_image_{i}.png" for i in range(4)]
    imgs = [read_png(os.path.join(OUT, name)) for name in names]  # written by geometry_fixtures

    torch.manual_seed(0)
    net = torchvision.models.alexnet(num_classes=len(CLASSES))
    hidden = 64
    net.classifier = nn.Sequential(
        nn.Dropout(p=0.5),
        nn.Linear(256 * 6 * 6, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, len(CLASSES)),
    )
    # PyTorch's default init leaves near-equal logits after eight layers (top-1 margins under 1e-3).
    scale_default_init(net)
    model = nn.Sequential(net, nn.Softmax(dim=1))
    model.eval()
    x = imagenet_nchw(np.stack(imgs).astype(np.float32))
    with torch.no_grad():
        probs = model(torch.tensor(x)).numpy()
    check_margins("torch_alexnet", probs)
    extra = export_checked(model, x, os.path.join(OUT, "torch_alexnet.onnx"), probs)
    extra = {"torchvision": torchvision.__version__, **extra}
    save_expected("torch_alexnet", probs, {"torch": torch.__version__, **imagenet_extra(), **extra}, images=names)


# --- Grouped / depthwise / separable convolution fixtures ----------------------------------


def groups_fixtures(src):
    """The grouped-convolution fixtures: keras3_depthwise (DepthwiseConv2D with a depth
    multiplier, SeparableConv2D, Conv2D(groups=2), a rectangular bias-free depthwise conv) and
    torch_groups (Conv2d depthwise with multiplier 2, pointwise, groups=4). `src` holds the
    32x32 image_N.png (tests/import under --only-groups)."""
    global rng
    rng = np.random.default_rng(123)  # the same files whether run alone or after the others
    import keras

    batch = np.stack([read_png(os.path.join(src, f"image_{i}.png")) for i in range(4)]).astype(np.float32)
    keras_depthwise(keras, batch)
    # In a process of its own, without TensorFlow, as the geometry fixtures' PyTorch half.
    import subprocess

    subprocess.run([sys.executable, os.path.abspath(__file__), OUT, "--torch-groups", src], check=True)


def torch_groups_child(src):
    """The PyTorch groups fixture, run without TensorFlow (see groups_fixtures)."""
    global rng
    rng = np.random.default_rng(123)
    batch = np.stack([read_png(os.path.join(src, f"image_{i}.png")) for i in range(4)]).astype(np.float32)
    torch_groups(batch)


def keras_depthwise(keras, batch):
    """Keras 3 Functional model: DepthwiseConv2D (depth_multiplier 2, relu6), SeparableConv2D
    (strided: depthwise then pointwise 1x1, one bias after the pointwise), Conv2D(groups=2), and a
    rectangular, valid, bias-free DepthwiseConv2D, between BatchNormalizations and a global pool."""
    L = keras.layers
    inp = keras.Input(shape=(SIZE, SIZE, 3), name="input")
    x = L.Rescaling(1.0 / 255, name="rescaling")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv")(x)  # 16x16x8
    x = L.BatchNormalization(name="bn_1")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu6", name="depthwise")(x)  # 16x16x16
    x = L.BatchNormalization(name="bn_2")(x)
    x = L.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu", name="separable")(x)  # 8x8x16
    x = L.Conv2D(16, 3, padding="same", groups=2, activation="relu", name="conv_groups")(x)  # 8x8x16
    x = L.DepthwiseConv2D((3, 1), strides=(1, 1), padding="valid", use_bias=False, name="depthwise_rect")(x)  # 6x8x16
    x = L.GlobalAveragePooling2D(name="global_avg_pool")(x)
    out = L.Dense(len(CLASSES), activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="depthwise")
    randomize(model, raw_input=False)
    shapes = {layer.name: list(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["depthwise"] == [16, 16, 16] and shapes["separable"] == [8, 8, 16], shapes
    assert shapes["conv_groups"] == [8, 8, 16] and shapes["depthwise_rect"] == [6, 8, 16], shapes
    print("keras3_depthwise layer shapes:", shapes)
    weights = {v.path: list(v.shape) for layer in model.layers for v in layer.weights}
    print("keras3_depthwise weights:", weights)
    assert weights["depthwise/kernel"] == [3, 3, 8, 2], weights  # (kh, kw, in, multiplier)
    assert weights["separable/depthwise_kernel"] == [3, 3, 16, 1], weights
    assert weights["separable/pointwise_kernel"] == [1, 1, 16, 16], weights
    assert weights["conv_groups/kernel"] == [3, 3, 8, 16], weights  # (kh, kw, in / groups, out)
    probs = model.predict(batch, verbose=0)
    check_margins("keras3_depthwise", probs)

    paths = {ext: os.path.join(OUT, f"keras3_depthwise.{ext}") for ext in ("keras", "json")}
    model.save(paths["keras"])
    with open(paths["json"], "w") as f:
        f.write(model.to_json())
    again = keras.saving.load_model(paths["keras"]).predict(batch, verbose=0)
    assert np.abs(again - probs).max() < 1e-6, np.abs(again - probs).max()
    with open(paths["json"]) as f:
        again = keras.models.model_from_json(f.read())
    again.set_weights(model.get_weights())
    assert np.abs(again.predict(batch, verbose=0) - probs).max() < 1e-6
    save_expected("keras3_depthwise", probs, {"keras": keras.__version__, "layer_shapes": shapes})


def torch_groups(batch):
    """PyTorch: Conv2d with groups -- depthwise with multiplier 2 (groups = in = 8, out 16),
    pointwise 1x1, groups=4 -- exported as ONNX Conv with a group attribute; ReLU6 as Clip."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 3x32x32 -> 8x16x16
        nn.ReLU(),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 16, 3, padding=1, groups=8),  # depthwise, multiplier 2: 16x16x16
        nn.ReLU6(),
        nn.Conv2d(16, 16, 1),  # pointwise
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, len(CLASSES)),
        nn.Softmax(dim=1),
    )
    torch_bn_stats(net)
    scale_default_init(net)
    net.eval()
    x = imagenet_nchw(batch)
    with torch.no_grad():
        probs = net(torch.tensor(x)).numpy()
    check_margins("torch_groups", probs)
    path = os.path.join(OUT, "torch_groups.onnx")
    extra = export_checked(net, x, path, probs)
    import onnx

    convs = [n for n in onnx.load(path).graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    print(f"torch_groups.onnx: Conv group attributes {groups}")
    assert groups == [1, 8, 1, 4], groups
    save_expected("torch_groups", probs, {"torch": torch.__version__, **imagenet_extra(), **extra})


def full_alexnet(keras):
    """The tutorial's full AlexNet (1000 classes), for timing the import; not checked in."""
    L = keras.layers
    m = keras.Sequential(
        [
            keras.Input(shape=(227, 227, 3)),
            L.Conv2D(96, 11, strides=4, activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(3, 2),
            L.Conv2D(256, 5, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(3, 2),
            L.Conv2D(384, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.Conv2D(384, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.Conv2D(256, 3, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(3, 2),
            L.Flatten(),
            L.Dense(4096, activation="relu"),
            L.Dropout(0.5),
            L.Dense(4096, activation="relu"),
            L.Dropout(0.5),
            L.Dense(1000, activation="softmax"),
        ]
    )
    print("full AlexNet parameters:", m.count_params())
    m.save("/tmp/alexnet-full.keras")


# --- Graph fixtures: Add, Concatenate, branches (MLPerf Tiny's reference models) -------------


def graphs_fixtures(src):
    """Functional Keras models with residual Adds and Concatenates, and a PyTorch module with a
    residual Add and a torch.cat. `src` holds the 32x32 image_N.png (tests/import under
    --only-graphs); the 96x96 mobilenet_image_N.png are written here."""
    global rng
    rng = np.random.default_rng(321)  # the same files whether run alone or after the others
    import keras

    batch = np.stack([read_png(os.path.join(src, f"image_{i}.png")) for i in range(4)]).astype(np.float32)
    resnet8(keras, batch)
    dscnn(keras)
    for i, img in enumerate(images(96)[:2]):
        write_png(os.path.join(OUT, f"mobilenet_image_{i}.png"), img)
    mobile = np.stack([read_png(os.path.join(OUT, f"mobilenet_image_{i}.png")) for i in range(2)]).astype(np.float32)
    mobilenet_v1(keras, mobile)
    keras_concat(keras, batch)
    import subprocess

    subprocess.run([sys.executable, os.path.abspath(__file__), OUT, "--torch-graphs", src], check=True)


def torch_graphs_child(src):
    """The PyTorch graph fixture, run without TensorFlow (see graphs_fixtures)."""
    global rng
    rng = np.random.default_rng(321)
    batch = np.stack([read_png(os.path.join(src, f"image_{i}.png")) for i in range(4)]).astype(np.float32)
    torch_graph(batch)


def graph_bn_stats(keras, model, x):
    """randomize(), then each BatchNormalization's moving statistics near those of what it
    really sees on `x` (in layer order, each after the ones before it are set), perturbed, with
    some negative gammas: deep random stacks keep their activations alive, and a wrong fold
    shows in every output."""
    randomize(model, raw_input=False)
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        probe = keras.Model(model.inputs, layer.input)
        h = np.asarray(probe.predict(x, verbose=0))
        axes = tuple(range(h.ndim - 1))
        m, v = h.mean(axes), h.var(axes) + 1e-3
        c = m.shape[0]
        gamma = rng.uniform(0.5, 1.5, c) * np.where(rng.random(c) < 0.3, -1, 1)
        beta = rng.normal(0, 0.3, c)
        mean = m + rng.normal(0, 0.3, c) * np.sqrt(v)
        var = v * rng.uniform(0.5, 2.0, c)
        layer.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])


def save_keras(keras, model, name, x, probs, extra):
    """`name`.keras, reloaded and checked, and `name`.expected.json."""
    path = os.path.join(OUT, f"{name}.keras")
    model.save(path)
    again = keras.saving.load_model(path).predict(x, verbose=0)
    assert np.abs(again - probs).max() < 1e-6, np.abs(again - probs).max()
    print(f"{name}.keras: {os.path.getsize(path)} bytes, {model.count_params()} parameters, {len(model.layers)} layers")
    counts = {}
    for layer in model.layers:
        counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    extra = {"keras": keras.__version__, "keras_layers": len(model.layers), "layer_classes": counts, **extra}
    return extra


def resnet8(keras, batch):
    """MLPerf Tiny image classification's ResNet-8 (resnet_v1_eembc): conv 16, BN, relu; three
    stacks of two 3x3 convs (16, 32, 64 filters; the last two strided 2 with a strided 1x1
    shortcut conv), each closed by Add and relu; AveragePooling2D(8), Flatten, Dense 10 softmax.
    Its 32x32x3 input is the real one; a Rescaling(1/255) in front takes [0, 1] pixels."""
    L = keras.layers
    inp = keras.Input(shape=(32, 32, 3), name="input")
    x = L.Rescaling(1.0 / 255, name="rescaling")(inp)
    x = L.Conv2D(16, 3, padding="same", name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu", name="relu")(x)
    for stack, filters in enumerate((16, 32, 64)):
        strides = 1 if stack == 0 else 2
        y = L.Conv2D(filters, 3, strides=strides, padding="same", name=f"s{stack}_conv1")(x)
        y = L.BatchNormalization(name=f"s{stack}_bn1")(y)
        y = L.Activation("relu", name=f"s{stack}_relu1")(y)
        y = L.Conv2D(filters, 3, padding="same", name=f"s{stack}_conv2")(y)
        y = L.BatchNormalization(name=f"s{stack}_bn2")(y)
        if stack > 0:
            x = L.Conv2D(filters, 1, strides=2, padding="same", name=f"s{stack}_shortcut")(x)
        x = L.Add(name=f"s{stack}_add")([x, y])
        x = L.Activation("relu", name=f"s{stack}_relu")(x)
    x = L.AveragePooling2D(pool_size=8, name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(10, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="resnet8")
    graph_bn_stats(keras, model, batch)
    probs = model.predict(batch, verbose=0)
    check_margins("resnet8", probs)
    extra = save_keras(keras, model, "resnet8", batch, probs, {})
    doc_classes = [f"class_{i}" for i in range(10)]
    save_expected("resnet8", probs, {**extra, "classes": doc_classes})


def dscnn(keras):
    """MLPerf Tiny keyword spotting's DS-CNN (ds_cnn in keras_model.py) on its real 49x10x1
    MFCC input: Conv2D 64 (10, 4) stride 2 same, BN, relu, Dropout 0.2; four times DepthwiseConv2D
    3x3 same, BN, relu, Conv2D 64 1x1, BN, relu; Dropout 0.4, AveragePooling2D to 1x1, Flatten,
    Dense 12 softmax. Its inputs are not images: two deterministic float inputs are stored in
    the expected JSON ("inputs", each NHWC flattened) with the model's outputs for them."""
    L = keras.layers
    inp = keras.Input(shape=(49, 10, 1), name="input")
    x = L.Conv2D(64, (10, 4), strides=(2, 2), padding="same", name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Activation("relu", name="relu")(x)
    x = L.Dropout(0.2, name="dropout")(x)
    for k in range(4):
        x = L.DepthwiseConv2D(3, padding="same", name=f"dw{k}")(x)
        x = L.BatchNormalization(name=f"dw{k}_bn")(x)
        x = L.Activation("relu", name=f"dw{k}_relu")(x)
        x = L.Conv2D(64, 1, padding="same", name=f"pw{k}")(x)
        x = L.BatchNormalization(name=f"pw{k}_bn")(x)
        x = L.Activation("relu", name=f"pw{k}_relu")(x)
    x = L.Dropout(0.4, name="dropout_1")(x)
    x = L.AveragePooling2D(pool_size=(24, 5), name="pool")(x)  # 25x5 -> 1x1, as (49/2, 10/2)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(12, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="ds_cnn")
    yy, xx = np.mgrid[0:49, 0:10].astype(np.float32)
    inputs = np.stack([np.sin(0.3 * yy + k) * np.cos(0.7 * xx - k) * 2.0 + rng.normal(0, 0.5, (49, 10)) for k in range(2)])
    inputs = inputs.astype(np.float32)[..., None]
    graph_bn_stats(keras, model, inputs)
    probs = model.predict(inputs, verbose=0)
    check_margins("dscnn", probs)
    extra = save_keras(keras, model, "dscnn", inputs, probs, {})
    doc = {
        **extra,
        "classes": [f"class_{i}" for i in range(12)],
        "input_shape": [49, 10, 1],
        "inputs": [v.reshape(-1).tolist() for v in inputs],
    }
    save_expected("dscnn", probs, doc, images=[])


def mobilenet_v1(keras, batch):
    """keras.applications.MobileNet at alpha 0.25 on MLPerf Tiny visual wake words' 96x96x3
    input, 2 classes: conv 3x3 stride 2, 13 depthwise-separable blocks (ZeroPadding2D before
    each strided depthwise conv, bias-free convs, BN, ReLU(6.)), global average pooling, and a
    Dense softmax; a Rescaling(1/127.5, -1) in front (MobileNet's preprocess_input)."""
    L = keras.layers
    inp = keras.Input(shape=(96, 96, 3), name="input")
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inp)
    base = keras.applications.MobileNet(
        input_tensor=x, alpha=0.25, include_top=False, weights=None, pooling="avg"
    )
    out = L.Dense(2, activation="softmax", name="probs")(base.output)
    model = keras.Model(inp, out, name="mobilenet_v1_025")
    graph_bn_stats(keras, model, batch)
    probs = model.predict(batch, verbose=0)
    check_margins("mobilenet_v1", probs)
    extra = save_keras(keras, model, "mobilenet_v1", batch, probs, {})
    save_expected(
        "mobilenet_v1",
        probs,
        {**extra, "classes": ["class_0", "class_1"]},
        images=[f"mobilenet_image_{i}.png" for i in range(len(batch))],
    )


def concat_model(K):
    """keras_concat()'s model in Keras 3 or tf.keras 2 (`K`)."""
    L = K.layers
    inp = K.Input(shape=(SIZE, SIZE, 3), name="input")
    x = L.Rescaling(1.0 / 255, name="rescaling")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)  # 16x16x8
    a = L.Conv2D(8, 1, name="a_conv")(x)
    a = L.BatchNormalization(name="a_bn")(a)
    a = L.ReLU(name="a_relu")(a)  # folded with a_bn into a_conv
    b = L.Conv2D(4, 3, padding="same", name="b_conv")(x)
    b = L.ReLU(name="b_relu")(b)
    b = L.BatchNormalization(name="b_bn")(b)  # BN after the activation: a layer of its own
    c = L.Concatenate(name="concat")([a, b])  # 12 channels
    c = L.BatchNormalization(name="concat_bn")(c)
    c = L.Activation("relu", name="concat_relu")(c)  # after a BN: a layer of its own
    d = L.Concatenate(axis=-1, name="concat_skip")([c, x])  # 20 channels
    d = L.MaxPooling2D(2, name="pool")(d)  # 8x8x20
    e = L.Conv2D(20, 3, padding="same", name="e_conv")(d)
    s = L.Add(name="add")([d, e])
    s = L.ReLU(max_value=6.0, name="add_relu6")(s)  # the Add's only reader: fused
    t = L.Conv2D(20, 1, name="t_conv")(s)
    u = L.Add(name="add_1")([s, t])
    u2 = L.Activation("relu6", name="add_1_relu6")(u)  # u has two readers: a layer of its own
    v = L.Concatenate(name="concat_2")([u2, u])
    v = L.GlobalAveragePooling2D(name="gap")(v)
    out = L.Dense(len(CLASSES), activation="softmax", name="probs")(v)
    return K.Model(inp, out, name="concat")


def keras_concat(keras, batch):
    """A small Functional model: Concatenate (of branches and of a skip), BatchNormalization
    after activations (and after a Concatenate), a ReLU after a BN (a layer of its own), a
    linear conv -> BN -> ReLU (folded), and an Add whose output two layers read (its ReLU6
    cannot fuse). Saved as .keras, Keras 3's legacy .h5 and to_json(), and the same model and
    weights in tf.keras 2 as keras2_concat.h5 (Keras 2's inbound_nodes form)."""
    model = concat_model(keras)
    graph_bn_stats(keras, model, batch)
    probs = model.predict(batch, verbose=0)
    check_margins("keras3_concat", probs)
    extra = save_keras(keras, model, "keras3_concat", batch, probs, {})
    with open(os.path.join(OUT, "keras3_concat.json"), "w") as f:
        f.write(model.to_json())
    save_expected("keras3_concat", probs, extra)
    model.save(os.path.join(OUT, "keras3_concat.h5"))
    import tf_keras

    m2 = concat_model(tf_keras)
    for layer in m2.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    probs2 = m2.predict(batch, verbose=0)
    print(f"keras2_concat: max |diff| to Keras 3 {np.abs(probs2 - probs).max():.2e}")
    check_margins("keras2_concat", probs2)
    m2.save(os.path.join(OUT, "keras2_concat.h5"))
    save_expected("keras2_concat", probs2, {"keras": tf_keras.__version__})


def torch_graph(batch):
    """PyTorch: a residual block (x + y, then ReLU6 as Clip: fused into the Add), a torch.cat
    on channels of a linear 1x1 conv's output and its input, a ReLU after the Concat (a layer of
    its own), Conv-BN pairs the exporter folds, average pooling and a Linear softmax."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.stem_bn = nn.BatchNorm2d(8)
            self.c1 = nn.Conv2d(8, 8, 3, padding=1)
            self.b1 = nn.BatchNorm2d(8)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.b2 = nn.BatchNorm2d(8)
            self.side = nn.Conv2d(8, 4, 1)
            self.pool = nn.AvgPool2d(2)
            self.fc = nn.Linear(12 * 8 * 8, len(CLASSES))

        def forward(self, x):
            x = torch.relu(self.stem_bn(self.stem(x)))  # 8x16x16
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            x = torch.clamp(x + y, 0.0, 6.0)
            x = torch.relu(torch.cat([x, self.side(x)], 1))  # 12x16x16
            x = self.pool(x)
            return torch.softmax(self.fc(torch.flatten(x, 1)), 1)

    torch.manual_seed(0)
    net = Net()
    torch_bn_stats(net)
    scale_default_init(net)
    net.eval()
    x = imagenet_nchw(batch)
    with torch.no_grad():
        probs = net(torch.tensor(x)).numpy()
    check_margins("torch_graph", probs)
    path = os.path.join(OUT, "torch_graph.onnx")
    extra = export_checked(net, x, path, probs)
    ops = extra["onnx_ops"]
    assert "Add" in ops and "Concat" in ops, ops
    save_expected("torch_graph", probs, {"torch": torch.__version__, **imagenet_extra(), **extra})


if __name__ == "__main__":
    if "--torch-geometry" in sys.argv:
        torch_geometry_child(sys.argv[sys.argv.index("--torch-geometry") + 1])
    elif "--torch-graphs" in sys.argv:
        torch_graphs_child(sys.argv[sys.argv.index("--torch-graphs") + 1])
    elif "--torch-groups" in sys.argv:
        torch_groups_child(sys.argv[sys.argv.index("--torch-groups") + 1])
    else:
        main()
