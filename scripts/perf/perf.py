#!/usr/bin/env python3
"""Runs crmd's criterion benches and the callsim load ladder, then rewrites the generated blocks
of docs/PERFORMANCE.md (everything outside the `<!-- perf:... -->` markers is left alone).

Usage: scripts/perf/run.sh [--calls 50,200,500,1000,2000] [--ramp 10] [--duration 30]
                           [--no-redial] [--skip-benches] [--skip-load] [--skip-build]
                           [--bin-dir DIR]

Each load step starts a fresh speech stand-in and a fresh crmd (release builds, SQLite in a
temporary directory, Twilio signatures on), runs `callsim load` against them with their pids,
stops both, and keeps the JSON report under target/perf/. The ladder stops at the first step
that misses a hard target (p99 pacing jitter > 5 ms, dropped frames, failed call set-ups).
Only processes this script started are stopped, by pid.
"""

import argparse
import json
import os
import pathlib
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"  # --bin-dir overrides
RESULTS = ROOT / "target" / "perf"
DOC = ROOT / "docs" / "PERFORMANCE.md"
AUTH_TOKEN = "perf-run-auth-token"

TARGETS = {
    "pacing_p99_ms": 5.0,
    "crmd_cpu_percent_per_call": 0.05,
    "crmd_rss_kib_per_call": 100.0,
    "greeting_p95_ms": 50.0,
    "barge_in_p95_ms": 150.0,
}


def log(message):
    print(f"[perf] {message}", file=sys.stderr, flush=True)


def run(command, **kwargs):
    log("$ " + " ".join(str(c) for c in command))
    return subprocess.run(command, cwd=ROOT, check=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def wait_port(port, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def build():
    run(["cargo", "build", "--release", "-p", "crmd", "-p", "callsim", "-p", "speech-standin"])


def bench_targets():
    """(package, bench name) for every criterion bench in crates/*/benches."""
    found = []
    for manifest in sorted((ROOT / "crates").glob("*/Cargo.toml")):
        package = None
        for line in manifest.read_text().splitlines():
            if line.strip().startswith("name") and package is None:
                package = line.split("=", 1)[1].strip().strip('"')
        for bench in sorted((manifest.parent / "benches").glob("*.rs")):
            found.append((package, bench.stem))
    return found


def run_benches():
    criterion = ROOT / "target" / "criterion"
    rows = []
    for package, bench in bench_targets():
        started = time.time()
        try:
            run(["cargo", "bench", "-p", package, "--bench", bench, "--", "--noplot"])
        except subprocess.CalledProcessError as error:
            rows.append((f"{package}/{bench}", f"FAILED ({error.returncode})", "", ""))
            continue
        for estimates in sorted(criterion.glob("**/new/estimates.json")):
            if estimates.stat().st_mtime < started:
                continue
            meta = json.loads((estimates.parent / "benchmark.json").read_text())
            data = json.loads(estimates.read_text())
            median_ns = data["median"]["point_estimate"]
            throughput = meta.get("throughput") or {}
            per_second = ""
            if "Bytes" in throughput:
                per_second = f"{throughput['Bytes'] / median_ns * 1e9 / 1e6:.0f} MB/s"
            elif "Elements" in throughput:
                per_second = f"{throughput['Elements'] / median_ns * 1e9 / 1e6:.2f} M elem/s"
            rows.append((f"{package}/{bench}", meta["full_id"], format_ns(median_ns), per_second))
    return rows


def format_ns(ns):
    if ns < 1e3:
        return f"{ns:.1f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def speed_check():
    """Seconds `speed_check.py` (a fixed single-threaded loop) takes now: see that file."""
    result = subprocess.run([sys.executable, ROOT / "scripts" / "perf" / "speed_check.py"],
                            check=True, capture_output=True, text=True)
    return float(result.stdout.strip())


def pinned(cpus, command):
    """`command` run on the CPUs `cpus` (a taskset list such as 0-1) when given."""
    return ["taskset", "-c", cpus, *command] if cpus else list(command)


def load_step(calls, ramp, duration, redial, workdir, crmd_log_level, barge_in_every, call_seconds=None,
              crmd_cpus=None, load_cpus=None):
    speed = speed_check()
    standin_port, crmd_port = free_port(), free_port()
    api_token = "perf-" + secrets.token_hex(16)
    standin_log = open(workdir / f"standin-{calls}.log", "w")
    crmd_log = open(workdir / f"crmd-{calls}.log", "w")
    standin = subprocess.Popen(
        pinned(load_cpus, [RELEASE / "speech-standin", "--listen", f"127.0.0.1:{standin_port}",
                           "--stats-every-s", "10"]),
        stdout=standin_log, stderr=subprocess.STDOUT,
    )
    env = dict(os.environ)
    env.update({
        "PORT": str(crmd_port),
        "DATABASE_URL": f"sqlite://{workdir}/crmd-{calls}.sqlite",
        # A directory per step: recordings a step's crmd leaves unencoded at shutdown would
        # otherwise be encoded by the next step's crmd at start, inside that step's measurement.
        "RECORDINGS_DIR": os.environ.get("RECORDINGS_DIR", str(workdir / f"recordings-{calls}")),
        "GOOGLE_SPEECH_ENDPOINT": f"http://127.0.0.1:{standin_port}",
        "GOOGLE_TTS_ENDPOINT": f"http://127.0.0.1:{standin_port}",
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "RUST_LOG": crmd_log_level,
        # A token of this step's own, so callsim can read crmd's /metrics (backlogs, crmd's own
        # send lateness); it is passed by environment and never printed.
        "CRMD_API_TOKEN": api_token,
    })
    crmd = None
    try:
        wait_port(standin_port)
        crmd = subprocess.Popen(pinned(crmd_cpus, [RELEASE / "crmd"]), env=env, stdout=crmd_log, stderr=subprocess.STDOUT,
                                cwd=workdir)
        wait_http(f"http://127.0.0.1:{crmd_port}/healthz")
        try:
            readiness = json.loads(wait_http(f"http://127.0.0.1:{crmd_port}/readyz"))
        except (RuntimeError, ValueError):
            readiness = {}
        try:
            version = json.loads(wait_http(f"http://127.0.0.1:{crmd_port}/version"))
        except (RuntimeError, ValueError):
            version = {}
        command = [
            RELEASE / "callsim", "load", "--json",
            "--url", f"http://127.0.0.1:{crmd_port}",
            "--calls", str(calls), "--ramp", str(ramp), "--duration", str(duration),
            "--pid", str(crmd.pid), "--standin-pid", str(standin.pid),
            "--barge-in-every", str(barge_in_every),
        ]
        if redial:
            command.append("--redial")
        if call_seconds:
            command += ["--call-seconds", str(call_seconds)]
        log("$ " + " ".join(str(c) for c in command))
        result = subprocess.run(pinned(load_cpus, command), cwd=ROOT, check=True, capture_output=True, text=True,
                                env={**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "CRMD_API_TOKEN": api_token})
        report = json.loads(result.stdout)
        report["speed_check_s"] = speed
        report["crmd_readiness"] = readiness
        report["crmd_version"] = version
        report["command"] = " ".join(str(c) for c in command[1:]).replace(str(crmd.pid), "$CRMD_PID").replace(
            str(standin.pid), "$STANDIN_PID").replace(str(crmd_port), "$PORT")
        return report
    finally:
        if crmd is not None:
            stop(crmd)
        stop(standin)
        standin_log.close()
        crmd_log.close()


def misses(report):
    """Issue 9's targets this step missed (shown in the table)."""
    missed = []
    p99 = report["pacing"]["p99_ms"]
    if p99 is None or p99 > TARGETS["pacing_p99_ms"]:
        missed.append(f"pacing p99 {ms(p99)} ms > 5 ms")
    # The "outbound frame pacing jitter seen by the simulator": crmd's agent audio.
    jitter = report["agent_frame_jitter"]["p99_ms"]
    if jitter is not None and jitter > TARGETS["pacing_p99_ms"]:
        missed.append(f"agent jitter p99 {ms(jitter)} ms > 5 ms")
    if report["frames_dropped"] > 0:
        missed.append(f"{report['frames_dropped']} frames dropped")
    crmd = report.get("server")
    if crmd and crmd["cpu_percent_per_call"] > TARGETS["crmd_cpu_percent_per_call"]:
        missed.append(f"crmd {crmd['cpu_percent_per_call']:.3f} % CPU/call > 0.05 %")
    if crmd and crmd["rss_per_call_kib"] > TARGETS["crmd_rss_kib_per_call"]:
        missed.append(f"crmd {crmd['rss_per_call_kib']:.0f} KiB/call > 100 KiB")
    greeting = report["greeting"]["p95_ms"]
    if greeting is not None and greeting > TARGETS["greeting_p95_ms"]:
        missed.append(f"greeting p95 {ms(greeting)} ms > 50 ms")
    barge = report["barge_in_latency"]["p95_ms"]
    if barge is not None and barge > TARGETS["barge_in_p95_ms"]:
        missed.append(f"barge-in p95 {ms(barge)} ms > 150 ms")
    return missed


def saturated(report):
    """Reasons to stop climbing: calls fail or the simulator can no longer keep time."""
    reasons = []
    if report["frames_dropped"] > 0:
        reasons.append(f"{report['frames_dropped']} frames dropped")
    if report["setup_errors"]:
        reasons.append(f"{sum(report['setup_errors'].values())} call set-ups failed")
    if report["ws_errors"] > 0:
        reasons.append(f"{report['ws_errors']} WebSocket errors")
    p99 = report["pacing"]["p99_ms"]
    if p99 is None or p99 > 4 * TARGETS["pacing_p99_ms"]:
        reasons.append(f"pacing p99 {ms(p99)} ms > 4x the 5 ms target")
    return reasons


def ms(value):
    return "-" if value is None else f"{value:.1f}"


def usage_cell(usage, per_call=True):
    if not usage:
        return "-"
    cell = f"{usage['cpu_percent']:.1f} %"
    if per_call:
        cell += f" ({usage['cpu_percent_per_call']:.4f} %/call)"
    return cell


def shown_args():
    """This run's options, without the free-text --note."""
    shown, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--note":
            skip = True
            continue
        if arg.startswith("--note="):
            continue
        shown.append(arg)
    return " ".join(shown)


def busy_cell(report):
    busy, other = report.get("machine_busy_percent"), report.get("other_processes_percent")
    if busy is None:
        return "-"
    return f"{busy:.0f} % ({other:.0f} %)"


def render_load(reports, stopped_because, args):
    lines = []
    if not reports:
        return "No load run recorded yet: run `scripts/perf/run.sh`.\n"
    first = reports[0]
    machine = first["machine"]
    readiness = first.get("crmd_readiness", {})
    version = first.get("crmd_version", {})
    lines.append(f"Generated by `scripts/perf/run.sh {shown_args()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
                 f"(tree at `{git_commit()}`); crmd build: commit `{version.get('git_commit', '?')}`, built "
                 f"{version.get('build_time', '?')}.")
    if args.note:
        lines.append("")
        lines.append(args.note)
    lines.append("")
    lines.append(f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), kernel {machine['kernel']}. "
                 "crmd, the speech stand-in and the simulator share these cores, so every figure includes "
                 "their competition; each process's own CPU is reported.")
    lines.append("")
    speech = readiness.get("speech", "unknown")
    lines.append(f"crmd ran with `RUST_LOG={first.get('crmd_log_level', 'info')}` (as in production), Twilio "
                 "signature checks on, SQLite, and both Google endpoints pointed at the speech stand-in "
                 f"(`/readyz` said speech = \"{speech}\"; check crmd's log line `call handler ready mode=...`: "
                 "`Live` means real conversations over the stand-in, the offline fallback means every call "
                 "hears the recorded apology and is hung up). Each simulated caller listens to the greeting, "
                 "then loops: say an utterance (speech-like tones), listen to the reply; once every "
                 f"{args.barge_in_every} turns it talks over the reply 800 ms in (barge-in). `--redial` keeps "
                 "N calls live when crmd hangs one up. "
                 + (f"Each call hangs up after {args.call_seconds:g} s and its slot redials (`--call-seconds`), "
                    "so calls end all through the steady window and what crmd does after a call (encoding its "
                    "recording) is measured under load. " if args.call_seconds else "")
                 + "The stand-in ends an utterance after 300 ms of quiet, "
                 "so turn latency includes those 300 ms plus the STT client's 100 ms batching.")
    lines.append("")
    lines.append("| calls | placed | refused busy | set-up errors | WS errors | greeting p50 / p95 ms | turn p50 / p95 ms | "
                 "barge-in p95 ms | pacing p50 / p99 / max ms | late / dropped frames | agent jitter p99 ms | "
                 "crmd send lateness p50 / p99 ms | "
                 "crmd CPU | crmd RSS/call | stand-in CPU | simulator CPU | machine busy (other processes) | "
                 "load avg / speed check before | targets missed |")
    lines.append("|---:|---:|---:|---:|---:|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        g, t, b, p, j = r["greeting"], r["turn_latency"], r["barge_in_latency"], r["pacing"], r["agent_frame_jitter"]
        crmd = r.get("server")
        send = r.get("server_send_lateness") or {}
        rss = f"{crmd['rss_per_call_kib']:.1f} KiB" if crmd else "-"
        lines.append(
            f"| {r['calls_requested']} | {r['calls_placed']} | {r.get('calls_refused', 0)} | "
            f"{sum(r['setup_errors'].values())} | {r['ws_errors']} | "
            f"{ms(g['p50_ms'])} / {ms(g['p95_ms'])} | {ms(t['p50_ms'])} / {ms(t['p95_ms'])} | {ms(b['p95_ms'])} | "
            f"{ms(p['p50_ms'])} / {ms(p['p99_ms'])} / {ms(p['max_ms'])} | {r['frames_late']} / {r['frames_dropped']} | "
            f"{ms(j['p99_ms'])} | {ms(send.get('p50_ms'))} / {ms(send.get('p99_ms'))} | {usage_cell(crmd)} | {rss} | {usage_cell(r.get('standin'), False)} | "
            f"{usage_cell(r.get('simulator'), False)} | {busy_cell(r)} | "
            f"{r.get('load_average_before', '-').split(' ')[0]} / {r.get('speed_check_s', '-')} s | "
            f"{'; '.join(r.get('targets_missed', [])) or 'none'} |")
    lines.append("")
    if stopped_because:
        lines.append(f"The ladder stopped at {reports[-1]['calls_requested']} calls: {'; '.join(stopped_because)}.")
        lines.append("")
    lines.append("Targets (issue 9): >= 2,000 concurrent calls with p99 pacing jitter <= 5 ms and no dropped "
                 "frames; crmd <= 0.05 % of a core and <= 100 KiB RSS per call; greeting <= 50 ms after `start`; "
                 "barge-in `clear` <= 150 ms after caller onset (p95). Published anchors: SiphonAI 0.54 % of a "
                 "core per call; Pipecat Cloud 0.5 vCPU per voice session.")
    lines.append("")
    lines.append("Commands (per step; `$CRMD_PID`/`$STANDIN_PID`/`$PORT` are the processes the script started):")
    lines.append("")
    lines.append("```")
    for r in reports:
        lines.append(f"callsim {r['command']}")
    lines.append("```")
    lines.append("")
    lines.append("Columns: *refused busy* = calls crmd answered with `<Reject reason=\"busy\"/>` (admission "
                 "control: `MAX_CALLS`, or its runtime running timers over `OVERLOAD_LAG_MS` late; the simulator "
                 "redials 5 s later); *greeting* = `start` -> first agent audio; *turn* = caller's last voiced frame -> "
                 "first agent audio of the reply; *barge-in* = caller onset over playing agent audio -> `clear`; "
                 "*pacing* = lateness of each caller frame against its 20 ms slot (simulator side); *agent "
                 "jitter* = lateness of agent frames against the reply's real-time schedule, as the simulator "
                 "reads them (crmd's lateness plus the simulator's own delay in reading); *crmd send lateness* = "
                 "how late crmd itself released the agent audio it was pacing, per socket write "
                 "(`crmd_media_out_lateness_seconds` on its `/metrics`, over the steady window); CPU is % of one "
                 "core averaged over the steady window (all calls started + 2 s, to the end); RSS/call = (peak "
                 "in the window - before the first call) / calls; *machine busy* = all CPU time used on the machine "
                 "in % of one core (200 % = both cores; the wall time of every CPU less their idle time, as "
                 "`/proc/stat`'s busy fields miss work in bursts shorter than a tick), *other processes* = the "
                 "part not used by crmd, the "
                 "stand-in or the simulator (other work sharing the machine); *speed check* = seconds a fixed "
                 "Python loop took just before the step (`scripts/perf/speed_check.py`: about 0.26 s on a quiet host; higher means the VM's "
                 "host was busy and every process needs more CPU time for the same work). Full JSON reports: "
                 "`target/perf/load-N.json`.")
    return "\n".join(lines) + "\n"


def render_benches(rows):
    if not rows:
        return "Benches not run in the last `scripts/perf/run.sh` (use it without `--skip-benches`).\n"
    lines = ["Latest criterion medians from `scripts/perf/run.sh` "
             f"(`cargo bench -p PACKAGE --bench NAME -- --noplot`, commit `{git_commit()}`):", "",
             "| bench target | benchmark | median | throughput |", "|---|---|---:|---:|"]
    for target, bench_id, median, throughput in rows:
        lines.append(f"| {target} | {bench_id} | {median} | {throughput} |")
    return "\n".join(lines) + "\n"


def render_svg(reports):
    """Latency percentiles against concurrency, log-scaled ms axis, as a standalone SVG."""
    series = [
        ("caller pacing p99", "#1f77b4", lambda r: r["pacing"]["p99_ms"]),
        ("agent frame jitter p99", "#ff7f0e", lambda r: r["agent_frame_jitter"]["p99_ms"]),
        ("greeting p95", "#2ca02c", lambda r: r["greeting"]["p95_ms"]),
        ("turn latency p95", "#d62728", lambda r: r["turn_latency"]["p95_ms"]),
        ("barge-in -> clear p95", "#9467bd", lambda r: r["barge_in_latency"]["p95_ms"]),
    ]
    import math
    width, height, left, right, top, bottom = 760, 420, 70, 200, 30, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = 0.1, 10_000.0

    def y(ms_value):
        v = min(max(ms_value, lo), hi)
        return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    def x(i):
        return left + (plot_w * i / max(len(reports) - 1, 1))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">crmd under callsim load: latency percentiles (ms, log scale)</text>']
    for decade in (0.1, 1, 10, 100, 1000, 10000):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g}</text>')
    for target, label in ((5, "5 ms pacing target"), (50, "50 ms greeting"), (150, "150 ms barge-in")):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(target):.1f}" y2="{y(target):.1f}" stroke="#999" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{left + plot_w - 4}" y="{y(target) - 4:.1f}" text-anchor="end" fill="#777">{label}</text>')
    for i, r in enumerate(reports):
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 20}" text-anchor="middle">{r["calls_requested"]}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">concurrent calls</text>')
    for k, (name, colour, pick) in enumerate(series):
        points = [(x(i), y(pick(r))) for i, r in enumerate(reports) if pick(r) is not None]
        if points:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                       + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
            for px, py in points:
                out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>')
        ly = top + 14 + 18 * k
        out.append(f'<line x1="{left + plot_w + 15}" x2="{left + plot_w + 35}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + plot_w + 40}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


HOW_TO = """Everything below runs on one machine; nothing touches the internet.

```sh
scripts/perf/run.sh                       # release build, all criterion benches, load ladder 50..2000
scripts/perf/run.sh --skip-benches --calls 50,200 --duration 20   # a quick load check
```

By hand (three terminals):

```sh
cargo build --release -p crmd -p callsim -p speech-standin
target/release/speech-standin --listen 127.0.0.1:50051
PORT=8080 GOOGLE_SPEECH_ENDPOINT=http://127.0.0.1:50051 GOOGLE_TTS_ENDPOINT=http://127.0.0.1:50051 \\
  DATABASE_URL=sqlite:///tmp/crmd-perf.sqlite TWILIO_AUTH_TOKEN=t target/release/crmd
target/release/callsim call --url http://127.0.0.1:8080 --auth-token t --out /tmp/agent.wav
target/release/callsim load --url http://127.0.0.1:8080 --auth-token t --calls 500 --ramp 10 \\
  --duration 30 --pid $(pgrep -n crmd) --standin-pid $(pgrep -n speech-standin) [--redial] \\
  [--call-seconds 15] [--json]
```

`callsim call --script steps.toml` runs a scripted call (say / say_text / wait_ms / listen_ms / dtmf /
interrupt_after_ms / hangup_without_stop; see `bins/callsim/src/steps.rs`).

LLM replies instead of the scripted responder: give the stand-in `--llm-listen 127.0.0.1:50052` (an
OpenAI-compatible Chat Completions stand-in streaming canned replies; `--llm-first-token-ms`, default
300) and crmd `RESPONDER=llm LLM_BASE_URL=http://127.0.0.1:50052/v1 LLM_MODEL=standin`. One load step
either way, before/after: `[AB_RESPONDER=llm] [RECORDINGS_DIR=] [RECORDING_FORMAT=wav]
[AB_CALL_SECONDS=15 AB_DURATION=60] scripts/perf/ab.sh BIN_DIR CALLS LABEL`. With `--call-seconds`
(`AB_CALL_SECONDS`) each call hangs up after that long and its slot redials, so what crmd does after
a call (encoding its recording) happens inside the measured window; ab.sh also prints the encoding
left after the load, and the largest backlogs crmd's `/metrics` showed during it (CRM writes queued,
recordings waiting for encoding: `callsim load` samples them when given the server's
`CRMD_API_TOKEN`, and reports them as `server_backlog`). With the token, callsim also reads how late
crmd itself sent the agent audio it paced over the steady window (`crmd_media_out_lateness_seconds`,
reported as `server_send_lateness`), which tells crmd's share of the agent jitter from the
simulator's own delay in reading it.
"""


def replace_block(text, name, body):
    begin, end = f"<!-- perf:{name}:begin -->", f"<!-- perf:{name}:end -->"
    block = f"{begin}\n{body}{end}"
    if begin in text and end in text:
        before = text[: text.index(begin)]
        after = text[text.index(end) + len(end):]
        return before + block + after
    return None


def write_doc(load_body, bench_body):
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    for name, heading, body in (
        ("load", "## Load (callsim)", load_body),
        ("howto", "## How to reproduce", HOW_TO),
        ("benches", None, bench_body),
    ):
        if body is None:
            continue
        replaced = replace_block(text, name, body)
        if replaced is not None:
            text = replaced
            continue
        block = f"<!-- perf:{name}:begin -->\n{body}<!-- perf:{name}:end -->\n"
        anchor = "<!-- perf:howto:end -->"
        if heading is None and anchor in text:
            at = text.index(anchor) + len(anchor)
            text = text[:at] + "\n\n" + block + text[at:].lstrip("\n")
        else:
            text = text.rstrip("\n") + f"\n\n{heading or '## Benchmarks'}\n\n{block}"
    DOC.write_text(text)
    log(f"wrote {DOC}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="50,200,500,1000,2000")
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--no-redial", action="store_true")
    parser.add_argument("--call-seconds", type=float, default=None,
                        help="each call hangs up after this long and its slot redials")
    parser.add_argument("--crmd-log", default="info", help="RUST_LOG for crmd (production: info)")
    parser.add_argument("--note", default="", help="a sentence added under the load table's header")
    parser.add_argument("--barge-in-every", type=int, default=2,
                        help="every Nth caller turn barges in over the reply")
    parser.add_argument("--crmd-cpus", help="run crmd on these CPUs only (taskset list, e.g. 0-1)")
    parser.add_argument("--load-cpus", help="run callsim and the stand-in on these CPUs only (e.g. 2-3): "
                        "crmd measured without the load generator on its cores")
    parser.add_argument("--skip-benches", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--bin-dir", help="take crmd, callsim and speech-standin from here "
                        "(implies --skip-build); default target/release")
    args = parser.parse_args()
    global RELEASE
    if args.bin_dir:
        RELEASE = pathlib.Path(args.bin_dir).resolve()
        args.skip_build = True

    if platform.system() != "Linux":
        sys.exit("perf.py reads /proc: Linux only")
    if not args.skip_build:
        build()
    bench_rows = None if args.skip_benches else run_benches()

    load_body = None
    if not args.skip_load:
        RESULTS.mkdir(parents=True, exist_ok=True)
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="crmd-perf-"))
        reports, stopped_because = [], []
        try:
            for calls in [int(c) for c in args.calls.split(",") if c.strip()]:
                report = load_step(calls, args.ramp, args.duration, not args.no_redial, workdir,
                                   args.crmd_log, args.barge_in_every, args.call_seconds,
                                   args.crmd_cpus, args.load_cpus)
                report["crmd_log_level"] = args.crmd_log
                (RESULTS / f"load-{calls}.json").write_text(json.dumps(report, indent=2))
                reports.append(report)
                report["targets_missed"] = misses(report)
                log(f"{calls} calls: targets missed: {report['targets_missed'] or 'none'}")
                stop_reasons = saturated(report)
                if stop_reasons:
                    stopped_because = stop_reasons
                    break
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        load_body = render_load(reports, stopped_because, args)
        if reports:
            plot = DOC.parent / "perf-load-latency.svg"
            plot.write_text(render_svg(reports))
            log(f"wrote {plot}")
            load_body += f"\n![Latency distributions per load step]({plot.name})\n"
    write_doc(load_body, None if bench_rows is None else render_benches(bench_rows))


if __name__ == "__main__":
    main()
