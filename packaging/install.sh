#!/usr/bin/env bash
# install.sh: install cfylogs from its offline bundle; nothing is fetched.
#
#   ./install.sh [--prefix DIR] [--no-service] [--no-start] [--python PATH]
#   ./install.sh --rollback [--prefix DIR] [--config FILE]
#   ./install.sh --uninstall [--prefix DIR] [--purge]
#
# Install (the default): a virtual environment PREFIX/versions/VERSION made
# from the bundled wheels (pip --no-index), PREFIX/current pointing at it and
# PREFIX/bin/cfylogs. As root, and unless --no-service: the cfylogs system
# user, /etc/cfylogs/alien4cloud-cfy-logs-config.yml from `cfylogs init`
# (an existing one is never touched), /var/lib/cfylogs and the systemd unit,
# enabled and started (restarted when it was running: an upgrade).
# Installing over another version keeps it as PREFIX/previous; older ones
# are removed. Running it twice is harmless.
#
#   --prefix DIR   where the program goes (default /opt/cfylogs; run from
#                  PREFIX/current/bundle/, this copy defaults to its own)
#   --no-service   the program only: no user, config, data directory or
#                  unit; needs no root
#   --no-start     install and enable the service, start nothing new
#   --python PATH  the CPython to make the environment from (default:
#                  pythonX.Y of the bundle, then python3)
#   --rollback     make PREFIX/previous the current version again (the one
#                  rolled back from becomes previous), after checking that
#                  the store's schema is one it knows; refused with the
#                  reason otherwise. Restarts the service if it was running.
#   --config FILE  the config whose store the schema check reads, on
#                  --rollback and on an install (default, with the service:
#                  /etc/cfylogs/..., its data in /var/lib/cfylogs; without:
#                  as `cfylogs serve` would find it; CFYLOGS_* apply)
#   --uninstall    remove the program and the unit; keep config and data
#   --purge        with --uninstall: also /etc/cfylogs, /var/lib/cfylogs and
#                  the cfylogs user
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi  # run as `sh install.sh`
set -euo pipefail
umask 022
unset PYTHONPATH PYTHONHOME

PROG=install.sh
SERVICE=cfylogs
ETC_DIR=/etc/cfylogs
CONFIG_FILE=$ETC_DIR/alien4cloud-cfy-logs-config.yml
STATE_DIR=/var/lib/cfylogs
UNIT_FILE=/etc/systemd/system/$SERVICE.service

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 1; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
if [ -d "$HERE/wheels" ]; then
    FROM_BUNDLE=1
    DEFAULT_PREFIX=/opt/cfylogs
else  # the copy kept in PREFIX/versions/VERSION/bundle/
    FROM_BUNDLE=0
    DEFAULT_PREFIX=$(cd "$HERE/../../.." && pwd -P)
fi

manifest() {  # FILE KEY: the value of KEY in a bundle.env
    sed -n "s/^$2=//p" "$1" | head -n 1
}

ACTION=install PREFIX=$DEFAULT_PREFIX WITH_SERVICE=1 START=1 PYTHON="" CONFIG="" PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs a path"; PYTHON=$2; shift 2 ;;
        --config) [ $# -ge 2 ] || die "--config needs a file"; CONFIG=$2; shift 2 ;;
        --no-service) WITH_SERVICE=0; shift ;;
        --no-start) START=0; shift ;;
        --rollback) ACTION=rollback; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) sed -n '2,/^[^#]/ s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown option $1 (--help lists them)" ;;
    esac
done
if [ "$PURGE" -eq 1 ] && [ "$ACTION" != uninstall ]; then
    die "--purge goes with --uninstall"
fi

case "$PREFIX" in
    *[\\\"\$%\`]* | *[[:cntrl:]]*)
        die "--prefix '$PREFIX': it may not hold \\ \" \$ % \` or control characters" ;;
esac
PREFIX=$(realpath -m -- "$PREFIX")
[ "$PREFIX" != / ] || die "--prefix / is not a place for a program of its own"
if [ "$(id -u)" -ne 0 ] && [ "$WITH_SERVICE" -eq 1 ] && [ "$ACTION" = install ]; then
    die "installing the service needs root (the cfylogs user, $ETC_DIR, the unit): run as" \
        "root, or add --no-service to install only the program into a --prefix you can write"
fi

systemd_running() { [ -d /run/systemd/system ]; }
service_is_ours() {  # the installed unit runs this prefix's cfylogs
    [ -f "$UNIT_FILE" ] && grep -qF "ExecStart=\"$PREFIX/bin/cfylogs\"" "$UNIT_FILE"
}
service_active() { systemd_running && systemctl is-active --quiet "$SERVICE"; }
link_target() {  # PREFIX/NAME -> versions/V: prints V, or nothing
    local target
    target=$(readlink "$PREFIX/$1" 2>/dev/null) || return 0
    printf '%s' "${target#versions/}"
}
switch_link() {  # NAME VERSION: PREFIX/NAME -> versions/VERSION, in one rename
    ln -sfn "versions/$2" "$PREFIX/.$1.new"
    mv -Tf "$PREFIX/.$1.new" "$PREFIX/$1"
}
take_lock() {
    mkdir -p "$PREFIX"
    exec 9>"$PREFIX/.install.lock"
    flock -n 9 || die "another install.sh is working on $PREFIX"
}

# --- the Python the bundle needs -----------------------------------------------------------
python_hint() {
    cat >&2 <<EOF
  Install CPython $1 on the manager, then run this again (or name it: --python PATH):
    RHEL, Rocky, AlmaLinux, Oracle Linux 8 and 9:  dnf install python$1
    Debian and Ubuntu:  apt-get install python$1 (Debian 12's python3 is 3.11, Ubuntu 24.04's 3.12)
    CentOS / RHEL 7, or no package:  build CPython $1 under /opt (OPERATIONS.md, What the manager needs)
  Or use a bundle built for the Python the manager has: make dist PYTHON_VERSION=X.Y
EOF
}

probe_python() {  # PYTHON: "IMPL X.Y.Z MACHINE LIBC-VERSION EXECUTABLE", or fails
    # Written for any Python, even 2, so that an old one is told what it is; the
    # executable last, as it may hold spaces (and a shim, e.g. pyenv's, is left behind).
    "$1" -c 'import platform, sys
libc = platform.libc_ver()
print(" ".join([platform.python_implementation(), "%d.%d.%d" % tuple(sys.version_info[:3]),
                platform.machine(), "%s-%s" % (libc[0] or "none", libc[1] or "0"),
                sys.executable]))' 2>/dev/null
}

check_python() {  # sets PY to a CPython that fits the bundle, or explains and exits
    local want=$1 glibc=$2 arch=$3 candidates=() candidate found="" info
    local impl="" version="" machine="" libc="" executable=""
    if [ -n "$PYTHON" ]; then
        candidates=("$PYTHON")
    else
        for candidate in "python$want" python3; do
            candidate=$(command -v "$candidate") && candidates+=("$candidate")
        done
    fi
    for candidate in ${candidates[@]+"${candidates[@]}"}; do
        info=$(probe_python "$candidate") || continue
        found=$candidate
        read -r impl version machine libc executable <<<"$info"
        if [ "$impl" = CPython ] && [ "${version%.*}" = "$want" ]; then
            break
        fi
    done
    if [ -z "$found" ]; then
        printf '%s: this bundle needs CPython %s, and there is no %s here that runs\n' \
            "$PROG" "$want" "${PYTHON:-python$want or python3}" >&2
        python_hint "$want"
        exit 1
    fi
    if [ "$impl" != CPython ] || [ "${version%.*}" != "$want" ]; then
        printf '%s: this bundle is for CPython %s (its compiled wheels are built for it); %s is %s %s\n' \
            "$PROG" "$want" "$found" "$impl" "$version" >&2
        python_hint "$want"
        exit 1
    fi
    [ "$machine" = "$arch" ] || die "this bundle is for $arch machines; this one is $machine"
    local have=${libc#glibc-}
    if [ "${libc%%-*}" != glibc ] || ! version_at_least "$have" "$glibc"; then
        die "this bundle's compiled wheels need glibc $glibc or later; this system has" \
            "${libc/-/ } (build a bundle with an older --platform: OPERATIONS.md)"
    fi
    local missing
    missing=$("$found" -c 'missing = []
for name in ("venv", "sqlite3", "ssl", "zlib"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
print(" ".join(missing))')
    [ -z "$missing" ] || die "$found lacks the module(s) $missing that cfylogs needs" \
        "(a CPython built from source needs the sqlite, openssl and zlib development" \
        "packages installed before it is built)"
    PY=${executable:-$found}
    if [ "$WITH_SERVICE" -eq 1 ]; then
        case "$(realpath -- "$PY")/" in
            /home/* | /root/* | /run/user/*)
                die "the service could not run $PY: its unit's ProtectHome hides /home, /root" \
                    "and /run/user; install CPython $want elsewhere (the distribution's, or" \
                    "under /opt) and name it with --python" ;;
        esac
    fi
    say "using $PY (CPython $version)"
}

version_at_least() {  # A B: A >= B, both MAJOR.MINOR
    local a1=${1%%.*} a2=${1#*.} b1=${2%%.*} b2=${2#*.}
    a2=${a2%%.*} b2=${b2%%.*}
    [ "$a1" -gt "$b1" ] || { [ "$a1" -eq "$b1" ] && [ "$a2" -ge "$b2" ]; }
}

# --- one version's environment -------------------------------------------------------------
render_unit() {  # TEMPLATE OUT: the unit with ExecStart at this prefix
    local line
    {
        printf '# Installed by install.sh for %s: edits here are lost on the next\n' "$PREFIX"
        printf '# install; put them in an override (systemctl edit %s).\n' "$SERVICE"
        while IFS= read -r line || [ -n "$line" ]; do
            case "$line" in
                ExecStart=/opt/cfylogs/bin/cfylogs*)
                    printf 'ExecStart="%s/bin/cfylogs"%s\n' "$PREFIX" "${line#ExecStart=/opt/cfylogs/bin/cfylogs}" ;;
                *) printf '%s\n' "$line" ;;
            esac
        done <"$1"
    } >"$2"
    grep -qF "ExecStart=\"$PREFIX/bin/cfylogs\"" "$2" || die "$1 has no ExecStart to render"
}

make_version() {  # DIR: a virtual environment of the bundle's wheels, with its bundle files
    local dir=$1 pip_wheel
    pip_wheel=$(printf '%s\n' "$HERE"/installer/pip-*.whl | head -n 1)
    [ -f "$pip_wheel" ] || die "the bundle has no installer/pip-*.whl: is it complete?"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    "$PY" -m venv --without-pip "$dir"
    # pip run from its wheel, isolated from any pip.conf or PIP_* of this machine
    "$dir/bin/python" "$pip_wheel/pip" install --isolated --no-index --no-cache-dir \
        --disable-pip-version-check --no-warn-script-location --quiet \
        --only-binary=:all: --require-hashes --find-links "$HERE/wheels" \
        -r "$HERE/requirements.txt"
    "$dir/bin/cfylogs" --version >/dev/null
    mkdir "$dir/bundle"
    cp "$HERE/install.sh" "$HERE/bundle.env" "$HERE/store_schema.py" "$dir/bundle/"
    render_unit "$HERE/cfylogs.service" "$dir/bundle/cfylogs.service"
    manifest "$HERE/bundle.env" BUNDLE_ID >"$dir/bundle/.complete"
}

version_complete() {  # DIR BUNDLE_ID
    [ -f "$1/bundle/.complete" ] && [ "$(cat "$1/bundle/.complete")" = "$2" ]
}

store_allows() {  # RUNNER TARGET: may the version in TARGET run on the store?
    local runner=$1 target=$2 args=()
    if [ -n "$CONFIG" ]; then
        args+=(--config "$CONFIG")
    elif service_is_ours || { [ "$WITH_SERVICE" -eq 1 ] && [ "$ACTION" = install ]; }; then
        [ -f "$CONFIG_FILE" ] || return 0  # a first install: no store yet
        args+=(--config "$CONFIG_FILE" --home "$STATE_DIR")
    fi
    # ${a[@]+...}: an empty array is "unbound" to the bash 4.2 of RHEL 7
    "$runner/bin/python" -I "$runner/bundle/store_schema.py" check \
        "$target/bundle/bundle.env" ${args[@]+"${args[@]}"} 2>&1 | sed "s/^/$PROG: /"
    return "${PIPESTATUS[0]}"
}

prune() {  # remove every version but current and previous
    local current previous dir
    current=$(link_target current) previous=$(link_target previous)
    for dir in "$PREFIX"/versions/*; do
        [ -e "$dir" ] || continue
        case "${dir##*/}" in
            "$current" | "$previous") ;;
            *) rm -rf "$dir"; say "removed ${dir##*/}" ;;
        esac
    done
}

# --- the service ---------------------------------------------------------------------------
ensure_user() {
    if getent passwd cfylogs >/dev/null; then
        return
    fi
    local nologin group=(--user-group)
    nologin=$(command -v nologin || echo /sbin/nologin)
    if getent group cfylogs >/dev/null; then
        group=(--gid cfylogs)
    fi
    useradd --system "${group[@]}" --home-dir "$STATE_DIR" --no-create-home \
        --shell "$nologin" cfylogs
    say "created the system user cfylogs"
}

check_service_user_runs() {  # DIR: the version's cfylogs runs as the service's user
    if ! setpriv --reuid=cfylogs --regid=cfylogs --init-groups "$1/bin/cfylogs" --version \
        >/dev/null 2>&1; then
        die "the cfylogs user cannot run $1/bin/cfylogs: every directory above the prefix" \
            "and above $PY must be searchable by others (mode o+x)"
    fi
}

ensure_config_and_data() {
    if [ ! -d "$ETC_DIR" ]; then
        install -d -m 0750 -o root -g cfylogs "$ETC_DIR"
    fi
    if [ -e "$CONFIG_FILE" ]; then
        say "kept $CONFIG_FILE"
    else
        "$PREFIX/bin/cfylogs" init "$CONFIG_FILE" >/dev/null
        chgrp cfylogs "$CONFIG_FILE"
        chmod 0640 "$CONFIG_FILE"  # it may come to hold passwords and tokens
        say "wrote the default config $CONFIG_FILE"
    fi
    if [ ! -d "$STATE_DIR" ]; then
        install -d -m 0700 -o cfylogs -g cfylogs "$STATE_DIR"
    fi
}

install_unit() {  # WAS_ACTIVE CHANGED FRESH: the current version's unit, enabled, (re)started
    local was_active=$1 changed=$2 fresh=$3
    if ! cmp -s "$PREFIX/current/bundle/cfylogs.service" "$UNIT_FILE"; then
        install -m 0644 "$PREFIX/current/bundle/cfylogs.service" "$UNIT_FILE"
        say "installed $UNIT_FILE"
        changed=1
    fi
    if ! systemd_running; then  # e.g. a container or a chroot: enabling works offline
        systemctl enable "$SERVICE" >/dev/null 2>&1 || say "could not enable $SERVICE"
        say "systemd is not running here: start $SERVICE when it is"
        return
    fi
    if [ "$changed" -eq 1 ]; then
        systemctl daemon-reload
    fi
    systemctl enable --quiet "$SERVICE"
    if [ "$was_active" -eq 1 ]; then
        if [ "$changed" -eq 1 ]; then
            systemctl restart "$SERVICE"
            say "restarted $SERVICE"
        fi
    elif [ "$fresh" -eq 1 ] && [ "$START" -eq 1 ]; then
        systemctl start "$SERVICE"
        say "started $SERVICE (systemctl status $SERVICE; journalctl -u $SERVICE)"
    else
        say "$SERVICE is enabled, not running: systemctl start $SERVICE"
    fi
}

# --- the actions ---------------------------------------------------------------------------
do_install() {
    [ "$FROM_BUNDLE" -eq 1 ] || die "this copy only rolls back and uninstalls; install from a bundle"
    local version bundle_id
    version=$(manifest "$HERE/bundle.env" CFYLOGS_VERSION)
    bundle_id=$(manifest "$HERE/bundle.env" BUNDLE_ID)
    case "$version" in ''|*[!A-Za-z0-9.+_-]*) die "bundle.env has no usable CFYLOGS_VERSION" ;; esac
    check_python "$(manifest "$HERE/bundle.env" PYTHON_VERSION)" \
        "$(manifest "$HERE/bundle.env" GLIBC)" "$(manifest "$HERE/bundle.env" ARCH)"
    if [ "$WITH_SERVICE" -eq 1 ]; then
        case "$PREFIX/" in
            /home/* | /root/* | /run/user/* | /tmp/* | /var/tmp/*)
                die "--prefix $PREFIX: the service could not see it (its unit has ProtectHome" \
                    "and PrivateTmp); choose one elsewhere, or add --no-service" ;;
        esac
    fi
    if [ -e "$PREFIX/pyvenv.cfg" ]; then
        die "$PREFIX holds a virtual environment installed by hand (the wheel way): move it" \
            "away first (mv $PREFIX $PREFIX.old), or choose another --prefix"
    fi
    take_lock

    local dir=$PREFIX/versions/$version current was_active=0 fresh=0 built=0
    current=$(link_target current)
    [ -n "$current" ] || fresh=1
    service_active && was_active=1
    if version_complete "$dir" "$bundle_id"; then
        say "cfylogs $version is in $PREFIX already"
    else
        if [ "$current" = "$version" ] && [ "$was_active" -eq 1 ]; then
            systemctl stop "$SERVICE"  # its environment is about to be replaced
        fi
        say "installing cfylogs $version into $dir"
        make_version "$dir"
        built=1
    fi
    if ! store_allows "$dir" "$dir"; then
        if [ "$built" -eq 1 ] && [ "$current" != "$version" ]; then
            rm -rf "$dir"
        fi
        die "not switching to cfylogs $version"
    fi
    if [ "$WITH_SERVICE" -eq 1 ]; then
        ensure_user
        check_service_user_runs "$dir"
    fi
    if [ -n "$current" ] && [ "$current" != "$version" ]; then
        switch_link previous "$current"
    fi
    switch_link current "$version"
    mkdir -p "$PREFIX/bin"
    ln -sfn ../current/bin/cfylogs "$PREFIX/bin/cfylogs"
    prune
    local changed=0
    if [ "$built" -eq 1 ] || [ "$current" != "$version" ]; then
        changed=1
    fi
    if [ "$WITH_SERVICE" -eq 1 ]; then
        ensure_config_and_data
        install_unit "$was_active" "$changed" "$fresh"
    elif [ "$changed" -eq 1 ] && service_active && service_is_ours; then
        say "the $SERVICE service still runs the version before: systemctl restart $SERVICE"
    fi
    local previous
    previous=$(link_target previous)
    say "cfylogs $version is current in $PREFIX${previous:+ (previous: $previous)}"
}

do_rollback() {
    local current previous was_active=0
    current=$(link_target current) previous=$(link_target previous)
    [ -n "$current" ] || die "no cfylogs installed in $PREFIX"
    if [ -z "$previous" ] || [ ! -d "$PREFIX/versions/$previous" ]; then
        die "no previous version in $PREFIX to go back to"
    fi
    take_lock
    store_allows "$PREFIX/versions/$current" "$PREFIX/versions/$previous" \
        || die "not rolling back to cfylogs $previous"
    local ours=0
    if [ "$(id -u)" -eq 0 ] && service_is_ours; then
        ours=1
        service_active && was_active=1
    fi
    # As an upgrade: the running one goes on from its own environment until the restart.
    switch_link current "$previous"
    switch_link previous "$current"
    if [ "$ours" -eq 1 ]; then
        install_unit "$was_active" 1 0
    fi
    say "cfylogs $previous is current in $PREFIX again (previous: $current)"
}

do_uninstall() {
    if [ -f "$UNIT_FILE" ] && service_is_ours; then
        [ "$(id -u)" -eq 0 ] || die "removing the service needs root"
        if systemd_running; then
            systemctl disable --now --quiet "$SERVICE" || true
        else
            systemctl disable "$SERVICE" >/dev/null 2>&1 || true
        fi
        rm -f "$UNIT_FILE"
        systemd_running && systemctl daemon-reload
        say "removed the service $SERVICE"
    fi
    if [ -d "$PREFIX/versions" ] || [ -L "$PREFIX/current" ]; then
        rm -rf "$PREFIX/versions" "$PREFIX/current" "$PREFIX/previous" "$PREFIX/bin/cfylogs" \
            "$PREFIX/.install.lock" "$PREFIX"/.*.new
        rmdir "$PREFIX/bin" "$PREFIX" 2>/dev/null || true
        say "removed cfylogs from $PREFIX"
    else
        say "no cfylogs in $PREFIX"
    fi
    if [ "$PURGE" -eq 1 ]; then
        [ "$(id -u)" -eq 0 ] || die "--purge needs root"
        rm -rf "$ETC_DIR" "$STATE_DIR"
        if getent passwd cfylogs >/dev/null; then
            userdel cfylogs
        fi
        say "removed $ETC_DIR, $STATE_DIR and the user cfylogs"
    elif [ -e "$ETC_DIR" ] || [ -e "$STATE_DIR" ]; then
        say "kept the config ($ETC_DIR) and the data ($STATE_DIR): --uninstall --purge removes them"
    fi
}

case "$ACTION" in
    install) do_install ;;
    rollback) do_rollback ;;
    uninstall) do_uninstall ;;
esac
