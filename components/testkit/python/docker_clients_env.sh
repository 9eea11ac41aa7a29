#!/usr/bin/env bash
# Creates (or reuses) the venvs of the Docker API clients swarm's tests drive, from PyPI,
# unmodified. Usage: docker_clients_env.sh <sdk venv dir> <compose venv dir>
#   sdk      the Python docker SDK 7.1.0 on today's python3.
#   compose  docker-compose 1.29.2 (the v1 Python tool) on Python 3.9 when one is found (pyenv's
#            or python3.9 on PATH), else on python3 (see below), with the pins it needs to run
#            at all (../shared/reference/l4lb-and-docker-api.md, issue 17): docker==6.1.3,
#            requests==2.31.0 and urllib3<2 (newer ones break it).
# COMPOSE_PYTHON=<interpreter> skips the search for a 3.9 and builds compose's venv with it.
# Idempotent (a venv whose clients import is kept); a lock file serializes concurrent set-ups.
set -euo pipefail
sdk="${1:?usage: docker_clients_env.sh <sdk venv> <compose venv>}"
compose="${2:?usage: docker_clients_env.sh <sdk venv> <compose venv>}"
pip_args=(install --quiet --disable-pip-version-check --no-cache-dir)

mkdir -p "$(dirname "$sdk")" "$(dirname "$compose")"
exec 9>"$sdk.lock"
flock 9
if ! { [ -x "$sdk/bin/python" ] && "$sdk/bin/python" -c 'import docker; assert docker.__version__ == "7.1.0"' 2>/dev/null; }; then
    rm -rf "$sdk"
    python3 -m venv "$sdk"
    "$sdk/bin/pip" "${pip_args[@]}" docker==7.1.0
    "$sdk/bin/python" -c 'import docker; assert docker.__version__ == "7.1.0"'
fi

# A Python 3.9 that runs (pyenv's, or python3.9 on PATH).
find_py39() {
    local c
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3.9 "$(command -v python3.9 || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 1
}
if ! { [ -x "$compose/bin/docker-compose" ] && "$compose/bin/docker-compose" version --short 2>/dev/null | grep -qx 1.29.2; }; then
    rm -rf "$compose"
    if [ -z "${COMPOSE_PYTHON:-}" ] && py39="$(find_py39)"; then
        "$py39" -m venv "$compose"
    else
        # Today's python3 (Debian's 3.11): PyYAML 5.4.1 (compose wants <6) has no wheel there
        # and its sdist does not build with Cython 3, so it is built first with Cython<3.
        "${COMPOSE_PYTHON:-python3}" -m venv "$compose"
        "$compose/bin/pip" "${pip_args[@]}" 'cython<3' wheel setuptools
        "$compose/bin/pip" "${pip_args[@]}" --no-build-isolation PyYAML==5.4.1
    fi
    "$compose/bin/pip" "${pip_args[@]}" docker-compose==1.29.2 docker==6.1.3 requests==2.31.0 'urllib3<2'
    "$compose/bin/docker-compose" version --short | grep -qx 1.29.2
fi
