#!/usr/bin/env bash
# Creates (or reuses) the virtualenv checkov runs in (PyPI's checkov, pinned). Its own venv:
# checkov pulls bc-python-hcl2, which installs the same `hcl2` module python-hcl2 does.
# Usage: terraform/tools/checkov-env.sh VENV   (idempotent; concurrent callers wait on a lock)
set -euo pipefail
venv="$1"
want='checkov==3.3.30'
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/checkov" ] && [ "$(cat "$venv/.capstan-want" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC2086 # $want is a list of requirement specifiers
"$venv/bin/pip" install --quiet --disable-pip-version-check $want
"$venv/bin/checkov" --version >/dev/null
printf '%s' "$want" >"$venv/.capstan-want"
