#!/usr/bin/env bash
# Builds and runs h3gate's container image with podman, on a machine that
# reaches no container registry (only the Debian mirror apt already uses).
#
#   scripts/container.sh build      the base image (once), then the h3gate
#                                   image and the demo app's; prints sizes
#   scripts/container.sh run-demo   h3gate next to the demo app in one pod,
#                                   HTTP/3 and HTTPS on 127.0.0.1:8443
#   scripts/container.sh stop-demo  stops and removes that pod
#   scripts/container.sh test       the container and Kubernetes tests
#                                   (tests/e2e/test_60_*, test_61_*)
#   scripts/container.sh base [--refresh]
#                                   only the base image (--refresh: made anew)
#   scripts/container.sh clean      removes the images built here and the
#                                   build cache (keeps the base): the next
#                                   build compiles everything again
#   scripts/container.sh podman ARGS...
#                                   podman with this script's settings
#
# Run scripts/deps.sh first (podman, runc, slirp4netns, catatonit, mmdebstrap).
#
# The base image: no registry is reachable from this project's machines, so
# the Dockerfile's DEBIAN_IMAGE is made here: `mmdebstrap --variant=minbase`
# of $H3GATE_BASE_SUITE (trixie by default) from the mirror apt is
# configured with (scripts/deps.sh --mirror), trimmed like Debian's "slim"
# images (no manuals, documentation or translations), kept as a tarball in
# $H3GATE_CACHE (default /var/cache/h3gate) and imported with `podman
# import` as localhost/h3gate-base:SUITE. Both are reused until `base
# --refresh`. Set H3GATE_BASE_IMAGE (e.g. debian:trixie-slim) to build from
# a registry's image instead.
#
# podman runs with docker/podman/containers.conf (runc, cgroupfs, no default
# ulimits: see that file), or $CONTAINERS_CONF when
# H3GATE_KEEP_CONTAINERS_CONF=1. Builds use the host's network (`RUN
# apt-get` reaches the mirror), keep their layers (a second build with an
# unchanged tree takes seconds) and use the "docker" image format (the OCI
# format has no HEALTHCHECK).
#
# Environment: H3GATE_IMAGE (default localhost/h3gate:dev),
# H3GATE_APP_IMAGE (localhost/h3gate-demo-app:dev), H3GATE_BASE_SUITE,
# H3GATE_BASE_IMAGE, H3GATE_CACHE, H3GATE_CMAKE_ARGS (more options for
# the image's cmake, e.g. -DH3GATE_WERROR=OFF).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${H3GATE_IMAGE:-localhost/h3gate:dev}
APP_IMAGE=${H3GATE_APP_IMAGE:-localhost/h3gate-demo-app:dev}
SUITE=${H3GATE_BASE_SUITE:-trixie}
CACHE=${H3GATE_CACHE:-/var/cache/h3gate}
BUILD_CACHE=localhost/h3gate-build:cache
DEMO_POD=h3gate-demo
DEMO_PORT=${H3GATE_DEMO_PORT:-8443}

if [ "${H3GATE_KEEP_CONTAINERS_CONF:-0}" != 1 ]; then
  export CONTAINERS_CONF="$ROOT/docker/podman/containers.conf"
fi

log() { printf 'container: %s\n' "$*" >&2; }
die() { printf 'container: error: %s\n' "$*" >&2; exit 1; }

need() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing: ${missing[*]} (scripts/deps.sh installs them)"
}

# base: prints the image the Dockerfile starts from, making it first when
# needed.
base_image() {
  if [ -n "${H3GATE_BASE_IMAGE:-}" ]; then
    printf '%s\n' "$H3GATE_BASE_IMAGE"
    return
  fi
  local name="localhost/h3gate-base:$SUITE" tar="$CACHE/base-$SUITE.tar"
  if [ "${REFRESH:-0}" = 1 ]; then
    podman image exists "$name" && podman rmi -f "$name" >/dev/null
    rm -f "$tar"
  fi
  if podman image exists "$name"; then
    printf '%s\n' "$name"
    return
  fi
  if [ ! -s "$tar" ]; then
    need mmdebstrap
    local mirror t0=$SECONDS
    mirror=$(bash "$ROOT/scripts/deps.sh" --mirror) ||
      die "no Debian mirror in apt's configuration"
    mkdir -p "$CACHE"
    log "making the base image: mmdebstrap --variant=minbase $SUITE (from apt's mirror)"
    # Like Debian's slim images: what dpkg installs later (in the build)
    # leaves these out too, as the options stay in the image's dpkg.cfg.d.
    # apt's lists and caches are removed by mmdebstrap itself.
    if ! mmdebstrap --variant=minbase --format=tar --quiet \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        "$SUITE" "$tar.part" "$mirror" >"$CACHE/mmdebstrap.log" 2>&1; then
      rm -f "$tar.part"
      die "mmdebstrap $SUITE failed: $(tail -n 1 "$CACHE/mmdebstrap.log") (full output: $CACHE/mmdebstrap.log)"
    fi
    mv "$tar.part" "$tar"
    log "base tarball $tar made in $((SECONDS - t0)) s"
  fi
  podman import --quiet --change 'CMD ["/bin/bash"]' \
    --message "mmdebstrap --variant=minbase $SUITE" "$tar" "$name" >/dev/null ||
    die "podman import $tar failed"
  log "imported $tar as $name"
  printf '%s\n' "$name"
}

image_mib() {
  podman image inspect --format '{{.Size}}' "$1" |
    awk '{ printf "%.1f MiB\n", $1 / 1048576 }'
}

cmd_build() {
  need podman runc
  local base t0 t1
  t0=$SECONDS
  base=$(base_image)
  t1=$SECONDS
  log "building $IMAGE from $base (docker/Dockerfile)"
  podman build --network host --format docker --layers \
    --build-arg DEBIAN_IMAGE="$base" \
    --build-arg CMAKE_ARGS="${H3GATE_CMAKE_ARGS:-}" -f "$ROOT/docker/Dockerfile" \
    -t "$IMAGE" "$ROOT" ||
    die "building $IMAGE failed (the output above says where)"
  # The build stage by name too (from the cache just filled: a second or
  # two), so that its layers, the slow ones, are no "dangling" images that
  # `podman image prune` would take away with the cache.
  podman build --network host --format docker --layers --target build \
    --build-arg DEBIAN_IMAGE="$base" \
    --build-arg CMAKE_ARGS="${H3GATE_CMAKE_ARGS:-}" -f "$ROOT/docker/Dockerfile" \
    -t "$BUILD_CACHE" "$ROOT" >/dev/null ||
    die "tagging the build stage as $BUILD_CACHE failed"
  log "building $APP_IMAGE (docker/demo-app/Dockerfile)"
  podman build --network host --format docker --layers \
    --build-arg DEBIAN_IMAGE="$base" -f "$ROOT/docker/demo-app/Dockerfile" \
    -t "$APP_IMAGE" "$ROOT/docker/demo-app" ||
    die "building $APP_IMAGE failed (the output above says where)"
  log "base $((t1 - t0)) s, images $((SECONDS - t1)) s"
  log "$IMAGE: $(image_mib "$IMAGE") (base $base: $(image_mib "$base"))"
  log "$APP_IMAGE: $(image_mib "$APP_IMAGE")"
}

cmd_run_demo() {
  cmd_build
  local certs="$CACHE/demo-certs" conf="$CACHE/demo-h3gate.ini"
  bash "$ROOT/certs/make-certs.sh" "$certs" 2>/dev/null
  # The gateway's user (uid 10001) reads the key through the bind mount.
  chown -R 10001:10001 "$certs"
  # The image's configuration, with the port the host publishes in Alt-Svc
  # (browsers must try HTTP/3 there, not on the container's 443).
  { cat "$ROOT/config/sidecar.ini"
    printf '\n[alt_svc]\nport = %s   ; published on the host as this\n' "$DEMO_PORT"
  } > "$conf"
  podman pod rm -f --ignore "$DEMO_POD" >/dev/null
  # The pod's own network namespace, with slirp4netns (no bridge, no
  # firewall rules on the host); published ports are relayed into it by
  # podman's rootlessport process, which listens on the host (slirp4netns's
  # own port handler forwards UDP one way only). h3gate and the app share
  # the namespace, as in a Kubernetes pod: the app listens on 127.0.0.1:8080.
  podman pod create --name "$DEMO_POD" --network slirp4netns \
    -p "127.0.0.1:$DEMO_PORT:443/udp" -p "127.0.0.1:$DEMO_PORT:443/tcp" \
    --sysctl net.ipv4.ip_unprivileged_port_start=443 >/dev/null
  podman run -d --pod "$DEMO_POD" --name "$DEMO_POD-app" "$APP_IMAGE" >/dev/null
  # No healthcheck timer: podman sets them up with systemd, which these
  # machines do not run; `podman healthcheck run` runs the image's check.
  podman run -d --pod "$DEMO_POD" --name "$DEMO_POD-h3gate" --cap-drop ALL \
    --read-only --health-interval disable --stop-timeout 15 \
    -v "$certs:/etc/h3gate/certs:ro" -v "$conf:/etc/h3gate/h3gate.ini:ro" \
    "$IMAGE" >/dev/null
  log "pod $DEMO_POD: h3gate on 127.0.0.1:$DEMO_PORT (UDP HTTP/3, TCP HTTPS)"
  cat <<EOF
  /usr/bin/python3 $ROOT/scripts/h3get.py --cacert $certs/ca.crt https://127.0.0.1:$DEMO_PORT/
  curl --cacert $certs/ca.crt https://127.0.0.1:$DEMO_PORT/
  $0 podman logs -f $DEMO_POD-h3gate
  $0 podman healthcheck run $DEMO_POD-h3gate
  $0 stop-demo
EOF
}

cmd_stop_demo() {
  podman pod rm -f --ignore -t 15 "$DEMO_POD" >/dev/null
  log "pod $DEMO_POD removed"
}

cmd_test() {
  cd "$ROOT"
  exec /usr/bin/python3 -m pytest -q -ra -p no:cacheprovider \
    tests/e2e/test_60_container.py tests/e2e/test_61_kubernetes.py "$@"
}

cmd_clean() {
  podman pod rm -f --ignore "$DEMO_POD" >/dev/null
  podman rmi -f "$IMAGE" "$APP_IMAGE" "$BUILD_CACHE" >/dev/null 2>&1 || true
  podman image prune -f >/dev/null
  log "removed $IMAGE, $APP_IMAGE and the build cache (the base image stays)"
}

case "${1:-}" in
  build) cmd_build ;;
  base) REFRESH=0; [ "${2:-}" = --refresh ] && REFRESH=1; need podman; base_image ;;
  run-demo) cmd_run_demo ;;
  stop-demo) cmd_stop_demo ;;
  test) shift; cmd_test "$@" ;;
  clean) cmd_clean ;;
  podman) shift; exec podman "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
