#!/usr/bin/env python3
"""`sparse-repro sample` writes PNG and WAV files whose contents are the sampled tokens: checked
by decoding them here with the standard library (zlib + PNG unfiltering, the wave module and the
mu-law formula from datasets.h) against a raw-bytes sample drawn with the same seed."""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import wave

from png_gray import read_gray_png

exe = sys.argv[1]


def run(*args):
    out = subprocess.run([exe, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def png_pixels(path):
    return b"".join(read_gray_png(path)[2])


with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "m.safetensors")
    run("train", "--preset", "cifar10-small", "--data", "synthetic_image", "--image-width", "16",
        "--image-height", "8", "--stride", "16", "--block", "16", "--steps", "2", "--quiet",
        "--eval-sequences", "2", "--checkpoint", model, "--threads", "1", "--json")
    paths = {ext: os.path.join(tmp, "s" + ext) for ext in (".bin", ".png", ".wav")}
    for ext, path in paths.items():
        run("sample", "--checkpoint", model, "--out", path, "--seed", "7", "--threads", "1",
            "--scale", "1", "--json")
    tokens = open(paths[".bin"], "rb").read()
    assert len(tokens) == 128, len(tokens)
    assert png_pixels(paths[".png"]) == tokens, "PNG pixels differ from the raw sample"
    with wave.open(paths[".wav"]) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (12000, 1, 2)
        pcm = struct.unpack("<%dh" % w.getnframes(), w.readframes(w.getnframes()))
    for t, s in zip(tokens, pcm):
        y = t / 255 * 2 - 1  # level -> F(x); x = sign(y) (256^|y| - 1) / 255
        x = math.copysign((256 ** abs(y) - 1) / 255, y)
        assert abs(s / 32767 - x) < 2e-4, (t, s, x)
print("ok: PNG and WAV samples decode to the sampled tokens")
