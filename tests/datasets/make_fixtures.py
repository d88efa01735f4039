#!/usr/bin/env python3
"""Writes the dataset test fixtures into argv[1], in the real formats, with Python's own
tarfile, gzip, zipfile, zlib and wave modules (independent of libsparse's readers), plus damaged
variants. Contents follow closed-form rules that the C++ tests recompute:

  CIFAR-10 record g (global index over data_batch_1..5, then test_batch from 1000):
      label = (7 g + 3) % 10, plane byte (c, p) = (g * 31 + c * 101 + p * 7) % 256
  ImageNet image g: plane byte (c, p) = (g * 13 + c * 59 + p * 5) % 256, label = 1 + (g * 37) % 1000
  text.bin: byte i = (i * 7 + i // 13) % 256 (also gzip-compressed: text.bin.gz, two-members.bin.gz)
  enwik8.zip: 100,000,000 bytes, byte i = (i // 1,000,000) % 256
"""
import bz2
import gzip
import io
import lzma
import math
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import wave
import zipfile
import zlib

out = sys.argv[1]


def path(*parts):
    p = os.path.join(out, *parts)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def cifar_record(g):
    body = bytes((g * 31 + c * 101 + p * 7) % 256 for c in range(3) for p in range(1024))
    return bytes([(7 * g + 3) % 10]) + body


def cifar_batches():
    batches = {}
    g = 0
    for b in range(1, 6):
        batches[f"data_batch_{b}.bin"] = b"".join(cifar_record(g + i) for i in range(10))
        g += 10
    batches["test_batch.bin"] = b"".join(cifar_record(1000 + i) for i in range(7))
    return batches


def write_tar(name, members, compress, extra=None):
    mode = "w:gz" if compress else "w"
    with tarfile.open(path(name), mode, format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo("cifar-10-batches-bin")
        info.type = tarfile.DIRTYPE
        t.addfile(info)
        for n, data in list(members.items()) + list((extra or {}).items()):
            info = tarfile.TarInfo("cifar-10-batches-bin/" + n)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


batches = cifar_batches()
meta = {"batches.meta.txt": b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"}
write_tar("cifar/cifar-10-binary.tar.gz", batches, True, meta)
write_tar("cifar/plain.tar", batches, False, meta)
# A second data_batch_1.bin in another folder of the archive: which one is meant is unknown.
write_tar("cifar/two-batch1.tar.gz", batches, True,
          {"copy/data_batch_1.bin": batches["data_batch_1.bin"]})
for n, data in batches.items():
    with open(path("cifar/folder/cifar-10-batches-bin", n), "wb") as f:
        f.write(data)
# Damaged archives.
good = open(path("cifar/cifar-10-binary.tar.gz"), "rb").read()
open(path("cifar/truncated.tar.gz"), "wb").write(good[: len(good) // 2])
corrupt = bytearray(good)
for i in range(len(corrupt) // 3, len(corrupt) // 3 + 64):
    corrupt[i] ^= 0x5A
open(path("cifar/corrupt.tar.gz"), "wb").write(bytes(corrupt))
# Damaged gzip trailers (CRC-32, ISIZE, cut off) and two-member gzip files, each checked against
# Python's gzip module and, where installed, `gzip -t`.
def gzip_ok(name):
    data = open(path(name), "rb").read()
    try:
        gzip.decompress(data)
        py = True
    except (OSError, EOFError, zlib.error):
        py = False
    if shutil.which("gzip"):
        tool = subprocess.run(["gzip", "-t", path(name)], capture_output=True).returncode == 0
        assert tool == py, name
    return py


def damaged(name, data):
    open(path(name), "wb").write(bytes(data))
    assert not gzip_ok(name), name


def flip(data, i):
    d = bytearray(data)
    d[i] ^= 0x01
    return d


damaged("cifar/bad-crc.tar.gz", flip(good, len(good) - 8))
damaged("cifar/bad-isize.tar.gz", flip(good, len(good) - 4))
damaged("cifar/no-trailer.tar.gz", good[:-8])
damaged("cifar/cut-trailer.tar.gz", good[:-3])
plain = open(path("cifar/plain.tar"), "rb").read()
half = len(plain) // 2
first, second = gzip.compress(plain[:half], mtime=0), gzip.compress(plain[half:], mtime=0)
open(path("cifar/two-members.tar.gz"), "wb").write(first + second)
assert gzip_ok("cifar/two-members.tar.gz")
damaged("cifar/two-members-bad-crc1.tar.gz", flip(first, len(first) - 8) + second)
damaged("cifar/two-members-bad-crc2.tar.gz", first + flip(second, len(second) - 8))
bad = dict(batches)
bad["data_batch_3.bin"] = bad["data_batch_3.bin"][:-1]
write_tar("cifar/short-record.tar.gz", bad, True)
bad = dict(batches)
bad["data_batch_2.bin"] = b"\x0b" + bad["data_batch_2.bin"][1:]
write_tar("cifar/bad-label.tar.gz", bad, True)
bad = dict(batches)
del bad["data_batch_4.bin"]
write_tar("cifar/missing-member.tar.gz", bad, True)
open(path("cifar/not-gzip.tar.gz"), "wb").write(b"\x1f\x8b" + b"this is not deflate data" * 10)
with open(path("cifar/garbage.tar"), "wb") as f:
    f.write(bytes(range(256)) * 8)
# Oversized batch in a folder: 10,001 records (a sparse file of zeros; labels 0 are valid).
os.makedirs(path("cifar/oversized/x"), exist_ok=True)
for n in batches:
    with open(path("cifar/oversized", n), "wb") as f:
        f.write(batches[n])
with open(path("cifar/oversized/data_batch_5.bin"), "wb") as f:
    f.truncate(10001 * 3073)

# Text.
text = bytes((i * 7 + i // 13) % 256 for i in range(1019))
open(path("text/text.bin"), "wb").write(text)
open(path("text/empty.bin"), "wb").close()
with zipfile.ZipFile(path("text/one-member.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("notes.txt", text)
# enwik8.zip of the real size: 100 blocks of 1,000,000 equal bytes (compresses to ~100 KB).
with zipfile.ZipFile(path("text/enwik8.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("enwik8", "w") as f:
        for block in range(100):
            f.write(bytes([block % 256]) * 1000000)
with zipfile.ZipFile(path("text/wrong-member.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("enwik9", b"x" * 100)
# Two files in one archive: neither reader picks one of them silently.
with zipfile.ZipFile(path("text/two-members.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("notes.txt", text)
    z.writestr("more.txt", text[::-1])
with zipfile.ZipFile(path("text/enwik8-and-readme.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("enwik8", b"x" * 1000)
    z.writestr("README", b"about enwik8")
enwik = open(path("text/enwik8.zip"), "rb").read()
open(path("text/enwik8-truncated.zip"), "wb").write(enwik[: len(enwik) - 200])
with open(path("text/enwik8-oversized"), "wb") as f:
    f.truncate(100000001)
# A failed download saved under the archive's name, and a gzip copy of enwik8.
html = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body>" + b"x" * 4096
open(path("text/html/enwik8.zip"), "wb").write(html + b"</body></html>\n")
open(path("text/html/enwik8.ZIP"), "wb").write(b"")
open(path("text/enwik8.gz"), "wb").write(gzip.compress(b"<mediawiki>" * 1000, mtime=0))
# The text as gzip (one member; two members split mid-way), read as the text it inflates to, and
# with a damaged trailer. Other compressed formats and tar archives are refused: bzip2 and xz
# written by Python's bz2 and lzma, zstd and 7-Zip by their signatures (all the reader looks at).
gz = gzip.compress(text, mtime=0)
open(path("text/text.bin.gz"), "wb").write(gz)
open(path("text/two-members.bin.gz"), "wb").write(gzip.compress(text[:500], mtime=0) +
                                                  gzip.compress(text[500:], mtime=0))
assert gzip_ok("text/text.bin.gz") and gzip_ok("text/two-members.bin.gz")
assert gzip.decompress(open(path("text/two-members.bin.gz"), "rb").read()) == text
damaged("text/bad-crc.bin.gz", flip(gz, len(gz) - 8))
open(path("text/text.bin.bz2"), "wb").write(bz2.compress(text))
open(path("text/text.bin.xz"), "wb").write(lzma.compress(text))
open(path("text/text.bin.zst"), "wb").write(b"\x28\xb5\x2f\xfd" + text[:64])
open(path("text/text.bin.7z"), "wb").write(b"7z\xbc\xaf\x27\x1c" + text[:64])
# Compressed data inside gzip (a gzip of a .bz2 or .xz, a gzip twice over) or inside a zip: the
# inflated bytes are no text either.
open(path("text/text.bin.bz2.gz"), "wb").write(gzip.compress(bz2.compress(text), mtime=0))
open(path("text/text.bin.gz.gz"), "wb").write(gzip.compress(gz, mtime=0))
with zipfile.ZipFile(path("text/text.bin.xz.zip"), "w") as z:
    z.writestr("text.bin.xz", lzma.compress(text))
for name, mode in (("text/text.tar", "w"), ("text/text.tar.gz", "w:gz")):
    with tarfile.open(path(name), mode) as t:
        info = tarfile.TarInfo("text.bin")
        info.size = len(text)
        t.addfile(info, io.BytesIO(text))


# Zip members whose local header disagrees with the central directory: the name (Python's zipfile
# refuses it) and the CRC-32 (the data matches the central one).
def zip_local_header(data, name):
    at = data.index(b"PK\x03\x04")
    assert data[at + 30:at + 30 + len(name)] == name
    return at


one = open(path("text/one-member.zip"), "rb").read()
at = zip_local_header(one, b"notes.txt")
d = bytearray(one)
d[at + 30 + 8] = ord("u")  # notes.txu
open(path("text/local-name.zip"), "wb").write(bytes(d))
try:
    zipfile.ZipFile(path("text/local-name.zip")).read("notes.txt")
    raise AssertionError("zipfile accepted local-name.zip")
except zipfile.BadZipFile:
    pass
d = bytearray(one)
d[at + 14] ^= 0x01
open(path("text/local-crc.zip"), "wb").write(bytes(d))
assert zipfile.ZipFile(path("text/local-crc.zip")).read("notes.txt") == text


# ImageNet 64x64 npz batches, written like numpy.savez (version 1.0 .npy headers, zip64 local
# headers) with stored or deflated members.
def npy(array_bytes, descr, shape):
    shape_txt = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_txt)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + array_bytes


def image(g):
    return bytes((g * 13 + c * 59 + p * 5) % 256 for c in range(3) for p in range(4096))


def npz(name, first, n, method, data_shape=None, with_data=True, labels_n=None, descr="|u1"):
    members = {}
    if with_data:
        data = b"".join(image(first + i) for i in range(n))
        shape = data_shape or (n, 12288)
        data = data[: math.prod(shape) * int(descr[2:])]  # the body always matches the header
        members["data.npy"] = npy(data, descr, shape)
    ln = n if labels_n is None else labels_n
    labels = b"".join(struct.pack("<q", 1 + ((first + i) * 37) % 1000) for i in range(ln))
    members["labels.npy"] = npy(labels, "<i8", (ln,))
    with zipfile.ZipFile(path(name), "w", method) as z:
        for k, v in members.items():
            with z.open(k, "w", force_zip64=True) as f:
                f.write(v)


npz("imagenet/train_data_batch_1.npz", 0, 3, zipfile.ZIP_STORED)
npz("imagenet/train_data_batch_2.npz", 3, 2, zipfile.ZIP_DEFLATED)
npz("imagenet/train_data_batch_10.npz", 5, 1, zipfile.ZIP_DEFLATED)
npz("imagenet/val_data.npz", 100, 2, zipfile.ZIP_STORED)
open(path("imagenet/readme.txt"), "w").write("not a batch\n")
npz("imagenet-bad/no-data.npz", 0, 2, zipfile.ZIP_STORED, with_data=False)
npz("imagenet-bad/wrong-shape.npz", 0, 2, zipfile.ZIP_STORED, data_shape=(2, 12287),)
npz("imagenet-bad/float.npz", 0, 1, zipfile.ZIP_STORED, descr="<f8", data_shape=(1, 1536))
npz("imagenet-bad/labels-mismatch.npz", 0, 2, zipfile.ZIP_DEFLATED, labels_n=3)
npz("imagenet-bad/planes.npz", 0, 2, zipfile.ZIP_DEFLATED, data_shape=(2, 3, 64, 64))
good = open(path("imagenet/train_data_batch_2.npz"), "rb").read()
open(path("imagenet-bad/truncated.npz"), "wb").write(good[: len(good) // 2])
corrupt = bytearray(good)
for i in range(200, 260):
    corrupt[i] ^= 0xFF
open(path("imagenet-bad/corrupt.npz"), "wb").write(bytes(corrupt))
good = open(path("imagenet/train_data_batch_1.npz"), "rb").read()
corrupt = bytearray(good)
corrupt[5000] ^= 0x01  # inside stored data: only the CRC can tell
open(path("imagenet-bad/crc.npz"), "wb").write(bytes(corrupt))
# A deflated member whose data is intact but whose CRC-32 (central and local copies alike) is not.
good = open(path("imagenet/train_data_batch_2.npz"), "rb").read()
corrupt = bytearray(good)
with zipfile.ZipFile(path("imagenet/train_data_batch_2.npz")) as z:
    info = z.getinfo("data.npy")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    local, crc = info.header_offset, struct.pack("<I", info.CRC)
for at in (local + 14, good.index(b"PK\x01\x02") + 16):
    assert good[at:at + 4] == crc
    corrupt[at] ^= 0x01
open(path("imagenet-bad/deflated-crc.npz"), "wb").write(bytes(corrupt))
assert zipfile.ZipFile(path("imagenet-bad/deflated-crc.npz")).testzip() == "data.npy"
os.makedirs(path("imagenet-empty/x"), exist_ok=True)
os.rmdir(path("imagenet-empty/x"))


# Audio: WAV files written with the wave module.
def wav(name, rate, channels, frames_fn, n):
    with wave.open(path(name), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        data = bytearray()
        for i in range(n):
            for v in frames_fn(i / rate):
                data += struct.pack("<h", max(-32768, min(32767, int(round(v * 32767)))))
        w.writeframes(bytes(data))


def stereo(t):
    s = 0.5 * math.sin(2 * math.pi * 440 * t)
    d = 0.25 * math.sin(2 * math.pi * 3000 * t)
    return (s + d, s - d)


wav("audio/one/tone.wav", 24000, 2, stereo, 36000)
wav("audio-bad/silent.wav", 16000, 1, lambda t: (0.0,), 8000)
wav("audio-bad/empty.wav", 16000, 1, lambda t: (0.0,), 0)
open(path("audio-bad/noise.wav"), "wb").write(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
for k in range(10):
    amp = (k + 1) / 12
    wav(f"audio/ten/track{k:02d}.wav", 12000, 1,
        lambda t, amp=amp: (amp * math.sin(2 * math.pi * 300 * t),), 6000)
open(path("audio/ten/notes.txt"), "w").write("ignored\n")
os.makedirs(path("audio/empty/x"), exist_ok=True)
os.rmdir(path("audio/empty/x"))
