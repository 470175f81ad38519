#!/usr/bin/env bash
# What the test suite needs from the system, installed from the distribution's packages
# when absent (one apt-get for all); nothing is done when everything is there.
#   postgresql       the server binaries the tests start clusters with (tests/pgserver.py);
#                    the package's own cluster is not used
#   chromium,        the headless browser and its driver for the console's tests
#   chromium-driver  (tests/browser/)
#   systemd          systemd-analyze, which checks the bundle's unit (tests/bundle/)
set -euo pipefail

need=()
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "ensure-test-tools: missing ${need[*]} and no apt-get; install those packages by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "ensure-test-tools: installing ${need[*]} for the test suite" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
