#!/usr/bin/env bash
# Creates (or reuses) a venv with the real DC/OS CLI from PyPI, dcoscli==0.6.1 (and dcos==0.6.1),
# unmodified: no file of the CLI is edited. Usage: dcoscli_env.sh <venv dir>
#
# Two recipes (../shared/reference/dcos-cli-router-catalog.md §1):
#   A  a Python 3.6 interpreter: a plain `pip install dcoscli==0.6.1` (its 2018 pins all have
#      wheels there). Chosen when a 3.6 is found (pyenv's versions/3.6*, or python3.6 on PATH).
#   B  today's python3: the CLI's own dependency pins cannot install there (cryptography 2.0.2
#      has no wheel and its 2017 sdist does not build), so the CLI is installed --no-deps and its
#      dependencies within the declared ranges, with cryptography 36.0.2 (the newest line that
#      still has the `signer()` PyJWT 1.4.2 calls) and setuptools (for `pkg_resources`), plus a
#      shim for the CLI's own incompatibility with new Python (see below).
# DCOSCLI_RECIPE=A|B forces a recipe (A fails when no Python 3.6 is found).
# Idempotent: a marker file in the venv names the recipe it was built with; a venv without it
# (a broken earlier run) or built with the other recipe is made anew. A lock file serializes
# concurrent set-ups.
set -euo pipefail
venv="${1:?usage: dcoscli_env.sh <venv dir>}"
marker="$venv/.capstan-dcoscli-0.6.1"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

# A Python 3.6 that runs, or nothing.
find_py36() {
    local c
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.6*/bin/python3.6 "$(command -v python3.6 || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 6)' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

recipe="${DCOSCLI_RECIPE:-}"
py36=""
case "$recipe" in
    A) py36="$(find_py36)" || { echo "DCOSCLI_RECIPE=A but no Python 3.6 found" >&2; exit 1; } ;;
    B) ;;
    "") if py36="$(find_py36)"; then recipe=A; else recipe=B; fi ;;
    *) echo "DCOSCLI_RECIPE must be A or B, not '$recipe'" >&2; exit 1 ;;
esac

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$recipe" ] && [ -x "$venv/bin/dcos" ]; then
    exit 0
fi
rm -rf "$venv"

pip=("$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir)
if [ "$recipe" = A ]; then
    "$py36" -m venv "$venv"
    # The set pip resolves for dcoscli 0.6.1 on 3.6 (reference §1.2), pinned so it cannot drift.
    cons="$venv/constraints.txt"
    cat >"$cons" <<'EOF'
asn1crypto==1.5.1
certifi==2025.4.26
cffi==1.15.1
charset-normalizer==2.0.12
cryptography==2.0.2
dcos==0.6.1
docopt==0.6.2
idna==3.10
jsonschema==2.6.0
pager==3.3
pkginfo==1.2.1
prettytable==0.7.2
pycparser==2.21
Pygments==2.14.0
PyJWT==1.4.2
requests==2.27.1
retrying==1.3.3
six==1.17.0
sseclient==0.0.19
toml==0.10.2
urllib3==1.26.20
virtualenv==15.2.0
EOF
    "${pip[@]}" -c "$cons" dcoscli==0.6.1
else
    python3 -m venv "$venv"
    "${pip[@]}" --no-deps dcoscli==0.6.1 dcos==0.6.1
    "${pip[@]}" 'jsonschema>=2.5,<3.0' 'pager>=3.3,<4.0' 'prettytable>=0.7,<1.0' PyJWT==1.4.2 \
        'pygments>=2.0,<3.0' 'requests>=2.6,<3.0' 'six>=1.9,<2.0' 'toml>=0.9,<1.0' sseclient==0.0.19 \
        retrying==1.3.3 'docopt>=0.6,<1.0' pkginfo==1.2.1 'virtualenv>=13.0,<16.0' \
        cryptography==36.0.2 setuptools
    # The shim: the CLI itself (not our servers) uses collections.Mapping, MutableMapping and
    # Sequence, aliases Python 3.10 removed; restore them from collections.abc at start-up. It
    # is loaded by a .pth file rather than a sitecustomize.py, which a distribution's own
    # sitecustomize (Debian ships one) would shadow. No file of the CLI is edited.
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    cat >"$site/capstan_dcoscli_compat.py" <<'EOF'
"""Restores the collections ABC aliases removed in Python 3.10, for dcoscli 0.6.1."""
import collections
import collections.abc

for _n in ("Mapping", "MutableMapping", "Sequence", "Callable", "Iterable"):
    if not hasattr(collections, _n):
        setattr(collections, _n, getattr(collections.abc, _n))
EOF
    echo "import capstan_dcoscli_compat" >"$site/capstan_dcoscli_compat.pth"
fi

# Smoke test with a throw-away config dir (never ~/.dcos); no cluster is set, so no traffic.
dcos_dir="$(mktemp -d)"
trap 'rm -rf "$dcos_dir"' EXIT
out="$(DCOS_DIR="$dcos_dir" "$venv/bin/dcos" --version)"
case "$out" in
    *dcoscli.version=0.6.1*) ;;
    *) echo "dcos --version did not report 0.6.1: $out" >&2; exit 1 ;;
esac
echo "$recipe" >"$marker"
