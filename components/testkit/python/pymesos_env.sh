#!/usr/bin/env bash
# Creates (or reuses) a venv with pymesos from PyPI, unmodified.
# http-parser's C extension does not build on Python 3.11; pymesos falls back to the
# package's pure-Python parser, so we install the package files from the sdist without
# building the extension.
set -euo pipefail
venv="$1"
py="$venv/bin/python"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$py" ] && "$py" -c 'import pymesos, http_parser.pyparser' 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps pymesos==0.3.15
"$venv/bin/pip" install --quiet --disable-pip-version-check six addict kazoo
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" http-parser==0.9.0
tar -xzf "$tmp"/http-parser-*.tar.gz -C "$tmp"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$site/http_parser"
cp -r "$tmp"/http-parser-*/http_parser "$site/http_parser"
"$py" -c 'import pymesos, http_parser.pyparser'
