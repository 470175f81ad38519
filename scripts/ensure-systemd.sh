#!/usr/bin/env bash
# The bundle's tests (tests/bundle/) check the installed unit with systemd-analyze verify
# (systemd need not be running). Install it when absent; do nothing otherwise.
set -euo pipefail

if command -v systemd-analyze >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "ensure-systemd: no systemd-analyze and no apt-get; install systemd's tools by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "ensure-systemd: installing the systemd package for systemd-analyze" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
