#!/bin/sh
# Capstan's one-line installer. Every master serves it at http://<master>/install.sh:
#
#   curl -fsSL http://<master>/install.sh | sudo sh -s -- --role agent --join <token>
#   curl -fsSL http://<master>/install.sh | sudo sh -s -- --role master --join <token>
#   sudo sh install.sh --init --package capstan_<version>_amd64.deb     # the first master
#
# A joining node first fetches the master's CA certificate and checks it against the hash in
# the token (a short token, chosen before the cluster existed, names no CA: then the master
# must prove it knows the token's secret for the CA it serves); only then does it download anything over HTTPS pinned to that CA, install the
# package (and Docker on agents), run the pre-flight checks and `capstan cluster join`.
# Running it again on a node that has joined changes nothing. `sh install.sh --help` for all
# options; `capstan-uninstall` removes the node again.
set -eu

# The master serving this script sets the default server here; keep this one line as it is.
CAPSTAN_SERVER="${CAPSTAN_SERVER:-}"

# Where the CA certificate is fetched from (default https://SERVER/v1/cluster/ca.pem); tests
# point it at a file:// URL. The same for the proof a short token asks for (default
# https://SERVER/v1/cluster/ca-proof).
CAPSTAN_CA_URL="${CAPSTAN_CA_URL:-}"
CAPSTAN_PROOF_URL="${CAPSTAN_PROOF_URL:-}"
STATE_DIR=/var/lib/capstan

usage() {
  cat <<'EOF'
Usage: install.sh --role agent|master --join TOKEN [--server HOST] [options]
       install.sh --init [--package FILE | --bundle FILE] [--advertise IP] [--name NAME]
                         [--security strict|permissive] [--json]

Installs Capstan on this machine and joins it to a cluster (or, with --init, creates one).

  --role agent|master  what this node becomes (--init implies master)
  --join TOKEN         join token from `capstan cluster token create` (CSTN1...), or a
                       short token (CSTN1::...) given to --init as --agent-token/--master-token
  --server HOST        a master's address (default: the master that served this script)
  --package FILE       install this capstan .deb instead of downloading it from the master
  --bundle FILE        air-gapped: a tar holding capstan_*.deb and optionally an images tar
  --init               create a new cluster on this machine, its first master
  --advertise IP       the address this node's daemons bind and advertise
  --hostname NAME      this node's name in the cluster
  --public             a public agent (role slave_public: edge load balancers, services
                       reached from outside the cluster)
  --name NAME          the cluster's name (--init)
  --security MODE      --init: strict (every daemon speaks TLS with its node certificate and
                       every call is authenticated) or permissive (the default)
  --agent-token TOKEN  --init: the agents' join token, chosen beforehand (capstan cluster
                       token generate), so every machine can get its line at once
  --master-token TOKEN --init: the same for masters
  --json               print cluster init's result as JSON (--init)
  --skip-doctor        go on even if the pre-flight checks (capstan doctor) fail
  -h, --help           this text
EOF
}

say() { printf 'capstan-install: %s\n' "$*" >&2; }
die() { printf 'capstan-install: error: %s\n' "$*" >&2; exit 1; }

# Checks a join token's shape (CSTN1<64 hex>::<8 hex>.<32 hex>, lowercase; the CA hash is
# empty in a short token) and sets TOKEN_CA_HASH, TOKEN_ID and TOKEN_SECRET. Says which part
# is wrong.
parse_token() {
  pt_token=$1
  case "$pt_token" in
    CSTN1*) ;;
    *) die "malformed join token: it must start with CSTN1 (get one with: capstan cluster token create --role $ROLE)" ;;
  esac
  pt_rest=${pt_token#CSTN1}
  case "$pt_rest" in
    *::*.*) ;;
    *) die "malformed join token: the form is CSTN1<ca-hash>::<id>.<secret>" ;;
  esac
  pt_hash=${pt_rest%%::*}
  pt_cred=${pt_rest#*::}
  pt_id=${pt_cred%%.*}
  pt_secret=${pt_cred#*.}
  [ -z "$pt_hash" ] || printf '%s' "$pt_hash" | grep -Eqx '[0-9a-f]{64}' \
    || die "malformed join token: its CA hash must be 64 lowercase hex characters"
  printf '%s' "$pt_id" | grep -Eqx '[0-9a-f]{8}' \
    || die "malformed join token: its id must be 8 lowercase hex characters"
  printf '%s' "$pt_secret" | grep -Eqx '[0-9a-f]{32}' \
    || die "malformed join token: its secret must be 32 lowercase hex characters"
  TOKEN_CA_HASH=$pt_hash
  TOKEN_ID=$pt_id
  TOKEN_SECRET=$pt_secret
}

# A short token names no CA: the master proves it knows the token's secret (its SHA-256, which
# masters keep) for the CA it served and a nonce of ours — SHA-256 over
# "capstan-ca-proof\n<secret sha256>\n<nonce>\n<CA sha256>", as `capstan_install::token::ca_proof`.
# On success TOKEN becomes the full token for that CA.
check_proof() {
  cp_ca_hash=$1
  cp_nonce=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  cp_url=${CAPSTAN_PROOF_URL:-https://$SERVER/v1/cluster/ca-proof}
  # A master whose `cluster init` is still running answers 503 (not initialized): wait for it.
  cp_tries=0
  until cp_code=$(curl -fsSL -k --max-time 30 -o "$WORK/proof" -w '%{http_code}' \
    "$cp_url?token=$TOKEN_ID&nonce=$cp_nonce" </dev/null); do
    if [ "$cp_code" != 503 ] || [ "$cp_tries" -ge 60 ]; then
      die "cannot fetch the CA proof from $cp_url (HTTP ${cp_code:-000}): is $SERVER a Capstan master, and reachable?"
    fi
    [ "$cp_tries" -gt 0 ] || say "$SERVER is still creating its cluster; waiting"
    cp_tries=$((cp_tries + 1))
    sleep 2
  done
  cp_key=$(printf '%s' "$TOKEN_SECRET" | sha256sum | cut -d' ' -f1)
  cp_want=$(printf 'capstan-ca-proof\n%s\n%s\n%s' "$cp_key" "$cp_nonce" "$cp_ca_hash" | sha256sum | cut -d' ' -f1)
  cp_got=$(tr -d ' \n' <"$WORK/proof")
  if [ "$cp_got" != "$cp_want" ]; then
    die "$SERVER could not prove it knows this join token for the CA it serves (sha256 $cp_ca_hash): either the token is not this cluster's, or someone is in the middle. Nothing was sent or installed."
  fi
  TOKEN=CSTN1$cp_ca_hash::$TOKEN_ID.$TOKEN_SECRET
  TOKEN_CA_HASH=$cp_ca_hash
}

# Fetches the master's CA certificate without trusting anyone yet, then keeps it only if its
# SHA-256 is the one in the token. Nothing has been sent or installed before this passes.
pin_ca() {
  pc_url=${CAPSTAN_CA_URL:-https://$SERVER/v1/cluster/ca.pem}
  say "fetching the cluster CA from $pc_url"
  curl -fsSL -k --max-time 30 -o "$WORK/ca.pem" "$pc_url" </dev/null \
    || die "cannot fetch the cluster CA from $pc_url: is $SERVER a Capstan master, and reachable?"
  pc_hash=$(sha256sum "$WORK/ca.pem" | cut -d' ' -f1)
  if [ -z "$TOKEN_CA_HASH" ]; then
    check_proof "$pc_hash"
    say "the master proved it knows the token, for the CA with sha256 $pc_hash"
  elif [ "$pc_hash" != "$TOKEN_CA_HASH" ]; then
    die "the CA certificate $SERVER serves (sha256 $pc_hash) is not the one this token was made for (sha256 $TOKEN_CA_HASH): either the token belongs to another cluster, or someone is in the middle. Nothing was sent or installed."
  fi
  say "the master's CA matches the token (sha256 $pc_hash)"
  CA_FILE=$WORK/ca.pem
}

# Runs apt-get without a terminal, never reading the script from our stdin.
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -q "$@" </dev/null >&2
}

# Installs the capstan package unless this very version is installed already.
install_package() {
  ip_deb=$1
  ip_version=$(dpkg-deb -f "$ip_deb" Version) || die "$ip_deb is not a Debian package"
  ip_installed=$(dpkg-query -W -f '${Status} ${Version}' capstan 2>/dev/null || true)
  if [ "$ip_installed" = "install ok installed $ip_version" ]; then
    say "capstan $ip_version is installed already"
    return
  fi
  say "installing capstan $ip_version"
  # apt reads local packages as _apt: let it.
  chmod 0755 "$(dirname "$ip_deb")"
  chmod 0644 "$ip_deb"
  # --force-confold: keep /etc/capstan/config.yaml as cluster init/join wrote it.
  apt_get install -y --no-install-recommends -o Dpkg::Options::=--force-confold "$ip_deb" \
    || die "apt-get could not install $ip_deb (see above)"
}

# Agents run their tasks in Docker: install docker.io if there is no docker, and wait for it.
ensure_docker() {
  if ! command -v docker >/dev/null 2>&1; then
    say "installing the Docker engine (docker.io)"
    apt_get install -y docker.io || { apt_get update && apt_get install -y docker.io; } \
      || die "apt-get could not install docker.io (see above)"
  fi
  ed_tries=0
  until docker info >/dev/null 2>&1 </dev/null; do
    if [ "$ed_tries" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
      say "starting the Docker engine"
      systemctl enable --now docker.service </dev/null >&2 || true
    fi
    ed_tries=$((ed_tries + 1))
    [ "$ed_tries" -le 30 ] || die "the Docker engine does not answer (docker info); start it and run this again"
    sleep 1
  done
}

main() {
  ROLE=
  TOKEN=
  SERVER=$CAPSTAN_SERVER
  PACKAGE=
  BUNDLE=
  INIT=
  ADVERTISE=
  NODE_NAME=
  CLUSTER_NAME=
  JSON=
  SKIP_DOCTOR=
  PUBLIC=
  AGENT_TOKEN=
  MASTER_TOKEN=
  SECURITY=
  while [ $# -gt 0 ]; do
    case "$1" in
      --role) [ $# -ge 2 ] || die "--role needs agent or master"; ROLE=$2; shift 2 ;;
      --join) [ $# -ge 2 ] || die "--join needs a token"; TOKEN=$2; shift 2 ;;
      --server) [ $# -ge 2 ] || die "--server needs a host"; SERVER=$2; shift 2 ;;
      --package) [ $# -ge 2 ] || die "--package needs a file"; PACKAGE=$2; shift 2 ;;
      --bundle) [ $# -ge 2 ] || die "--bundle needs a file"; BUNDLE=$2; shift 2 ;;
      --advertise) [ $# -ge 2 ] || die "--advertise needs an address"; ADVERTISE=$2; shift 2 ;;
      --hostname) [ $# -ge 2 ] || die "--hostname needs a name"; NODE_NAME=$2; shift 2 ;;
      --name) [ $# -ge 2 ] || die "--name needs a name"; CLUSTER_NAME=$2; shift 2 ;;
      --agent-token) [ $# -ge 2 ] || die "--agent-token needs a token"; AGENT_TOKEN=$2; shift 2 ;;
      --master-token) [ $# -ge 2 ] || die "--master-token needs a token"; MASTER_TOKEN=$2; shift 2 ;;
      --security) [ $# -ge 2 ] || die "--security needs strict or permissive"; SECURITY=$2; shift 2 ;;
      --init) INIT=1; shift ;;
      --public) PUBLIC=1; shift ;;
      --json) JSON=1; shift ;;
      --skip-doctor) SKIP_DOCTOR=1; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown option $1" ;;
    esac
  done

  if [ -n "$INIT" ]; then
    [ -z "$ROLE" ] || [ "$ROLE" = master ] || die "--init makes the first master: --role $ROLE does not go with it"
    [ -z "$TOKEN" ] || die "--init creates a cluster: it takes no --join token"
    [ -z "$PUBLIC" ] || die "--init makes a master: --public is for agents"
    case "$SECURITY" in "" | strict | permissive) ;; *) die "--security is strict or permissive, not $SECURITY" ;; esac
    for t in "$AGENT_TOKEN" "$MASTER_TOKEN"; do
      [ -z "$t" ] || parse_token "$t"
    done
    ROLE=master
  else
    case "$ROLE" in
      agent | master) ;;
      '') die "say what this node becomes: --role agent or --role master (or --init for the first master)" ;;
      *) die "--role is agent or master, not $ROLE" ;;
    esac
    [ -z "$PUBLIC" ] || [ "$ROLE" = agent ] || die "--public is for agents, not --role $ROLE"
    [ -z "$AGENT_TOKEN$MASTER_TOKEN" ] || die "--agent-token and --master-token go with --init; a joining node takes --join"
    [ -z "$SECURITY" ] || die "--security goes with --init; a joining node takes its cluster's mode"
    [ -n "$TOKEN" ] || die "joining needs a token: --join TOKEN (capstan cluster token create --role $ROLE on a master)"
    parse_token "$TOKEN"
    # Accept http://host/ and https://host as well as host[:port].
    SERVER=${SERVER#http://}
    SERVER=${SERVER#https://}
    SERVER=${SERVER%%/*}
    [ -n "$SERVER" ] || die "which master? --server HOST"
  fi
  [ -z "$PACKAGE" ] || [ -z "$BUNDLE" ] || die "--package and --bundle do not go together"
  [ -z "$PACKAGE" ] || [ -f "$PACKAGE" ] || die "no package file $PACKAGE"
  [ -z "$BUNDLE" ] || [ -f "$BUNDLE" ] || die "no bundle file $BUNDLE"

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/capstan-install.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  trap 'exit 130' INT TERM

  if [ -z "$INIT" ]; then
    pin_ca
  fi

  [ "$(id -u)" -eq 0 ] || die "run this as root (curl ... | sudo sh -s -- ...)"

  # The package: given, in the bundle, or from the master (HTTPS, pinned to its CA).
  DEB=
  IMAGES=
  if [ -n "$PACKAGE" ]; then
    DEB=$(cd "$(dirname "$PACKAGE")" && pwd)/$(basename "$PACKAGE")
  elif [ -n "$BUNDLE" ]; then
    say "unpacking $BUNDLE"
    mkdir "$WORK/bundle"
    tar -xf "$BUNDLE" -C "$WORK/bundle" </dev/null || die "cannot unpack $BUNDLE"
    for f in "$WORK"/bundle/capstan_*.deb "$WORK"/bundle/*/capstan_*.deb; do
      [ -f "$f" ] || continue
      [ -z "$DEB" ] || die "$BUNDLE holds more than one capstan_*.deb"
      DEB=$f
    done
    [ -n "$DEB" ] || die "$BUNDLE holds no capstan_*.deb"
    for f in "$WORK"/bundle/*.tar "$WORK"/bundle/*/*.tar; do
      [ -f "$f" ] && IMAGES="$IMAGES $f"
    done
  elif [ -z "$INIT" ]; then
    say "downloading the package from $SERVER"
    curl -fsSL --max-time 600 --cacert "$CA_FILE" -o "$WORK/capstan.deb" \
      "https://$SERVER/v1/packages/capstan.deb" </dev/null \
      || die "cannot download https://$SERVER/v1/packages/capstan.deb"
    DEB=$WORK/capstan.deb
  elif ! command -v capstan >/dev/null 2>&1; then
    die "--init needs the package: --package capstan_<version>_amd64.deb or --bundle FILE"
  fi
  if [ -n "$DEB" ]; then
    install_package "$DEB"
  fi
  command -v capstan >/dev/null 2>&1 || die "capstan is not installed: /usr/bin/capstan is missing"

  if [ "$ROLE" = agent ]; then
    ensure_docker
    for f in $IMAGES; do
      say "loading the images in $(basename "$f")"
      docker load -i "$f" </dev/null >&2 || die "docker load -i $f failed"
    done
  fi

  # Pre-flight. A node that has joined already is busy on the ports the checks want free.
  if [ -f "$STATE_DIR/cluster/membership.json" ]; then
    say "this node belongs to a cluster already: skipping the pre-flight checks"
  else
    say "pre-flight checks (capstan doctor --role $ROLE)"
    if ! capstan doctor --role "$ROLE" </dev/null >&2; then
      [ -n "$SKIP_DOCTOR" ] || die "the pre-flight checks above failed: fix what they say and run this again (or add --skip-doctor)"
      say "pre-flight checks failed; going on (--skip-doctor)"
    fi
  fi

  if [ -n "$INIT" ]; then
    set -- cluster init
    [ -z "$DEB" ] || set -- "$@" --package "$DEB"
    [ -z "$ADVERTISE" ] || set -- "$@" --advertise "$ADVERTISE"
    [ -z "$CLUSTER_NAME" ] || set -- "$@" --name "$CLUSTER_NAME"
    [ -z "$NODE_NAME" ] || set -- "$@" --hostname "$NODE_NAME"
    [ -z "$SECURITY" ] || set -- "$@" --security "$SECURITY"
    [ -z "$JSON" ] || set -- "$@" --json
    # Preset tokens go in the environment, not on the command line other users can read.
    if [ -n "$AGENT_TOKEN" ]; then CAPSTAN_AGENT_TOKEN=$AGENT_TOKEN; export CAPSTAN_AGENT_TOKEN; fi
    if [ -n "$MASTER_TOKEN" ]; then CAPSTAN_MASTER_TOKEN=$MASTER_TOKEN; export CAPSTAN_MASTER_TOKEN; fi
    say "creating the cluster (capstan cluster init)"
  else
    # The token goes in the environment, not on the command line other users can read.
    CAPSTAN_JOIN_TOKEN=$TOKEN
    export CAPSTAN_JOIN_TOKEN
    set -- cluster join --server "$SERVER" --role "$ROLE" --ca "$CA_FILE"
    [ -z "$ADVERTISE" ] || set -- "$@" --advertise "$ADVERTISE"
    [ -z "$NODE_NAME" ] || set -- "$@" --hostname "$NODE_NAME"
    [ -z "$PUBLIC" ] || set -- "$@" --public
    say "joining $SERVER as $ROLE (capstan cluster join)"
  fi
  # Not exec: the temporary files (the pinned CA, the package) go once capstan is done.
  status=0
  capstan "$@" </dev/null || status=$?
  if [ "$status" -ne 0 ]; then
    die "capstan $1 $2 failed (exit $status); see above. Running this again is safe."
  fi
  say "done"
}

main "$@"
