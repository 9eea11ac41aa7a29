#!/bin/sh
# start-postgresql: initdb on first start, then the server in the foreground as user postgres.
# POSTGRES_PASSWORD set: the postgres user needs it (scram-sha-256) from other hosts; unset:
# trust (development only). Port: $PORT0, else 5432. Arguments go to postgres
# (such as -c max_connections=50).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
port=${PORT0:-5432}
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  auth=trust
  pwopt=
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pgpass
    chown postgres /tmp/pgpass
    auth=scram-sha-256
    pwopt="--pwfile=/tmp/pgpass"
  fi
  su -s /bin/sh postgres -c "initdb -D '$PGDATA' -U postgres --auth-local=trust --auth-host=$auth $pwopt --locale=C -E UTF8 --no-sync" >/dev/null
  rm -f /tmp/pgpass
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all 0.0.0.0/0 $auth" >> "$PGDATA/pg_hba.conf"
fi
exec su -s /bin/sh postgres -c "exec postgres -D '$PGDATA' -p $port -k /run/postgresql $*"
