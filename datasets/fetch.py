#!/usr/bin/env python3
"""Downloads the canonical dataset files for libsparse's readers (needs internet; never used by
the tests), resuming partial downloads, and checks each file's size, structure and, where one is
published, checksum. Prints what to pass to the trainer.

    datasets/fetch.py          [--dest DIR]     (cifar10 and enwik8; DIR: the repository's data/)
    datasets/fetch.py cifar10  [--dest DIR]
    datasets/fetch.py enwik8   [--dest DIR]
    datasets/fetch.py imagenet64 --dest DIR [--zips DIR_WITH_DOWNLOADED_ZIPS]
    datasets/fetch.py audio --dest DIR      (checks a folder of your recordings)

The readers use the archives as downloaded (cifar-10-binary.tar.gz, enwik8.zip); nothing needs
extracting except the ImageNet 64x64 npz batches, which image-net.org ships inside zip files.
"""
import argparse
import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile

CIFAR = {
    "url": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "name": "cifar-10-binary.tar.gz",
    "size": 170052171,
    "md5": "c32a1d4ab5d03f1284b67883e8d87530",  # published on the CIFAR-10 page
}
ENWIK8 = {
    "url": "http://mattmahoney.net/dc/enwik8.zip",
    "name": "enwik8.zip",
    "size": 36445475,
    "md5": None,  # none published; size and structure are checked
}
IMAGENET64_ZIPS = ["Imagenet64_train_part1_npz.zip", "Imagenet64_train_part2_npz.zip",
                   "Imagenet64_val_npz.zip"]
AUDIO_EXT = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au",
             ".caf", ".w64", ".rf64")


def fail(msg):
    sys.exit(f"fetch.py: {msg}")


def download(url, path, size):
    """Resumable download (HTTP Range); returns when `path` has `size` bytes."""
    part = path + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if os.path.exists(path) and os.path.getsize(path) == size:
        print(f"{path}: already complete")
        return
    while have < size:
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                if have and r.status != 206:
                    print("server ignored the range request; restarting from 0")
                    have = 0
                mode = "ab" if have else "wb"
                with open(part, mode) as f:
                    while True:
                        chunk = r.read(1 << 20)
                        if not chunk:
                            break
                        f.write(chunk)
                        have += len(chunk)
                        print(f"\r{os.path.basename(path)}: {have:,} / {size:,} bytes", end="",
                              flush=True)
        except (urllib.error.URLError, OSError) as e:
            print()
            fail(f"download of {url} interrupted at {have:,} bytes ({e}); run again to resume")
        print()
        if have > size:
            fail(f"{part}: {have:,} bytes, more than the expected {size:,}; delete it and rerun")
        if have < size:
            fail(f"{url}: the server stopped at {have:,} of {size:,} bytes; run again to resume")
    os.replace(part, path)


def md5_of(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_size(path, size):
    got = os.path.getsize(path)
    if got != size:
        fail(f"{path}: {got:,} bytes, expected {size:,}")


def cifar10(dest):
    path = os.path.join(dest, CIFAR["name"])
    download(CIFAR["url"], path, CIFAR["size"])
    check_size(path, CIFAR["size"])
    if md5_of(path) != CIFAR["md5"]:
        fail(f"{path}: MD5 mismatch (expected {CIFAR['md5']}); delete it and rerun")
    with tarfile.open(path, "r:gz") as t:
        sizes = {os.path.basename(m.name): m.size for m in t.getmembers() if m.isfile()}
    for n in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        if sizes.get(n) != 10000 * 3073:
            fail(f"{path}: member {n} has {sizes.get(n)} bytes, expected 30,730,000")
    print(f"ok: {path}\npass to the trainer: dataset kind cifar10, path {path}"
          "   (C ABI: sparse_dataset_desc.kind = SPARSE_DATASET_CIFAR10, .path)")


def enwik8(dest):
    path = os.path.join(dest, ENWIK8["name"])
    download(ENWIK8["url"], path, ENWIK8["size"])
    check_size(path, ENWIK8["size"])
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("enwik8")
        if info.file_size != 100000000:
            fail(f"{path}: member enwik8 has {info.file_size:,} bytes, expected 100,000,000")
        with z.open("enwik8") as f:
            if not f.read(10) == b"<mediawiki":
                fail(f"{path}: enwik8 does not start with <mediawiki")
    print(f"ok: {path}\npass to the trainer: dataset kind enwik8, path {path}"
          "   (C ABI: SPARSE_DATASET_ENWIK8)")


def imagenet64(dest, zips):
    # image-net.org serves these only to registered users, so they cannot be fetched here.
    zips = zips or dest
    found = [z for z in IMAGENET64_ZIPS if os.path.exists(os.path.join(zips, z))]
    if not found:
        fail("download " + ", ".join(IMAGENET64_ZIPS) + " from https://image-net.org/download-images "
             "(Downsampled ImageNet 64x64, npz; needs an account) into " + zips + ", then rerun")
    os.makedirs(dest, exist_ok=True)
    for z in found:
        with zipfile.ZipFile(os.path.join(zips, z)) as archive:
            for m in archive.infolist():
                name = os.path.basename(m.filename)
                if not name.endswith(".npz"):
                    continue
                out = os.path.join(dest, name)
                if os.path.exists(out) and os.path.getsize(out) == m.file_size:
                    continue
                print(f"extracting {name} ({m.file_size:,} bytes)")
                with archive.open(m) as src, open(out + ".part", "wb") as dst:
                    while chunk := src.read(1 << 24):
                        dst.write(chunk)
                os.replace(out + ".part", out)
    batches = sorted(n for n in os.listdir(dest) if n.startswith("train_data_batch_"))
    for n in batches + (["val_data.npz"] if os.path.exists(os.path.join(dest, "val_data.npz")) else []):
        with zipfile.ZipFile(os.path.join(dest, n)) as npz:
            if "data.npy" not in npz.namelist():
                fail(f"{n}: no array 'data' (expected data.npy in the npz)")
    if len(batches) != 10:
        print(f"warning: {len(batches)} train batches (the full set has 10)")
    print(f"ok: {dest}\npass to the trainer: dataset kind imagenet64, path {dest}"
          "   (train: train_data_batch_*.npz, test: val_data.npz)")


def audio(dest):
    if not os.path.isdir(dest):
        fail(f"{dest}: expected a folder of recordings (WAV, FLAC, Ogg, MP3)")
    files = [f for f in sorted(os.listdir(dest)) if f.lower().endswith(AUDIO_EXT)]
    if not files:
        fail(f"{dest}: no audio files ({', '.join(AUDIO_EXT)})")
    total = sum(os.path.getsize(os.path.join(dest, f)) for f in files)
    print(f"ok: {len(files)} recordings, {total:,} bytes in {dest} (there is no canonical "
          "download for the classical-music set: bring your own recordings)\n"
          f"pass to the trainer: dataset kind audio, path {dest}")


# The repository's data/ folder (git-ignored), wherever the script is run from.
DEFAULT_DEST = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = ["cifar10", "enwik8", "imagenet64", "audio"]
    p.add_argument("dataset", nargs="*", help=f"what to fetch: {', '.join(kinds)} "
                   "(default: cifar10 and enwik8)")
    p.add_argument("--dest", default=DEFAULT_DEST,
                   help=f"where the files go (default: the repository's data/, {DEFAULT_DEST})")
    p.add_argument("--zips", help="imagenet64: folder holding the downloaded Imagenet64_*_npz.zip")
    a = p.parse_args()
    for dataset in a.dataset:
        if dataset not in kinds:
            p.error(f"unknown dataset {dataset!r} (expected {', '.join(kinds)})")
    for dataset in a.dataset or ["cifar10", "enwik8"]:
        if dataset != "audio":
            os.makedirs(a.dest, exist_ok=True)
        {"cifar10": lambda: cifar10(a.dest), "enwik8": lambda: enwik8(a.dest),
         "imagenet64": lambda: imagenet64(a.dest, a.zips), "audio": lambda: audio(a.dest)}[dataset]()


if __name__ == "__main__":
    main()
