#!/usr/bin/env bash
# The service install of test_service.py, run in mount and network namespaces of its own
# (unshare -m -n): /etc and /var/lib are overlays whose writes land in a tmpfs, and /opt is
# a tmpfs, so the user, the config, the unit and the data never reach this machine.
#
#   service_steps.sh BUNDLE_DIR OUT_DIR PREFIX
#
# Each step's output goes to OUT_DIR/NAME.out and its exit status to OUT_DIR/NAME.rc.
set -euo pipefail
bundle=$1 out=$2 prefix=$3

mount --make-rprivate /
scratch=$(mktemp -d)
mount -t tmpfs tmpfs "$scratch"  # an overlay's upper layer cannot be on overlayfs itself
for dir in /etc /var/lib; do
    layer="$scratch/${dir//\//_}"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
mount -t tmpfs tmpfs /opt

step() {  # NAME COMMAND...
    local name=$1 rc=0
    shift
    "$@" >"$out/$name.out" 2>&1 || rc=$?
    echo "$rc" >"$out/$name.rc"
}
state() {  # what is on the system now, one line each
    getent passwd cfylogs || echo "no user"
    stat -c '%n %a %U:%G' /etc/cfylogs /etc/cfylogs/alien4cloud-cfy-logs-config.yml \
        /var/lib/cfylogs /etc/systemd/system/cfylogs.service 2>&1 || true
    ls /etc/systemd/system/multi-user.target.wants/ | grep cfylogs || echo "not enabled"
    ls "$prefix" 2>&1 || true
}

unit=/etc/systemd/system/cfylogs.service
config=/etc/cfylogs/alien4cloud-cfy-logs-config.yml

step install bash "$bundle/install.sh" --prefix "$prefix"
step state-installed state
cp "$unit" "$out/installed.service" || true
step verify systemd-analyze verify "$unit"
# An operator's edit survives the next install, and a second run changes nothing else.
echo "# kept: an operator's edit" >>"$config"
step install-again bash "$bundle/install.sh" --prefix "$prefix"
step state-again state
cp "$config" "$out/config-after" || true
step uninstall bash "$prefix/current/bundle/install.sh" --uninstall
step state-uninstalled state
step purge bash "$bundle/install.sh" --uninstall --purge --prefix "$prefix"
step state-purged state
