"""Build the import fixtures in tests/import/ with the real frameworks.

Run through scripts/import-fixtures/make.sh (it makes the venv). Not run by CI:
the fixtures it writes are checked in, and the Rust tests compare our import
of each model with the probabilities the framework itself computed here.

Every model is tutorial-shaped (Conv -> ReLU -> BatchNorm -> MaxPool, twice,
Flatten, Dense + Dropout, Dense softmax) and small, with BatchNormalization
statistics far from 0/1 and some negative gammas, so a wrong import shows.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/import"
FULL = "--full-alexnet" in sys.argv
SIZE = 32
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
rng = np.random.default_rng(123)


def images():
    """Four 32x32 RGB images (smooth gradients plus noise), uint8 HWC."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    out = []
    for k in range(4):
        r = 127 + 120 * np.sin(6.0 * xx + k)
        g = 127 + 120 * np.cos(5.0 * yy - k)
        b = 255 * (xx * yy) if k % 2 else 255 * (1 - xx)
        img = np.stack([r, g, b], -1) + rng.normal(0, 20, (SIZE, SIZE, 3))
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
        else:
            k = ws[0]
            fan_in = np.prod(k.shape[:-1])
            scale = 1.0 / np.sqrt(fan_in) * (1.0 / 40.0 if raw_input and name == "Conv2D" and k.shape[2] == 3 else 1.0)
            new = [rng.normal(0, scale, k.shape).astype(np.float32)]
            new += [rng.normal(0, 0.1, w.shape).astype(np.float32) for w in ws[1:]]
            layer.set_weights(new)


def save_expected(name, probs, extra=None):
    doc = {"classes": CLASSES, "images": [f"image_{i}.png" for i in range(len(probs))], "probabilities": probs.tolist()}
    doc.update(extra or {})
    with open(os.path.join(OUT, f"{name}.expected.json"), "w") as f:
        json.dump(doc, f, indent=1)


def main():
    import keras
    import tensorflow as tf

    os.makedirs(OUT, exist_ok=True)
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


if __name__ == "__main__":
    main()
