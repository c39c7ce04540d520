#!/usr/bin/env bash
# The Debian root file system that the container image test (tests/it/container_image.rs) builds
# the runtime image on, since no image registry (and so no debian:bookworm-slim) is reachable
# here. Made by mmdebstrap from Debian's packages, like the official slim image: the minbase
# variant (essential and required packages, apt), merged /usr, without manuals, info pages,
# locales and docs (the slim image's dpkg excludes, which stay in force for what the
# Dockerfile's runtime stage installs).
#
#   bash scripts/test-image-base.sh        # prints the path of the tarball, for `docker import`
#
# The tarball is cached (VIGIL_TEST_CACHE, default /var/cache/vigil-test) under a name holding
# a hash of this script, so a second run on the same machine is instant and a changed recipe
# builds anew; delete the file to refresh it. Needs root (mmdebstrap's root mode) and the
# Debian mirror that apt uses (VIGIL_TEST_DEBIAN_MIRROR, default http://deb.debian.org/debian;
# the security archive is VIGIL_TEST_DEBIAN_SECURITY, default .../debian-security).
set -euo pipefail

release=${DEBIAN_RELEASE:-bookworm}
cache=${VIGIL_TEST_CACHE:-/var/cache/vigil-test}
mirror=${VIGIL_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${VIGIL_TEST_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

recipe=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
out="$cache/debian-$release-slim-$recipe.tar"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "mmdebstrap is not installed: install Debian's \`mmdebstrap\` package (bash scripts/install-test-deps.sh does)" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "building the test image's base needs root (mmdebstrap --mode=root)" >&2
  exit 2
fi

mkdir -p "$cache"
# One builder at a time; whoever waited finds the tarball made.
exec 9>"$cache/.lock"
flock 9
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
tmp=$(mktemp "$out.XXXXXX")
conf=$(mktemp -d)
trap 'rm -rf "$tmp" "$conf"' EXIT
# The apt settings of the official images: no package caches or downloaded .debs left in a
# layer, no translations, compressed indexes, suggestions not kept by autoremove.
cat >"$conf/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::GzipIndexes "true";' >"$conf/docker-gzip-indexes"
echo 'Acquire::Languages "none";' >"$conf/docker-no-languages"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$conf/docker-autoremove-suggests"
echo "building the test image's base (Debian $release, minbase) in $out" >&2
start=$(date +%s)
# merged-usr: /usr merged by mmdebstrap's hook, as debootstrap does for the official images,
# instead of by the usrmerge package (which would pull in perl).
mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/groff/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/linda/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/overrides/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --customize-hook="copy-in $conf/docker-clean $conf/docker-gzip-indexes $conf/docker-no-languages $conf/docker-autoremove-suggests /etc/apt/apt.conf.d" \
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin' \
  "$release" "$tmp" \
  "deb $mirror $release main" \
  "deb $mirror $release-updates main" \
  "deb $security $release-security main" </dev/null >"$cache/build.log" 2>&1 || {
  tail -n 30 "$cache/build.log" >&2
  echo "mmdebstrap failed (the whole log: $cache/build.log)" >&2
  exit 1
}
mv "$tmp" "$out"
# Bases of older recipes are of no further use.
find "$cache" -maxdepth 1 -name "debian-$release-slim-*.tar" ! -path "$out" -delete
echo "built the test image's base in $(($(date +%s) - start)) s" >&2
echo "$out"
