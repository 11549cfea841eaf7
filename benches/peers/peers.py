"""The peers of our benches: the tutorial's AlexNet in PyTorch, exported to ONNX and
quantized by ONNX Runtime, timed the way our criterion benches time ours.

Driven by benches/peers/run.sh (which alternates these with `cargo bench`); each
timing subcommand appends one JSON line to the results file:

  peers.py export DIR                    alexnet.onnx (fp32) and alexnet_int8.onnx (QDQ, per-channel
                                         int8 weights, int8 activations, MinMax calibration)
  peers.py ort MODEL NAME RESULTS        ONNX Runtime, batch 1, 2 threads
  peers.py torch-infer NAME RESULTS      PyTorch eager, batch 1, channels-last, inference mode
  peers.py torch-train NAME RESULTS      PyTorch training step, batch 32, channels-last, fused Adam
  peers.py torch-rss BATCH NAME RESULTS  peak RSS of PyTorch training steps at BATCH
  peers.py table RESULTS                 the ratio table (ours / peer) with the date and the CPU
"""
import json
import os
import platform
import resource
import statistics
import sys
import time

THREADS = 2


def alexnet(classes=1000):
    """The Keras tutorial's AlexNet: ReLU inside each Conv2D, then BatchNormalization (eps 1e-3)."""
    import torch.nn as nn

    def block(cin, cout, k, stride, pad):
        return [nn.Conv2d(cin, cout, k, stride=stride, padding=pad), nn.ReLU(), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]

    return nn.Sequential(
        *block(3, 96, 11, 4, 0), nn.MaxPool2d(3, 2),
        *block(96, 256, 5, 1, 2), nn.MaxPool2d(3, 2),
        *block(256, 384, 3, 1, 1), *block(384, 384, 3, 1, 1), *block(384, 256, 3, 1, 1), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, classes),
    )


def torch_setup():
    import torch

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    return torch


def export(out):
    torch = torch_setup()
    import numpy as np

    os.makedirs(out, exist_ok=True)
    m = alexnet()
    with torch.no_grad():
        for mod in m:
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    m.eval()
    net = torch.nn.Sequential(m, torch.nn.Softmax(dim=1)).eval()
    x = torch.rand(1, 3, 227, 227)
    fp32 = os.path.join(out, "alexnet.onnx")
    torch.onnx.export(net, (x,), fp32, input_names=["input"], output_names=["probs"], dynamo=False)

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prep = os.path.join(out, "alexnet_prep.onnx")
    quant_pre_process(fp32, prep)

    class Images(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(7)
            self.it = iter([{"input": rng.random((1, 3, 227, 227), dtype=np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.it, None)

    softmax = [n.name for n in __import__("onnx").load(prep).graph.node if n.op_type == "Softmax"]
    quantize_static(prep, os.path.join(out, "alexnet_int8.onnx"), Images(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=softmax)
    print("exported", fp32, "and alexnet_int8.onnx to", out)


def record(results, name, samples_s, unit="ms", per=1):
    med = statistics.median(samples_s)
    row = {"name": name, "median_s": med, "min_s": min(samples_s), "max_s": max(samples_s), "n": len(samples_s), "per": per}
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def timed(fn, warm, reps):
    for _ in range(warm):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ort(model, name, results):
    import numpy as np
    import onnxruntime as rt

    so = rt.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = rt.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 3, 227, 227), dtype=np.float32)
    record(results, name, timed(lambda: s.run(None, {"input": x}), 5, 30))


def torch_infer(name, results):
    torch = torch_setup()
    m = alexnet().eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 227, 227).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        record(results, name, timed(lambda: m(x), 5, 30))


def train_step(torch, batch):
    m = alexnet().train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)
    x = torch.rand(batch, 3, 227, 227).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x), y).backward()
        opt.step()

    return step


def torch_train(name, results):
    torch = torch_setup()
    batch = 32
    record(results, name, timed(train_step(torch, batch), 2, 8), per=batch)


def torch_rss(batch, name, results):
    torch = torch_setup()
    step = train_step(torch, int(batch))
    step()
    step()
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(results, "a") as f:
        f.write(json.dumps({"name": name, "peak_rss_kib": kib, "batch": int(batch)}) + "\n")
    print(name, kib, "KiB")


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} CPUs"
    except OSError:
        pass
    return platform.processor()


def table(results):
    rows = [json.loads(l) for l in open(results) if l.strip()]
    times = {}
    for r in rows:
        if "median_s" in r:
            times.setdefault(r["name"], []).append(r["median_s"] / r.get("per", 1))
    rss = {r["name"]: r["peak_rss_kib"] for r in rows if "peak_rss_kib" in r}

    def t(name):
        v = times.get(name)
        return statistics.median(v) if v else None

    def fmt(name):
        v = times.get(name)
        return " / ".join(f"{x * 1000:.1f}" for x in v) if v else "missing"

    print(f"# Peer benchmark, {time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu()}, {THREADS} threads")
    print("Times are medians in ms per image, one per round (ours and the peer alternate); ratio = ours / peer")
    print("of the medians over rounds; for the training step, lower ms per image is faster, so the speed-up is 1 / ratio.")
    print()
    print("| work | ours (ms) | peer (ms) | ours / peer | target |")
    print("|---|---|---|---|---|")
    pairs = [
        ("int8 batch 1", "ours_int8", "ort_int8", "<= 0.55"),
        ("fp32 batch 1 vs ONNX Runtime", "ours_fp32", "ort_fp32", "<= 0.8"),
        ("fp32 batch 1 vs PyTorch", "ours_fp32", "torch_fp32", ""),
        ("f16 batch 1 vs our int8 (2 threads each)", "ours_f16", "ours_int8", "<= 4"),
        ("f16 batch 1 vs our int8 (1 thread each)", "ours_f16_1thread", "ours_int8_1thread", ""),
        ("train step batch 32 vs PyTorch (per image)", "ours_train", "torch_train", "<= 0.77 (>= 1.3x)"),
    ]
    for label, ours, peer, target in pairs:
        a, b = t(ours), t(peer)
        ratio = f"{a / b:.2f}" if a and b else "-"
        print(f"| {label} | {fmt(ours)} | {fmt(peer)} | {ratio} | {target} |")
    if rss:
        print()
        print("| peak RSS, training step batch 128 | KiB |")
        print("|---|---|")
        for k, v in sorted(rss.items()):
            print(f"| {k} | {v:,} |")


def ratios(results):
    """The last round's three ratios of issue 19's targets, on one line."""
    rows = [json.loads(l) for l in open(results) if l.strip()]
    last = {r["name"]: r["median_s"] * 1000 / r.get("per", 1) for r in rows if "median_s" in r}
    out = []
    for label, ours, peer in [("int8", "ours_int8", "ort_int8"), ("fp32", "ours_fp32", "ort_fp32"), ("train", "ours_train", "torch_train")]:
        if ours in last and peer in last:
            out.append(f"{label} {last[ours]:.2f} / {last[peer]:.2f} = {last[ours] / last[peer]:.3f}")
    print(time.strftime("%H:%M UTC"), " | ".join(out), flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "export": lambda: export(*args),
        "ort": lambda: ort(*args),
        "torch-infer": lambda: torch_infer(*args),
        "torch-train": lambda: torch_train(*args),
        "torch-rss": lambda: torch_rss(*args),
        "table": lambda: table(*args),
        "ratios": lambda: ratios(*args),
    }[cmd]()
