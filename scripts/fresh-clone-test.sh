#!/usr/bin/env bash
# `make test` as a newcomer runs it: a fresh clone in a temporary directory, run several times
# in a row, each run's pytest summary printed. Exits 1 if any run failed.
#
#   scripts/fresh-clone-test.sh [--runs N] [--branch NAME] [--remove-user] [--keep] [REPO]
#
# REPO: what to clone (default: the repository holding this script), at --branch (default:
# its checked-out branch). --runs: how many runs (default 3). --remove-user: first delete the
# system user the tests' PostgreSQL runs as (cfylogs-pg, or $CFYLOGS_TEST_PG_USER), as on a
# machine that never ran the tests; it breaks test runs going on meanwhile, so only where none
# is. --keep: keep the clone (kept anyway when a run failed). The logs are in the clone.
set -euo pipefail

runs=3
branch=""
remove_user=0
keep=0
repo=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --branch) branch="$2"; shift 2 ;;
        --remove-user) remove_user=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        -*) echo "fresh-clone-test: unknown option $1" >&2; exit 2 ;;
        *) repo="$1"; shift ;;
    esac
done
repo="${repo:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}"

clone="$(mktemp -d /tmp/cfylogs-fresh-XXXXXX)"
git clone --quiet ${branch:+--branch "$branch"} "$repo" "$clone/repo"
echo "fresh-clone-test: $repo${branch:+ ($branch)} at $(git -C "$clone/repo" rev-parse --short HEAD) in $clone/repo"

if [ "$remove_user" -eq 1 ]; then
    user="${CFYLOGS_TEST_PG_USER:-cfylogs-pg}"
    if id -u "$user" >/dev/null 2>&1; then
        userdel "$user"
        echo "fresh-clone-test: deleted the user $user"
    else
        echo "fresh-clone-test: no user $user to delete"
    fi
fi

failed=0
for run in $(seq 1 "$runs"); do
    log="$clone/run$run.log"
    start=$(date +%s)
    status=0
    make -C "$clone/repo" test >"$log" 2>&1 || status=$?
    seconds=$(( $(date +%s) - start ))
    # pytest's closing line ("N passed, ... in Ns"), or the last line when pytest never ran
    summary="$(grep -E '^=*.*[0-9]+ (passed|failed|error)' "$log" | tail -n 1 || true)"
    summary="${summary:-$(tail -n 1 "$log")}"
    echo "run $run: exit $status in ${seconds}s: $summary"
    if [ "$status" -ne 0 ]; then
        failed=1
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /' || true
    fi
done

if [ "$failed" -eq 0 ] && [ "$keep" -eq 0 ]; then
    rm -rf "$clone"
else
    echo "fresh-clone-test: the clone and each run's log are in $clone"
fi
exit "$failed"
