#!/usr/bin/env bash
# vigil benchmark harness: vigil vs prometheus-blackbox-exporter on /probe, nginx as the target and
# as the reference ceiling, and vigil's self-scheduled mode with N probes; the same /probe comparison
# for dns (a dnsmasq the bench starts) and icmp (the kernel answers), and N self-scheduled ICMP
# probes. Loopback (127.0.0.0/8) only.
# See bench/README.md for what is measured and how. Usage: bash bench/run.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
LIB="$HERE/benchlib.py"
LUA="$HERE/wrk-report.lua"
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------- knobs
BENCH_ONLY=${BENCH_ONLY:-nginx,blackbox,vigil,selfsched,dns,icmp} # sections to run (comma separated; scale is extra)
BENCH_DURATION=${BENCH_DURATION:-10}       # seconds per measured wrk run
BENCH_CONNS=${BENCH_CONNS:-"32 256"}       # wrk connection counts (one measured run each)
BENCH_THREADS=${BENCH_THREADS:-1}          # wrk threads against the exporters
BENCH_NGINX_THREADS=${BENCH_NGINX_THREADS:-2} # wrk threads for the nginx-alone ceiling (-t1 is wrk-bound)
BENCH_WARMUP=${BENCH_WARMUP:-2}            # seconds of unmeasured wrk load per exporter before measuring
BENCH_WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-5s} # wrk per-request timeout (counted as errors)
BENCH_N=${BENCH_N:-10000}                  # self-scheduled: number of HTTP probes
BENCH_ICMP_N=${BENCH_ICMP_N:-10000}        # icmp self-scheduled: number of ICMP probes (one 127.0.x.y each)
BENCH_SS_INTERVAL=${BENCH_SS_INTERVAL:-15s} # self-scheduled (HTTP and ICMP): probe interval
BENCH_SS_TIMEOUT=${BENCH_SS_TIMEOUT:-5s}    # self-scheduled (HTTP and ICMP): probe timeout
BENCH_SS_WARMUP=${BENCH_SS_WARMUP:-20}     # seconds before the measuring window
BENCH_SS_WINDOW=${BENCH_SS_WINDOW:-30}     # seconds of measuring window
BENCH_SCRAPES=${BENCH_SCRAPES:-5}          # timed /metrics scrapes
BENCH_SCALE_NS=${BENCH_SCALE_NS:-"1000 10000 100000"} # scale: the probe counts of the growth table
BENCH_SCALE_INTERVAL=${BENCH_SCALE_INTERVAL:-60s} # scale: their interval
BENCH_SCALE_WINDOW=${BENCH_SCALE_WINDOW:-} # scale: seconds of measuring window (default: one interval, after one interval and 10 s)
BENCH_FID_WINDOW=${BENCH_FID_WINDOW:-30}  # fidelity: seconds of each scenario's window
BENCH_FID_CLIENTS=${BENCH_FID_CLIENTS:-20} # fidelity: probes of the slow target (each once a second)
BENCH_FID_RATE=${BENCH_FID_RATE:-667}      # fidelity: /probe rate of the "10,000 targets" load (10,000 / 15 s)
BENCH_OUT=${BENCH_OUT:-$HERE/results/latest.md}
BENCH_WAIT_IDLE=${BENCH_WAIT_IDLE:-0}      # seconds to wait, before each measurement, for the machine to be idle
BENCH_KEEP_TMP=${BENCH_KEEP_TMP:-0}        # 1: keep the temp dir (configs, logs) for inspection
VIGIL_BIN=${VIGIL_BIN:-}                   # set to skip `cargo build --release`
# vigil reads VIGIL_* environment variables as config overrides (VIGIL_BIN would become an unknown
# key `bin`): keep them all out of the processes the bench starts.
for v in $(compgen -e VIGIL_ || true); do export -n "$v"; done

want() { [[ ",$BENCH_ONLY," == *",$1,"* ]]; }
for s in ${BENCH_ONLY//,/ }; do
  case $s in nginx|blackbox|vigil|selfsched|dns|icmp|scale|fidelity) ;; *) echo "BENCH_ONLY: unknown section '$s' (nginx, blackbox, vigil, selfsched, dns, icmp, scale, fidelity)" >&2; exit 2 ;; esac
done

# ---------------------------------------------------------------------------- tools
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian package: $2)"); }
need python3 python3
need curl curl
need nginx nginx
need wrk wrk
if want blackbox || want dns || want icmp || want fidelity; then need prometheus-blackbox-exporter prometheus-blackbox-exporter; fi
want dns && need dnsmasq dnsmasq-base
if ((${#missing[@]})); then
  echo "bench: missing tools:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  echo "install them with: bash bench/install-deps.sh   (or apt-get install -y <package>)" >&2
  exit 2
fi
if (((BENCH_THREADS < 1))); then echo "BENCH_THREADS must be >= 1" >&2; exit 2; fi
if want icmp && ((BENCH_ICMP_N < 1 || BENCH_ICMP_N > 65024)); then
  echo "BENCH_ICMP_N must be 1-65024 (one address of 127.0.0.1-127.0.255.254 each)" >&2; exit 2
fi
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
if want blackbox || want dns || want icmp || want fidelity; then
  BLACKBOX_VERSION=$(prometheus-blackbox-exporter --version 2>&1 | sed -n '1{s/^blackbox_exporter, version //;p;}')
fi
DNSMASQ_VERSION="not run"
if want dns; then
  DNSMASQ_VERSION=$(dnsmasq --version 2>&1 | sed -n '1{s/^Dnsmasq version \([^ ]*\).*/\1/;p;}')
fi
VIGIL_VERSION="not run"
VIGIL_COMMIT="-"
COMMANDS=("nginx -p TMP/nginx -c TMP/nginx/nginx.conf   # daemon off, worker_processes 1, access_log off")

# ---------------------------------------------------------------------------- wrk runner
# What the probes of the current section go to, for run_wrk and bench_exporter: the kind (the
# report's section), and the process that answers them, whose CPU is measured beside the exporter's
# (TARGET_PID empty: none, the kernel answers). The http sections keep nginx; dns and icmp set their own.
PROBE_KIND=http
TARGET_NAME=nginx
TARGET_PID=$NGINX_PID

# run_wrk LABEL THREADS CONNS EXPORTER_PID(or "") URL [extra wrk args...]
run_wrk() {
  local label=$1 threads=$2 conns=$3 epid=$4 url=$5
  shift 5
  local args=(--results "$RESULTS" --label "$label" --kind "$PROBE_KIND" --conns "$conns" --threads "$threads"
    --log "$TMP/wrk-$label-c$conns.log")
  [[ -n $TARGET_PID ]] && args+=(--target-pid "$TARGET_PID" --target-name "$TARGET_NAME")
  [[ -n $epid ]] && args+=(--exporter-pid "$epid")
  local attempt rc
  for ((attempt = 1; ; attempt++)); do
    idle_check $TARGET_PID $epid
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

# bench_exporter LABEL PID PORT LOG [QUERY]: QUERY is what follows /probe? (default: http_2xx on nginx)
bench_exporter() {
  local label=$1 pid=$2 port=$3 log=$4 c
  local query=${5:-"module=http_2xx&target=http://127.0.0.1:$NGINX_PORT/"}
  local url="http://127.0.0.1:$port/probe?$query"
  python3 "$LIB" probe-check --results "$RESULTS" --kind "$PROBE_KIND" --when before "$label" "$url" ||
    die "$label: /probe did not report probe_success 1 before the run" "$log"
  warmup "$url"
  for c in $BENCH_CONNS; do run_wrk "$label" "$BENCH_THREADS" "$c" "$pid" "$url"; done
  python3 "$LIB" probe-check --results "$RESULTS" --kind "$PROBE_KIND" --when after "$label" "$url" ||
    die "$label: /probe did not report probe_success 1 after the run" "$log"
  kill -0 "$pid" 2>/dev/null || die "$label exited during the run" "$log"
  python3 "$LIB" mem --results "$RESULTS" "$label" "$pid"
}

# selfsched_measure PID PORT N LOG MEMLABEL: the warm-up, the footprint after it, then the measuring
# window (of the current PROBE_KIND, with TARGET_PID's CPU beside vigil's)
selfsched_measure() {
  local pid=$1 port=$2 n=$3 log=$4 memlabel=$5 attempt rc
  local args=(--results "$RESULTS" --pid "$pid" --kind "$PROBE_KIND")
  [[ -n $TARGET_PID ]] && args+=(--target-pid "$TARGET_PID" --target-name "$TARGET_NAME")
  echo "bench: warm-up ${BENCH_SS_WARMUP}s, then a ${BENCH_SS_WINDOW}s window"
  bg_wait sleep "$BENCH_SS_WARMUP"
  kill -0 "$pid" 2>/dev/null || die "vigil (self-scheduled) exited" "$log"
  # the probes' own footprint, before any /metrics scrape (readiness was polled on /-/healthy) adds the encoder's
  python3 "$LIB" mem --results "$RESULTS" "$memlabel" "$pid"
  for ((attempt = 1; ; attempt++)); do
    idle_check $TARGET_PID "$pid"
    rc=0
    bg_wait python3 "$LIB" selfsched "${args[@]}" \
      --metrics-url "http://127.0.0.1:$port/metrics" --n "$n" --interval "$BENCH_SS_INTERVAL" \
      --window "$BENCH_SS_WINDOW" --scrapes "$BENCH_SCRAPES" $(retry_flag "$attempt") || rc=$?
    ((rc == 3)) && continue # disturbed by other load: discarded, measure again
    ((rc == 0)) || die "self-scheduled measurement failed" "$log"
    break
  done
}

# vigil_check KIND LOG ARGS...: `vigil check ARGS`, so that a binary which cannot load the section's
# config (one built before the kind existed) fails at once with vigil's own words, before any measuring
vigil_check() {
  local kind=$1 log=$2
  shift 2
  "$VIGIL_BIN" check "$@" >"$log" 2>&1 ||
    die "$VIGIL_BIN does not load the $kind section's config (built without the $kind kind?); vigil check said:
$(head -n 8 "$log")"
}

# bench_pair KIND DIR QUERY: wrk at /probe?QUERY of blackbox_exporter, then of vigil, each alone,
# both reading the same blackbox_exporter config DIR/blackbox.yml; rows blackbox-KIND and vigil-KIND
bench_pair() {
  local kind=$1 dir=$2 query=$3 port pid
  printf 'probes: []\n' >"$dir/probe.yml"
  vigil_check "$kind" "$dir/vigil-check.log" --config "$dir/probe.yml" --blackbox.config-file "$dir/blackbox.yml" \
    --storage.path "$dir/vigil-data"
  port=$(freeport)
  echo "bench: $kind: starting prometheus-blackbox-exporter ($BLACKBOX_VERSION) on 127.0.0.1:$port"
  prometheus-blackbox-exporter --config.file="$dir/blackbox.yml" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/blackbox.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/metrics" 20 "$pid" || die "blackbox_exporter ($kind) did not come up" "$dir/blackbox.log"
  bench_exporter "blackbox-$kind" "$pid" "$port" "$dir/blackbox.log" "$query"
  stop_pid "$pid"
  port=$(freeport)
  echo "bench: $kind: starting vigil ($VIGIL_VERSION) on 127.0.0.1:$port"
  "$VIGIL_BIN" run --config "$dir/probe.yml" --blackbox.config-file "$dir/blackbox.yml" \
    --web.listen-address "127.0.0.1:$port" --storage.path "$dir/vigil-data" --log.level warn >"$dir/vigil.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/metrics" 30 "$pid" || die "vigil ($kind) did not come up" "$dir/vigil.log"
  bench_exporter "vigil-$kind" "$pid" "$port" "$dir/vigil.log" "$query"
  stop_pid "$pid"
  COMMANDS+=("prometheus-blackbox-exporter --config.file=TMP/$kind/blackbox.yml --web.listen-address=127.0.0.1:PORT --log.level=warn   # $(tail -n +2 "$dir/blackbox.yml" | tr -s ' \n' ' ' | sed 's/^ //')"
    "vigil run --config TMP/$kind/probe.yml --blackbox.config-file TMP/$kind/blackbox.yml --web.listen-address 127.0.0.1:PORT --storage.path TMP/$kind/vigil-data --log.level warn   # probes: [], the same blackbox.yml")
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
if want vigil || want selfsched || want dns || want icmp || want scale || want fidelity; then
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
  selfsched_measure "$S_PID" "$S_PORT" "$BENCH_N" "$TMP/vigil/selfsched.log" vigil-selfsched-before-scrape
  stop_pid "$S_PID"
fi

# ---------------------------------------------------------------------------- C: dns, vigil vs blackbox_exporter
# The target is a dnsmasq the bench starts on a free loopback port, answering ok.vigil.test from its
# own records only (no upstream, no /etc/hosts, no config file). It is single-threaded: its CPU is
# recorded (the `dnsmasq cores` column) to show when it, rather than the exporter, bounds probes/s.
if want dns; then
  DNS_PORT=$(python3 "$LIB" freeport --udp)
  mkdir -p "$TMP/dns"
  cat >"$TMP/dns/blackbox.yml" <<EOF
modules:
  dns_a:
    prober: dns
    timeout: 5s
    dns:
      query_name: ok.vigil.test
      query_type: A
      preferred_ip_protocol: ip4
EOF
  echo "bench: starting dnsmasq ($DNSMASQ_VERSION) on 127.0.0.1:$DNS_PORT"
  dnsmasq -k --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
    --conf-file=/dev/null --local=/vigil.test/ --host-record=ok.vigil.test,127.0.0.1 --pid-file= \
    --log-facility=- >"$TMP/dns/dnsmasq.log" 2>&1 &
  DNS_PID=$!
  PIDS+=("$DNS_PID")
  COMMANDS+=("dnsmasq -k --port=PORT --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --conf-file=/dev/null --local=/vigil.test/ --host-record=ok.vigil.test,127.0.0.1 --pid-file= --log-facility=-")
  bg_wait python3 "$LIB" wait-dns --pid "$DNS_PID" "$DNS_PORT" ok.vigil.test 15 ||
    die "dnsmasq did not answer ok.vigil.test on 127.0.0.1:$DNS_PORT" "$TMP/dns/dnsmasq.log"
  PROBE_KIND=dns TARGET_NAME=dnsmasq TARGET_PID=$DNS_PID
  bench_pair dns "$TMP/dns" "module=dns_a&target=127.0.0.1:$DNS_PORT"
  kill -0 "$DNS_PID" 2>/dev/null || die "dnsmasq exited during the run" "$TMP/dns/dnsmasq.log"
  stop_pid "$DNS_PID"
  PROBE_KIND=http TARGET_NAME=nginx TARGET_PID=$NGINX_PID
fi

# ---------------------------------------------------------------------------- D: icmp, vigil vs blackbox_exporter; vigil self-scheduled
# The kernel answers the echo requests (every 127/8 address is on lo), so there is no target process:
# the kernel's share is in the exporter's system time or in "other cores". Both exporters try
# unprivileged ICMP sockets first (net.ipv4.ping_group_range, given in the report), raw ones next.
if want icmp; then
  mkdir -p "$TMP/icmp"
  cat >"$TMP/icmp/blackbox.yml" <<EOF
modules:
  icmp:
    prober: icmp
    timeout: 5s
    icmp:
      preferred_ip_protocol: ip4
EOF
  PROBE_KIND=icmp TARGET_NAME=kernel TARGET_PID=
  bench_pair icmp "$TMP/icmp" "module=icmp&target=127.0.0.1"

  # self-scheduled: BENCH_ICMP_N probes, one loopback address each, spread over 127.0.0.1-127.0.255.254
  S_PORT=$(freeport)
  python3 "$LIB" gen-config --kind icmp --n "$BENCH_ICMP_N" --interval "$BENCH_SS_INTERVAL" \
    --timeout "$BENCH_SS_TIMEOUT" --out "$TMP/icmp/selfsched.yml"
  vigil_check icmp "$TMP/icmp/selfsched-check.log" --config "$TMP/icmp/selfsched.yml" \
    --storage.path "$TMP/icmp/selfsched-data"
  echo "bench: starting vigil self-scheduled with $BENCH_ICMP_N ICMP probes (interval $BENCH_SS_INTERVAL) on 127.0.0.1:$S_PORT"
  "$VIGIL_BIN" run --config "$TMP/icmp/selfsched.yml" --web.listen-address "127.0.0.1:$S_PORT" \
    --storage.path "$TMP/icmp/selfsched-data" --log.level warn >"$TMP/icmp/selfsched.log" 2>&1 &
  S_PID=$!
  PIDS+=("$S_PID")
  COMMANDS+=("vigil run --config TMP/icmp/selfsched.yml --web.listen-address 127.0.0.1:PORT --storage.path TMP/icmp/selfsched-data --log.level warn   # defaults: {interval: $BENCH_SS_INTERVAL, timeout: $BENCH_SS_TIMEOUT}, $BENCH_ICMP_N probes {name: iNNNNN, kind: icmp, host: 127.0.X.Y}")
  wait_http "http://127.0.0.1:$S_PORT/-/healthy" 60 "$S_PID" || die "vigil (self-scheduled icmp) did not come up" "$TMP/icmp/selfsched.log"
  selfsched_measure "$S_PID" "$S_PORT" "$BENCH_ICMP_N" "$TMP/icmp/selfsched.log" vigil-selfsched-icmp-before-scrape
  stop_pid "$S_PID"
  PROBE_KIND=http TARGET_NAME=nginx TARGET_PID=$NGINX_PID
fi

# ---------------------------------------------------------------------------- E: scale
# For each probe count of BENCH_SCALE_NS: self-scheduled HTTP probes at BENCH_SCALE_INTERVAL
# against the same nginx; start-up (process start to /-/healthy answering: load, validate,
# schedule), the window as in B after one interval (every probe has run), then a reload that
# changes one probe. The report's growth table puts the counts side by side.
if want scale; then
  for n in $BENCH_SCALE_NS; do
    dir="$TMP/scale-$n"
    mkdir -p "$dir"
    python3 "$LIB" gen-config --n "$n" --port "$NGINX_PORT" --interval "$BENCH_SCALE_INTERVAL" \
      --timeout "$BENCH_SS_TIMEOUT" --out "$dir/vigil.yml"
    port=$(freeport)
    echo "bench: scale: vigil with $n probes (interval $BENCH_SCALE_INTERVAL) on 127.0.0.1:$port"
    started=$(date +%s.%N)
    "$VIGIL_BIN" run --config "$dir/vigil.yml" --web.listen-address "127.0.0.1:$port" \
      --storage.path "$dir/data" --log.level warn >"$dir/vigil.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$port/-/healthy" 120 "$pid" || die "vigil ($n probes) did not come up" "$dir/vigil.log"
    up=$(date +%s.%N)
    every=$(python3 -c "import sys; sys.path.insert(0, '$HERE'); import benchlib; print(int(benchlib.parse_duration_s('$BENCH_SCALE_INTERVAL')))")
    # Probes start spread over min(interval, N ms): a window of one whole interval sees each run once.
    PROBE_KIND="scale-$n" BENCH_SS_INTERVAL=$BENCH_SCALE_INTERVAL BENCH_SS_WARMUP=$((every + 10)) \
      BENCH_SS_WINDOW=${BENCH_SCALE_WINDOW:-$every} \
      selfsched_measure "$pid" "$port" "$n" "$dir/vigil.log" "vigil-scale-$n-before-scrape"
    python3 "$LIB" scale-reload --results "$RESULTS" --n "$n" --startup-s "$(echo "$up - $started" | bc)" \
      --config "$dir/vigil.yml" --reload-url "http://127.0.0.1:$port/-/reload" ||
      die "the reload of one probe failed" "$dir/vigil.log"
    stop_pid "$pid"
  done
  COMMANDS+=("vigil run --config TMP/scale-N/vigil.yml --web.listen-address 127.0.0.1:PORT --storage.path TMP/scale-N/data --log.level warn   # defaults: {interval: $BENCH_SCALE_INTERVAL, timeout: $BENCH_SS_TIMEOUT}, N (${BENCH_SCALE_NS// /, }) probes {name: tNNNNN, kind: http, url: http://127.0.0.1:NGINX/?t=N}")
fi

# ---------------------------------------------------------------------------- F: measurement fidelity
# A target that answers exactly 100 ms after reading each request (benchlib slow-target, under
# SCHED_FIFO where allowed, so that a saturated machine delays it less than the exporters), probed
# BENCH_FID_CLIENTS times a second. Each exporter through /probe: idle; beside a paced /probe load
# of nginx at BENCH_FID_RATE/s (what a Prometheus scraping 10,000 targets every 15 s sends); beside
# wrk -c256 at /probe of nginx (the machine saturated). Then vigil self-scheduled: BENCH_N HTTP
# probes of nginx at BENCH_SS_INTERVAL and BENCH_FID_CLIENTS probes of the slow target at 1 s, the
# runs read back from /api/v1/probes; then the same while wrk -c256 loads its /probe.
if want fidelity; then
  FID_DIR="$TMP/fidelity"
  mkdir -p "$FID_DIR"
  FID_PORT=$(freeport)
  FID_RT=""
  if chrt -f 10 true 2>/dev/null; then FID_RT="chrt -f 10"; fi
  FID_CONNS=16
  FID_DELAY_MS=$((FID_CONNS * 1000 / BENCH_FID_RATE))
  echo "bench: fidelity: slow target (100 ms) on 127.0.0.1:$FID_PORT${FID_RT:+ under $FID_RT}"
  $FID_RT python3 "$LIB" slow-target --port "$FID_PORT" --delay-ms 100 --log "$FID_DIR/holds.txt" \
    >"$FID_DIR/slow.log" 2>&1 &
  FID_PID=$!
  PIDS+=("$FID_PID")
  wait_http "http://127.0.0.1:$FID_PORT/" 15 "$FID_PID" || die "the slow target did not come up" "$FID_DIR/slow.log"
  : >"$FID_DIR/holds.txt" # the truth of the measured runs only
  printf -- '-- %s connections, each waiting %s ms before its next request\nfunction delay() return %s end\n' \
    "$FID_CONNS" "$FID_DELAY_MS" "$FID_DELAY_MS" >"$FID_DIR/paced.lua"
  printf 'modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      valid_status_codes: []\n      preferred_ip_protocol: ip4\n' \
    >"$FID_DIR/blackbox.yml"
  printf 'probes: []\n' >"$FID_DIR/probe.yml"

  # fid_load EXPORTER SCENARIO PORT SECONDS: the background load of SCENARIO (none when idle) on
  # the exporter's /probe of nginx; sets FID_LOAD_PID
  fid_load() {
    local url="http://127.0.0.1:$3/probe?module=http_2xx&target=http://127.0.0.1:$NGINX_PORT/"
    FID_LOAD_PID=
    case $2 in
      *paced) wrk -t1 -c"$FID_CONNS" -d"$4s" --timeout 10s -s "$FID_DIR/paced.lua" "$url" >"$FID_DIR/wrk-$1-$2.log" 2>&1 & ;;
      *saturated) wrk -t1 -c256 -d"$4s" --timeout 10s "$url" >"$FID_DIR/wrk-$1-$2.log" 2>&1 & ;;
      *) return 0 ;;
    esac
    FID_LOAD_PID=$!
    PIDS+=("$FID_LOAD_PID")
    sleep 2
  }
  fid_load_end() { # fid_load_end EXPORTER SCENARIO
    [[ -n $FID_LOAD_PID ]] || return 0
    wait "$FID_LOAD_PID" || true
    stop_pid "$FID_LOAD_PID"
    python3 "$LIB" fid-load --results "$RESULTS" --exporter "$1" --scenario "$2" --log "$FID_DIR/wrk-$1-$2.log"
  }
  # fid_probe EXPORTER PORT: the three /probe scenarios
  fid_probe() {
    local exporter=$1 port=$2 scenario
    for scenario in idle paced saturated; do
      fid_load "$exporter" "$scenario" "$port" $((BENCH_FID_WINDOW + 4))
      bg_wait python3 "$LIB" fid-sample --results "$RESULTS" --exporter "$exporter" --scenario "$scenario" \
        --url "http://127.0.0.1:$port/probe?module=http_2xx&target=http://127.0.0.1:$FID_PORT/" \
        --clients "$BENCH_FID_CLIENTS" --seconds "$BENCH_FID_WINDOW" ||
        die "$exporter: no /probe of the slow target succeeded ($scenario)"
      fid_load_end "$exporter" "$scenario"
    done
  }

  port=$(freeport)
  echo "bench: fidelity: prometheus-blackbox-exporter /probe"
  prometheus-blackbox-exporter --config.file="$FID_DIR/blackbox.yml" --web.listen-address="127.0.0.1:$port" \
    --log.level=warn >"$FID_DIR/blackbox.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/metrics" 20 "$pid" || die "blackbox_exporter did not come up" "$FID_DIR/blackbox.log"
  fid_probe blackbox "$port"
  stop_pid "$pid"

  port=$(freeport)
  echo "bench: fidelity: vigil /probe"
  "$VIGIL_BIN" run --config "$FID_DIR/probe.yml" --blackbox.config-file "$FID_DIR/blackbox.yml" \
    --web.listen-address "127.0.0.1:$port" --storage.path "$FID_DIR/probe-data" --log.level warn \
    >"$FID_DIR/vigil-probe.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/metrics" 30 "$pid" || die "vigil did not come up" "$FID_DIR/vigil-probe.log"
  fid_probe vigil "$port"
  stop_pid "$pid"

  port=$(freeport)
  python3 "$LIB" gen-config --n "$BENCH_N" --port "$NGINX_PORT" --interval "$BENCH_SS_INTERVAL" \
    --timeout "$BENCH_SS_TIMEOUT" --slow-n "$BENCH_FID_CLIENTS" --slow-port "$FID_PORT" --slow-interval 1s \
    --out "$FID_DIR/selfsched.yml"
  echo "bench: fidelity: vigil self-scheduled, $BENCH_N probes of nginx at $BENCH_SS_INTERVAL and $BENCH_FID_CLIENTS of the slow target at 1s"
  "$VIGIL_BIN" run --config "$FID_DIR/selfsched.yml" --blackbox.config-file "$FID_DIR/blackbox.yml" \
    --web.listen-address "127.0.0.1:$port" --storage.path "$FID_DIR/selfsched-data" --log.level warn \
    >"$FID_DIR/vigil-selfsched.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/-/healthy" 60 "$pid" || die "vigil (self-scheduled) did not come up" "$FID_DIR/vigil-selfsched.log"
  bg_wait sleep "$BENCH_SS_WARMUP"
  for scenario in selfsched-others selfsched-saturated; do
    fid_load vigil "$scenario" "$port" $((BENCH_FID_WINDOW + 4))
    since=$(date +%s.%N)
    busy=$(python3 "$LIB" busy "$BENCH_FID_WINDOW")
    until=$(date +%s.%N)
    fid_load_end vigil "$scenario"
    sleep 3 # the history writer flushes once a second
    kill -0 "$pid" 2>/dev/null || die "vigil (self-scheduled) exited" "$FID_DIR/vigil-selfsched.log"
    python3 "$LIB" fid-runs --results "$RESULTS" --exporter vigil --scenario "$scenario" \
      --api "http://127.0.0.1:$port/api/v1/probes" --n "$BENCH_FID_CLIENTS" --since "$since" --until "$until" \
      --machine-cores "$busy" ||
      die "no self-scheduled run of the slow target was recorded ($scenario)" "$FID_DIR/vigil-selfsched.log"
  done
  stop_pid "$pid"
  stop_pid "$FID_PID"
  python3 "$LIB" fid-holds --results "$RESULTS" --log "$FID_DIR/holds.txt" --rt "${FID_RT:-none}"
  COMMANDS+=("${FID_RT:+$FID_RT }python3 bench/benchlib.py slow-target --port SLOW --delay-ms 100   # answers each request 100 ms after accepting its connection"
    "wrk -t1 -c$FID_CONNS -dSECONDS --timeout 10s -s paced.lua 'http://127.0.0.1:EXPORTER/probe?module=http_2xx&target=http://127.0.0.1:NGINX/'   # delay() $FID_DELAY_MS ms per connection: about $BENCH_FID_RATE/s"
    "wrk -t1 -c256 -dSECONDS --timeout 10s 'http://127.0.0.1:EXPORTER/probe?module=http_2xx&target=http://127.0.0.1:NGINX/'   # saturated"
    "vigil run --config TMP/fidelity/selfsched.yml ...   # $BENCH_N probes {kind: http, url: http://127.0.0.1:NGINX/?t=N} at $BENCH_SS_INTERVAL, $BENCH_FID_CLIENTS probes {name: fNN, kind: http, url: http://127.0.0.1:SLOW/?f=NN, interval: 1s}")
fi

# ---------------------------------------------------------------------------- report
export NGINX_VERSION WRK_VERSION BLACKBOX_VERSION DNSMASQ_VERSION VIGIL_VERSION VIGIL_COMMIT BENCH_ONLY BENCH_THREADS \
  BENCH_NGINX_THREADS BENCH_DURATION BENCH_CONNS BENCH_WARMUP BENCH_SS_WARMUP
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
    "dnsmasq_version": e["DNSMASQ_VERSION"],
    "ping_group_range": open(pgr).read().split() if os.path.exists(pgr := "/proc/sys/net/ipv4/ping_group_range") else [],
    "sections": e["BENCH_ONLY"], "threads": e["BENCH_THREADS"], "nginx_threads": e["BENCH_NGINX_THREADS"], "duration": e["BENCH_DURATION"],
    "conns": e["BENCH_CONNS"], "warmup": e["BENCH_WARMUP"], "ss_warmup": e["BENCH_SS_WARMUP"],
    "commands": sys.argv[2:],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
echo
python3 "$LIB" report --results "$RESULTS" --meta "$TMP/meta.json" --md "$BENCH_OUT"
