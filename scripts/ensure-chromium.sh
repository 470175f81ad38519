#!/usr/bin/env bash
# The browser tests (tests/browser/) drive the distribution's headless Chromium
# with its chromedriver. Install both when absent; do nothing otherwise.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "ensure-chromium: no /usr/bin/chromium or /usr/bin/chromedriver and no apt-get;" \
         "install the chromium and chromium-driver packages by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "ensure-chromium: installing chromium and chromium-driver for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
