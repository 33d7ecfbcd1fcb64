#!/usr/bin/env python3
"""Regenerates the parity fixtures in tests/fixtures/ from the reference frameworks.

Every golden value the Rust tests compare against comes from here:

- the `tf` AlexNet is built in TensorFlow exactly as the study note's script builds it
  (tf.nn.conv2d SAME, split/concat groups, tf.nn.local_response_normalization, VALID pools,
  NHWC flatten before fc6);
- the `caffe` and `torchvision` AlexNets and the VGGs are built in PyTorch;
- the note's LRN example is run through tf.nn.lrn.

Networks are reduced in width (same kernels, strides, groups, padding, LRN and input sizes
227/224, fewer channels) so the fixtures stay small. Weights are stored in PyTorch key names and
layouts (conv OIHW, linear [out, in], fc6 columns in (c, h, w) order); activations as NCHW.

Usage (from the repository root, Python with torch, tensorflow-cpu, safetensors, numpy):
    python scripts/make_fixtures.py            # every fixture
    python scripts/make_fixtures.py explain    # only tests/fixtures/explain.safetensors
    python scripts/make_fixtures.py op_grads   # only tests/fixtures/op_grads.safetensors
"""
import io
import os
import pickle
import pickletools
import struct
import sys

import numpy as np
import torch  # import torch before tensorflow in one process
import torch.nn as nn
import torch.nn.functional as F
import torchvision  # also before tensorflow: both bundle LLVM
import tensorflow as tf
from PIL import Image, ImageOps
import skimage.data
from safetensors.numpy import load_file, save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
BATCH = 2
CLASSES = 10
HIDDEN = 64


def rng(seed):
    return np.random.default_rng(seed)


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


INPUTS = {}


def image_batch(size):
    """The shared input batch for a side length, in the range of mean-subtracted 0..255 pixels.

    Values are rounded to float16 so that inputs.safetensors can store them exactly in half the
    space; the networks see the same float32 values either way."""
    if size not in INPUTS:
        x = rng(size).uniform(-120.0, 130.0, size=(BATCH, 3, size, size))
        INPUTS[size] = f32(x.astype(np.float16))
    return INPUTS[size]


# ---------------------------------------------------------------------------------------------
# The note's LRN example.

def lrn_example():
    x = np.arange(1, 33, dtype=np.float32).reshape([2, 2, 2, 4])  # NHWC
    y = tf.nn.lrn(x, depth_radius=2, bias=0.0, alpha=1.0, beta=1.0).numpy()
    # random data through TF's LRN with AlexNet's parameters, for the layout-independent check
    r = f32(rng(7).normal(0, 30, size=(2, 5, 3, 16)))  # NHWC, 16 channels
    ry = tf.nn.lrn(r, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75).numpy()
    r3 = tf.nn.lrn(r, depth_radius=3, bias=2.0, alpha=1e-3, beta=0.6).numpy()
    nchw = lambda a: f32(a.transpose(0, 3, 1, 2))
    save_file({"x": nchw(x), "y": nchw(y), "random_x": nchw(r), "random_alexnet": nchw(ry),
               "random_r3_b2_a1e-3_beta0.6": nchw(r3)},
              os.path.join(OUT, "lrn.safetensors"))


# ---------------------------------------------------------------------------------------------
# AlexNet of the note, in TensorFlow, exactly as myalexnet_forward.py.

TF_CONVS = [  # (name, out, k, stride, group)
    ("conv1", 96, 11, 4, 1), ("conv2", 256, 5, 1, 2), ("conv3", 384, 3, 1, 1),
    ("conv4", 384, 3, 1, 2), ("conv5", 256, 3, 1, 2),
]


def tf_conv(inp, kernel, biases, s, padding="SAME", group=1):
    convolve = lambda i, k: tf.nn.conv2d(i, k, [1, s, s, 1], padding=padding)
    if group == 1:
        conv = convolve(inp, kernel)
    else:
        input_groups = tf.split(inp, group, 3)
        kernel_groups = tf.split(kernel, group, 3)
        conv = tf.concat([convolve(i, k) for i, k in zip(input_groups, kernel_groups)], 3)
    return tf.nn.bias_add(conv, biases)


def tf_alexnet_forward(w, x_nchw, acts):
    """The note's graph (myalexnet_forward.py) on an NCHW batch; records NCHW activations."""
    x = tf.constant(x_nchw.transpose(0, 2, 3, 1))  # NHWC
    rec = lambda n, t: acts.__setitem__(n, f32(t.numpy().transpose(0, 3, 1, 2)))
    lrn = lambda t: tf.nn.local_response_normalization(t, depth_radius=2, alpha=2e-05, beta=0.75, bias=1.0)
    pool = lambda t: tf.nn.max_pool(t, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="VALID")

    conv1 = tf.nn.relu(tf_conv(x, *w["conv1"], 4)); rec("conv1", conv1)
    lrn1 = lrn(conv1); rec("lrn1", lrn1)
    pool1 = pool(lrn1); rec("pool1", pool1)
    conv2 = tf.nn.relu(tf_conv(pool1, *w["conv2"], 1, group=2)); rec("conv2", conv2)
    lrn2 = lrn(conv2)
    pool2 = pool(lrn2)
    conv3 = tf.nn.relu(tf_conv(pool2, *w["conv3"], 1))
    conv4 = tf.nn.relu(tf_conv(conv3, *w["conv4"], 1, group=2))
    conv5 = tf.nn.relu(tf_conv(conv4, *w["conv5"], 1, group=2))
    pool5 = pool(conv5); rec("pool5", pool5)
    flat = tf.reshape(pool5, [-1, int(np.prod(pool5.get_shape()[1:]))])  # NHWC flatten
    fc6 = tf.nn.relu(tf.compat.v1.nn.xw_plus_b(flat, *w["fc6"]))
    fc7 = tf.nn.relu(tf.compat.v1.nn.xw_plus_b(fc6, *w["fc7"]))
    fc8 = tf.compat.v1.nn.xw_plus_b(fc7, *w["fc8"])
    acts["fc7"] = f32(fc7.numpy())
    acts["fc8"] = f32(fc8.numpy())

    return acts["fc8"]


def alexnet_tf(divisor=8):
    g = rng(1)
    chans = [c // divisor for _, c, _, _, _ in TF_CONVS]
    w = {}
    cin = 3
    for (name, _, k, _, group), cout in zip(TF_CONVS, chans):
        fan_in = k * k * cin // group
        w[name] = (f32(g.normal(0, np.sqrt(2.0 / fan_in), (k, k, cin // group, cout))),
                   f32(g.normal(0.1, 0.05, cout)))
        cin = cout
    feat = chans[-1] * 36
    for name, din, dout in [("fc6", feat, HIDDEN), ("fc7", HIDDEN, HIDDEN), ("fc8", HIDDEN, CLASSES)]:
        w[name] = (f32(g.normal(0, np.sqrt(2.0 / din), (din, dout))), f32(g.normal(0, 0.05, dout)))

    x_nchw = image_batch(227)
    acts = {}
    tf_alexnet_forward(w, x_nchw, acts)

    # Convert to PyTorch layout and key names: conv HWIO -> OIHW; fc [in, out] -> [out, in];
    # fc6 rows (h, w, c) -> (c, h, w).
    tensors = {}
    for name, (W, b) in w.items():
        if name.startswith("conv"):
            W = W.transpose(3, 2, 0, 1)
        else:
            if name == "fc6":
                c = chans[-1]
                W = W.reshape(6, 6, c, -1).transpose(2, 0, 1, 3).reshape(c * 36, -1)
            W = W.T
        tensors[f"{name}.weight"] = f32(W)
        tensors[f"{name}.bias"] = f32(b)
    save(f"alexnet_tf_w{divisor}", x_nchw, tensors, acts)
    return w


# ---------------------------------------------------------------------------------------------
# Caffe and torchvision AlexNets, VGGs, in PyTorch.

class CaffeAlexNet(nn.Module):
    """BVLC deploy.prototxt: conv1 unpadded, LRN(5, 1e-4, 0.75, 1), ceil-mode pools."""

    def __init__(self, divisor):
        super().__init__()
        c = [96 // divisor, 256 // divisor, 384 // divisor, 384 // divisor, 256 // divisor]
        self.conv1 = nn.Conv2d(3, c[0], 11, stride=4)
        self.conv2 = nn.Conv2d(c[0], c[1], 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(c[1], c[2], 3, padding=1)
        self.conv4 = nn.Conv2d(c[2], c[3], 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(c[3], c[4], 3, padding=1, groups=2)
        self.fc6 = nn.Linear(c[4] * 36, HIDDEN)
        self.fc7 = nn.Linear(HIDDEN, HIDDEN)
        self.fc8 = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x, rec):
        lrn = lambda t: F.local_response_norm(t, 5, alpha=1e-4, beta=0.75, k=1.0)
        pool = lambda t: F.max_pool2d(t, 3, 2, ceil_mode=True)
        x = F.relu(self.conv1(x)); rec("conv1", x)
        x = lrn(x); rec("lrn1", x)
        x = pool(x); rec("pool1", x)
        x = F.relu(self.conv2(x)); rec("conv2", x)
        x = pool(lrn(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.relu(self.conv5(x))
        x = pool(x); rec("pool5", x)
        x = F.relu(self.fc6(x.flatten(1)))
        x = F.relu(self.fc7(x)); rec("fc7", x)
        return self.fc8(x)


def torchvision_alexnet(divisor):
    m = torchvision.models.AlexNet(num_classes=CLASSES)
    # shrink every layer, keeping kernels, strides and padding
    c = [64 // divisor, 192 // divisor, 384 // divisor, 256 // divisor, 256 // divisor]
    cin = 3
    for idx, cout in zip([0, 3, 6, 8, 10], c):
        old = m.features[idx]
        m.features[idx] = nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding)
        cin = cout
    m.classifier[1] = nn.Linear(c[-1] * 36, HIDDEN)
    m.classifier[4] = nn.Linear(HIDDEN, HIDDEN)
    m.classifier[6] = nn.Linear(HIDDEN, CLASSES)
    return m


def torchvision_vgg(depth, batch_norm, divisor):
    tvgg = torchvision.models.vgg
    cfg = {11: "A", 13: "B", 16: "D", 19: "E"}[depth]
    table = [v if v == "M" else v // divisor for v in tvgg.cfgs[cfg]]
    m = tvgg.VGG(tvgg.make_layers(table, batch_norm=batch_norm), num_classes=CLASSES)
    m.classifier[0] = nn.Linear(table[-2] * 49, HIDDEN)
    m.classifier[3] = nn.Linear(HIDDEN, HIDDEN)
    m.classifier[6] = nn.Linear(HIDDEN, CLASSES)
    return m


def randomize(model, seed):
    """Deterministic weights with realistic scales (and non-trivial BatchNorm statistics)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * np.sqrt(2.0 / fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if "bn" in name else 0.05))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.5)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) * 2 + 0.5)
    return model.eval()


def run_torch(model, x, names):
    """Runs a torchvision-style model recording named activations via hooks on its modules."""
    acts = {}
    hooks = []
    for name, module in names.items():
        hooks.append(module.register_forward_hook(
            lambda _m, _i, out, name=name: acts.__setitem__(name, f32(out.detach().numpy()))))
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    acts["fc8"] = f32(logits.numpy())
    return acts


def state(model):
    return {k: f32(v.detach().numpy()) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def alexnet_caffe(divisor=8):
    torch.manual_seed(0)
    m = randomize(CaffeAlexNet(divisor), 2)
    x = image_batch(227)
    acts = {}
    with torch.no_grad():
        acts["fc8"] = f32(m(torch.from_numpy(x), lambda n, t: acts.__setitem__(n, f32(t.numpy()))).numpy())
    save(f"alexnet_caffe_w{divisor}", x, state(m), acts)


def alexnet_torchvision(divisor=8):
    m = randomize(torchvision_alexnet(divisor), 3)
    x = image_batch(224)
    f = m.features
    acts = run_torch(m, x, {"conv1": f[1], "pool1": f[2], "conv2": f[4], "pool5": f[12],
                            "avgpool": m.avgpool, "fc7": m.classifier[5]})
    save(f"alexnet_torchvision_w{divisor}", x, state(m), acts)


def vgg(depth, batch_norm, divisor=16):
    m = randomize(torchvision_vgg(depth, batch_norm, divisor), 4 + depth)
    x = image_batch(224)
    pools = [i for i, l in enumerate(m.features) if isinstance(l, nn.MaxPool2d)]
    names = {f"pool{b + 1}": m.features[i] for b, i in enumerate(pools) if b in (2, 4)}
    names["fc7"] = m.classifier[4]
    acts = run_torch(m, x, names)
    save(f"vgg{depth}{'_bn' if batch_norm else ''}_w{divisor}", x, state(m), acts)


def train_steps(divisor=8):
    """Two optimisation steps of the reduced Caffe AlexNet (LRN, grouped convolutions, ceil-mode
    pools) from its fixture weights, with PyTorch's SGD (momentum, weight decay) and Adam.

    Inputs: the 227 batch of inputs.safetensors times 0.02 (in float32), labels [3, 7], mean
    cross-entropy. The Rust test repeats the steps with burn's autodiff and optimizers."""
    x = torch.from_numpy(image_batch(227) * np.float32(0.02))
    y = torch.tensor([3, 7])
    out = {}
    for name, make in [
        ("sgd", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=5e-4)),
        ("adam", lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4)),
    ]:
        m = randomize(CaffeAlexNet(divisor), 2).train()
        opt = make(m.parameters())
        for step in range(2):
            opt.zero_grad()
            loss = F.cross_entropy(m(x, lambda *_: None), y)
            out[f"{name}.loss{step}"] = f32(np.array([loss.item()]))
            loss.backward()
            opt.step()
        for k, v in state(m).items():
            out[f"{name}.{k}"] = v
    save_file(out, os.path.join(OUT, "train_steps.safetensors"))
    print(f"train_steps: {len(out)} tensors")


def save(stem, x, weights, acts):
    tensors = {f"act.{k}": v for k, v in acts.items()}
    save_file(tensors, os.path.join(OUT, f"{stem}.activations.safetensors"))
    save_file(weights, os.path.join(OUT, f"{stem}.safetensors"))
    print(f"{stem}: {len(weights)} weight tensors, activations {sorted(acts)}")


# ---------------------------------------------------------------------------------------------
# The original weight-file formats, at reduced width, for the importer's tests.

class Py2Pickler(pickle._Pickler):
    """Writes protocol 2 the way Python 2's numpy did for bvlc_alexnet.npy: byte strings (and
    Python 2 `str` keys) as SHORT_BINSTRING/BINSTRING, globals from `numpy.core.multiarray`."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None)
        name = name or obj.__qualname__
        if module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            module = "numpy.core.multiarray"
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def write_npy_py2(path, obj):
    """An .npy file (format 1.0) holding a 0-d object array pickled as Python 2 did."""
    arr = np.empty((), dtype=object)
    arr[()] = obj
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(arr)
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(buf.getvalue())
    # the fixture must be what numpy itself reads back
    back = np.load(path, allow_pickle=True, encoding="latin1").item()
    assert all(np.array_equal(back[k][0], obj[k][0]) for k in obj)
    ops = {op.name for op, _, _ in pickletools.genops(buf.getvalue())}
    assert "SHORT_BINSTRING" in ops and "BINSTRING" in ops and "BINUNICODE" not in ops, ops


def caffe_messages():
    """The caffe.proto messages a .caffemodel needs (field numbers as in BVLC caffe.proto),
    built at run time with the protobuf package, so no protoc is needed."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_min.proto", package="caffe", syntax="proto2")

    def msg(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True

    OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("BlobShape", [("dim", 1, F.TYPE_INT64, REP, None, True)])
    msg("BlobProto", [("num", 1, F.TYPE_INT32, OPT, None, False), ("channels", 2, F.TYPE_INT32, OPT, None, False),
                      ("height", 3, F.TYPE_INT32, OPT, None, False), ("width", 4, F.TYPE_INT32, OPT, None, False),
                      ("data", 5, F.TYPE_FLOAT, REP, None, True), ("shape", 7, F.TYPE_MESSAGE, OPT, ".caffe.BlobShape", False)])
    msg("LayerParameter", [("name", 1, F.TYPE_STRING, OPT, None, False), ("type", 2, F.TYPE_STRING, OPT, None, False),
                           ("bottom", 3, F.TYPE_STRING, REP, None, False), ("top", 4, F.TYPE_STRING, REP, None, False),
                           ("blobs", 7, F.TYPE_MESSAGE, REP, ".caffe.BlobProto", False)])
    msg("V1LayerParameter", [("bottom", 2, F.TYPE_STRING, REP, None, False), ("top", 3, F.TYPE_STRING, REP, None, False),
                             ("name", 4, F.TYPE_STRING, OPT, None, False), ("type", 5, F.TYPE_INT32, OPT, None, False),
                             ("blobs", 6, F.TYPE_MESSAGE, REP, ".caffe.BlobProto", False)])
    msg("NetParameter", [("name", 1, F.TYPE_STRING, OPT, None, False),
                         ("layers", 2, F.TYPE_MESSAGE, REP, ".caffe.V1LayerParameter", False),
                         ("layer", 100, F.TYPE_MESSAGE, REP, ".caffe.LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = lambda n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}"))
    return get("NetParameter")


def blob(layer, array, legacy=False):
    """Adds a BlobProto holding `array` to `layer`: the shape as a BlobShape (V2) or as legacy
    num/channels/height/width (V1, inner products as (1, 1, out, in)). The values go in as one
    packed `data` field parsed by protobuf itself (as fast as a copy, also at full size)."""
    b = layer.blobs.add()
    if legacy:
        n, c, h, w = (1,) * (4 - array.ndim) + array.shape
        b.num, b.channels, b.height, b.width = n, c, h, w
    else:
        b.shape.dim.extend(array.shape)
    raw = f32(array).astype("<f4").tobytes()
    size, varint = len(raw), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        varint += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    b.MergeFromString(b"\x2a" + varint + raw)


def caffemodel_alexnet(alex, path):
    """bvlc_alexnet.caffemodel's V2 layout (LayerParameter, BlobShape), from PyTorch-named
    weights of the caffe AlexNet."""
    net = caffe_messages()(name="AlexNet")
    net.layer.add(name="data", type="Input")
    for name in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]:
        layer = net.layer.add(name=name, type="Convolution" if name.startswith("conv") else "InnerProduct")
        for kind in ["weight", "bias"]:
            blob(layer, alex[f"{name}.{kind}"])
        net.layer.add(name=name.replace("conv", "relu").replace("fc", "relu"), type="ReLU")
    with open(path, "wb") as f:
        f.write(net.SerializeToString())


def vgg16_names():
    """(Caffe/Frossard layer name, torchvision module) pairs of VGG16, in order."""
    k, block, idx = 0, 1, 1
    names = []
    for item in torchvision.models.vgg.cfgs["D"]:
        if item == "M":
            block, idx, k = block + 1, 1, k + 1
            continue
        names.append((f"conv{block}_{idx}", f"features.{k}"))
        idx, k = idx + 1, k + 2
    return names + [("fc6", "classifier.0"), ("fc7", "classifier.3"), ("fc8", "classifier.6")]


def caffemodel_vgg16(vgg, path):
    """VGG_ILSVRC_16_layers.caffemodel's V1 layout (V1LayerParameter, legacy shapes), from
    torchvision-named VGG16 weights."""
    net = caffe_messages()(name="VGG_ILSVRC_16_layers")
    for name, src in vgg16_names():
        layer = net.layers.add(name=name, type=4 if name.startswith("conv") else 14)
        blob(layer, vgg[f"{src}.weight"], legacy=True)
        blob(layer, vgg[f"{src}.bias"], legacy=True)
    with open(path, "wb") as f:
        f.write(net.SerializeToString())


def caffemodels():
    caffemodel_alexnet(load_file(os.path.join(OUT, "alexnet_caffe_w8.safetensors")),
                       os.path.join(OUT, "alexnet_caffe_w8.caffemodel"))
    caffemodel_vgg16(load_file(os.path.join(OUT, "vgg16_w16.safetensors")),
                     os.path.join(OUT, "vgg16_w16.v1.caffemodel"))
    caffe_release_of_tf_alexnet()


def caffe_release_of_tf_alexnet():
    """The note's AlexNet weights (alexnet_tf_w8.py2.npy) written as the Caffe release they
    were converted from (bvlc_alexnet.npy is bvlc_alexnet.caffemodel through caffe-tensorflow):
    the same seeded weights both ways, for the fetch fallback's identical-tensors test. The
    PyTorch-layout tensors are Caffe's layout (OIHW, [out, in], fc6 columns (c, h, w))."""
    caffemodel_alexnet(load_file(os.path.join(OUT, "alexnet_tf_w8.safetensors")),
                       os.path.join(OUT, "alexnet_tf_w8.caffemodel"))


def frossard_npz(st, path):
    """vgg16_weights.npz's layout (Frossard): conv{b}_{i}_W HWIO, fc6_W rows (h, w, c), [in, out]."""
    arrays = {}
    for name, src in vgg16_names():
        W = st[f"{src}.weight"]
        if name.startswith("conv"):
            W = W.transpose(2, 3, 1, 0)
        elif name == "fc6":
            fc6 = W.T  # [in (c,h,w), out]
            c = fc6.shape[0] // 49
            W = fc6.reshape(c, 7, 7, -1).transpose(1, 2, 0, 3).reshape(c * 49, -1)
        else:
            W = W.T
        arrays[f"{name}_W"] = W
        arrays[f"{name}_b"] = st[f"{src}.bias"]
    np.savez(path, **{k: f32(v) for k, v in arrays.items()})


def timm_safetensors(st, path):
    """timm's vgg16.tv_in1k layout: the classifier as convolutions (pre_logits.fc1 is
    out x 512 x 7 x 7)."""
    timm = {k: v for k, v in st.items() if k.startswith("features.")}
    c = st["classifier.0.weight"].shape[1] // 49
    timm["pre_logits.fc1.weight"] = st["classifier.0.weight"].reshape(-1, c, 7, 7)
    timm["pre_logits.fc1.bias"] = st["classifier.0.bias"]
    timm["pre_logits.fc2.weight"] = st["classifier.3.weight"][:, :, None, None]
    timm["pre_logits.fc2.bias"] = st["classifier.3.bias"]
    timm["head.fc.weight"] = st["classifier.6.weight"]
    timm["head.fc.bias"] = st["classifier.6.bias"]
    save_file({k: f32(v) for k, v in timm.items()}, path)


def weight_files(tf_alexnet):
    # bvlc_alexnet.npy layout: name -> [W (HWIO, fc6 rows h,w,c), b]
    d = {k: [W, b] for k, (W, b) in tf_alexnet.items()}
    write_npy_py2(os.path.join(OUT, "alexnet_tf_w8.py2.npy"), d)
    np.save(os.path.join(OUT, "alexnet_tf_w8.py3.npy"), d, allow_pickle=True)
    st = load_file(os.path.join(OUT, "vgg16_w16.safetensors"))
    frossard_npz(st, os.path.join(OUT, "vgg16_w16.npz"))
    # other numpy layouts the readers must handle: big-endian, float64 Fortran order, float16
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    b = np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3))
    c = np.arange(4, dtype="<f2")
    np.savez(os.path.join(OUT, "layouts.npz"), big_endian=a, fortran_f64=b, half=c)
    # and a protocol-2 pickle from Python 3: bytes become _codecs.encode(text, 'latin1')
    with open(os.path.join(OUT, "codecs_proto2.npy"), "wb") as f:
        arr = np.empty((), dtype=object)
        arr[()] = {"conv1": [np.arange(24, dtype=np.float32).reshape(2, 3, 1, 4), np.array([1.5, -2.0], dtype=np.float32)]}
        header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }"
        header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        pickle.dump(arr, f, protocol=2)
    caffemodels()
    timm_safetensors(st, os.path.join(OUT, "vgg16_w16.timm.safetensors"))
    # torch.save state dicts: torchvision's zip format (AlexNet) and the legacy format (VGG11-BN)
    tv = load_file(os.path.join(OUT, "alexnet_torchvision_w8.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tv.items()}, os.path.join(OUT, "alexnet_torchvision_w8.pth"))
    bn = torchvision_vgg(11, True, 16)
    bn.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(os.path.join(OUT, "vgg11_bn_w16.safetensors")).items()}, strict=False)
    torch.save(bn.state_dict(), os.path.join(OUT, "vgg11_bn_w16.legacy.pth"), _use_new_zipfile_serialization=False)


# ---------------------------------------------------------------------------------------------
# End to end: image files -> preprocessing (PIL/numpy, written independently of the Rust code)
# -> reference network -> softmax probabilities.

def test_images():
    """Small images in the forms users bring: RGB, grayscale, RGBA, 16-bit, palette, odd sizes."""
    d = os.path.join(OUT, "images")
    os.makedirs(d, exist_ok=True)
    cat = Image.fromarray(skimage.data.chelsea()).resize((181, 120), Image.BILINEAR)
    coffee = Image.fromarray(skimage.data.coffee()).resize((150, 100), Image.BILINEAR)
    cat.save(os.path.join(d, "cat_rgb.png"))
    cat.convert("L").save(os.path.join(d, "cat_gray.png"))
    rgba = coffee.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(coffee.size))
    rgba.save(os.path.join(d, "coffee_rgba.png"))
    coffee.convert("P", palette=Image.ADAPTIVE, colors=64).save(os.path.join(d, "coffee_palette.png"))
    gray16 = (np.asarray(cat.convert("L"), dtype=np.uint16) * 257 + 3).astype(np.uint16)
    Image.fromarray(gray16).save(os.path.join(d, "cat_gray16.png"))
    # an exact-size image for the note preset (the script did not resize)
    Image.fromarray(skimage.data.astronaut()).resize((227, 227), Image.BILINEAR).save(os.path.join(d, "astronaut227.png"))
    # JPEG whose EXIF says "rotate 90 clockwise" (orientation 6): decoders must turn it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    cat.save(os.path.join(d, "cat_exif6.jpg"), exif=exif.tobytes(), quality=95)
    with open(os.path.join(d, "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    return d


def pil_preprocess(path, preset, side):
    im = ImageOps.exif_transpose(Image.open(path))
    if im.mode in ("I;16", "I"):  # 16-bit grey: keep the full precision, scaled to 0..255
        grey = Image.fromarray((np.asarray(im, dtype=np.float64) / 257.0).astype(np.float32), mode="F")
        chans = [grey, grey, grey]
    else:
        im = im.convert("RGB")
        chans = [im.getchannel(c).convert("F") for c in range(3)]  # 0..255 floats
    w, h = chans[0].size
    if preset in ("caffe", "torchvision"):
        nw, nh = (256, max(1, round(h * 256 / w))) if w <= h else (max(1, round(w * 256 / h)), 256)
        chans = [c.resize((nw, nh), Image.BILINEAR) for c in chans]
        left, top = (nw - side) // 2, (nh - side) // 2
        chans = [c.crop((left, top, left + side, top + side)) for c in chans]
    elif (w, h) != (side, side):
        chans = [c.resize((side, side), Image.BILINEAR) for c in chans]
    rgb = np.stack([np.asarray(c, dtype=np.float64) for c in chans])
    if preset == "caffe":
        out = rgb[::-1] - np.array([104.0, 117.0, 123.0])[:, None, None]
    elif preset == "frossard":
        out = rgb - np.array([123.68, 116.779, 103.939])[:, None, None]
    elif preset == "torchvision":
        mean = np.array([0.485, 0.456, 0.406])[:, None, None]
        std = np.array([0.229, 0.224, 0.225])[:, None, None]
        out = (rgb / 255.0 - mean) / std
    else:  # the note's script, in HWC as it ran
        a = rgb.transpose(1, 2, 0).copy()
        a = a - np.mean(a)
        a[:, :, 0], a[:, :, 2] = a[:, :, 2], a[:, :, 0]  # numpy views: yields [B, G, B]
        out = a.transpose(2, 0, 1)
    return f32(out)


def end_to_end(tf_alexnet):
    d = test_images()
    tv_alex = torchvision_alexnet(8)
    tv_alex.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(os.path.join(OUT, "alexnet_torchvision_w8.safetensors")).items()})
    vgg16 = torchvision_vgg(16, False, 16)
    vgg16.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(os.path.join(OUT, "vgg16_w16.safetensors")).items()})
    tv_alex.eval(), vgg16.eval()
    nets = {
        "caffe": (227, lambda x: tf_alexnet_forward(tf_alexnet, x, {})),
        "note": (227, lambda x: tf_alexnet_forward(tf_alexnet, x, {})),
        "torchvision": (224, lambda x: tv_alex(torch.from_numpy(x)).detach().numpy()),
        "frossard": (224, lambda x: vgg16(torch.from_numpy(x)).detach().numpy()),
    }
    out = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".jpg") or name.startswith("broken"):
            continue  # JPEG decoders differ by a grey level; tested separately
        for preset, (side, net) in nets.items():
            x = pil_preprocess(os.path.join(d, name), preset, side)[None]
            logits = net(x)
            out[f"{name}.{preset}"] = f32(torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), 1).numpy()[0])
    save_file(out, os.path.join(OUT, "end_to_end.safetensors"))


# ---------------------------------------------------------------------------------------------
# Grad-CAM and saliency (`alexvgg explain`): the maps of the note's AlexNet through TensorFlow's
# GradientTape, and of VGG16 through PyTorch's autograd, from the fixture weights and inputs.
# Written alone by `python scripts/make_fixtures.py explain` (no other fixture is touched).

EXPLAIN_CLASS = 3  # the class explained besides each image's top-1


def normalized_maps(m):
    """Each [h, w] map divided by its maximum; all zeros when the maximum is not positive."""
    top = m.max(axis=(1, 2), keepdims=True)
    return f32(np.where(top > 0, m / np.where(top > 0, top, 1.0), 0.0))


def grad_cam_maps(a, g):
    """relu(sum_k mean_ij(dS/dA_k) * A_k) per image, normalized; a, g: NCHW."""
    a, g = a.astype(np.float64), g.astype(np.float64)
    weights = g.mean(axis=(2, 3), keepdims=True)
    return normalized_maps(np.maximum((weights * a).sum(axis=1), 0.0))


def saliency_maps(g):
    """max over channels of |dS/dx| per image, normalized; g: NCHW."""
    return normalized_maps(np.abs(g.astype(np.float64)).max(axis=1))


def chosen(logits, target):
    """Each image's explained class: its top-1, or `target` for all."""
    return np.argmax(logits, axis=1) if target == "top1" else np.full(len(logits), target)


def softmax_at(logits, classes):
    p = torch.softmax(torch.from_numpy(f32(logits)).double(), 1).numpy()
    return f32(p[np.arange(len(classes)), classes])


def tf_alexnet_tensors(w, x_nhwc, watch):
    """The note's graph as tf_alexnet_forward builds it, keeping every named tensor (NHWC);
    each passes through `watch(name, tensor)` as it is made (a GradientTape watches it there)."""
    lrn = lambda t: tf.nn.local_response_normalization(t, depth_radius=2, alpha=2e-05, beta=0.75, bias=1.0)
    pool = lambda t: tf.nn.max_pool(t, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="VALID")
    t = {}
    put = lambda name, v: t.__setitem__(name, watch(name, v)) or t[name]
    x = put("input", x_nhwc)
    x = put("conv1", tf.nn.relu(tf_conv(x, *w["conv1"], 4)))
    x = put("pool1", pool(put("lrn1", lrn(x))))
    x = put("conv2", tf.nn.relu(tf_conv(x, *w["conv2"], 1, group=2)))
    x = put("pool2", pool(put("lrn2", lrn(x))))
    x = put("conv3", tf.nn.relu(tf_conv(x, *w["conv3"], 1)))
    x = put("conv4", tf.nn.relu(tf_conv(x, *w["conv4"], 1, group=2)))
    x = put("conv5", tf.nn.relu(tf_conv(x, *w["conv5"], 1, group=2)))
    x = put("pool5", pool(x))
    flat = tf.reshape(x, [-1, int(np.prod(x.get_shape()[1:]))])  # NHWC flatten
    fc6 = tf.nn.relu(tf.compat.v1.nn.xw_plus_b(flat, *w["fc6"]))
    fc7 = tf.nn.relu(tf.compat.v1.nn.xw_plus_b(fc6, *w["fc7"]))
    t["fc8"] = tf.compat.v1.nn.xw_plus_b(fc7, *w["fc8"])
    return t


def tf_alexnet_explain(w, x_nchw, layer, target):
    """(map, classes, probabilities) of Grad-CAM at `layer`, or of saliency for layer "input"."""
    with tf.GradientTape() as tape:
        def watch(name, v):
            if name == layer:
                tape.watch(v)
            return v
        t = tf_alexnet_tensors(w, tf.constant(x_nchw.transpose(0, 2, 3, 1)), watch)
        logits = t["fc8"].numpy()
        classes = chosen(logits, target)
        score = tf.reduce_sum(t["fc8"] * tf.one_hot(classes, logits.shape[1], dtype=tf.float32))
    g = tape.gradient(score, t[layer]).numpy().transpose(0, 3, 1, 2)
    a = t[layer].numpy().transpose(0, 3, 1, 2)
    maps = saliency_maps(g) if layer == "input" else grad_cam_maps(a, g)
    return maps, classes, softmax_at(logits, classes)


def torch_vgg_explain(m, x_nchw, cut, target):
    """(map, classes, probabilities) of Grad-CAM at the output of m.features[:cut] (after a
    ReLU or a pool), or of saliency for cut 0, through autograd from a leaf there."""
    with torch.no_grad():
        a = m.features[:cut](torch.from_numpy(x_nchw))
    a = a.clone().requires_grad_(True)
    logits = m.classifier(torch.flatten(m.avgpool(m.features[cut:](a)), 1))
    classes = chosen(logits.detach().numpy(), target)
    score = (logits * F.one_hot(torch.from_numpy(classes).long(), logits.shape[1])).sum()
    score.backward()
    g, a = a.grad.numpy(), a.detach().numpy()
    maps = saliency_maps(g) if cut == 0 else grad_cam_maps(a, g)
    return maps, classes, softmax_at(logits.detach().numpy(), classes)


def explain_maps():
    """tests/fixtures/explain.safetensors: for each case `NET.METHOD.LAYER.TARGET`, the maps
    [N, h, w] (float32, each divided by its maximum), `...classes` (the classes explained) and
    `...probability` (their softmax probabilities). Grad-CAM on the 2-image batch; saliency,
    which is input-sized, on the first image only."""
    out = {}

    def put(key, result):
        maps, classes, probs = result
        out[key] = maps
        out[f"{key}.classes"] = f32(classes)
        out[f"{key}.probability"] = probs

    inputs = load_file(os.path.join(OUT, "inputs.safetensors"))
    x227, x224 = f32(inputs["input227"]), f32(inputs["input224"])
    # the note's AlexNet, TensorFlow layout, from its .npy ({name: [W, b]})
    d = np.load(os.path.join(OUT, "alexnet_tf_w8.py3.npy"), allow_pickle=True).item()
    w = {k: (f32(v[0]), f32(v[1])) for k, v in d.items()}
    put("alexnet_tf.gradcam.conv5.top1", tf_alexnet_explain(w, x227, "conv5", "top1"))
    put(f"alexnet_tf.gradcam.conv5.{EXPLAIN_CLASS}", tf_alexnet_explain(w, x227, "conv5", EXPLAIN_CLASS))
    put("alexnet_tf.gradcam.pool2.top1", tf_alexnet_explain(w, x227, "pool2", "top1"))
    put("alexnet_tf.saliency.input.top1", tf_alexnet_explain(w, x227[:1], "input", "top1"))
    # VGG16 in PyTorch: features[:30] ends with conv5_3's ReLU, features[:17] with pool3
    vgg16 = torchvision_vgg(16, False, 16)
    vgg16.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(os.path.join(OUT, "vgg16_w16.safetensors")).items()})
    vgg16.eval()
    put("vgg16.gradcam.conv5_3.top1", torch_vgg_explain(vgg16, x224, 30, "top1"))
    put(f"vgg16.gradcam.conv5_3.{EXPLAIN_CLASS}", torch_vgg_explain(vgg16, x224, 30, EXPLAIN_CLASS))
    put("vgg16.gradcam.pool3.top1", torch_vgg_explain(vgg16, x224, 17, "top1"))
    put(f"vgg16.saliency.input.{EXPLAIN_CLASS}", torch_vgg_explain(vgg16, x224[:1], 0, EXPLAIN_CLASS))
    save_file(out, os.path.join(OUT, "explain.safetensors"))
    for k, v in out.items():
        if not k.endswith((".classes", ".probability")):
            print(f"{k}: {list(v.shape)}, classes {out[k + '.classes']}, zero maps {int((v.max(axis=(1, 2)) == 0).sum())}")


def main():
    os.makedirs(OUT, exist_ok=True)
    tf.config.experimental.enable_op_determinism()
    lrn_example()
    tf_alexnet = alexnet_tf()
    alexnet_caffe()
    train_steps()
    op_grads()
    alexnet_torchvision()
    vgg(16, False)
    vgg(11, True)
    weight_files(tf_alexnet)
    end_to_end(tf_alexnet)
    save_file({f"input{k}": v.astype(np.float16) for k, v in INPUTS.items()},
              os.path.join(OUT, "inputs.safetensors"))
    print(f"tensorflow {tf.__version__}, torch {torch.__version__}", file=sys.stderr)


# Gradients of single layers, the cases the CPU kernels' hand-written backward passes must get
# right: grouped and asymmetric-padded convolutions (direct and Winograd paths), stride 4,
# ceil-mode and TensorFlow-SAME (asymmetric) max pools, LRN in TensorFlow's and Caffe's
# parameters, fully connected layers and batch normalization (training mode) with and without
# ReLU. Each case: inputs, a fixed random `r`, and PyTorch's gradients of sum(layer * r),
# computed in float64.
OP_CONVS = [
    # name, x shape, cout, groups, kernel, stride, padding (top, left, bottom, right), relu,
    # input gradient
    ("conv_grouped_asym", (2, 6, 11, 11), 8, 2, 5, 1, (2, 1, 1, 2), True, True),
    ("conv3_odd_channels", (2, 5, 9, 9), 7, 1, 3, 1, (1, 1, 1, 1), False, True),
    ("conv_stride4", (2, 3, 35, 35), 8, 1, 11, 4, (3, 3, 5, 5), True, False),
    ("conv3_winograd_grouped", (2, 32, 14, 14), 32, 2, 3, 1, (1, 1, 1, 1), True, True),
    ("conv5_winograd", (2, 16, 12, 12), 16, 1, 5, 1, (2, 2, 2, 2), True, True),
]
OP_LRNS = [
    # name, x shape, depth_radius, bias, alpha (TensorFlow's), beta
    ("lrn_tf", (2, 12, 5, 5), 2, 1.0, 1e-2, 0.75),
    ("lrn_caffe_beta", (2, 9, 4, 4), 3, 2.0, 3e-3, 0.6),
]
OP_LINEARS = [
    # name, batch, d_in, d_out, relu (weights stored [d_in, d_out], burn's layout)
    ("linear_relu", 4, 37, 23, True),
    ("linear_logits", 3, 29, 11, False),
]
OP_BATCH_NORMS = [
    # name, x shape, relu (training mode: batch statistics, eps 1e-5)
    ("bn_relu", (3, 6, 5, 5), True),
    ("bn", (2, 5, 4, 3), False),
]
OP_POOLS = [
    # name, x shape, kernel, stride, padding (top, left, bottom, right), ceil_mode
    ("pool_ceil", (2, 4, 14, 14), 3, 2, (0, 0, 0, 0), True),
    ("pool_same_asym", (2, 4, 28, 28), 3, 2, (0, 0, 1, 1), False),
]


def op_grads():
    """tests/fixtures/op_grads.safetensors (see OP_CONVS, OP_LRNS, OP_LINEARS, OP_BATCH_NORMS,
    OP_POOLS)."""
    g = rng(15)
    out = {}
    d = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64))

    def finish(name, y, leaves):
        r = g.standard_normal(tuple(y.shape)).astype(np.float32)
        (y * d(r)).sum().backward()
        out[f"{name}.r"] = r
        for key, t in leaves.items():
            out[f"{name}.{key}"] = f32(t.detach().numpy())
            if t.grad is not None:
                out[f"{name}.d{key}"] = f32(t.grad.numpy())

    for name, shape, cout, groups, k, stride, (t, l, b, r), relu, x_grad in OP_CONVS:
        x = d(g.uniform(-2, 2, size=shape).astype(np.float32)).requires_grad_(x_grad)
        fan_in = shape[1] // groups * k * k
        w = d((g.standard_normal((cout, shape[1] // groups, k, k)) / np.sqrt(fan_in)).astype(np.float32))
        bias = d(g.uniform(-0.2, 0.2, size=cout).astype(np.float32))
        w.requires_grad_(True)
        bias.requires_grad_(True)
        y = F.conv2d(F.pad(x, (l, r, t, b)), w, bias, stride=stride, groups=groups)
        finish(name, F.relu(y) if relu else y, {"x": x, "weight": w, "bias": bias})
    for name, shape, radius, bias, alpha, beta in OP_LRNS:
        x = d(g.uniform(-3, 3, size=shape).astype(np.float32)).requires_grad_(True)
        size = 2 * radius + 1
        y = F.local_response_norm(x, size, alpha=alpha * size, beta=beta, k=bias)
        finish(name, y, {"x": x})
    for name, batch, d_in, d_out, relu in OP_LINEARS:
        x = d(g.uniform(-2, 2, size=(batch, d_in)).astype(np.float32)).requires_grad_(True)
        w = d((g.standard_normal((d_in, d_out)) / np.sqrt(d_in)).astype(np.float32)).requires_grad_(True)
        bias = d(g.uniform(-0.2, 0.2, size=d_out).astype(np.float32)).requires_grad_(True)
        y = x @ w + bias
        finish(name, F.relu(y) if relu else y, {"x": x, "weight": w, "bias": bias})
    for name, shape, relu in OP_BATCH_NORMS:
        x = d(g.uniform(-2, 3, size=shape).astype(np.float32)).requires_grad_(True)
        gamma = d(g.uniform(0.5, 1.5, size=shape[1]).astype(np.float32)).requires_grad_(True)
        beta = d(g.uniform(-0.3, 0.3, size=shape[1]).astype(np.float32)).requires_grad_(True)
        y = F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
        finish(name, F.relu(y) if relu else y, {"x": x, "gamma": gamma, "beta": beta})
    for name, shape, k, stride, (t, l, b, r), ceil in OP_POOLS:
        # distinct values: no ties between window positions
        values = g.permutation(np.prod(shape)).reshape(shape) / np.prod(shape) - 0.5
        x = d(values.astype(np.float32)).requires_grad_(True)
        y = F.max_pool2d(F.pad(x, (l, r, t, b), value=-np.inf), k, stride, ceil_mode=ceil)
        finish(name, y, {"x": x})
    save_file(out, os.path.join(OUT, "op_grads.safetensors"))
    print(f"op_grads: {len(out)} tensors")


# generators that can run alone: `python scripts/make_fixtures.py NAME...`
ALONE = {"explain": explain_maps, "op_grads": op_grads}

if __name__ == "__main__":
    if sys.argv[1:]:
        unknown = [n for n in sys.argv[1:] if n not in ALONE]
        if unknown:
            sys.exit(f"unknown generators {unknown}; these run alone: {sorted(ALONE)}")
        for name in sys.argv[1:]:
            ALONE[name]()
    else:
        main()
