#!/bin/sh
# Runs the criterion benches and the callsim load ladder, then rewrites the generated blocks of
# docs/PERFORMANCE.md. Options: see `scripts/perf/perf.py --help`.
set -eu
cd "$(dirname "$0")/../.."
exec python3 scripts/perf/perf.py "$@"
