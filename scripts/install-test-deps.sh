#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages. Idempotent: a warm machine that
# has everything installs nothing and touches no network.
set -euo pipefail

# tool -> Debian package that ships it
declare -A needed=(
  [promtool]=prometheus            # promtool check metrics / check rules / test rules
  [prometheus]=prometheus          # a real Prometheus for end-to-end tests
  [amtool]=prometheus-alertmanager # amtool check-config / config routes test
  [prometheus-alertmanager]=prometheus-alertmanager
  [docker-compose]=docker-compose  # docker-compose config (validation only)
  [unshare]=util-linux             # a private network namespace for the DNS-failure test
  [ip]=iproute2                    # brings loopback up inside that namespace (conformance test)
  [prometheus-blackbox-exporter]=prometheus-blackbox-exporter  # the reference of tests/it/conformance.rs
  [dockerd]=docker.io              # a real Docker engine for the container inventory tests
  [chromium]=chromium              # a real browser for the status page test (headless)
  [chromedriver]=chromium-driver   # drives it over WebDriver
  [mmdebstrap]=mmdebstrap          # the Debian base of the container image test
  [dnsmasq]=dnsmasq-base           # a real DNS server for the dns kind (tests/it/dns_probe.rs)
  [nginx]=nginx                    # a real HTTP/2 server, h2 by ALPN and h2c (tests/it/http2_probe.rs)
  [exim4]=exim4-daemon-light       # a real SMTP server with STARTTLS (tests/it/starttls.rs)
  [iptables]=iptables              # packet loss inside the icmp test's own namespace (tests/it/icmp_probe.rs)
  [setpriv]=util-linux             # the icmp test's unprivileged user, without capabilities
)

missing=()
for tool in "${!needed[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("${needed[$tool]}")
done
# Database servers for the sql probe tests (their binaries are not on PATH).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
[ -x /bin/busybox ] || missing+=(busybox-static)   # the root file system of the test image
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing test dependencies: ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "not root: install these Debian packages first: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The tests start their own servers (exim4, nginx, dnsmasq, ...) on ports of their own: the
# packages' system services must not start on install. Debian's policy-rc.d says so for the
# install's length, unless the machine has one already.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
