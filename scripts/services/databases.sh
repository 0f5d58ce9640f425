# PostgreSQL and MariaDB for the `conddb` probe tests. This machine kind normally runs both
# (127.0.0.1:5432 with trust authentication, 127.0.0.1:3306 as root without a password); the
# script installs and starts whatever is missing, directly (no systemd). Sourced by
# scripts/test-env.sh.
#
# It also sets up, idempotently:
#   * a PostgreSQL role that must give a password (scram-sha-256 from 127.0.0.1), for the
#     wrong-password tests: gridprobe_auth / gridprobe-auth-secret;
#   * a small conditions table `gridprobe_demo_iov` in both databases, its newest payload
#     refreshed on every run, for config/examples/grid-local.toml.

pg_port=5432
my_port=3306

pg_up() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        need_pkg postgresql
    fi
    pg_isready -q -h 127.0.0.1 -p $pg_port && return 0
    local version
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    wait_for 30 pg_isready -q -h 127.0.0.1 -p $pg_port || {
        log "PostgreSQL did not come up on 127.0.0.1:$pg_port"
        return 1
    }
}

pg_setup() {
    local psql=(as_root env PGOPTIONS='-c client_min_messages=warning' runuser -u postgres -- psql -qAtX -v ON_ERROR_STOP=1)
    if [ "$("${psql[@]}" -c "select 1 from pg_database where datname = 'test'")" != 1 ]; then
        "${psql[@]}" -c "create database test" >/dev/null
    fi
    # Password authentication for one role, ahead of the trust lines.
    local hba
    hba="$("${psql[@]}" -c "show hba_file")"
    if ! as_root grep -q '^host all gridprobe_auth ' "$hba"; then
        as_root sed -i '1i host all gridprobe_auth 127.0.0.1/32 scram-sha-256' "$hba"
        "${psql[@]}" -c "select pg_reload_conf()" >/dev/null
    fi
    "${psql[@]}" -d test >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gridprobe_auth') THEN
    CREATE ROLE gridprobe_auth LOGIN PASSWORD 'gridprobe-auth-secret';
  END IF;
END $$;
GRANT CONNECT ON DATABASE test TO gridprobe_auth;
CREATE TABLE IF NOT EXISTS gridprobe_demo_iov (
  tag text PRIMARY KEY, since bigint NOT NULL, inserted_at timestamptz NOT NULL);
INSERT INTO gridprobe_demo_iov VALUES ('LHCBCOND-demo', 0, now())
  ON CONFLICT (tag) DO UPDATE SET inserted_at = now();
GRANT SELECT ON gridprobe_demo_iov TO gridprobe_auth;
SQL
}

my_up() {
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        need_pkg mariadb-server
    fi
    mariadb-admin -h 127.0.0.1 -P $my_port -u root ping >/dev/null 2>&1 && return 0
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld
    as_root start-stop-daemon --start --oknodo --background --chuid mysql \
        --exec /usr/sbin/mariadbd -- --user=mysql >&2
    wait_for 30 mariadb-admin -h 127.0.0.1 -P $my_port -u root ping || {
        log "MariaDB did not come up on 127.0.0.1:$my_port"
        return 1
    }
}

my_setup() {
    mariadb -h 127.0.0.1 -P $my_port -u root >/dev/null <<'SQL'
CREATE DATABASE IF NOT EXISTS test;
USE test;
CREATE TABLE IF NOT EXISTS gridprobe_demo_iov (
  tag VARCHAR(64) PRIMARY KEY, since BIGINT NOT NULL, inserted_at DATETIME(3) NOT NULL);
INSERT INTO gridprobe_demo_iov VALUES ('LHCBCOND-demo', 0, UTC_TIMESTAMP(3))
  ON DUPLICATE KEY UPDATE inserted_at = UTC_TIMESTAMP(3);
SQL
}

pg_up
pg_setup
my_up
my_setup
echo "export GRIDPROBE_TEST_PG=postgresql://postgres@127.0.0.1:$pg_port/test"
echo "export GRIDPROBE_TEST_PG_AUTH=postgresql://gridprobe_auth@127.0.0.1:$pg_port/test"
echo "export GRIDPROBE_TEST_PG_AUTH_PASSWORD=gridprobe-auth-secret"
echo "export GRIDPROBE_TEST_MYSQL=mysql://root@127.0.0.1:$my_port/test"
