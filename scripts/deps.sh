#!/usr/bin/env bash
# Installs (Debian packages) or builds (wolfSSL with QUIC, ngtcp2's wolfSSL
# crypto helper) everything h3gate needs to build and test.
#
# Idempotent: packages already present are not asked for again and the
# source-built prefix is reused while its recipe is unchanged, so a second run
# takes seconds. Works on Debian 12 (bookworm, + backports) and Debian 13.
#
#   scripts/deps.sh            build + test dependencies
#   scripts/deps.sh --runtime  only what building and running h3gate needs
#   scripts/deps.sh --mirror   prints the Debian mirror apt uses, and exits
#                              (scripts/container.sh builds its base from it)
#
# The source-built prefix lives outside the tree, in $H3GATE_DEPS_PREFIX
# (default /opt/h3gate-deps), so fresh clones reuse it.
set -euo pipefail
# set -e does not reach into $(...) without this: every step is checked
# explicitly anyway, and stops the script with a one-line reason (die).
shopt -s inherit_errexit

PREFIX=${H3GATE_DEPS_PREFIX:-/opt/h3gate-deps}
WITH_TESTS=1
[ "${1:-}" = "--runtime" ] && WITH_TESTS=0
PRINT_MIRROR=0
[ "${1:-}" = "--mirror" ] && PRINT_MIRROR=1

# Bump when the build recipe below changes: the prefix is rebuilt.
RECIPE=7
# The oldest ngtcp2 source release the build accepts (see below).
NGTCP2_MIN=1.24

log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }
# run LOG WHAT CMD...: runs CMD with its output in LOG; on failure stops
# with WHAT, the last line of the output and where the rest is.
run() {
  local out=$1 what=$2
  shift 2
  if ! "$@" >"$out" 2>&1; then
    die "$what failed: $(tail -n 1 "$out" | cut -c1-200) (full output: $out)"
  fi
}

. /etc/os-release
CODENAME=${VERSION_CODENAME:-bookworm}
export DEBIAN_FRONTEND=noninteractive
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# The Debian mirror this machine already uses, read from its apt
# configuration, never written into the repository.
debian_mirror() {
  local f uri=
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      /^URIs:/ { u=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) ok=1 }
      /^$/ { if (ok && u != "") { print u; exit } u=""; ok=0 }
      END { if (ok && u != "") print u }' "$f" | grep -v security | head -n1)
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++)
            if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "no Debian mirror found in apt's configuration (/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list)"
  printf '%s\n' "$uri"
}

MIRROR=$(debian_mirror)
if [ "$PRINT_MIRROR" = 1 ]; then printf '%s\n' "$MIRROR"; exit 0; fi
# The archive keyring: .pgp since Debian 13 (whose .gpg is a compatibility
# symlink), .gpg before.
KEYRING=/usr/share/keyrings/debian-archive-keyring.pgp
[ -f "$KEYRING" ] || KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$KEYRING" ] || die "no Debian archive keyring (install debian-archive-keyring)"
LOGS=${TMPDIR:-/tmp}/h3gate-deps-logs
mkdir -p "$LOGS"
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return 0
  run "$LOGS/apt-update.log" "apt-get update (check the mirror $MIRROR and the network)" \
    $SUDO apt-get update -qq
  APT_UPDATED=1
}

missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      printf '%s\n' "$p"
  done
}

# install_min SUITE MINVER PKG...: installs PKG from SUITE unless a version at
# least MINVER is already installed (bookworm's own builds are too old).
install_min() {
  local suite=$1 min=$2 p v need=()
  shift 2
  for p in "$@"; do
    v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
    if [ -z "$v" ] || dpkg --compare-versions "$v" lt "$min"; then need+=("$p"); fi
  done
  [ ${#need[@]} -eq 0 ] && return 0
  apt_update
  log "installing from $suite: ${need[*]}"
  run "$LOGS/apt-install.log" "installing ${need[*]} from $suite" \
    $SUDO apt-get install -y -qq --no-install-recommends -t "$suite" "${need[@]}"
}

# install [-t suite] pkg...: installs only the packages not yet present.
install_pkgs() {
  local target=()
  if [ "$1" = "-t" ]; then target=(-t "$2"); shift 2; fi
  local need
  need=$(missing_pkgs "$@")
  [ -z "$need" ] && return 0
  apt_update
  log "installing: $(echo $need)"
  # Packages such as nginx start their service on installation; the tests
  # run their own instances, so none is started (Debian's policy-rc.d: exit
  # 101 forbids it), unless the machine already has a policy of its own.
  local policy=/usr/sbin/policy-rc.d made=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee $policy >/dev/null
    $SUDO chmod 755 $policy
    made=1
  fi
  # shellcheck disable=SC2086
  run "$LOGS/apt-install.log" "installing $(echo $need)" \
    $SUDO apt-get install -y -qq --no-install-recommends "${target[@]}" $need
  [ $made = 1 ] && $SUDO rm -f $policy
  return 0
}

# --- Debian packages -------------------------------------------------------

BASE=(ca-certificates curl build-essential cmake pkg-config git openssl xz-utils
      autoconf automake libtool libuv1-dev libinih-dev libnghttp2-dev)
TEST=(python3 python3-pytest python3-pycurl python3-cryptography python3-h2 procps
      iproute2 nftables nginx python3-websockets)
# The container and Kubernetes tests (scripts/container.sh): podman with the
# runc runtime (crun refuses these machines' cgroup set-up), slirp4netns for
# the containers' own network namespaces (published ports reach them from
# 127.0.0.1), catatonit (podman builds its pods' pause image from it when
# no registry is reachable), mmdebstrap for a base image made from the
# Debian mirror, and PyYAML to read the manifests.
CONTAINER=(podman runc slirp4netns catatonit mmdebstrap python3-yaml)
# The fuzz build (scripts/fuzz.sh): clang and its runtimes (libFuzzer,
# ASan, UBSan), which Debian ships apart from the compiler.
FUZZ_BOOKWORM=(clang libclang-rt-14-dev)
FUZZ_TRIXIE=(clang libclang-rt-dev)

if [ "$CODENAME" = bookworm ]; then
  bp=/etc/apt/sources.list.d/h3gate-bookworm-backports.sources
  if [ ! -f "$bp" ]; then
    log "enabling bookworm-backports from $MIRROR"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
      "$MIRROR" "$KEYRING" | $SUDO tee "$bp" >/dev/null
    APT_UPDATED=0
  fi
  install_pkgs "${BASE[@]}" node-llhttp
  install_min bookworm-backports 1.8 libnghttp3-dev
  if [ "$WITH_TESTS" = 1 ]; then
    install_pkgs "${TEST[@]}" "${CONTAINER[@]}" "${FUZZ_BOOKWORM[@]}"
    # libcurl-gnutls from backports speaks HTTP/3 (ngtcp2 + nghttp3 + GnuTLS);
    # pycurl links it. ngtcp2-client gives the gtlsclient example client.
    install_min bookworm-backports 8.14 libcurl3-gnutls
    install_min bookworm-backports 1.11 ngtcp2-client
  fi
else
  install_pkgs "${BASE[@]}" libllhttp-dev libnghttp3-dev
  [ "$WITH_TESTS" = 1 ] && install_pkgs "${TEST[@]}" "${CONTAINER[@]}" "${FUZZ_TRIXIE[@]}" \
    libcurl3t64-gnutls ngtcp2-client
fi
if [ "$WITH_TESTS" = 1 ]; then
  # The browser tests: Chromium, and Node.js with the npm package
  # chrome-remote-interface (a DevTools protocol client, pinned in
  # tests/e2e/browser/package-lock.json) to drive it; the package brings its
  # own WebSocket, which neither Node 18 nor 20 has. A Node.js that brings
  # its own npm is used as it is.
  install_pkgs chromium
  command -v node >/dev/null 2>&1 || install_pkgs nodejs
  command -v npm >/dev/null 2>&1 || install_pkgs npm
  # npm trusts its own CA list; the system's store also holds the CAs an
  # administrator added (a TLS-inspecting proxy's, say).
  NPM_CA=()
  [ -f /etc/ssl/certs/ca-certificates.crt ] && NPM_CA=(--cafile=/etc/ssl/certs/ca-certificates.crt)
  run "$LOGS/npm-ci.log" "installing the browser tests' npm packages (tests/e2e/browser; check that the npm registry is reachable)" \
    npm ci --prefix "$(dirname "$0")/../tests/e2e/browser" --no-audit --no-fund "${NPM_CA[@]}"
  # The manifests' validator (kubernetes-models, yaml; pinned in
  # tests/e2e/kubernetes/package-lock.json).
  run "$LOGS/npm-ci-kubernetes.log" "installing the manifest tests' npm packages (tests/e2e/kubernetes; check that the npm registry is reachable)" \
    npm ci --prefix "$(dirname "$0")/../tests/e2e/kubernetes" --no-audit --no-fund "${NPM_CA[@]}"
fi

# --- wolfSSL (QUIC) and ngtcp2 with its wolfSSL crypto helper, from source ---
#
# wolfSSL comes from trixie's source. ngtcp2 from the first of forky
# (testing) or sid that has at least $NGTCP2_MIN: 1.11 (trixie, bookworm-
# backports) has the early BBRv3 draft, which reads more than 2 % random
# loss as congestion and shrinks its window round after round (a 20 MiB
# download through h3gate at 40 ms and 5 % loss ran at 15 Mbit/s, at 49
# with 1.24), and ngtcp2 keeps its API and ABI across 1.x releases.

STAMP="$PREFIX/.h3gate-recipe"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ]; then
  log "source-built prefix $PREFIX is current"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/parts" "$WORK/src"
printf 'Types: deb-src\nURIs: %s\nSuites: trixie forky sid\nComponents: main\nSigned-By: %s\n' \
  "$MIRROR" "$KEYRING" > "$WORK/parts/debian-src.sources"
# A private source list, index and (no) cache: otherwise apt-cache would
# replace the system's /var/cache/apt/*.bin with caches of this list alone,
# which apt then has to rebuild on its next run. forky's and sid's
# indexes are valid for a week after they are published, and a mirror that
# is a snapshot (as on some build farms) serves them past that: their
# signatures are still checked, their age is not (these two tarballs are
# all that is read from them).
APTSRC=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$WORK/parts"
        -o Dir::State::Lists="$WORK/lists" -o Dir::Cache::pkgcache=
        -o Dir::Cache::srcpkgcache= -o Acquire::Check-Valid-Until=false)
log "fetching the source indexes of trixie, forky and sid"
run "$LOGS/apt-source-update.log" \
  "reading the source indexes of trixie, forky and sid from $MIRROR (does the mirror serve deb-src?)" \
  apt-get "${APTSRC[@]}" update

# src_version SRCPKG SUITE: the version of SRCPKG in SUITE's index, or
# nothing (the suite lacks it, or the mirror lacks the suite).
src_version() {
  { apt-get "${APTSRC[@]}" source --download-only --print-uris "$1/$2" 2>/dev/null || true; } |
    awk '$1 ~ /\.dsc\047$/ && !v { split($2, a, "_"); v = a[2]; sub(/\.dsc$/, "", v); print v }'
}

# fetch_orig SRCPKG SUITE: downloads the upstream tarball of SUITE's SRCPKG
# with apt itself (which builds the URL from the mirror and checks the file
# against the signed index), unpacks it, prints the folder.
fetch_orig() {
  local pkg=$1 suite=$2 dl="$WORK/dl-$1" tarball
  mkdir -p "$dl"
  (cd "$dl" && run "$LOGS/apt-source-$pkg.log" \
    "downloading the Debian source of $pkg ($suite) from $MIRROR" \
    apt-get "${APTSRC[@]}" source --download-only --tar-only "$pkg/$suite")
  tarball=$(find "$dl" -maxdepth 1 -name "*.orig.tar.*" ! -name "*.asc" | head -n1)
  [ -n "$tarball" ] || die "apt downloaded no upstream tarball for $pkg (see $LOGS/apt-source-$pkg.log)"
  # Named after the tarball (wolfssl_5.7.2), which the build log shows.
  local base out
  base=$(basename "$tarball")
  out="$WORK/src/${base%.orig.tar.*}"
  mkdir -p "$out"
  tar -xf "$tarball" -C "$out" --strip-components=1 ||
    die "cannot unpack $tarball"
  printf '%s\n' "$out"
}
WSRC=$(fetch_orig wolfssl trixie)
NGTCP2_SUITE=
for suite in forky sid; do
  v=$(src_version ngtcp2 "$suite")
  if [ -n "$v" ] && dpkg --compare-versions "$v" ge "$NGTCP2_MIN"; then
    NGTCP2_SUITE=$suite
    break
  fi
done
[ -n "$NGTCP2_SUITE" ] ||
  die "neither forky nor sid offers ngtcp2 >= $NGTCP2_MIN source on $MIRROR"
NSRC=$(fetch_orig ngtcp2 "$NGTCP2_SUITE")

rm -rf "$PREFIX"
mkdir -p "$PREFIX" || die "cannot create $PREFIX (set H3GATE_DEPS_PREFIX)"
JOBS=$(nproc)

# HAVE_SECRET_CALLBACK exposes the TLS 1.3 secrets to h3gate's opt-in key
# log ([debug] keylog_file); --enable-keylog-export is not used because it
# makes wolfSSL itself write every secret to ./sslkeylog.log, unasked.
# WOLFSSL_AES_DIRECT and HAVE_AES_ECB: ngtcp2's crypto helper protects
# packet headers with AES-ECB through wolfSSL's EVP interface.
log "building wolfSSL ($(basename "$WSRC")) with QUIC, tickets, early data, AES-NI"
(
  cd "$WSRC"
  [ -x configure ] || run "$LOGS/wolfssl-autogen.log" "wolfSSL autogen.sh" ./autogen.sh
  run "$LOGS/wolfssl-configure.log" "configuring wolfSSL" \
  ./configure -q --prefix="$PREFIX" --enable-static --disable-shared \
    --enable-quic --enable-session-ticket --enable-earlydata --enable-tls13 \
    --enable-alpn --enable-sni --enable-ecc --enable-aesgcm --enable-chacha \
    --enable-aesni --enable-intelasm --enable-sp --enable-sp-asm \
    --enable-opensslextra --enable-hkdf \
    --disable-examples --disable-crypttests --disable-benchmark \
    --disable-oldtls --enable-harden \
    CFLAGS="-O2 -fPIC -Wno-error=stringop-overflow -DWOLFSSL_EARLY_DATA -DHAVE_SECRET_CALLBACK -DWOLFSSL_AES_DIRECT -DHAVE_AES_ECB"
  run "$LOGS/wolfssl-make.log" "building wolfSSL" make -s -j"$JOBS"
  run "$LOGS/wolfssl-install.log" "installing wolfSSL into $PREFIX" make -s install
)

log "building ngtcp2 ($(basename "$NSRC")) with its wolfSSL crypto helper"
(
  cd "$NSRC"
  run "$LOGS/ngtcp2-cmake.log" "configuring ngtcp2" \
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DENABLE_LIB_ONLY=ON \
    -DENABLE_WOLFSSL=ON -DENABLE_OPENSSL=OFF -DENABLE_GNUTLS=OFF \
    -DENABLE_BORINGSSL=OFF -DENABLE_PICOTLS=OFF -DENABLE_SHARED_LIB=OFF \
    -DENABLE_STATIC_LIB=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DCMAKE_PREFIX_PATH="$PREFIX" -DWOLFSSL_INCLUDE_DIR="$PREFIX/include" \
    -DWOLFSSL_LIBRARY="$PREFIX/lib/libwolfssl.a" \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib
  run "$LOGS/ngtcp2-build.log" "building ngtcp2" cmake --build build -j"$JOBS"
  run "$LOGS/ngtcp2-install.log" "installing ngtcp2 into $PREFIX" cmake --install build
)
echo "$RECIPE" > "$STAMP"
log "done: $PREFIX"
