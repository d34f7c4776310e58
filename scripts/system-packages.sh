#!/usr/bin/env bash
# Install the Debian packages named on the command line when their binaries are missing.
# Usage: scripts/system-packages.sh [--optional] package[:binary] ...
# With --optional, a failure (no root, no apt) is reported and ignored.
set -euo pipefail

optional=0
if [ "${1:-}" = "--optional" ]; then optional=1; shift; fi

missing=()
for spec in "$@"; do
  package=${spec%%:*}
  binary=${spec#*:}
  command -v "$binary" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "cannot install ${missing[*]}: needs root and apt-get" >&2
  [ $optional -eq 1 ] && exit 0 || exit 1
fi
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "apt-get could not install ${missing[*]}" >&2
  [ $optional -eq 1 ] && exit 0 || exit 1
fi
