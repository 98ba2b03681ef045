#!/usr/bin/env bash
# Install (if missing) the service binaries the distributed-Airflow tests and the
# throughput benchmark start themselves: PostgreSQL (initdb/postgres) and Redis.
#
# Idempotent. Starts nothing and leaves nothing running: no boot-time service is
# started or enabled (package post-install scripts are kept from starting their
# daemons, and a daemon a package did start anyway is stopped again). The tests
# start their own instances on 127.0.0.1, free ports, temp data dirs, passwords
# generated per run (tests/airflow_cluster.py).
#
# Usage: bash scripts/ci_services.sh        (root, or sudo available)
set -euo pipefail

say() { printf 'ci_services: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        say "not root and no sudo: cannot install packages"; exit 1; fi
fi

pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
    done
    return 1
}

need=()
if pg_bindir >/dev/null; then
    say "postgresql present: $(pg_bindir)/postgres ($("$(pg_bindir)/postgres" --version))"
else
    need+=(postgresql)
fi
if command -v redis-server >/dev/null 2>&1; then
    say "redis-server present: $(command -v redis-server) ($(redis-server --version | cut -d' ' -f3))"
else
    need+=(redis-server)
fi

if [ "${#need[@]}" -eq 0 ]; then
    say "nothing to install"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${need[*]} and no apt-get (Debian/Ubuntu only): install them by hand"
        exit 1
    fi
    # Keep invoke-rc.d from starting the packages' daemons while installing.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        added_policy=1
    fi
    trap '[ "$added_policy" = 1 ] && $SUDO rm -f "$policy"' EXIT
    say "installing ${need[*]} (apt-get)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null
    say "installed ${need[*]}"
fi

# Nothing runs at boot or now: disable the units where systemd manages them, and
# stop any daemon that a package started anyway (only the packages' own daemons).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for unit in postgresql redis-server; do
        if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            $SUDO systemctl disable --now --quiet "$unit" && say "disabled and stopped $unit"
        fi
    done
else
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters --no-header 2>/dev/null | while read -r ver name _port status _rest; do
            if [ "$status" = "online" ]; then
                $SUDO pg_ctlcluster "$ver" "$name" stop && say "stopped cluster $ver/$name"
            fi
        done
    fi
    if [ -x /etc/init.d/redis-server ] && [ -f /run/redis/redis-server.pid ]; then
        $SUDO /etc/init.d/redis-server stop >/dev/null && say "stopped redis-server service"
    fi
fi

bindir="$(pg_bindir)"
say "ready: postgres bindir $bindir (run as user 'postgres' when root), redis $(command -v redis-server)"
say "no server started; tests start their own on 127.0.0.1"
