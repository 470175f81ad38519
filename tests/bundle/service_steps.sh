#!/usr/bin/env bash
# The service installs of test_service.py, run in mount and network namespaces of their own
# (unshare -m -n): /etc and /var/lib are overlays whose writes land in a tmpfs, /opt and
# /run are tmpfs, so the user, the config, the unit and the data never reach this machine.
#
#   service_steps.sh offline BUNDLE_DIR OUT_DIR PREFIX PYTHON
#       as on a machine where systemd is installed but not running (a container):
#       install, systemd-analyze verify, install again, uninstall, uninstall --purge
#   service_steps.sh running BUNDLE_DIR OLD_BUNDLE_DIR OUT_DIR PREFIX PYTHON
#       with a running service: systemd cannot run here, so a stand-in systemctl
#       (first on PATH) records each call with where PREFIX/current points then, and
#       keeps the unit's state; install old, upgrade, install again, rollback, uninstall
#
# Each step's output goes to OUT_DIR/NAME.out and its exit status to OUT_DIR/NAME.rc.
set -euo pipefail
scenario=$1
shift

mount --make-rprivate /
scratch=$(mktemp -d)
mount -t tmpfs tmpfs "$scratch"  # an overlay's upper layer cannot be on overlayfs itself
for dir in /etc /var/lib; do
    layer="$scratch/${dir//\//_}"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
mount -t tmpfs tmpfs /opt
mount -t tmpfs tmpfs /run

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
    if [ -e /etc/systemd/system/multi-user.target.wants/cfylogs.service ]; then
        echo "enabled: multi-user.target.wants/cfylogs.service"
    else
        echo "not enabled"
    fi
    ls "$prefix" 2>&1 || true
}
unit=/etc/systemd/system/cfylogs.service
config=/etc/cfylogs/alien4cloud-cfy-logs-config.yml

if [ "$scenario" = offline ]; then
    bundle=$1 out=$2 prefix=$3 python=$4
    # The tests' own Python, when it lives under a home the unit hides: refused.
    step install-home-python bash "$bundle/install.sh" --prefix "$prefix" --python "$SELF_PYTHON"
    step install bash "$bundle/install.sh" --prefix "$prefix" --python "$python"
    step state-installed state
    cp "$unit" "$out/installed.service" || true
    step verify systemd-analyze verify "$unit"
    # An operator's edit survives the next install, and a second run changes nothing else.
    echo "# kept: an operator's edit" >>"$config"
    step install-again bash "$bundle/install.sh" --prefix "$prefix" --python "$python"
    step state-again state
    cp "$config" "$out/config-after" || true
    # With a store of the service's (stopped), which the check reads.
    store=/var/lib/cfylogs/cfylogs.sqlite3
    setpriv --reuid=cfylogs --regid=cfylogs --clear-groups "$prefix/current/bin/python" -c "
import sqlite3
conn = sqlite3.connect('$store')
conn.execute('PRAGMA journal_mode = WAL')
conn.execute('CREATE TABLE meta (key TEXT PRIMARY KEY, value)')
conn.execute(\"INSERT INTO meta VALUES ('schema_version', 1)\")
conn.commit()
conn.close()"
    step install-with-store bash "$bundle/install.sh" --prefix "$prefix" --python "$python"
    step store-files stat -c '%n %U' "$store" "$store-wal" "$store-shm"
    step uninstall bash "$prefix/current/bundle/install.sh" --uninstall
    step state-uninstalled state
    step purge bash "$bundle/install.sh" --uninstall --purge --prefix "$prefix"
    step state-purged state
    exit 0
fi

bundle=$1 old=$2 out=$3 prefix=$4 python=$5
mkdir -p /run/systemd/system "$scratch/bin"  # what sd_booted() looks at: systemd "runs"
cat >"$scratch/bin/systemctl" <<EOF
#!/usr/bin/env bash
# systemctl's stand-in: log the call, keep the unit's state in a file.
echo "\$* (current: \$(readlink "$prefix/current"))" >>"$out/systemctl.log"
state="$scratch/active"
case "\$1" in
    is-active) [ -e "\$state" ] ;;
    start|restart) touch "\$state" ;;
    stop) rm -f "\$state" ;;
    disable) case " \$* " in *" --now "*) rm -f "\$state" ;; esac ;;
esac
EOF
chmod +x "$scratch/bin/systemctl"
export PATH="$scratch/bin:$PATH"
mark() { echo "--- $1" >>"$out/systemctl.log"; }

mark install-old
step install-old bash "$old/install.sh" --prefix "$prefix" --python "$python"
mark upgrade
step upgrade bash "$bundle/install.sh" --prefix "$prefix" --python "$python"
mark install-again
step install-again bash "$bundle/install.sh" --prefix "$prefix" --python "$python"
mark rollback
step rollback bash "$prefix/current/bundle/install.sh" --rollback
mark uninstall
step uninstall bash "$prefix/current/bundle/install.sh" --uninstall
