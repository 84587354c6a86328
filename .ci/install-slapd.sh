#!/usr/bin/env bash
# install-slapd.sh -- install OpenLDAP's slapd and the ldap-utils clients that
# internal/slapdtest needs (Debian/Ubuntu packages), without configuring or
# leaving running a system-wide directory.
#
# Idempotent: when both packages are installed it only makes sure that no
# system-wide slapd runs and exits. "apt-get update" runs only when the
# package lists are missing or the install fails without it.
#
# The Debian postinst would configure a directory under /etc/ldap/slapd.d and
# start it on port 389 through invoke-rc.d. Preseeding
# slapd/no_configuration=true skips the configuration, and a temporary
# /usr/sbin/policy-rc.d answering 101 ("action forbidden") keeps every
# service from starting during the install; an existing policy-rc.d is moved
# aside and restored afterwards.
#
# Must run as root (or via passwordless sudo). Tests in internal/slapdtest
# run this script themselves outside CI when slapd is missing; in CI
# (CI=true) .ci/run runs it before the tests.
set -euo pipefail

PACKAGES=(slapd ldap-utils)
POLICY=/usr/sbin/policy-rc.d
SLAPD=/usr/sbin/slapd

log() { printf '[install-slapd] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n -E bash "$0" "$@"
    fi
    log "must run as root (no passwordless sudo available)"
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found: only Debian/Ubuntu are supported"
    exit 1
fi

# Serialise concurrent runs (parallel test binaries may all try to install).
lockdir=/run/lock
[ -d "$lockdir" ] || lockdir=/tmp
exec 9>"$lockdir/install-slapd.lock"
if command -v flock >/dev/null 2>&1; then
    flock -w 900 9 || { log "timed out waiting for another install-slapd.sh"; exit 1; }
fi

# stop_system_slapd stops a slapd that the package started: one that does not
# run on a private configuration file (-f), as every slapdtest instance does.
stop_system_slapd() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now slapd.service >/dev/null 2>&1 || true
    fi
    local d pid args
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$(readlink "$d/exe" 2>/dev/null)" = "$SLAPD" ] || continue
        args=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null || true)
        case "$args" in *" -f "*) continue ;; esac
        log "stopping system-wide slapd (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
}

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    log "already installed: ${PACKAGES[*]}"
    stop_system_slapd
    exit 0
fi

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# No system directory at all: every test brings its own config and database.
echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections

backup=""
if [ -e "$POLICY" ] || [ -L "$POLICY" ]; then
    backup=$(mktemp "$POLICY.install-slapd.XXXXXX")
    mv -f "$POLICY" "$backup"
fi
restore_policy() {
    rm -f "$POLICY"
    if [ -n "$backup" ]; then mv -f "$backup" "$POLICY"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\n# temporary, from install-slapd.sh: do not start services\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

apt_install() {
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt_install; then
    apt-get update -q -o DPkg::Lock::Timeout=300
    apt_install
fi

stop_system_slapd
for b in /usr/sbin/slapd /usr/sbin/slapadd /usr/sbin/slappasswd /usr/bin/ldapmodify /usr/bin/ldapsearch; do
    if [ ! -x "$b" ]; then
        log "installed, but $b is missing"
        exit 1
    fi
done
for s in core cosine inetorgperson nis; do
    if [ ! -r "/etc/ldap/schema/$s.schema" ]; then
        log "installed, but /etc/ldap/schema/$s.schema is missing"
        exit 1
    fi
done
log "done: $(dpkg-query -W -f='${Package} ${Version}  ' "${PACKAGES[@]}")"
