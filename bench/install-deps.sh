#!/usr/bin/env bash
# Install what bench/run.sh needs on Debian/Ubuntu, and only what is missing (idempotent).
# Note: the Debian packages of nginx and prometheus-blackbox-exporter start their own system
# service (ports 80 and 9115) where an init system runs; the bench does not use those instances.
# dnsmasq comes from dnsmasq-base, the binary alone (the `dnsmasq` package would add a system service).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

# command -> Debian package
cmds=(python3 curl nginx wrk prometheus-blackbox-exporter dnsmasq)
declare -A pkg=(
  [python3]=python3
  [curl]=curl
  [nginx]=nginx
  [wrk]=wrk
  [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [dnsmasq]=dnsmasq-base
)

missing=()
for c in "${cmds[@]}"; do
  if command -v "$c" >/dev/null 2>&1; then
    echo "ok       $c ($(command -v "$c"))"
  else
    echo "missing  $c (package ${pkg[$c]})"
    missing+=("${pkg[$c]}")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "all bench dependencies are installed"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || {
  echo "apt-get not found: install these packages by hand: ${missing[*]}" >&2
  exit 1
}
SUDO=()
if ((EUID != 0)); then
  command -v sudo >/dev/null 2>&1 || { echo "run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing: ${missing[*]}"
if ! "${SUDO[@]}" apt-get install -y "${missing[@]}"; then
  # most often the package lists are missing or stale (fresh container): refresh and retry once
  echo "apt-get install failed; running apt-get update and retrying" >&2
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y "${missing[@]}"
fi
