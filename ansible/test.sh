#!/usr/bin/env bash
# The Ansible role's offline checks: the example inventory parses into the masters and agents
# groups, `ansible-playbook --syntax-check site.yml`, and `ansible-lint` (production profile,
# offline). The virtualenv comes from tools/env.sh (under target/ unless CAPSTAN_ANSIBLE_ENV
# says otherwise). Prints "ansible checks: ok" at the end; exits non-zero on the first failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
venv=${CAPSTAN_ANSIBLE_ENV:-${CARGO_TARGET_DIR:-$repo/target}/ansible-env}
"$here/tools/env.sh" "$venv"
export PATH="$venv/bin:$PATH"
step() { printf 'ansible checks: %s\n' "$*"; }
fail() { printf 'ansible checks: FAILED: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/capstan-ansible.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Never the user's Ansible configuration or collections; nothing from Galaxy.
export ANSIBLE_CONFIG="$here/ansible.cfg" ANSIBLE_HOME="$work/home" ANSIBLE_LOCAL_TEMP="$work/tmp"
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_STDOUT_CALLBACK=default NO_COLOR=1
cd "$here"

step "inventory.example.ini"
graph=$(ansible-inventory -i inventory.example.ini --graph) || fail "ansible-inventory"
for h in master1 master2 master3 agent1 agent2 public1; do
  printf '%s\n' "$graph" | grep -q -- "--$h\$" || fail "inventory lacks $h"
done
printf '%s\n' "$graph" | grep -q -- '--@masters:' || fail "inventory lacks the masters group"
printf '%s\n' "$graph" | grep -q -- '--@agents:' || fail "inventory lacks the agents group"

step "ansible-playbook --syntax-check site.yml"
ansible-playbook -i inventory.example.ini --syntax-check site.yml || fail "syntax-check"

step "ansible-lint"
ansible-lint --offline -q site.yml roles/capstan || fail "ansible-lint"

step "ok"
