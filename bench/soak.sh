#!/usr/bin/env bash
# vigil soak: 2,000 flapping HTTP probes against a local nginx for a long while (default 40
# minutes), with Prometheus-like scrapes, sampling each vigil's RSS and open descriptors once a
# minute. Two vigil processes run side by side on the same targets: `memory` keeps everything
# in memory (`state_dir: ":memory:"`: the in-memory history store keeps 15 minutes of single
# runs and 2 hours of aggregates), `disk` keeps its state and history store in a folder (the
# default users get, --storage.path). Loopback (127.0.0.1) only; stops by itself. Not run in CI.
#
#   bash bench/soak.sh                    # builds the release binary unless VIGIL_BIN is set
#   SOAK_MINUTES=60 bash bench/soak.sh
#
# The targets flap: half the probes see an nginx location that answers 200 or 503 (reason
# `status`), half one that answers a body that matches or not (reason `body`); within each half,
# half flip every 10 s and half every 100 s. See bench/README.md ("Soak") for the last figures.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export PATH="$PATH:/usr/sbin:/sbin"

SOAK_MINUTES=${SOAK_MINUTES:-40}      # how long the probes run
SOAK_PROBES=${SOAK_PROBES:-2000}      # probes per vigil
SOAK_INTERVAL=${SOAK_INTERVAL:-5s}    # probe interval
SOAK_SAMPLE=${SOAK_SAMPLE:-60}        # seconds between samples
SOAK_SCRAPE=${SOAK_SCRAPE:-15}        # seconds between /metrics scrapes (and /api/v1/status, /)
SOAK_MODES=${SOAK_MODES:-"memory disk"}
SOAK_FILLED=${SOAK_FILLED:-20}        # minute from which RSS should be flat (the 15 min window is full)
SOAK_OUT=${SOAK_OUT:-$HERE/results/soak.md}
VIGIL_BIN=${VIGIL_BIN:-}
# vigil reads VIGIL_* variables as config overrides: keep them out of the processes started here.
for v in $(compgen -e VIGIL_ || true); do export -n "$v"; done

for tool in nginx curl python3; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "soak: $tool is missing: bash bench/install-deps.sh installs it" >&2
    exit 2
  }
done
if [[ -z $VIGIL_BIN ]]; then
  (cd "$ROOT" && cargo build --release --locked --bin vigil)
  VIGIL_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/vigil
fi

TMP=$(mktemp -d /tmp/vigil-soak.XXXXXX)
chmod 755 "$TMP"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------------------- the targets
NGINX_PORT=$(free_port)
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # ok while the tens (fast) or hundreds (slow) digit of the current second is even.
  map "\$arg_f:\$msec" \$flap {
    "~^fast:[0-9]*[02468][0-9]\\.[0-9]+\$" ok;
    "~^slow:[0-9]*[02468][0-9][0-9]\\.[0-9]+\$" ok;
    default bad;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    default_type text/plain;
    location = /status { if (\$flap = bad) { return 503 "down\\n"; } return 200 "ok\\n"; }
    location = /body { if (\$flap = bad) { return 200 "nope\\n"; } return 200 "ok\\n"; }
  }
}
EOF
nginx -c "$TMP/nginx.conf" -p "$TMP" &
PIDS+=($!)
for _ in $(seq 50); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/status?f=fast") != 000 ]] && break
  sleep 0.1
done

# ---------------------------------------------------------------------------- the vigils
declare -A PORT PID
for mode in $SOAK_MODES; do
  case $mode in
    memory) state='":memory:"' ;;
    disk) state="$TMP/state-disk" ;;
    *) echo "SOAK_MODES: unknown mode $mode (memory, disk)" >&2; exit 2 ;;
  esac
  {
    echo "defaults: {interval: $SOAK_INTERVAL, timeout: 2s}"
    echo "state_dir: $state"
    echo "probes:"
    for ((i = 1; i <= SOAK_PROBES; i++)); do
      speed=$([[ $((i % 4)) -lt 2 ]] && echo fast || echo slow)
      if ((i % 2)); then
        printf '  - {name: p%05d, kind: http, url: "http://127.0.0.1:%s/status?f=%s&n=%d"}\n' "$i" "$NGINX_PORT" "$speed" "$i"
      else
        printf '  - {name: p%05d, kind: http, url: "http://127.0.0.1:%s/body?f=%s&n=%d", body_must_match: "^ok"}\n' "$i" "$NGINX_PORT" "$speed" "$i"
      fi
    done
  } >"$TMP/$mode.yml"
  "$VIGIL_BIN" check --config "$TMP/$mode.yml" --storage.path "$TMP/unused" >/dev/null
  PORT[$mode]=$(free_port)
  "$VIGIL_BIN" run --config "$TMP/$mode.yml" --web.listen-address "127.0.0.1:${PORT[$mode]}" \
    --log.level warn 2>"$TMP/$mode.log" &
  PID[$mode]=$!
  PIDS+=($!)
done
for mode in $SOAK_MODES; do
  for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:${PORT[$mode]}/-/healthy" && break; sleep 0.1; done
done

# ---------------------------------------------------------------------------- sampling
status_of() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
sample() { # sample MODE MINUTE -> one row
  local mode=$1 t=$2 pid=${PID[$1]} metrics runs failed store
  kill -0 "$pid" 2>/dev/null || { echo "soak: vigil ($mode) died; log:" >&2; tail -20 "$TMP/$mode.log" >&2; exit 1; }
  metrics=$(curl -fsS "http://127.0.0.1:${PORT[$mode]}/metrics")
  runs=$(awk '/^vigil_probe_duration_seconds_count\{/ {s += $NF} END {printf "%d", s}' <<<"$metrics")
  failed=$(awk '/^vigil_probe_failures_total\{/ {s += $NF} END {printf "%d", s}' <<<"$metrics")
  # The history store on disk (database and write-ahead log), KiB; 0 in memory.
  store=$(stat -c %s "$TMP/state-$mode"/history.db* 2>/dev/null | awk '{s += $1} END {printf "%d", s}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$t" "$(status_of "$pid" VmRSS)" \
    "$(status_of "$pid" RssAnon)" "$(status_of "$pid" RssFile)" "$(status_of "$pid" VmHWM)" \
    "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)" "$(status_of "$pid" Threads)" "$runs" "$failed" \
    "$((store / 1024))"
}
SAMPLES="$TMP/samples.tsv"
start=$(date +%s)
end=$((start + SOAK_MINUTES * 60))
next_sample=$start
echo "soak: $SOAK_PROBES probes every $SOAK_INTERVAL in each of: $SOAK_MODES; $SOAK_MINUTES min; nginx :$NGINX_PORT" >&2
while :; do
  now=$(date +%s)
  if ((now >= next_sample)); then
    for mode in $SOAK_MODES; do
      sample "$mode" $(((now - start) / 60)) | tee -a "$SAMPLES" >&2
    done
    next_sample=$((next_sample + SOAK_SAMPLE))
  fi
  ((now >= end)) && break
  for mode in $SOAK_MODES; do
    curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$mode]}/metrics"
    if (((now - start) % 60 < SOAK_SCRAPE)); then
      curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$mode]}/api/v1/status"
      curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$mode]}/"
    fi
  done
  sleep "$SOAK_SCRAPE"
done

# ---------------------------------------------------------------------------- report
{
  echo "# vigil soak, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$SOAK_PROBES flapping HTTP probes every $SOAK_INTERVAL per vigil, $SOAK_MINUTES minutes, /metrics every ${SOAK_SCRAPE} s;"
  echo "$(nproc) cores; $("$VIGIL_BIN" --version 2>/dev/null || echo vigil)."
  echo
  echo "| mode | minute | RSS MiB | heap (anon) MiB | file MiB | peak RSS MiB | open fds | threads | runs | failed runs | store on disk MiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{printf "| %s | %d | %.1f | %.1f | %.1f | %.1f | %d | %d | %d | %d | %.1f |\n", $1, $2, $3/1024, $4/1024, $5/1024, $6/1024, $7, $8, $9, $10, $11/1024}' "$SAMPLES"
  echo
  for mode in $SOAK_MODES; do
    awk -F'\t' -v m="$mode" -v from="$SOAK_FILLED" '
      $1 == m && $2 >= from { if (n == 0 || $3 < lo) lo = $3; if ($3 > hi) hi = $3; n++ }
      $1 == m { if (f == 0 || $7 < flo) flo = $7; if ($7 > fhi) fhi = $7; f++ }
      END { printf "- %s: RSS from minute %d on between %.1f and %.1f MiB; open fds between %d and %d\n", m, from, lo/1024, hi/1024, flo, fhi }
    ' "$SAMPLES"
  done
} >"$SOAK_OUT"
cat "$SOAK_OUT"
