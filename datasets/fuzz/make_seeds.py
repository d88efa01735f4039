#!/usr/bin/env python3
"""Small seed corpora for the dataset fuzz targets, in the real formats: argv[1]/<target>/."""
import io
import os
import struct
import sys
import tarfile
import zipfile

out = sys.argv[1]


def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def record(label, seed):
    return bytes([label]) + bytes((seed + i * 7) % 256 for i in range(3072))


def tar(members, mode):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.GNU_FORMAT) as t:
        for n, d in members.items():
            info = tarfile.TarInfo("cifar-10-batches-bin/" + n)
            info.size = len(d)
            t.addfile(info, io.BytesIO(d))
    return buf.getvalue()


members = {f"data_batch_{b}.bin": record(b, b) for b in range(1, 6)}
members["test_batch.bin"] = record(3, 9)
put("cifar10", "archive.tar.gz", tar(members, "w:gz"))
put("cifar10", "archive.tar", tar(members, "w"))
put("cifar10", "records.bin", b"\x01" + record(1, 2)[1:] + record(5, 3))


def zipped(members, method, zip64=False):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for n, d in members.items():
            with z.open(n, "w", force_zip64=zip64) as f:
                f.write(d)
    return buf.getvalue()


text = b"<mediawiki xmlns> some text, some more text. " * 8
put("zip", "stored.zip", zipped({"enwik8": text, "b": b"xyz"}, zipfile.ZIP_STORED))
put("zip", "deflated.zip", zipped({"enwik8": text}, zipfile.ZIP_DEFLATED, True))
put("text", "raw.txt", text)
put("text", "enwik8.zip", zipped({"enwik8": text}, zipfile.ZIP_DEFLATED))


def npy(body, descr, shape):
    s = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, s)
    h += " " * (64 - (11 + len(h)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + body


img = bytes((i * 5) % 256 for i in range(12288))
labels = npy(struct.pack("<q", 7), "<i8", (1,))
put("npy", "data.npy", npy(img[:48], "|u1", (4, 12)))
put("npy", "labels.npy", labels)
put("npy", "v2.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 54) +
    b"{'descr': '>i2', 'fortran_order': False, 'shape': (2,)}" [:54] + b"\x00\x01\x00\x02")
put("imagenet64", "stored.npz", zipped({"data.npy": npy(img, "|u1", (1, 12288)), "labels.npy": labels},
                                       zipfile.ZIP_STORED, True))
put("imagenet64", "deflated.npz", zipped({"data.npy": npy(img, "|u1", (1, 3, 64, 64)),
                                          "labels.npy": labels}, zipfile.ZIP_DEFLATED, True))
