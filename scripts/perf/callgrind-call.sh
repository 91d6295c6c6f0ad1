#!/bin/sh
# Instructions crmd spends on one simulated call, counted by callgrind (repeatable on a busy
# machine, unlike CPU time):
#   scripts/perf/callgrind-call.sh BIN_DIR LABEL [VAR=value ...]
# BIN_DIR holds release builds of crmd, callsim and speech-standin; VAR=value pairs go to crmd's
# environment (e.g. RECORDINGS_DIR= for recording off). Starts a stand-in and crmd under
# `valgrind --tool=callgrind` on free loopback ports, places one warm-up call (it pays for
# preparing SQLite statements), zeroes the counters, places the measured call, dumps, stops both
# (by pid) and prints the total. Output stays in target/perf/callgrind/LABEL/. Admission control
# is off (OVERLOAD_LAG_MS=0): under valgrind every timer runs late, and crmd would refuse the
# call as overloaded.
set -eu
BIN=$1; LABEL=$2; shift 2
cd "$(dirname "$0")/../.."
D=$PWD/target/perf/callgrind/$LABEL; rm -rf "$D"; mkdir -p "$D"; cd "$D"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
SP=$(free_port); CP=$(free_port)
"$BIN/speech-standin" --listen 127.0.0.1:"$SP" --stats-every-s 0 > standin.log 2>&1 &
SPID=$!
sleep 0.5
env PORT="$CP" DATABASE_URL="sqlite://$D/crmd.sqlite" GOOGLE_SPEECH_ENDPOINT="http://127.0.0.1:$SP" \
  GOOGLE_TTS_ENDPOINT="http://127.0.0.1:$SP" TWILIO_AUTH_TOKEN=t RUST_LOG=info OVERLOAD_LAG_MS=0 "$@" \
  valgrind --tool=callgrind "$BIN/crmd" > crmd.log 2>&1 &
CPID=$!
trap 'kill $CPID $SPID 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$CP/healthz" >/dev/null 2>&1 && break
  sleep 1
done
TWILIO_AUTH_TOKEN=t "$BIN/callsim" call --url "http://127.0.0.1:$CP" --json > warm-up.json
callgrind_control -z "$CPID" >/dev/null 2>&1
TWILIO_AUTH_TOKEN=t "$BIN/callsim" call --url "http://127.0.0.1:$CP" --json > call.json
callgrind_control -d "$CPID" >/dev/null 2>&1
kill -INT "$CPID"; wait "$CPID" 2>/dev/null || true
OUT=$(ls callgrind.out.*.1 | head -n1)
echo "$LABEL: $(callgrind_annotate --auto=no "$OUT" | grep 'PROGRAM TOTALS') instructions for one call ($D/$OUT)"
