#!/usr/bin/env bash
# Regenerates offline-fallback.ulaw: the message a caller hears when crmd has no Google speech
# credentials (see crates/edge/src/offline.rs). Run once by hand; the output is committed and embedded
# in the binary with include_bytes!, so nothing here runs at build or test time.
#   apt-get install -y espeak-ng sox
# Output: raw G.711 mu-law, 8000 Hz, mono, no header (exactly what Twilio Media Streams expects).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v he -s 150 -w "$tmp/he.wav" "מצטערים, העוזר שלנו אינו זמין כרגע. אנא נסו שוב מאוחר יותר."
espeak-ng -v en-us -s 150 -w "$tmp/en.wav" "Sorry, our assistant is unavailable right now. Please try again later."
# 300 ms lead-in, Hebrew, 400 ms pause, English, 300 ms tail; resampled to 8 kHz mono, mu-law, raw.
sox -n -r 22050 -c 1 -b 16 "$tmp/gap3.wav" trim 0 0.3
sox -n -r 22050 -c 1 -b 16 "$tmp/gap4.wav" trim 0 0.4
sox "$tmp/gap3.wav" "$tmp/he.wav" "$tmp/gap4.wav" "$tmp/en.wav" "$tmp/gap3.wav" \
    -r 8000 -c 1 -e mu-law -b 8 -t raw offline-fallback.ulaw norm -3
ls -l offline-fallback.ulaw
