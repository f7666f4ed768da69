#!/usr/bin/env bash
# Starts (once) a throwaway PostgreSQL cluster on a loopback port for the
# tests, installing Debian's postgresql package if missing, and prints its
# URL. Data lives under .cache/pg; nothing listens beyond 127.0.0.1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)/.cache/pg"
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bin="$(find_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin="$(find_bin)"
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$root"
# The cluster keeps the port it first got; pick a free one the first time.
if [ -f "$root/port" ]; then
  port="$(cat "$root/port")"
else
  port="${AGENTG8_PG_PORT:-54329}"
  while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port" >"$root/port"
fi
if [ "$(id -u)" = 0 ]; then chown postgres "$root"; chmod 755 "$root"; fi
if [ ! -f "$root/data/PG_VERSION" ]; then
  as_pg "$bin/initdb" -D "$root/data" -A trust -U agentg8 >/dev/null
fi
if ! as_pg "$bin/pg_ctl" -D "$root/data" status >/dev/null 2>&1; then
  # One earlier log is kept; a long-lived checkout's log would grow for ever.
  if [ -f "$root/log" ]; then mv -f "$root/log" "$root/log.1"; fi
  # Another cluster may take the port between the check above and the
  # start (a second clone's tests, say): move on to the next free one.
  for try in 1 2 3 4 5; do
    if as_pg "$bin/pg_ctl" -D "$root/data" -l "$root/log" -w \
      -o "-p $port -k $root -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on -c synchronous_commit=on" start >&2; then
      break
    fi
    if [ "$try" = 5 ] || ! grep -q "Address already in use" "$root/log"; then
      cat "$root/log" >&2
      exit 1
    fi
    port=$((port + 1))
    while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port" >"$root/port"
  done
fi
echo "postgres://agentg8@127.0.0.1:$port/postgres?sslmode=disable"
