#!/usr/bin/env bash
# The tests start a PostgreSQL server of their own (tests/pgserver.py) from the
# distribution's server binaries. Install them when absent; do nothing otherwise.
set -euo pipefail

if compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "ensure-postgres: no PostgreSQL server under /usr/lib/postgresql and no apt-get;" \
         "install PostgreSQL's server package by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "ensure-postgres: installing the postgresql package for the test suite" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# The package's own cluster is not wanted: the tests run theirs in a temporary directory.
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
