#!/bin/bash
# chain-latency.sh: end-to-end latency through the multi-host chain,
# Cyrus's socket -> bonnie-relay -> RabbitMQ -> bonnied --amqp -> PostgreSQL,
# with bonnie-load standing in for Cyrus (dlist). The latency of each event
# is its "appended" time in the central log minus the time bonnie-load
# stamped on it when it sent it (milliseconds, as Cyrus stamps).
#
#   go build -o bin/ ./examples/bonnied ./examples/bonnie-relay ./examples/bonnie-load ./examples/bonnie
#   RATE=200 DUR=30s examples/bonnie-load/chain-latency.sh
#
# Needs the local RabbitMQ (guest) and PostgreSQL (trust, database test),
# python3, and root: the three processes run at nice -20, as a dedicated
# host would give them the machine (the figures in BENCHMARKS.md were taken
# on a VM shared with other test runs).
set -e
B=${BIN:-bin}; D=$(mktemp -d /tmp/e2e.XXXX); S=lat$$; T=bonnie-lat-$$
psql -q -o /dev/null -h 127.0.0.1 -U postgres test -c "CREATE SCHEMA $S"
DSN="postgres://postgres@127.0.0.1:5432/test?sslmode=disable&search_path=$S"
nice -n -20 $B/bonnied --data $D/central --amqp amqp://guest:guest@127.0.0.1:5672/ --amqp-topic $T --postgres "$DSN" --sinks none --metrics "" 2> $D/bonnied.log &
nice -n -20 $B/bonnie-relay --cyrus-dlist $D/r.sock --spool $D/spool --amqp amqp://guest:guest@127.0.0.1:5672/ --topic $T --cyrus-user root --metrics "" 2> $D/relay.log &
sleep 3
nice -n -20 $B/bonnie-load --dlist $D/r.sock --rate ${RATE:-200} --duration ${DUR:-30s} --concurrency 16 --progress 0
sleep 5
$B/bonnie --postgres "$DSN" events --json | python3 -c '
import sys, json, datetime
def t(s): return datetime.datetime.fromisoformat(s.replace("Z","+00:00"))
lat=[]
for line in sys.stdin:
    r=json.loads(line); ev=r["event"]
    if ev["type"].startswith("vnd.bonnie"): continue
    lat.append((t(r["appended"])-t(ev["time"])).total_seconds()*1000)
lat.sort(); n=len(lat)
q=lambda p: lat[min(n-1,int(p*n))]
print(f"events {n}: Cyrus socket -> central log p50 {q(.5):.1f} ms, p90 {q(.9):.1f} ms, p99 {q(.99):.1f} ms, max {lat[-1]:.1f} ms")'
kill %1 %2; wait
psql -q -o /dev/null -h 127.0.0.1 -U postgres test -c "DROP SCHEMA $S CASCADE" 2>/dev/null
