#!/usr/bin/env python3
"""Peer benchmark: the same networks, batch sizes and thread count in PyTorch and ONNX Runtime,
and `alexvgg bench` in the same run, with our/peer time ratios.

Usage (from the repository root; needs torch, torchvision, onnx, onnxruntime):
    cargo build --release
    python scripts/peer_bench.py [--threads 2] [--batch 1,8] [--iters 5] [--models alexnet-tf,vgg16]
    python scripts/peer_bench.py --train --batch 16 --iters 3 --models alexnet-tf,vgg16
    python scripts/peer_bench.py --device wgpu --torch-device cuda --batch 1,8,32   # on a GPU

Times are the best of `--iters` timed passes after 2 warm-up passes (fp32, random weights: speed
does not depend on the values). Inference is a forward pass; `--train` times a whole training
step (forward, cross-entropy, backward, SGD with momentum and weight decay) against PyTorch's
(ONNX Runtime has no training here). Ratios below 1 mean alexvgg is faster. `--engines` lists the
`alexvgg bench --engine` values to time (default `auto,burn`: the CPU engine of `alexvgg-cpu`,
then the burn model on the same backend); ratios use the first.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class LrnAlexNet(nn.Module):
    """AlexNet with LRN and groups: `tf` (TensorFlow SAME padding, asymmetric where needed,
    VALID pools) or `caffe` (BVLC deploy: explicit padding, ceil pools)."""

    def __init__(self, tf_same):
        super().__init__()
        self.tf_same = tf_same
        p = (lambda k: 0) if tf_same else (lambda k: k // 2)
        self.conv1 = nn.Conv2d(3, 96, 11, 4, padding=0)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=p(5), groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=p(3))
        self.conv4 = nn.Conv2d(384, 384, 3, padding=p(3), groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=p(3), groups=2)
        self.fc6 = nn.Linear(256 * 36, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, 1000)

    def same(self, x, k, s):
        if not self.tf_same:
            return x
        n = x.shape[-1]
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))

    def forward(self, x):
        lrn = lambda t: F.local_response_norm(t, 5, alpha=1e-4, beta=0.75, k=1.0)
        pool = lambda t: F.max_pool2d(t, 3, 2, ceil_mode=not self.tf_same)
        x = pool(lrn(F.relu(self.conv1(self.same(x, 11, 4)))))
        x = pool(lrn(F.relu(self.conv2(self.same(x, 5, 1)))))
        x = F.relu(self.conv3(self.same(x, 3, 1)))
        x = F.relu(self.conv4(self.same(x, 3, 1)))
        x = pool(F.relu(self.conv5(self.same(x, 3, 1))))
        x = F.relu(self.fc6(x.flatten(1)))
        x = F.relu(self.fc7(x))
        return self.fc8(x)


MODELS = {
    "alexnet-tf": (lambda: LrnAlexNet(True), 227, ["--model", "alexnet", "--variant", "tf"]),
    "alexnet-caffe": (lambda: LrnAlexNet(False), 227, ["--model", "alexnet", "--variant", "caffe"]),
    "alexnet-torchvision": (lambda: torchvision.models.alexnet(), 224, ["--model", "alexnet", "--variant", "torchvision"]),
    "vgg16": (lambda: torchvision.models.vgg16(), 224, ["--model", "vgg16"]),
    "vgg16_bn": (lambda: torchvision.models.vgg16_bn(), 224, ["--model", "vgg16_bn"]),
}


def best(fn, iters):
    for _ in range(2):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--models", default="alexnet-tf,alexnet-caffe,alexnet-torchvision,vgg16",
                    help=f"comma-separated, of {','.join(MODELS)}")
    ap.add_argument("--binary", default=os.path.join("target", "release", "alexvgg"))
    ap.add_argument("--device", default="cpu", help="alexvgg's --device")
    ap.add_argument("--torch-device", default="cpu", help="PyTorch device (cpu or cuda)")
    ap.add_argument("--train", action="store_true", help="time training steps")
    ap.add_argument("--freeze", default="none", choices=["none", "features"],
                    help="with --train: `features` freezes the convolutional part (PyTorch: "
                         "requires_grad_(False) on it; alexvgg: --freeze features, whose frozen "
                         "front runs forward only on the CPU engine with --engine auto)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="measure everything this many times, interleaved; keep each best")
    ap.add_argument("--engines", default="auto,burn",
                    help="alexvgg --engine values to time, comma-separated (the first is 'ours')")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    batches = [int(b) for b in args.batch.split(",")]
    dev = torch.device(args.torch_device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with_ort = dev.type == "cpu" and not args.train
    rows = []
    for name in [m for _ in range(args.rounds) for m in args.models.split(",")]:
        make, side, flags = MODELS[name]
        model = make().eval()
        engines = train_engines(args) if args.train else args.engines.split(",")
        ours = {}  # (engine, batch) -> (best ms, GFLOP/s at best)
        for engine in engines:
            out = subprocess.run(
                [args.binary, "bench", *flags, "--device", args.device, "--batch-size", args.batch,
                 "--iters", str(args.iters), "--json", "--engine", engine,
                 *(["--train", "--freeze", args.freeze] if args.train else [])],
                check=True, capture_output=True, text=True,
                env={**os.environ, "RAYON_NUM_THREADS": str(args.threads)},
            ).stdout
            for line in out.splitlines():
                r = json.loads(line)
                ours[engine, r["batch"]] = (r["best_ms"], r["gflops_per_s"] * r["median_ms"] / r["best_ms"])
        if not with_ort:
            model = model.to(dev).train(args.train)
            if args.freeze == "features":
                # the convolutional part: `features.*` (torchvision) or conv1..conv5 (LRN AlexNets)
                for pname, param in model.named_parameters():
                    if pname.startswith("features.") or pname.startswith("conv"):
                        param.requires_grad_(False)
            trained = [q for q in model.parameters() if q.requires_grad]
            opt = torch.optim.SGD(trained, lr=1e-4, momentum=0.9, weight_decay=5e-4)
            for b in batches:
                x = torch.randn(b, 3, side, side, device=dev)
                y = torch.randint(0, 1000, (b,), device=dev)

                def step():
                    if args.train:
                        opt.zero_grad()
                        F.cross_entropy(model(x), y).backward()
                        opt.step()
                    else:
                        with torch.no_grad():
                            model(x)
                    sync()

                rows.append((name, b, [ours[e, b] for e in engines], best(step, args.iters), float("nan")))
            continue
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.onnx")
            torch.onnx.export(model, torch.randn(1, 3, side, side), path, input_names=["x"],
                              dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            for b in batches:
                x = torch.randn(b, 3, side, side)
                with torch.no_grad():
                    pt = best(lambda: model(x), args.iters)
                xn = x.numpy()
                ox = best(lambda: sess.run(None, {"x": xn}), args.iters)
                rows.append((name, b, [ours[e, b] for e in engines], pt, ox))
    # Best of the rounds, per model and batch (each engine and peer on its own).
    merged = {}
    for name, b, times, pt, ox in rows:
        if (name, b) in merged:
            _, _, t0, p0, o0 = merged[name, b]
            times = [min(x, y) for x, y in zip(times, t0)]
            pt, ox = min(pt, p0), min(ox, o0)
        merged[name, b] = (name, b, times, pt, ox)
    rows = list(merged.values())
    what = f"training step (freeze {args.freeze})" if args.train else "inference"
    print(f"{what}: threads={args.threads}, best of {args.iters} x {args.rounds} rounds, alexvgg --device {args.device}, "
          f"torch {torch.__version__} on {args.torch_device}, onnxruntime {ort.__version__}"
          f"{'' if with_ort else ' (not run)'}")
    engines = train_engines(args) if args.train else args.engines.split(",")
    head = "".join(f"{'alexvgg ' + e + ' ms':>20}" for e in engines)
    print(f"{'model':<22}{'batch':>6}{head}{'torch ms':>10}{'ort ms':>9}{'ours/torch':>12}{'ours/ort':>10}"
          f"{'ours GFLOP/s':>14}{'ours img/s':>12}")
    for name, b, times, pt, ox in rows:
        o, gflops = times[0]
        cols = "".join(f"{t:>20.1f}" for t, _ in times)
        print(f"{name:<22}{b:>6}{cols}{pt:>10.1f}{ox:>9.1f}{o / pt:>12.2f}{o / ox:>10.2f}"
              f"{gflops:>14.1f}{b * 1e3 / o:>12.1f}")

def train_engines(args):
    """alexvgg engines timed for training: `auto` ('ours': on CPU devices the trained layers'
    convolutions, LRN and max pools run alexvgg-cpu's kernels with hand-written backward
    passes, and frozen front layers run forward only on the CPU engine), then `burn` (burn's
    layers throughout, everything under autodiff); `--engines` overrides."""
    return args.engines.split(",")


if __name__ == "__main__":
    sys.exit(main())
