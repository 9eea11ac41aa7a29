#!/usr/bin/env bash
# Builds Capstan's offline container images (capstan/busybox, capstan/redis, capstan/http, and
# the built-in catalog's capstan/nginx, capstan/memcached, capstan/postgresql, capstan/prometheus)
# from the build machine's Debian packages, with no registry: every image is FROM scratch and
# its root filesystem is staged here from host binaries and their shared libraries.
#
# Idempotent: each image carries a label with the hash of its staged context; an image whose
# label already matches is left alone.
#
# Usage: images/build.sh [NAME...]   (default: all images under images/containers/)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
containers="$here/containers"

die() { echo "images: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed; install docker.io (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker engine answers on ${DOCKER_HOST:-/var/run/docker.sock}; start it (dockerd, or systemctl start docker)"

# Host packages the images are made of; installed when missing and we are root.
need_pkgs=()
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx httpd || need_pkgs+=(busybox-static)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_pkgs+=(redis-tools)
[ -x /usr/sbin/nginx ] || need_pkgs+=(nginx)
[ -x /usr/bin/memcached ] || need_pkgs+=(memcached)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_pkgs+=(postgresql)
[ -x /usr/bin/prometheus ] || need_pkgs+=(prometheus)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing host packages: ${need_pkgs[*]} (install them with apt-get, or run as root)"
  echo "images: installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi
# The Debian packages may start host services (redis on 6379, nginx on 80, ...); tests need
# those ports free, and the images only borrow the packages' files.
if command -v systemctl >/dev/null 2>&1; then
  for unit in redis-server nginx memcached postgresql prometheus; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi

# Copies a binary and every shared library it links (plus the dynamic loader) into a rootfs.
copy_with_libs() {
  local rootfs=$1 bin=$2 dest=$3
  install -D -m 0755 "$bin" "$rootfs$dest"
  ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [ -e "$lib" ] || continue
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
}

# Installs busybox and a symlink per applet into a rootfs (sh, httpd, nc, wget, sleep, ...).
install_busybox() {
  local rootfs=$1
  install -D -m 0755 /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  mkdir -p "$rootfs/tmp" "$rootfs/etc"
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
}

stage() {
  local name=$1 rootfs=$2
  install_busybox "$rootfs"
  case "$name" in
    busybox) ;;
    redis)
      copy_with_libs "$rootfs" "$(command -v redis-server)" /usr/bin/redis-server
      copy_with_libs "$rootfs" "$(command -v redis-cli)" /usr/bin/redis-cli
      mkdir -p "$rootfs/data"
      ;;
    nginx)
      copy_with_libs "$rootfs" /usr/sbin/nginx /usr/sbin/nginx
      install -D -m 0644 /etc/nginx/mime.types "$rootfs/etc/nginx/mime.types"
      install -D -m 0644 "$containers/nginx/nginx.conf.in" "$rootfs/etc/nginx/nginx.conf.in"
      mkdir -p "$rootfs/var/lib/nginx" "$rootfs/var/log/nginx" "$rootfs/run" "$rootfs/www"
      echo "capstan/nginx: ok" > "$rootfs/www/index.html"
      ;;
    memcached)
      copy_with_libs "$rootfs" /usr/bin/memcached /usr/bin/memcached
      ;;
    postgresql)
      # The newest installed major version, at the Debian paths: PostgreSQL finds its share
      # directory relative to its binaries.
      local pg ver
      pg=$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)
      pg=$(dirname "$(dirname "$pg")")
      ver=$(basename "$pg")
      mkdir -p "$rootfs/usr/bin"
      install -D -m 0755 "$containers/postgresql/start.sh" "$rootfs/usr/bin/start-postgresql"
      for b in postgres initdb pg_ctl psql pg_isready; do
        copy_with_libs "$rootfs" "$pg/bin/$b" "$pg/bin/$b"
        ln -sf "$pg/bin/$b" "$rootfs/usr/bin/$b"
      done
      # initdb loads PL/pgSQL and the snowball dictionaries; the other extensions stay out.
      for l in plpgsql.so dict_snowball.so; do
        copy_with_libs "$rootfs" "$pg/lib/$l" "$pg/lib/$l"
      done
      mkdir -p "$rootfs/usr/share/postgresql/$ver/extension"
      (cd "/usr/share/postgresql/$ver" && find . -maxdepth 1 -type f -exec cp {} "$rootfs/usr/share/postgresql/$ver/" \;)
      cp -a "/usr/share/postgresql/$ver/timezonesets" "/usr/share/postgresql/$ver/tsearch_data" "$rootfs/usr/share/postgresql/$ver/"
      cp -a "/usr/share/postgresql/$ver/extension/"plpgsql* "$rootfs/usr/share/postgresql/$ver/extension/"
      install -D -m 0644 /usr/share/zoneinfo/UTC "$rootfs/usr/share/zoneinfo/UTC"
      echo 'postgres:x:999:999:postgres:/var/lib/postgresql:/bin/sh' >> "$rootfs/etc/passwd"
      echo 'postgres:x:999:' >> "$rootfs/etc/group"
      mkdir -p "$rootfs/var/lib/postgresql" "$rootfs/run/postgresql"
      chown 999:999 "$rootfs/var/lib/postgresql" "$rootfs/run/postgresql"
      ;;
    prometheus)
      copy_with_libs "$rootfs" /usr/bin/prometheus /usr/bin/prometheus
      install -D -m 0755 "$containers/prometheus/start.sh" "$rootfs/usr/bin/start-prometheus"
      mkdir -p "$rootfs/prometheus"
      ;;
    http)
      mkdir -p "$rootfs/www"
      echo "capstan/http: ok" > "$rootfs/www/index.html"
      echo "ok" > "$rootfs/www/health"
      ;;
    *) die "no staging recipe for image '$name'" ;;
  esac
}

# A stable hash of a build context: file modes, link targets and contents, in sorted order.
context_hash() {
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | while IFS= read -r -d '' p; do
    if [ -L "$p" ]; then printf 'L %s %s\n' "$p" "$(readlink "$p")"
    elif [ -f "$p" ]; then printf 'F %s %s %s\n' "$p" "$(stat -c %a "$p")" "$(sha256sum < "$p" | cut -c1-64)"
    else printf 'D %s\n' "$p"; fi
  done) | sha256sum | cut -c1-16
}

build_one() {
  local name=$1 image="capstan/$1"
  [ -f "$containers/$name/Dockerfile" ] || die "unknown image '$name' (no $containers/$name/Dockerfile)"
  local ctx
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' RETURN
  cp "$containers/$name/Dockerfile" "$ctx/"
  stage "$name" "$ctx/rootfs"
  local hash current
  hash=$(context_hash "$ctx")
  current=$(docker image inspect -f '{{index .Config.Labels "capstan.image.hash"}}' "$image" 2>/dev/null || true)
  if [ "$current" = "$hash" ]; then
    echo "images: $image is up to date"
    return
  fi
  echo "images: building $image"
  DOCKER_BUILDKIT=0 docker build -q --label "capstan.image.hash=$hash" -t "$image:latest" "$ctx" >/dev/null 2>"$ctx.err" \
    || { cat "$ctx.err" >&2; rm -f "$ctx.err"; die "building $image failed"; }
  rm -f "$ctx.err"
}

if [ $# -eq 0 ]; then
  set -- $(cd "$containers" && ls)
fi
for name in "$@"; do build_one "$name"; done
