#!/usr/bin/env bash
# Make sure the local services the worker and its tests need are up (shared/SERVICES.md).
# Starting a service needs root; on a laptop, point DATABASE_URL / AMQP_URL elsewhere instead.
set -uo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port name seconds
  for _ in $(seq 1 "$3"); do answers "$1" && return 0; sleep 1; done
  echo "services: $2 did not come up on 127.0.0.1:$1" >&2; return 1
}

if [ -n "${DATABASE_URL:-}" ] || answers 5432; then
  echo "services: PostgreSQL ok"
elif command -v pg_ctlcluster >/dev/null; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_for 5432 PostgreSQL 60 || exit 1
else
  echo "services: PostgreSQL not reachable and not installed here" >&2
fi

if [ -n "${AMQP_URL:-}" ] || answers 5672; then
  echo "services: RabbitMQ ok"
elif command -v rabbitmq-server >/dev/null; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached
  rabbitmqctl await_startup >/dev/null 2>&1 || true
  wait_for 5672 RabbitMQ 120 || exit 1
else
  echo "services: RabbitMQ not reachable and not installed here" >&2
fi
# Redis: only the rate limiter's Redis store tests use it (REDIS_URL, else 127.0.0.1:6379).
if [ -n "${REDIS_URL:-}" ] || answers 6379; then
  echo "services: Redis ok"
elif command -v redis-server >/dev/null; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis 30 || exit 1
else
  echo "services: Redis not reachable and not installed here" >&2
fi
exit 0
