#!/usr/bin/env bash
# services.sh -- make sure PostgreSQL (127.0.0.1:5432, trust, database test)
# and RabbitMQ (127.0.0.1:5672, guest/guest) answer, starting them the way
# this kind of machine starts them when they have stopped. Tests that need
# them fail in CI (CI=true) when they are missing, so a service that cannot
# be started fails here first, with a clearer message.
set -euo pipefail
log() { printf '[services] %s\n' "$*" >&2; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "PostgreSQL is not installed: installing"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >/dev/null; }
    fi
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 60); do pg_up && break; sleep 0.5; done
    pg_up || { log "PostgreSQL does not answer on 127.0.0.1:5432"; exit 1; }
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
    log "creating database test"
    su postgres -c "createdb test" 2>/dev/null || true
fi
log "PostgreSQL ok"

amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! amqp_up; then
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        log "RabbitMQ is not installed: installing"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server >/dev/null; }
    fi
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
    timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
    for _ in $(seq 60); do amqp_up && break; sleep 1; done
    amqp_up || { log "RabbitMQ does not answer on 127.0.0.1:5672"; exit 1; }
fi
log "RabbitMQ ok"
