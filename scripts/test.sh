#!/usr/bin/env bash
# THE test command (README, CI): makes sure the tests' system packages are there (Chromium and
# chromedriver, PostgreSQL's server), then runs every test. tests/browser.rs drives Debian's Chromium through chromedriver; it fails (it
# does not skip) when they are missing, so install them here rather than in the test.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/failover.rs (and the whole suite with ROLLCALL_TEST_STORE=postgres) start throwaway
# PostgreSQL clusters from Debian's server binaries (tests/common/postgres.rs).
packages=()
if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
    packages+=(chromium chromium-driver)
fi
if [ -z "${ROLLCALL_TEST_PG_BIN:-}" ] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    packages+=(postgresql)
fi
if [ "${#packages[@]}" -gt 0 ]; then
    echo "scripts/test.sh: installing ${packages[*]} (Debian packages) for the tests"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    else
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi

exec cargo test "$@"
