#!/usr/bin/env python3
"""Full-size weight files in every format the importer reads, with reference outputs.

The same seeded networks as make_fixtures.py, at full width (AlexNet 61 M parameters, VGG16
138 M, 1000 classes), written by the real tools in the original layouts:

    bvlc_alexnet.npy                  note's AlexNet (tf), pickled the way Python 2 numpy did
    bvlc_alexnet.py3.npy              the same through np.save (protocol 4+)
    bvlc_alexnet.caffemodel           caffe AlexNet, protobuf V2 layout
    alexnet-owt.pth                   torchvision AlexNet, torch.save (zip)
    vgg16_weights.npz                 VGG16 in Frossard's layout (np.savez)
    vgg16.pth                         VGG16, torch.save (zip)
    vgg16.tv_in1k.safetensors         VGG16 in timm's layout (convolution-shaped classifier)
    VGG_ILSVRC_16_layers.caffemodel   VGG16, protobuf V1 layout
    *.activations.safetensors, inputs.safetensors: reference activations from TensorFlow (tf
    AlexNet) and PyTorch (the others) on the shared input batch

About 3.5 GB in all. Used by `cargo test --release --test fullsize -- --ignored` (which runs this
script when the files are missing).

Usage: python scripts/make_fullsize.py OUT_DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (imports torch, then tensorflow)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402


def main(out):
    os.makedirs(out, exist_ok=True)
    mf.OUT, mf.HIDDEN, mf.CLASSES = out, 4096, 1000
    mf.tf.config.experimental.enable_op_determinism()
    path = lambda name: os.path.join(out, name)

    tf_w = mf.alexnet_tf(divisor=1)
    d = {k: [W, b] for k, (W, b) in tf_w.items()}
    mf.write_npy_py2(path("bvlc_alexnet.npy"), d)
    np.save(path("bvlc_alexnet.py3.npy"), d, allow_pickle=True)
    del d, tf_w

    mf.alexnet_caffe(divisor=1)
    mf.caffemodel_alexnet(load_file(path("alexnet_caffe_w1.safetensors")), path("bvlc_alexnet.caffemodel"))

    mf.alexnet_torchvision(divisor=1)
    tv = load_file(path("alexnet_torchvision_w1.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tv.items()}, path("alexnet-owt.pth"))
    del tv

    mf.vgg(16, False, divisor=1)
    st = load_file(path("vgg16_w1.safetensors"))
    mf.frossard_npz(st, path("vgg16_weights.npz"))
    torch.save({k: torch.from_numpy(v) for k, v in st.items()}, path("vgg16.pth"))
    mf.timm_safetensors(st, path("vgg16.tv_in1k.safetensors"))
    mf.caffemodel_vgg16(st, path("VGG_ILSVRC_16_layers.caffemodel"))
    del st

    save_file({f"input{k}": v for k, v in mf.INPUTS.items()}, path("inputs.safetensors"))
    with open(path("done"), "w") as f:
        f.write(f"tensorflow {mf.tf.__version__}, torch {torch.__version__}\n")
    print(f"full-size files in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
