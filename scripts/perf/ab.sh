#!/bin/sh
# One load step against binaries in BIN_DIR, for before/after comparisons of a change:
#   scripts/perf/ab.sh BIN_DIR CALLS LABEL
# BIN_DIR holds release builds of crmd, callsim and speech-standin (e.g. a patched crmd next to
# the usual tools). Starts a fresh stand-in and crmd on free loopback ports, runs
# `callsim load --calls CALLS --ramp 8 --duration 25 --barge-in-every 2 --redial` (AB_DURATION=S
# for another duration; AB_CALL_SECONDS=S makes each call hang up after S seconds and redial, so
# calls end all through the run and their recordings are encoded under load), stops both
# (by pid) and prints one summary line (with the largest backlogs crmd's /metrics showed: CRM
# writes queued, recordings waiting for encoding); the JSON report stays in
# target/perf/ab/LABEL-CALLS/.
# AB_RESPONDER=llm answers with the stand-in's OpenAI-compatible model (replies generated per
# call, so no phrase-cache sharing) instead of the scripted responder.
# Calls are recorded into LABEL-CALLS/recordings (crmd's default is on); RECORDINGS_DIR= (empty)
# turns recording off. A recording is spooled as WAV during the call and encoded to Ogg Opus
# after it, so most encoding happens once the load has ended: the script then waits for the
# spools to be encoded and prints crmd's CPU time for that, per second of recorded call.
# AB_CRMD_CPUS and AB_LOAD_CPUS (taskset CPU lists, e.g. 0-1 and 2-3) run crmd, and the stand-in
# with callsim, on CPUs of their own: how crmd does without the load generator on its cores
# (on a machine with more cores than crmd is given).
set -eu
BIN=$1; N=$2; LABEL=$3
CRMD_PIN=${AB_CRMD_CPUS:+taskset -c $AB_CRMD_CPUS}
LOAD_PIN=${AB_LOAD_CPUS:+taskset -c $AB_LOAD_CPUS}
cd "$(dirname "$0")/../.."
D=$PWD/target/perf/ab/$LABEL-$N; rm -rf "$D"; mkdir -p "$D"
# Seconds a fixed single-threaded loop takes now (scripts/perf/speed_check.py): on a shared VM the
# same work costs more CPU time while the host is busy, so compare runs with similar figures.
SPEED=$(python3 scripts/perf/speed_check.py)
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
SP=$(free_port); CP=$(free_port); LP=$(free_port)
if [ "${AB_RESPONDER:-scripted}" = llm ]; then
  set -- --llm-listen 127.0.0.1:"$LP"
  export RESPONDER=llm LLM_BASE_URL="http://127.0.0.1:$LP/v1" LLM_MODEL=standin
else
  set --
fi
$LOAD_PIN "$BIN/speech-standin" --listen 127.0.0.1:"$SP" --stats-every-s 0 "$@" > "$D/standin.log" 2>&1 &
SPID=$!
sleep 0.5
RECORDINGS_DIR=${RECORDINGS_DIR-$D/recordings}; export RECORDINGS_DIR
# A token of this run's own, so callsim can read crmd's /metrics backlogs.
CRMD_API_TOKEN=ab-$(python3 -c 'import secrets; print(secrets.token_hex(16))'); export CRMD_API_TOKEN
PORT=$CP DATABASE_URL="sqlite://$D/crmd.sqlite" GOOGLE_SPEECH_ENDPOINT="http://127.0.0.1:$SP" \
  GOOGLE_TTS_ENDPOINT="http://127.0.0.1:$SP" TWILIO_AUTH_TOKEN=t RUST_LOG=info \
  $CRMD_PIN "$BIN/crmd" > "$D/crmd.log" 2>&1 &
CPID=$!
trap 'kill $CPID $SPID 2>/dev/null || true' EXIT
sleep 1.5
TWILIO_AUTH_TOKEN=t $LOAD_PIN "$BIN/callsim" load --url "http://127.0.0.1:$CP" --calls "$N" --ramp "${AB_RAMP:-8}" \
  --duration "${AB_DURATION:-25}" --pid "$CPID" --standin-pid "$SPID" --barge-in-every 2 --redial ${AB_CALL_SECONDS:+--call-seconds "$AB_CALL_SECONDS"} --json > "$D/load.json"
# Deferred encoding: crmd's CPU from the end of the load until no spool is left (at most 300 s).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$CPID/stat"; }
if [ -n "$RECORDINGS_DIR" ] && [ -d "$RECORDINGS_DIR" ] && [ "${RECORDING_FORMAT:-opus}" != wav ]; then
  T0=$(cpu_ticks); W0=$(date +%s)
  SPOOL_BYTES=$(find "$RECORDINGS_DIR" -name '*.wav*' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  while [ -n "$(find "$RECORDINGS_DIR" -name '*.wav' -print -quit)" ] && [ $(( $(date +%s) - W0 )) -lt 300 ]; do
    sleep 0.5
  done
  T1=$(cpu_ticks); HZ=$(getconf CLK_TCK)
  [ "$SPOOL_BYTES" -gt 0 ] && python3 -c "import sys; t=($T1-$T0)/$HZ; s=$SPOOL_BYTES/16000; left=int(sys.argv[1]);
print('after the load: %.1f CPU-s encoding %.0f s of spooled call (%.4f %% of a core per call), %d spools left' % (t, s, 100*t/max(s,1), left))" \
    "$(find "$RECORDINGS_DIR" -name '*.wav' | wc -l)"
fi
python3 - "$D/load.json" "$LABEL" "$SPEED" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = r["server"]
print(sys.argv[2], r["calls_requested"], "calls: crmd CPU %.1f %% (%.4f %%/call), RSS %.1f KiB/call"
      % (s["cpu_percent"], s["cpu_percent_per_call"], s["rss_per_call_kib"]),
      "| pacing p99", r["pacing"]["p99_ms"], "ms, agent jitter p99", r["agent_frame_jitter"]["p99_ms"],
      "ms, crmd send lateness p50/p99", (r.get("server_send_lateness") or {}).get("p50_ms"), "/",
      (r.get("server_send_lateness") or {}).get("p99_ms"),
      "ms, barge-in p95", r["barge_in_latency"]["p95_ms"], "ms, turn p50", r["turn_latency"]["p50_ms"],
      "ms, webhook p50/p99", r.get("webhook", {}).get("p50_ms"), "/", r.get("webhook", {}).get("p99_ms"),
      "ms | machine busy %.0f %% (other %.0f %%)" % (r["machine_busy_percent"] or 0, r["other_processes_percent"] or 0),
      "| calls placed %d, refused busy %d, peak live %d" % (r["calls_placed"], r.get("calls_refused", 0), r["peak_live_calls"]),
      "| crmd backlog max: CRM writes %s, recordings to encode %s" % (
          r.get("server_backlog", {}).get("db_queue_depth_max"),
          r.get("server_backlog", {}).get("recordings_pending_encode_max")),
      "| speed check before %s s" % sys.argv[3])
PY
