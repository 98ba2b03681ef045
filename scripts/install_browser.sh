#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/test_browser.py).
# Idempotent: does nothing when a chromium binary is already there.
# Needs root (or sudo) and access to Debian's package mirrors; Playwright's own
# browser download is never used (Playwright drives this binary via executable_path).
set -euo pipefail

for candidate in "${NEUROCYTE_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
        echo "chromium present: $candidate ($("$candidate" --version 2>/dev/null || echo 'version unknown'))"
        exit 0
    fi
done

if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "install_browser.sh: need root or sudo to apt-get install chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get (not Debian/Ubuntu): install chromium by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
echo "chromium installed: $(/usr/bin/chromium --version)"
