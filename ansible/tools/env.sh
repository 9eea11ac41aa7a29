#!/usr/bin/env bash
# Creates (or reuses) the virtualenv the Ansible checks run in: ansible (the full package, which
# bundles community.docker; Galaxy is not reachable) and ansible-lint, pinned, from PyPI.
# Usage: ansible/tools/env.sh VENV   (idempotent; concurrent callers wait on a lock)
set -euo pipefail
venv="$1"
want='ansible==12.3.0 ansible-lint==26.10.1'
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/ansible-playbook" ] && [ "$(cat "$venv/.capstan-want" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC2086 # $want is a list of requirement specifiers
"$venv/bin/pip" install --quiet --disable-pip-version-check $want
"$venv/bin/ansible-playbook" --version >/dev/null
"$venv/bin/ansible-lint" --version >/dev/null
printf '%s' "$want" >"$venv/.capstan-want"
