#!/usr/bin/env bash
# Makes a headless Chromium available for the status page's browser test
# (test/integration: TestStatusPageInABrowser). Idempotent: when one is
# found it changes nothing. Never fatal: without a browser that test skips
# and says so.
#
# Order, first match wins:
#   1. $SNAKEPIT_CHROMIUM, if it names an executable (never modified);
#   2. chromium, chromium-browser, google-chrome, google-chrome-stable or
#      chrome on PATH;
#   3. as root with apt-get: Debian's chromium package (apt-get update only
#      if the install fails without it).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log_file="$root/.snakepit/install-browser.log"
mkdir -p "$root/.snakepit"

if [[ -n "${SNAKEPIT_CHROMIUM:-}" ]]; then
  if command -v "$SNAKEPIT_CHROMIUM" >/dev/null 2>&1; then
    exit 0
  fi
  echo "install-browser: \$SNAKEPIT_CHROMIUM=$SNAKEPIT_CHROMIUM is not executable; the browser test will fail until it is" >&2
  exit 0
fi

for name in chromium chromium-browser google-chrome google-chrome-stable chrome; do
  command -v "$name" >/dev/null 2>&1 && exit 0
done

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: installing chromium with apt-get for the status page's browser test (log: $log_file)"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -q chromium >>"$log_file" 2>&1 ||
    { apt-get update -q >>"$log_file" 2>&1 && apt-get install -y -q chromium >>"$log_file" 2>&1; }; then
    command -v chromium >/dev/null 2>&1 && exit 0
  fi
  echo "install-browser: note: apt-get install chromium failed (see $log_file); the status page's browser test will be skipped" >&2
  exit 0
fi

echo "install-browser: note: no Chromium found and not root with apt-get; the status page's browser test will be skipped." >&2
echo "  Install one (Debian/Ubuntu, as root: apt-get install -y chromium) or set SNAKEPIT_CHROMIUM=/path/to/chromium" >&2
exit 0
