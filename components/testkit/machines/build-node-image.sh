#!/bin/sh
# Builds the Docker image of a Capstan test machine: a bare Debian 12 (bookworm, minbase) with
# systemd as PID 1 and a Docker engine, for the multi-node install tests (testkit's `machines`).
#
#   components/testkit/machines/build-node-image.sh      # prints the image name on stdout
#
# The rootfs comes from mmdebstrap using the host's own apt sources (no registry needed). The
# image is tagged capstan-test/node:<hash of this script and the init wrapper> and
# capstan-test/node:latest; when the hashed tag exists already, nothing is done. Older
# capstan-test/node tags are removed after a new build. No ssh server is installed, so no host
# keys are baked into the image. Takes 40-120 s on a 2-core machine (mostly mmdebstrap).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=capstan-test/node
sources=${CAPSTAN_NODE_SOURCES:-/etc/apt/sources.list.d/debian.sources}
packages=systemd,systemd-sysv,dbus,iproute2,iputils-ping,procps,ca-certificates,curl,docker.io,iptables,nftables,dnsutils,redis-tools,python3,sudo,util-linux

hash=$(cat "$here/build-node-image.sh" "$here/container-init" | sha256sum | cut -c1-12)
image=$repo:$hash

say() { echo "build-node-image: $*" >&2; }

for tool in docker mmdebstrap flock; do
    command -v "$tool" >/dev/null || { say "$tool is not installed"; exit 1; }
done

# One build at a time: parallel test binaries may all ask for the image.
exec 9>"${TMPDIR:-/tmp}/capstan-test-node-image.lock"
flock 9

if docker image inspect "$image" >/dev/null 2>&1; then
    docker tag "$image" "$repo:latest"
    echo "$image"
    exit 0
fi

say "building $image from $sources (takes a minute or two)"
start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-test-node.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# - the init wrapper becomes PID 1 (see container-init);
# - apt's periodic timers are masked so no background apt run holds the dpkg lock during a test;
# - /etc/machine-id is left empty so every machine gets its own at boot;
# - no apt lists are kept from the build (tests install local .debs; the test network has no
#   route off the machine anyway).
mmdebstrap --quiet --variant=minbase --include="$packages" \
    --customize-hook="upload '$here/container-init' /usr/local/sbin/container-init" \
    --customize-hook='chmod 755 "$1/usr/local/sbin/container-init"' \
    --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/apt-daily.timer"' \
    --customize-hook='ln -sf /dev/null "$1/etc/systemd/system/apt-daily-upgrade.timer"' \
    --customize-hook='rm -f "$1/etc/ssh/ssh_host_"*; : > "$1/etc/machine-id"' \
    bookworm "$work/rootfs.tar" "$sources" >&2

docker import \
    -c 'CMD ["/usr/local/sbin/container-init"]' \
    -c 'ENV container=docker' \
    -c "LABEL capstan.test.node-image=$hash" \
    "$work/rootfs.tar" "$image" >/dev/null
docker tag "$image" "$repo:latest"

# Drop the images of earlier versions of this script.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" | while read -r old; do
    case "$old" in
        "$image" | "$repo:latest") ;;
        *) docker image rm "$old" >/dev/null 2>&1 || true ;;
    esac
done

say "built $image in $(($(date +%s) - start)) s"
echo "$image"
