#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_capi: deterministic pseudo-random inputs of a few lengths (the
target decodes any bytes into a sequence of ABI calls, so random bytes already reach every
operation; libFuzzer grows the corpus from there)."""
import os
import random
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(20190423)
for i, length in enumerate([16, 64, 128, 256, 512, 1024, 1024, 2048, 2048, 4096]):
    with open(os.path.join(out, "seed_%02d" % i), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(length)))
