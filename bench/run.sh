#!/usr/bin/env bash
# vigil benchmark harness: vigil vs prometheus-blackbox-exporter on /probe, nginx as the target and
# as the reference ceiling, and vigil's self-scheduled mode with N probes. Loopback (127.0.0.1) only.
# See bench/README.md for what is measured and how. Usage: bash bench/run.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
LIB="$HERE/benchlib.py"
LUA="$HERE/wrk-report.lua"
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------- knobs
BENCH_ONLY=${BENCH_ONLY:-nginx,blackbox,vigil,selfsched} # sections to run (comma separated)
BENCH_DURATION=${BENCH_DURATION:-10}       # seconds per measured wrk run
BENCH_CONNS=${BENCH_CONNS:-"32 256"}       # wrk connection counts (one measured run each)
BENCH_THREADS=${BENCH_THREADS:-1}          # wrk threads against the exporters
BENCH_NGINX_THREADS=${BENCH_NGINX_THREADS:-2} # wrk threads for the nginx-alone ceiling (-t1 is wrk-bound)
BENCH_WARMUP=${BENCH_WARMUP:-2}            # seconds of unmeasured wrk load per exporter before measuring
BENCH_WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-5s} # wrk per-request timeout (counted as errors)
BENCH_N=${BENCH_N:-10000}                  # self-scheduled: number of HTTP probes
BENCH_SS_INTERVAL=${BENCH_SS_INTERVAL:-15s}
BENCH_SS_TIMEOUT=${BENCH_SS_TIMEOUT:-5s}
BENCH_SS_WARMUP=${BENCH_SS_WARMUP:-20}     # seconds before the measuring window
BENCH_SS_WINDOW=${BENCH_SS_WINDOW:-30}     # seconds of measuring window
BENCH_SCRAPES=${BENCH_SCRAPES:-5}          # timed /metrics scrapes
BENCH_OUT=${BENCH_OUT:-$HERE/results/latest.md}
BENCH_WAIT_IDLE=${BENCH_WAIT_IDLE:-0}      # seconds to wait, before each measurement, for the machine to be idle
BENCH_KEEP_TMP=${BENCH_KEEP_TMP:-0}        # 1: keep the temp dir (configs, logs) for inspection
VIGIL_BIN=${VIGIL_BIN:-}                   # set to skip `cargo build --release`
# vigil reads VIGIL_* environment variables as config overrides (VIGIL_BIN would become an unknown
# key `bin`): keep them all out of the processes the bench starts.
for v in $(compgen -e VIGIL_ || true); do export -n "$v"; done

want() { [[ ",$BENCH_ONLY," == *",$1,"* ]]; }
for s in ${BENCH_ONLY//,/ }; do
  case $s in nginx|blackbox|vigil|selfsched) ;; *) echo "BENCH_ONLY: unknown section '$s' (nginx, blackbox, vigil, selfsched)" >&2; exit 2 ;; esac
done

# ---------------------------------------------------------------------------- tools
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian package: $2)"); }
need python3 python3
need curl curl
need nginx nginx
need wrk wrk
want blackbox && need prometheus-blackbox-exporter prometheus-blackbox-exporter
if ((${#missing[@]})); then
  echo "bench: missing tools:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  echo "install them with: bash bench/install-deps.sh   (or apt-get install -y <package>)" >&2
  exit 2
fi
if (((BENCH_THREADS < 1))); then echo "BENCH_THREADS must be >= 1" >&2; exit 2; fi
for c in $BENCH_CONNS; do
  if ((c < BENCH_THREADS || c < BENCH_NGINX_THREADS)); then
    echo "BENCH_CONNS value $c is below the wrk thread count" >&2; exit 2
  fi
done

# ---------------------------------------------------------------------------- processes and cleanup
TMP=$(mktemp -d /tmp/vigil-bench.XXXXXX)
chmod 755 "$TMP" # nginx workers (user nobody) must reach the document root
RESULTS="$TMP/results.jsonl"
PIDS=()

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  if [[ $BENCH_KEEP_TMP == 1 ]]; then
    echo "bench: temp dir kept: $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'echo "bench: terminated" >&2; exit 143' TERM

die() { # die MESSAGE [LOGFILE...]
  echo "bench: ERROR: $1" >&2
  shift
  local f
  for f in "$@"; do
    [[ -f $f ]] || continue
    echo "--- last lines of $f ---" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}

# long-running steps run in the background and are waited for, so that INT/TERM reach the trap at
# once (bash defers traps until a foreground command ends); cleanup stops them like the servers.
bg_wait() {
  "$@" &
  local pid=$! rc=0
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
  return "$rc"
}

freeport() { python3 "$LIB" freeport; }
retry_flag() { # retry_flag ATTEMPT: with BENCH_WAIT_IDLE, a disturbed measurement is repeated (3 tries)
  if ((BENCH_WAIT_IDLE > 0 && $1 < 3)); then echo --discard-if-disturbed; fi
}
idle_check() { # idle_check PID...: the machine should be idle apart from these (and their children)
  ((BENCH_WAIT_IDLE > 0)) || return 0
  bg_wait python3 "$LIB" idle-check 1 --quiet --wait "$BENCH_WAIT_IDLE" --exclude "$@"
}
wait_http() { bg_wait python3 "$LIB" wait-http --pid "$3" "$1" "$2"; } # wait_http URL SECONDS PID
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

python3 "$LIB" idle-check 2 --wait "$BENCH_WAIT_IDLE"

# ---------------------------------------------------------------------------- nginx (the target)
NGINX_PORT=$(freeport)
mkdir -p "$TMP/nginx" "$TMP/www"
printf '<!doctype html><title>vigil bench</title><p>ok</p>\n' >"$TMP/www/index.html"
chmod -R a+rX "$TMP/www"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  server_tokens off;
  default_type text/html;
  keepalive_timeout 65;
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    root $TMP/www;
    index index.html;
  }
}
EOF
echo "bench: starting nginx on 127.0.0.1:$NGINX_PORT"
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT/" 15 "$NGINX_PID" || die "nginx did not come up" "$TMP/nginx/stdout.log" "$TMP/nginx/error.log"

# ---------------------------------------------------------------------------- versions and meta
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 {print $1, $2}') # wrk -v exits 1
BLACKBOX_VERSION="not run"
if want blackbox; then
  BLACKBOX_VERSION=$(prometheus-blackbox-exporter --version 2>&1 | sed -n '1{s/^blackbox_exporter, version //;p;}')
fi
VIGIL_VERSION="not run"
VIGIL_COMMIT="-"
COMMANDS=("nginx -p TMP/nginx -c TMP/nginx/nginx.conf   # daemon off, worker_processes 1, access_log off")

# ---------------------------------------------------------------------------- wrk runner
# run_wrk LABEL THREADS CONNS EXPORTER_PID(or "") URL [extra wrk args...]
run_wrk() {
  local label=$1 threads=$2 conns=$3 epid=$4 url=$5
  shift 5
  local args=(--results "$RESULTS" --label "$label" --conns "$conns" --threads "$threads"
    --nginx-pid "$NGINX_PID" --log "$TMP/wrk-$label-c$conns.log")
  [[ -n $epid ]] && args+=(--exporter-pid "$epid")
  local attempt rc
  for ((attempt = 1; ; attempt++)); do
    idle_check "$NGINX_PID" $epid
    rc=0
    bg_wait python3 "$LIB" wrk "${args[@]}" $(retry_flag "$attempt") -- wrk -t"$threads" -c"$conns" \
      -d"${BENCH_DURATION}s" --timeout "$BENCH_WRK_TIMEOUT" -s "$LUA" "$@" "$url" || rc=$?
    sleep 1
    ((rc == 3)) && continue # disturbed by other load: discarded, measure again
    ((rc == 0)) || die "wrk run $label c=$conns failed" "$TMP/wrk-$label-c$conns.log"
    break
  done
}

warmup() { # warmup URL: unmeasured load
  ((BENCH_WARMUP > 0)) || return 0
  bg_wait wrk -t1 -c32 -d"${BENCH_WARMUP}s" --timeout "$BENCH_WRK_TIMEOUT" "$1" >/dev/null 2>&1 || true
  sleep 1
}

# bench_exporter LABEL PID PORT LOG
bench_exporter() {
  local label=$1 pid=$2 port=$3 log=$4 c
  local url="http://127.0.0.1:$port/probe?module=http_2xx&target=http://127.0.0.1:$NGINX_PORT/"
  python3 "$LIB" probe-check --results "$RESULTS" --when before "$label" "$url" ||
    die "$label: /probe did not report probe_success 1 before the run" "$log"
  warmup "$url"
  for c in $BENCH_CONNS; do run_wrk "$label" "$BENCH_THREADS" "$c" "$pid" "$url"; done
  python3 "$LIB" probe-check --results "$RESULTS" --when after "$label" "$url" ||
    die "$label: /probe did not report probe_success 1 after the run" "$log"
  kill -0 "$pid" 2>/dev/null || die "$label exited during the run" "$log"
  python3 "$LIB" mem --results "$RESULTS" "$label" "$pid"
}

# ---------------------------------------------------------------------------- A0: nginx alone
if want nginx; then
  echo "bench: nginx alone, fresh connection per request (Connection: close)"
  for c in $BENCH_CONNS; do
    run_wrk nginx "$BENCH_NGINX_THREADS" "$c" "" "http://127.0.0.1:$NGINX_PORT/" -H "Connection: close"
  done
fi

# ---------------------------------------------------------------------------- A1: blackbox_exporter
if want blackbox; then
  BB_PORT=$(freeport)
  mkdir -p "$TMP/blackbox"
  cat >"$TMP/blackbox/blackbox.yml" <<EOF
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      valid_status_codes: []
      preferred_ip_protocol: ip4
EOF
  echo "bench: starting prometheus-blackbox-exporter ($BLACKBOX_VERSION) on 127.0.0.1:$BB_PORT"
  prometheus-blackbox-exporter --config.file="$TMP/blackbox/blackbox.yml" \
    --web.listen-address="127.0.0.1:$BB_PORT" --log.level=warn >"$TMP/blackbox/log" 2>&1 &
  BB_PID=$!
  PIDS+=("$BB_PID")
  COMMANDS+=("prometheus-blackbox-exporter --config.file=TMP/blackbox.yml --web.listen-address=127.0.0.1:PORT --log.level=warn   # module http_2xx: prober http, timeout 5s, valid_status_codes [], preferred_ip_protocol ip4")
  wait_http "http://127.0.0.1:$BB_PORT/metrics" 20 "$BB_PID" || die "blackbox_exporter did not come up" "$TMP/blackbox/log"
  bench_exporter blackbox "$BB_PID" "$BB_PORT" "$TMP/blackbox/log"
  stop_pid "$BB_PID"
fi

# ---------------------------------------------------------------------------- vigil binary
if want vigil || want selfsched; then
  VIGIL_BUILT=0
  if [[ -z $VIGIL_BIN ]]; then
    VIGIL_BUILT=1
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust or set VIGIL_BIN=/path/to/vigil"
    echo "bench: cargo build --release (set VIGIL_BIN=/path to skip)"
    bg_wait bash -c 'cd "$1" && exec cargo build --release' _ "$ROOT" || die "cargo build --release failed"
    VIGIL_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/vigil"
  fi
  [[ -x $VIGIL_BIN ]] || die "vigil binary not found or not executable: $VIGIL_BIN"
  VIGIL_VERSION=$({ "$VIGIL_BIN" --version 2>/dev/null || true; } | sed -n '1{s/^vigil //;p;}')
  VIGIL_VERSION=${VIGIL_VERSION:-unknown}
  VIGIL_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
  if [[ -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    VIGIL_COMMIT+=", uncommitted changes"
  fi
  if ((VIGIL_BUILT)); then
    VIGIL_COMMIT="built from $VIGIL_COMMIT"
  else
    VIGIL_COMMIT="binary $VIGIL_BIN; repo at $VIGIL_COMMIT"
  fi
fi

# ---------------------------------------------------------------------------- A2: vigil /probe
if want vigil; then
  V_PORT=$(freeport)
  mkdir -p "$TMP/vigil"
  cat >"$TMP/vigil/probe.yml" <<EOF
probes: []
modules:
  http_2xx: {kind: http, valid_status: ["200-299"]}
EOF
  echo "bench: starting vigil ($VIGIL_VERSION) on 127.0.0.1:$V_PORT"
  "$VIGIL_BIN" run --config "$TMP/vigil/probe.yml" --web.listen-address "127.0.0.1:$V_PORT" \
    --storage.path "$TMP/vigil/probe-data" --log.level warn >"$TMP/vigil/probe.log" 2>&1 &
  V_PID=$!
  PIDS+=("$V_PID")
  COMMANDS+=("vigil run --config TMP/probe.yml --web.listen-address 127.0.0.1:PORT --storage.path TMP/probe-data --log.level warn   # probes: [], modules: http_2xx: {kind: http, valid_status: [\"200-299\"]}")
  wait_http "http://127.0.0.1:$V_PORT/metrics" 30 "$V_PID" || die "vigil did not come up" "$TMP/vigil/probe.log"
  bench_exporter vigil "$V_PID" "$V_PORT" "$TMP/vigil/probe.log"
  stop_pid "$V_PID"
fi

# ---------------------------------------------------------------------------- B: vigil self-scheduled
if want selfsched; then
  S_PORT=$(freeport)
  mkdir -p "$TMP/vigil"
  python3 "$LIB" gen-config --n "$BENCH_N" --port "$NGINX_PORT" --interval "$BENCH_SS_INTERVAL" \
    --timeout "$BENCH_SS_TIMEOUT" --out "$TMP/vigil/selfsched.yml"
  echo "bench: starting vigil self-scheduled with $BENCH_N probes (interval $BENCH_SS_INTERVAL) on 127.0.0.1:$S_PORT"
  "$VIGIL_BIN" run --config "$TMP/vigil/selfsched.yml" --web.listen-address "127.0.0.1:$S_PORT" \
    --storage.path "$TMP/vigil/selfsched-data" --log.level warn >"$TMP/vigil/selfsched.log" 2>&1 &
  S_PID=$!
  PIDS+=("$S_PID")
  COMMANDS+=("vigil run --config TMP/selfsched.yml --web.listen-address 127.0.0.1:PORT --storage.path TMP/selfsched-data --log.level warn   # defaults: {interval: $BENCH_SS_INTERVAL, timeout: $BENCH_SS_TIMEOUT}, $BENCH_N probes {name: tNNNNN, kind: http, url: http://127.0.0.1:NGINX/?t=N}")
  wait_http "http://127.0.0.1:$S_PORT/-/healthy" 60 "$S_PID" || die "vigil (self-scheduled) did not come up" "$TMP/vigil/selfsched.log"
  echo "bench: warm-up ${BENCH_SS_WARMUP}s, then a ${BENCH_SS_WINDOW}s window"
  bg_wait sleep "$BENCH_SS_WARMUP"
  kill -0 "$S_PID" 2>/dev/null || die "vigil (self-scheduled) exited" "$TMP/vigil/selfsched.log"
  # the probes' own footprint, before any /metrics scrape (readiness was polled on /-/healthy) adds the encoder's
  python3 "$LIB" mem --results "$RESULTS" vigil-selfsched-before-scrape "$S_PID"
  for ((attempt = 1; ; attempt++)); do
    idle_check "$NGINX_PID" "$S_PID"
    rc=0
    bg_wait python3 "$LIB" selfsched --results "$RESULTS" --pid "$S_PID" --nginx-pid "$NGINX_PID" \
      --metrics-url "http://127.0.0.1:$S_PORT/metrics" --n "$BENCH_N" --interval "$BENCH_SS_INTERVAL" \
      --window "$BENCH_SS_WINDOW" --scrapes "$BENCH_SCRAPES" $(retry_flag "$attempt") || rc=$?
    ((rc == 3)) && continue # disturbed by other load: discarded, measure again
    ((rc == 0)) || die "self-scheduled measurement failed" "$TMP/vigil/selfsched.log"
    break
  done
  stop_pid "$S_PID"
fi

# ---------------------------------------------------------------------------- report
export NGINX_VERSION WRK_VERSION BLACKBOX_VERSION VIGIL_VERSION VIGIL_COMMIT BENCH_ONLY BENCH_THREADS BENCH_NGINX_THREADS BENCH_DURATION \
  BENCH_CONNS BENCH_WARMUP BENCH_SS_WARMUP
python3 - "$TMP/meta.json" "${COMMANDS[@]}" <<'EOF'
import json, os, subprocess, sys, datetime
e = os.environ
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
meta = {
    "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z"),
    "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
    "cpu_model": cpu, "kernel": os.uname().release, "mem_total": f"{int(mem.split()[0]) // 1024} MiB RAM",
    "nginx_version": e["NGINX_VERSION"], "blackbox_version": e["BLACKBOX_VERSION"],
    "vigil_version": e["VIGIL_VERSION"], "vigil_commit": e["VIGIL_COMMIT"], "wrk_version": e["WRK_VERSION"],
    "sections": e["BENCH_ONLY"], "threads": e["BENCH_THREADS"], "nginx_threads": e["BENCH_NGINX_THREADS"], "duration": e["BENCH_DURATION"],
    "conns": e["BENCH_CONNS"], "warmup": e["BENCH_WARMUP"], "ss_warmup": e["BENCH_SS_WARMUP"],
    "commands": sys.argv[2:],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
echo
python3 "$LIB" report --results "$RESULTS" --meta "$TMP/meta.json" --md "$BENCH_OUT"
