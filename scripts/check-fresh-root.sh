#!/usr/bin/env bash
# Runs the README's test command in a fresh Debian root, as a new user on a
# new machine would: nothing installed but a minimal system, this
# repository's committed files (HEAD), and the apt source of this machine,
# spelled with or without a trailing "/" in its URI (both spellings are
# common and deps.sh must work with either).
#
#   scripts/check-fresh-root.sh [--suite bookworm|trixie] [--slash yes|no]
#                               [--builds "normal asan"] [--keep]
#
# Root only (it builds a root with mmdebstrap, then chroots into it with
# /proc, /sys and /dev mounted so that the tests can make network
# namespaces and TUN devices). It takes a while: the root, every package
# the tests need (Chromium among them), the source-built dependencies, the
# builds and the whole suite. Prints the test command's exit status last
# and exits with it.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

SUITE=bookworm
SLASH=yes
BUILDS="normal asan"
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE=$2; shift 2 ;;
    --slash) SLASH=$2; shift 2 ;;
    --builds) BUILDS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--suite S] [--slash yes|no] [--builds B] [--keep]" >&2; exit 2 ;;
  esac
done

die() { printf 'check-fresh-root: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'check-fresh-root: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root"
command -v mmdebstrap >/dev/null || apt-get install -y -qq mmdebstrap >/dev/null ||
  die "cannot install mmdebstrap"

# This machine's Debian mirror, from its apt configuration.
MIRROR=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || die "no Debian mirror in this machine's apt configuration"
MIRROR=${MIRROR%/}
[ "$SLASH" = yes ] && MIRROR="$MIRROR/"

ROOT=$(mktemp -d /var/tmp/h3gate-fresh-root.XXXXXX)
cleanup() {
  # Everything mounted below the root (proc, sys, dev, the tests' network
  # namespaces under run/netns), then the root's own bind mount.
  mountpoint -q "$ROOT" && umount -R -l "$ROOT"
  if [ "$KEEP" = 1 ]; then log "kept $ROOT"; else rm -rf "$ROOT"; fi
}
trap cleanup EXIT

log "making a minimal $SUITE root in $ROOT (mirror URI: $MIRROR)"
mmdebstrap --variant=minbase --include=ca-certificates,git,sudo "$SUITE" "$ROOT" \
  "deb $MIRROR $SUITE main" >/dev/null 2>"$ROOT.mmdebstrap.log" ||
  die "mmdebstrap failed (see $ROOT.mmdebstrap.log)"
# The root's apt source in the deb822 form deps.sh reads, with this spelling.
rm -f "$ROOT/etc/apt/sources.list"
cat > "$ROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# What the Debian installer (and every container runtime) gives a machine
# and mmdebstrap does not: "localhost" in /etc/hosts.
[ -s "$ROOT/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
# The CAs this machine's administrator added (its network may inspect TLS,
# e.g. to the npm registry) belong to the machine, not to the project: the
# fresh root gets them too.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 ||
    die "update-ca-certificates failed in the root"
fi

log "copying the repository (HEAD)"
mkdir -p "$ROOT/src/h3gate"
git archive HEAD | tar -x -C "$ROOT/src/h3gate"

# The root is a mount point of its own, so that `ip netns exec` inside
# (which makes / a slave mount in its new mount namespace) works.
mount --bind "$ROOT" "$ROOT"
mount --make-private "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"

log "running scripts/test.sh inside (builds: $BUILDS)"
set +e
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  CI=true H3GATE_TEST_BUILDS="$BUILDS" bash -c 'cd /src/h3gate && bash scripts/test.sh'
status=$?
set -e
log "scripts/test.sh in a fresh $SUITE root (URI ${MIRROR}) exited $status"
exit $status
