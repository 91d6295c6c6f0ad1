#!/usr/bin/env bash
# Times CPython's audioop (ulaw2lin / lin2ulaw) and crmd's mulaw crate side by side, on the same
# buffers, in one run, checks both produce identical bytes, and prints a Markdown table.
#
#   scripts/bench-codec-vs-audioop.sh [SAMPLES]      (default 1000000 samples = 125 s of audio)
#
# Needs python3 with audioop (3.11/3.12; removed in 3.13) and a Rust toolchain.
# Targets (issue 2): decode >= 3x audioop, encode >= 10x audioop.
set -euo pipefail
cd "$(dirname "$0")/.."
samples="${1:-1000000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p mulaw --example codec_throughput
exec python3 scripts/bench-codec-vs-audioop.py "$samples" "$work" target/release/examples/codec_throughput
