#!/usr/bin/env bash
# THE test command (README, CI): makes sure the browser tests' system packages are there, then
# runs every test. tests/browser.rs drives Debian's Chromium through chromedriver; it fails (it
# does not skip) when they are missing, so install them here rather than in the test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
    echo "scripts/test.sh: installing chromium and chromium-driver (Debian packages) for tests/browser.rs"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    else
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi

exec cargo test "$@"
