#!/usr/bin/env bash
# Runs lintian on a capstan .deb: fails on any error, and on any warning whose tag is not in
# packaging/lintian-allow (each listed with the reason it is acceptable). Informational tags
# are printed, never fatal.
#
#   packaging/lint-deb.sh target/debian/capstan_0.1.0-1_amd64.deb
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "lint-deb: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: packaging/lint-deb.sh FILE.deb"
deb=$1
[ -f "$deb" ] || die "no such package: $deb"
command -v lintian >/dev/null 2>&1 || die "lintian is not installed (apt-get install lintian)"

# The allowed warning tags; an entry without a justification is itself an error.
declare -A allowed=()
while read -r tag reason; do
  case "$tag" in '' | '#'*) continue ;; esac
  [ -n "$reason" ] || die "packaging/lintian-allow: $tag has no justification"
  allowed[$tag]=1
done <"$here/lintian-allow"

# --fail-on none: the verdict is ours; a non-zero exit means lintian itself failed. Its
# "running with root privileges" notice goes to stderr and is dropped.
report=$(lintian --fail-on none --no-tag-display-limit --show-overrides "$deb" 2>/dev/null) \
  || die "lintian failed on $deb (run: lintian $deb)"

errors=0
warnings=0
declare -A seen=()
while IFS= read -r line; do
  case "$line" in
    E:*)
      echo "$line"
      errors=$((errors + 1))
      ;;
    W:*)
      # W: capstan: tag-name [context]
      tag=$(echo "$line" | awk '{ print $3 }')
      seen[$tag]=1
      if [ -n "${allowed[$tag]:-}" ]; then
        echo "$line (allowed: packaging/lintian-allow)"
      else
        echo "$line"
        warnings=$((warnings + 1))
      fi
      ;;
    I:* | P:* | X:* | O:*) echo "$line" ;;
  esac
done <<<"$report"

for tag in "${!allowed[@]}"; do
  [ -n "${seen[$tag]:-}" ] || echo "lint-deb: note: allowed warning $tag did not occur"
done

if [ "$errors" -gt 0 ] || [ "$warnings" -gt 0 ]; then
  die "$deb: $errors lintian error(s) and $warnings warning(s) not in packaging/lintian-allow"
fi
echo "lint-deb: $deb is lintian-clean (allowed warnings only)"
