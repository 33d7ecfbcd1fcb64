#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs to fuzz/seeds/<target>/ (small files, committed).

Structured seeds use the targets' input formats (see fuzz_targets/expand.rs and npz.rs):
`RLE\\0` + records [count u16 LE][len u8][bytes], and `NPZ\\0` + members
[flags u8][name u8][declared u32 LE][len u16 LE][RLE program]. Run from anywhere:
    python3 fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")


def rle(*records):
    """An RLE program (without its prefix) of (count, bytes) records; long chunks are split."""
    out = b""
    for count, chunk in records:
        while chunk:
            piece, chunk = chunk[:255], chunk[255:]
            out += struct.pack("<HB", count if not chunk else 1, len(piece)) + piece
            if chunk and count != 1:
                raise ValueError("repeated chunks must fit in 255 bytes")
    return out


def npy_header(descr, shape):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += " " * ((-(10 + len(header) + 1)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


_OBJECT = b"{'descr': '|O', 'fortran_order': False, 'shape': (), }"
OBJECT_HEADER = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(_OBJECT)) + _OBJECT

# pickles: deep tuples, a chain of appended lists, nested dicts, fan-out through the memo,
# cycles, one array named by two layers, a long run of tiny values
PICKLES = {
    "deep_tuples": [(1, b"\x80\x02N"), (1500, b"\x85"), (1, b".")],
    "at_the_limit": [(1, b"\x80\x02N"), (1000, b"\x85"), (1, b".")],
    "append_chain": [(1, b"\x80\x02"), (1200, b"]"), (1200, b"a"), (1, b".")],
    "nested_dicts": [(1, b"\x80\x02"), (1100, b"}K\x01"), (1, b"}"), (1100, b"s"), (1, b".")],
    "nested_marks": [(1, b"\x80\x02"), (1100, b"("), (1100, b"l"), (1, b".")],
    "fan_out": [(1, b"\x80\x02(]q\x00("), (3000, b"N"), (1, b"e"), (3000, b"]h\x00a"), (1, b"l.")],
    "fan_out_dict": [(1, b"\x80\x02}q\x00(K\x01N"), (1, b"u}q\x01("), (2000, b"K\x02h\x00"), (1, b"u.")],
    "tuple_fan": [(1, b"\x80\x02]q\x00"), (2000, b"h\x00h\x00\x86q\x00"), (1, b".")],
    "memo_puts": [(1, b"\x80\x02N"), (5000, b"q\x07"), (1, b".")],
    "cycle_direct": [(1, b"\x80\x02]q\x00h\x00a.")],
    "cycle_indirect": [(1, b"\x80\x02]q\x00]h\x00aa.")],
    "cycle_tuple": [(1, b"\x80\x02]q\x00h\x00\x85a.")],
    "cycle_dict": [(1, b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.")],
}
ARRAY = (
    b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
    b"(K\x01K\x02\x85cnumpy\ndtype\nU\x02f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xff"
    b"J\xff\xff\xff\xffK\x00tb\x89U\x08\x00\x00\x80?\x00\x00\x00@tb"
)
RAW_PICKLES = {
    "weight_dict": b"\x80\x02}(U\x05conv1]" + ARRAY + b"q\x01" + ARRAY + b"eu.",
    "shared_array": b"\x80\x02}(U\x05conv1" + ARRAY + b"q\x01h\x01\x86u.",
    "global": b"\x80\x02cos\x1b[31m\nsystem\n.",
}


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, records in PICKLES.items():
        write("pickle", name, b"RLE\0" + rle(*records))
        # the same pickle inside an object .npy (the file, at a smaller scale)
        write("npy", name, b"RLE\0" + rle((1, OBJECT_HEADER), *records))
    for name, data in RAW_PICKLES.items():
        write("pickle", name, data)
        write("npy", name, OBJECT_HEADER + data)
    with open(os.path.join(FIXTURES, "codecs_proto2.npy"), "rb") as f:
        codecs = f.read()
    write("npy", "codecs_proto2", codecs)
    write("pickle", "codecs_proto2", codecs[codecs.index(b"\x80\x02"):])
    write("npy", "numeric", npy_header("<f4", "(2, 3)") + bytes(24))
    write("npy", "fortran", npy_header(">f8", "(2, 2)").replace(b"False", b"True ") + bytes(32))

    def member(flags, name, declared, program):
        return struct.pack("<BBIH", flags, name, declared, len(program)) + program

    f4 = npy_header("<f4", "(2,)")
    f8 = npy_header("<f8", "(100,)")
    npz = {
        # a member declaring 928 bytes whose deflate stream holds 24 KB more
        "bomb": [member(3, 0, len(f8) + 800, rle((1, f8), (800, b"\0"), (8000, b"\0\0\0")))],
        # a declared size its compressed bytes cannot hold
        "declared_huge": [member(3, 0, 0xFFFFFFF0, rle((1, f4), (8, b"\0")))],
        # the .npy header asks for more than the member holds
        "header_too_big": [member(1, 0, 0, rle((1, npy_header("<f4", "(1000000000,)")), (64, b"\0")))],
        "object_member": [member(3, 0, 200, rle((1, npy_header("|O", "(2,)")), (2000, b"\0")))],
        "int_member": [member(3, 0, 200, rle((1, npy_header("<i4", "(2,)")), (2000, b"\0")))],
        "duplicate": [member(0, 0, 0, rle((1, f4), (8, b"\0"))), member(0, 0, 0, rle((1, f4), (8, b"\1")))],
        "npy_suffix_collision": [member(0, 1, 0, rle((1, f4), (8, b"\0"))), member(4, 1, 0, rle((1, f4), (8, b"\0")))],
        "good": [member(1, 0, 0, rle((1, f4), (8, b"\0"))), member(0, 2, 0, rle((1, f8), (800, b"\0")))],
    }
    for name, members in npz.items():
        write("npz", name, b"NPZ\0" + b"".join(members))
    with open(os.path.join(FIXTURES, "layouts.npz"), "rb") as f:
        write("npz", "layouts", f.read())

    def field(number, data):
        key = bytes([(number << 3) | 2])
        n, length = len(data), b""
        while True:
            b, n = n & 0x7F, n >> 7
            length += bytes([b | (0x80 if n else 0)])
            if not n:
                return key + length + data

    def layer(name, dims, values):
        blob = field(7, field(1, bytes(dims))) + field(5, struct.pack("<%df" % len(values), *values))
        return b"\xa2\x06" + field(1, field(1, name) + field(7, blob))[1:]

    write("caffemodel", "v2_layer", layer(b"conv1", [2, 2], [1, 2, 3, 4]))
    write("caffemodel", "bad_blob", layer(b"evil\x1b[2J\n", [2, 2], [1, 2, 3]))
    write("caffemodel", "two_layers", layer(b"conv1", [1], [1]) + layer(b"fc8", [0], []))


if __name__ == "__main__":
    main()
