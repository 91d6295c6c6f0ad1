#!/usr/bin/env python3
"""Python half of scripts/bench-codec-vs-audioop.sh: makes the buffers, times audioop, runs the
Rust example on the same files, verifies identical output, prints the comparison table."""
import array
import os
import platform
import random
import subprocess
import sys
import timeit
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

samples, work, rust_bin = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = random.Random(20260101)  # fixed seed: the same buffers every run
# Speech-like PCM: a mix of quiet and loud samples over the full 16-bit range.
pcm = array.array("h", (int(rng.gauss(0, 6000)) for _ in range(samples)))
for i, value in enumerate(pcm):
    pcm[i] = max(-32768, min(32767, value))
if sys.byteorder != "little":
    pcm.byteswap()
pcm_bytes = pcm.tobytes()
mulaw_bytes = bytes(rng.randrange(256) for _ in range(samples))

paths = {name: os.path.join(work, name) for name in ("in.ulaw", "in.pcm", "dec.pcm", "enc.ulaw")}
with open(paths["in.ulaw"], "wb") as f:
    f.write(mulaw_bytes)
with open(paths["in.pcm"], "wb") as f:
    f.write(pcm_bytes)


def best_per_call(fn, repeats=7):
    number, _ = timeit.Timer(fn).autorange()  # calls lasting >= 0.2 s
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number


py_decode = best_per_call(lambda: audioop.ulaw2lin(mulaw_bytes, 2))
py_encode = best_per_call(lambda: audioop.lin2ulaw(pcm_bytes, 2))

out = subprocess.run(
    [rust_bin, paths["in.ulaw"], paths["in.pcm"], paths["dec.pcm"], paths["enc.ulaw"]],
    check=True, capture_output=True, text=True).stdout
rust = {name: float(value) for name, value in (line.split() for line in out.splitlines())}

with open(paths["dec.pcm"], "rb") as f:
    decode_same = f.read() == audioop.ulaw2lin(mulaw_bytes, 2)
with open(paths["enc.ulaw"], "rb") as f:
    encode_same = f.read() == audioop.lin2ulaw(pcm_bytes, 2)
if not (decode_same and encode_same):
    sys.exit(f"OUTPUT MISMATCH: decode identical={decode_same} encode identical={encode_same}")

print(f"{samples} samples, Python {platform.python_version()}, {platform.machine()}, "
      f"{os.cpu_count()} CPUs; outputs byte-identical to audioop: yes\n")
print("| operation | audioop | mulaw | speed-up | target |")
print("|---|---|---|---|---|")
for label, py, key, target in (
    ("decode (mu-law -> PCM16), into caller buffer", py_decode, "decode_into", 3),
    ("decode, allocating Vec", py_decode, "decode", 3),
    ("encode (PCM16 -> mu-law), into caller buffer", py_encode, "encode_into", 10),
    ("encode, allocating Vec", py_encode, "encode", 10),
):
    ours = rust[key]
    if key.startswith("decode"):
        unit = lambda t: f"{samples / t / 1e9:.2f} GB/s in"
    else:
        unit = lambda t: f"{samples / t / 1e6:.0f} M samples/s"
    ratio = py / ours
    verdict = "met" if ratio >= target else "MISSED"
    print(f"| {label} | {unit(py)} | {unit(ours)} | {ratio:.1f}x | >= {target}x {verdict} |")
