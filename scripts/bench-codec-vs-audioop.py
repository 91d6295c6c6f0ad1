#!/usr/bin/env python3
"""Python half of scripts/bench-codec-vs-audioop.sh: makes the buffers, times audioop, runs the
Rust example on the same files, verifies identical output, prints the comparison table.

The machine may be shared, so both sides are timed as best-of-N and the two are measured in
alternating passes; each figure is the best over all passes."""
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
passes = int(sys.argv[4]) if len(sys.argv) > 4 else 3
rng = random.Random(20260101)  # fixed seed: the same buffers every run
# Speech-like PCM: Gaussian samples (sigma 6000), clipped to 16 bits.
pcm = array.array("h", (max(-32768, min(32767, int(rng.gauss(0, 6000)))) for _ in range(samples)))
if sys.byteorder != "little":
    pcm.byteswap()
inputs = {
    "random.ulaw": bytes(rng.randrange(256) for _ in range(samples)),  # worst case for caches
    "speech.ulaw": audioop.lin2ulaw(pcm.tobytes(), 2),
    "speech.pcm": pcm.tobytes(),
}
path = lambda name: os.path.join(work, name)
for name, data in inputs.items():
    with open(path(name), "wb") as f:
        f.write(data)


def best_per_call(fn, repeats=9):
    number, _ = timeit.Timer(fn).autorange()  # calls lasting >= 0.2 s
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number


def rust_times(mulaw_name):
    out = subprocess.run(
        [rust_bin, path(mulaw_name), path("speech.pcm"), path("dec.pcm"), path("enc.ulaw"), "30"],
        check=True, capture_output=True, text=True).stdout
    with open(path("dec.pcm"), "rb") as f:
        if f.read() != audioop.ulaw2lin(inputs[mulaw_name], 2):
            sys.exit(f"OUTPUT MISMATCH: decode of {mulaw_name} differs from audioop")
    with open(path("enc.ulaw"), "rb") as f:
        if f.read() != audioop.lin2ulaw(inputs["speech.pcm"], 2):
            sys.exit("OUTPUT MISMATCH: encode differs from audioop")
    return {name: float(value) for name, value in (line.split() for line in out.splitlines())}


best = {}
def keep_best(key, seconds):
    best[key] = min(best.get(key, float("inf")), seconds)

for _ in range(passes):
    for name in ("random.ulaw", "speech.ulaw"):
        keep_best(("py", "decode", name), best_per_call(lambda: audioop.ulaw2lin(inputs[name], 2)))
        for op, seconds in rust_times(name).items():
            keep_best(("rs", op, name), seconds)
    keep_best(("py", "encode", "speech.pcm"), best_per_call(lambda: audioop.lin2ulaw(inputs["speech.pcm"], 2)))

print(f"{samples} samples per call, best of {passes} alternating passes; Python "
      f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
      f"all outputs byte-identical to audioop\n")
print("| operation | input | audioop | mulaw | speed-up | target |")
print("|---|---|---|---|---|---|")
gbps = lambda t: f"{samples / t / 1e9:.2f} GB/s"
msps = lambda t: f"{samples / t / 1e6:,.0f} M samples/s"
rows = [
    ("decode_into (mu-law -> PCM16)", "random.ulaw", "decode_into", "decode", gbps, 3),
    ("decode_into (mu-law -> PCM16)", "speech.ulaw", "decode_into", "decode", gbps, 3),
    ("decode -> Vec", "random.ulaw", "decode", "decode", gbps, 3),
    ("encode_into (PCM16 -> mu-law)", "speech.pcm", "encode_into", "encode", msps, 10),
    ("encode -> Vec", "speech.pcm", "encode", "encode", msps, 10),
]
for label, name, rust_op, py_op, unit, target in rows:
    py = best[("py", py_op, name)]
    rs = best[("rs", rust_op, "random.ulaw" if py_op == "encode" else name)]
    ratio = py / rs
    verdict = "met" if ratio >= target else "MISSED"
    shown = name.replace(".ulaw", " mu-law").replace(".pcm", " PCM16")
    print(f"| {label} | {shown} | {unit(py)} | {unit(rs)} | {ratio:.1f}x | >= {target}x {verdict} |")
