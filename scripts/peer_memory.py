#!/usr/bin/env python3
"""Peak memory (resident set size) of training steps, alexvgg against PyTorch on the same machine.

Each side runs in its own process: two SGD steps (momentum 0.9, weight decay 5e-4; the second
step holds the momentum state) at batch 16 on random inputs, and the process's peak RSS is read
with getrusage. alexvgg runs `alexvgg bench --train` (one warm-up + one timed step).

Usage (from the repository root; needs torch, torchvision):
    cargo build --release
    python scripts/peer_memory.py [--models vgg16,alexnet-tf] [--freeze none,features]
"""
import argparse
import os
import resource
import subprocess
import sys

FLAGS = {
    "alexnet-tf": ["--model", "alexnet", "--variant", "tf"],
    "alexnet-torchvision": ["--model", "alexnet", "--variant", "torchvision"],
    "vgg16": ["--model", "vgg16"],
    "vgg16_bn": ["--model", "vgg16_bn"],
}

TORCH_STEPS = r"""
import resource, sys, torch, torchvision
sys.path.insert(0, {scripts!r})
from peer_bench import MODELS
torch.set_num_threads({threads})
make, side, _ = MODELS[{model!r}]
m = make().train()
if {frozen}:
    m.features.requires_grad_(False)
opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9,
                      weight_decay=5e-4)
x = torch.randn({batch}, 3, side, side) * 50
y = torch.randint(0, 1000, ({batch},))
for _ in range(2):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def child_peak_kb(cmd):
    """Runs `cmd` as the only child of a fresh Python process; returns that child's peak RSS."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="vgg16")
    ap.add_argument("--freeze", default="none,features")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join("target", "release", "alexvgg"))
    args = ap.parse_args()
    scripts = os.path.dirname(os.path.abspath(__file__))
    env_threads = {"RAYON_NUM_THREADS": str(args.threads)}
    os.environ.update(env_threads)
    print(f"peak RSS of two SGD steps at batch {args.batch}, {args.threads} threads")
    print(f"{'model':<22}{'freeze':>10}{'alexvgg GB':>12}{'torch GB':>10}{'ratio':>8}")
    for model in args.models.split(","):
        for freeze in args.freeze.split(","):
            ours = child_peak_kb([args.binary, "bench", *FLAGS[model], "--train", "--freeze",
                                  freeze, "--batch-size", str(args.batch), "--iters", "1",
                                  "--warmup", "1"])
            code = TORCH_STEPS.format(scripts=scripts, threads=args.threads, model=model,
                                      frozen=freeze != "none", batch=args.batch)
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True)
            torch_kb = int(out.stdout.split()[-1])
            print(f"{model:<22}{freeze:>10}{ours / 1e6:>12.2f}{torch_kb / 1e6:>10.2f}"
                  f"{ours / torch_kb:>8.2f}")


if __name__ == "__main__":
    sys.exit(main())
