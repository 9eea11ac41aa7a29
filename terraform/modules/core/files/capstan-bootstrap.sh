#!/bin/sh
# capstan-bootstrap: a provisioned node's first boot. Reads the first-boot contract
# /etc/capstan/bootstrap.env (written by cloud-init or a start-up script from
# terraform/modules/core, or taken from the QEMU fw_cfg entry opt/capstan/bootstrap.env) and
# runs the one-line installer: `install.sh --init` on the node with INIT=1, and on every other
# node `curl http://MASTER/install.sh | sh -s -- --role ROLE --join JOIN`, retried until the
# master answers. Reports each step and, at the end, `capstan: node ready (role=ROLE)` on the
# console. Running it again on a node that is ready does nothing.
#
# Keys: ROLE=master|agent, INIT=1 (create the cluster here), JOIN=<token>, MASTER=<address>,
# and optionally ADDRESS=<ip>/<prefix> (a static address for the first network interface, for
# networks without DHCP; ADVERTISE defaults to it), ADVERTISE=<ip>, NAME=<cluster name>, HOSTNAME=<node name>, PUBLIC=1,
# PACKAGE_URL=<url of the .deb>, SKIP_DOCTOR=1, and on the INIT=1 node AGENT_TOKEN= and
# MASTER_TOKEN= (short tokens chosen beforehand, which cluster init adopts, so that the other
# nodes' JOIN tokens work before the cluster exists). Environment: CAPSTAN_BOOTSTRAP_ENV (the file),
# CAPSTAN_BOOTSTRAP_DIR (state, default /var/lib/capstan-bootstrap), CAPSTAN_BOOTSTRAP_TIMEOUT
# (seconds to keep trying the master, default 1800), CAPSTAN_BOOTSTRAP_DRY_RUN=1 (print the
# installer command instead of running it; for tests).
set -eu

ENV_FILE=${CAPSTAN_BOOTSTRAP_ENV:-/etc/capstan/bootstrap.env}
STATE=${CAPSTAN_BOOTSTRAP_DIR:-/var/lib/capstan-bootstrap}
TIMEOUT=${CAPSTAN_BOOTSTRAP_TIMEOUT:-1800}
DRY_RUN=${CAPSTAN_BOOTSTRAP_DRY_RUN:-}
FW_CFG=/sys/firmware/qemu_fw_cfg/by_name/opt/capstan/bootstrap.env/raw
LOCAL_DEB=/var/cache/capstan/capstan.deb

say() {
  printf 'capstan: %s\n' "$*" >&2
  # The serial console of a VM or cloud instance; best effort.
  if [ -z "$DRY_RUN" ] && [ -w /dev/console ]; then
    printf 'capstan: %s\n' "$*" >/dev/console 2>/dev/null || true
  fi
}
die() {
  say "bootstrap failed: $*"
  exit 1
}

# The contract: the file, or else QEMU's fw_cfg entry (copied to the file).
if [ ! -f "$ENV_FILE" ]; then
  [ -e "$FW_CFG" ] || modprobe qemu_fw_cfg 2>/dev/null || true
  if [ -r "$FW_CFG" ]; then
    mkdir -p "$(dirname "$ENV_FILE")"
    (umask 077 && cat "$FW_CFG" >"$ENV_FILE")
    say "read the bootstrap contract from fw_cfg"
  else
    say "no $ENV_FILE and no fw_cfg entry: nothing to do"
    exit 0
  fi
fi

# Parse KEY=VALUE lines without running them; unknown keys are ignored.
ROLE='' INIT='' JOIN='' MASTER='' ADDRESS='' ADVERTISE='' NAME='' HOSTNAME_='' PUBLIC='' PACKAGE_URL='' SKIP_DOCTOR=''
AGENT_TOKEN='' MASTER_TOKEN=''
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in '' | '#'*) continue ;; esac
  key=${line%%=*}
  value=${line#*=}
  case "$key" in
    ROLE) ROLE=$value ;;
    INIT) INIT=$value ;;
    JOIN) JOIN=$value ;;
    MASTER) MASTER=$value ;;
    ADDRESS) ADDRESS=$value ;;
    ADVERTISE) ADVERTISE=$value ;;
    NAME) NAME=$value ;;
    HOSTNAME) HOSTNAME_=$value ;;
    PUBLIC) PUBLIC=$value ;;
    PACKAGE_URL) PACKAGE_URL=$value ;;
    SKIP_DOCTOR) SKIP_DOCTOR=$value ;;
    AGENT_TOKEN) AGENT_TOKEN=$value ;;
    MASTER_TOKEN) MASTER_TOKEN=$value ;;
  esac
done <"$ENV_FILE"

case "$ROLE" in
  master | agent) ;;
  *) die "ROLE must be master or agent in $ENV_FILE, not '$ROLE'" ;;
esac
[ "$INIT" != 1 ] || [ "$ROLE" = master ] || die "INIT=1 goes only with ROLE=master"
[ "$INIT" = 1 ] || [ -z "$AGENT_TOKEN$MASTER_TOKEN" ] || die "AGENT_TOKEN and MASTER_TOKEN go only with INIT=1"
if [ "$INIT" != 1 ]; then
  [ -n "$JOIN" ] || die "JOIN is empty in $ENV_FILE: put a join token there (capstan cluster token create --role $ROLE on a master) and run capstan-bootstrap again"
  [ -n "$MASTER" ] || die "MASTER is empty in $ENV_FILE"
fi

if [ -n "$ADDRESS" ]; then
  case "$ADDRESS" in
    *[!0-9./]* | */*/* | /* | */ | *.*.*.*.* | *./* | .*) die "ADDRESS must be an IPv4 address with its prefix, such as 10.78.0.11/24, not '$ADDRESS'" ;;
  esac
  case "$ADDRESS" in */*) ;; *) die "ADDRESS must be an IPv4 address with its prefix, such as 10.78.0.11/24, not '$ADDRESS'" ;; esac
  # A node without a default route cannot pick the address to advertise: it is this one.
  [ -n "$ADVERTISE" ] || ADVERTISE=${ADDRESS%/*}
fi

# The static address, before anything needs the network: a systemd-networkd file for the first
# network interface (it outranks the image's DHCP file and stays for later boots), applied now.
set_address() {
  iface=
  for dev in /sys/class/net/*; do
    name=${dev##*/}
    if [ "$name" != lo ] && [ -e "$dev/device" ]; then
      iface=$name
      break
    fi
  done
  [ -n "$iface" ] || die "ADDRESS=$ADDRESS but this machine has no network interface"
  say "static address $ADDRESS on $iface"
  if [ -n "$DRY_RUN" ]; then
    return 0
  fi
  mkdir -p /etc/systemd/network
  printf '[Match]\nName=%s\n\n[Network]\nAddress=%s\nLinkLocalAddressing=no\n' "$iface" "$ADDRESS" \
    >/etc/systemd/network/10-capstan-address.network
  if command -v networkctl >/dev/null 2>&1 && networkctl reload 2>/dev/null; then
    networkctl reconfigure "$iface" 2>/dev/null || true
  else
    ip link set "$iface" up
    ip address replace "$ADDRESS" dev "$iface"
  fi
  tries=0
  until ip -o -4 address show dev "$iface" | grep -q " ${ADDRESS%/*}/"; do
    tries=$((tries + 1))
    [ "$tries" -lt 30 ] || die "$iface did not get $ADDRESS"
    # networkd may have dropped the reload: set it by hand (the file still holds it for later).
    [ "$tries" -ne 10 ] || ip address replace "$ADDRESS" dev "$iface" || true
    sleep 1
  done
}

mkdir -p "$STATE"
chmod 0700 "$STATE"
if [ -f "$STATE/done" ]; then
  say "node ready (role=$ROLE)"
  exit 0
fi
# One run at a time (cloud-init's runcmd and the image's first-boot unit may both start it).
if command -v flock >/dev/null 2>&1 && [ -z "${CAPSTAN_BOOTSTRAP_LOCKED:-}" ]; then
  CAPSTAN_BOOTSTRAP_LOCKED=1 exec flock "$STATE/lock" "$0" "$@"
fi
[ ! -f "$STATE/done" ] || { say "node ready (role=$ROLE)"; exit 0; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/capstan-bootstrap.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say "bootstrap: role=$ROLE${INIT:+ init=$INIT} master=${MASTER:-self}${PUBLIC:+ public}"
[ -z "$PUBLIC" ] || [ "$ROLE" = agent ] || die "PUBLIC=1 goes only with ROLE=agent"
[ -z "$ADDRESS" ] || set_address

# The package: the image's copy, else PACKAGE_URL (joining nodes may also get it from the master).
DEB=
if [ -f "$LOCAL_DEB" ]; then
  DEB=$LOCAL_DEB
elif [ -n "$PACKAGE_URL" ]; then
  say "downloading the package from $PACKAGE_URL"
  mkdir -p "$(dirname "$LOCAL_DEB")"
  curl -fsSL --retry 5 --max-time 600 -o "$LOCAL_DEB.part" "$PACKAGE_URL" ||
    die "cannot download $PACKAGE_URL"
  mv "$LOCAL_DEB.part" "$LOCAL_DEB"
  DEB=$LOCAL_DEB
fi

run() {
  if [ -n "$DRY_RUN" ]; then
    printf '%s\n' "$*"
    return 0
  fi
  "$@"
}

if [ "$INIT" = 1 ]; then
  # The installer ships in the package; take it from there (installed, or inside the .deb).
  INSTALLER=/usr/share/capstan/install.sh
  if [ ! -f "$INSTALLER" ] && [ -z "$DRY_RUN" ]; then
    [ -n "$DEB" ] || die "INIT=1 needs the package: boot the Capstan image or set PACKAGE_URL"
    dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/capstan/install.sh >"$WORK/install.sh" ||
      die "no install.sh inside $DEB"
    INSTALLER=$WORK/install.sh
  fi
  set -- --init
  [ -z "$DEB" ] || set -- "$@" --package "$DEB"
  [ -z "$ADVERTISE" ] || set -- "$@" --advertise "$ADVERTISE"
  [ -z "$NAME" ] || set -- "$@" --name "$NAME"
  [ -z "$HOSTNAME_" ] || set -- "$@" --hostname "$HOSTNAME_"
  [ -z "$SKIP_DOCTOR" ] || set -- "$@" --skip-doctor
  say "creating the cluster (install.sh $*)"
  # After the log line: it never shows the tokens.
  [ -z "$AGENT_TOKEN" ] || set -- "$@" --agent-token "$AGENT_TOKEN"
  [ -z "$MASTER_TOKEN" ] || set -- "$@" --master-token "$MASTER_TOKEN"
  # The administrator's password is printed once: keep the JSON, root only.
  if [ -n "$DRY_RUN" ]; then
    run sh "$INSTALLER" "$@" --json
  else
    # Not a umask around the installer: cluster init writes config files that the daemons'
    # own users must read. The file alone is made root-only, before anything is in it.
    install -m 0600 /dev/null "$STATE/init.json"
    sh "$INSTALLER" "$@" --json >"$STATE/init.json" ||
      die "install.sh --init failed (see the journal); run capstan-bootstrap again to retry"
    say "cluster created; the administrator's password is in $STATE/init.json (root only)"
  fi
else
  set -- --role "$ROLE" --join "$JOIN" --server "$MASTER"
  [ -z "$PUBLIC" ] || set -- "$@" --public
  [ -z "$DEB" ] || set -- "$@" --package "$DEB"
  [ -z "$ADVERTISE" ] || set -- "$@" --advertise "$ADVERTISE"
  [ -z "$HOSTNAME_" ] || set -- "$@" --hostname "$HOSTNAME_"
  [ -z "$SKIP_DOCTOR" ] || set -- "$@" --skip-doctor
  if [ -n "$DRY_RUN" ]; then
    run sh -s -- "$@"
  else
    # The master may still be booting: keep trying until it serves install.sh and the join works.
    deadline=$(($(date +%s) + TIMEOUT))
    attempt=0
    while :; do
      attempt=$((attempt + 1))
      if curl -fsSL --max-time 30 -o "$WORK/install.sh" "http://$MASTER/install.sh" </dev/null; then
        say "joining $MASTER as $ROLE (attempt $attempt)"
        if sh "$WORK/install.sh" "$@" </dev/null; then
          break
        fi
        say "the installer failed; retrying"
      else
        say "waiting for $MASTER to serve install.sh (attempt $attempt)"
      fi
      [ "$(date +%s)" -lt "$deadline" ] || die "gave up on $MASTER after $TIMEOUT s"
      sleep 10
    done
  fi
fi

if [ -z "$DRY_RUN" ]; then
  touch "$STATE/done"
fi
say "node ready (role=$ROLE)"
