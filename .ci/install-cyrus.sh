#!/usr/bin/env bash
# install-cyrus.sh -- install the Cyrus IMAP server binaries that
# internal/cyrustest needs (Debian/Ubuntu packages), without leaving a
# system-wide Cyrus running.
#
# Idempotent: when every package is installed it only makes sure no
# system-wide Cyrus master is running and exits. "apt-get update" runs only
# when the package lists are missing or the install fails without it.
#
# The Debian postinst would start a system-wide Cyrus (ports 143, 110, 4190,
# ...) through invoke-rc.d / deb-systemd-invoke. Both honour
# /usr/sbin/policy-rc.d, so a temporary one that answers 101 ("action
# forbidden") is put in place for the duration of the install; an existing
# policy-rc.d is moved aside and restored afterwards.
#
# Must run as root (or via sudo when it is available and not root).
# Tests in internal/cyrustest run this script themselves outside CI when the
# binaries are missing; in CI (CI=true) run it as a setup step.
set -euo pipefail

PACKAGES=(cyrus-imapd cyrus-clients cyrus-admin sasl2-bin)
POLICY=/usr/sbin/policy-rc.d

log() { printf '[install-cyrus] %s\n' "$*" >&2; }

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

# Serialise concurrent runs (parallel test binaries may all try to install):
# they would otherwise fight over dpkg's lock and over policy-rc.d.
lockdir=/run/lock
[ -d "$lockdir" ] || lockdir=/tmp
exec 9>"$lockdir/install-cyrus.lock"
if command -v flock >/dev/null 2>&1; then
    flock -w 900 9 || { log "timed out waiting for another install-cyrus.sh"; exit 1; }
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

# stop_system_cyrus stops a system-wide Cyrus master (the one the package
# would have started with /etc/imapd.conf and /etc/cyrus.conf). Masters
# started with another config (-C/-M, e.g. by internal/cyrustest) are left
# alone.
stop_system_cyrus() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now cyrus-imapd.service >/dev/null 2>&1 || true
    fi
    local pids="" pid exe args
    for f in /run/cyrus-master.pid /var/run/cyrus-master.pid /run/cyrus/cyrus-master.pid; do
        [ -s "$f" ] && pids="$pids $(tr -dc '0-9' <"$f")"
    done
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        exe=$(readlink "$d/exe" 2>/dev/null || true)
        case "$exe" in
        */cyrus/bin/master | */sbin/cyrmaster) ;;
        *) continue ;;
        esac
        args=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null || true)
        case "$args" in
        *" -C "* | *" -M "*)
            case "$args" in *" -C /etc/imapd.conf"* | *" -M /etc/cyrus.conf"*) ;; *) continue ;; esac ;;
        esac
        pids="$pids $pid"
    done
    for pid in $pids; do
        [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
        case "$exe" in */cyrus/bin/master | */sbin/cyrmaster) ;; *) continue ;; esac
        log "stopping system-wide Cyrus master (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        if [ -d "/proc/$pid" ]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

if [ ${#missing[@]} -eq 0 ]; then
    log "already installed: ${PACKAGES[*]}"
    stop_system_cyrus
    exit 0
fi

log "installing: ${missing[*]}"
backup=""
if [ -e "$POLICY" ]; then
    backup=$(mktemp "$POLICY.install-cyrus.XXXXXX")
    mv -f "$POLICY" "$backup"
fi
restore_policy() {
    rm -f "$POLICY"
    if [ -n "$backup" ]; then mv -f "$backup" "$POLICY"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\n# temporary, from install-cyrus.sh: do not start services\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt_install; then
    apt-get update -q -o DPkg::Lock::Timeout=300
    apt_install
fi

stop_system_cyrus
for b in master imapd lmtpd ctl_cyrusdb; do
    if [ ! -x "/usr/lib/cyrus/bin/$b" ]; then
        log "installed, but /usr/lib/cyrus/bin/$b is missing"
        exit 1
    fi
done
log "done"
