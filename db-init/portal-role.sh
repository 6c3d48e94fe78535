#!/bin/sh
# compose.yaml's PostgreSQL runs this on its first start, on an empty pgdata volume, as it runs every file in
# /docker-entrypoint-initdb.d: it makes the portal's own role, which owns nothing. POSTGRES_USER (jitportal)
# owns the database and every table and is used by `migrate` alone (MIGRATE_DATABASE_URL); `migrate` then
# grants the portal's role what it needs, on the audit trail only SELECT and INSERT (README "The audit trail").
# It may run again at any time, e.g. on a volume made before the portal had a role of its own, and then sets
# the role's password again from the secret:
#   docker compose exec db sh /docker-entrypoint-initdb.d/portal-role.sh
set -e
role=jitportal_app                      # the user of compose.yaml's DATABASE_URL
password_file=/run/secrets/db_password  # its DATABASE_PASSWORD_FILE
if [ ! -s "$password_file" ]; then
    echo "portal-role.sh: the portal role's password file $password_file is missing or empty" >&2
    exit 1
fi
# psql reads the password from the file itself (\set with backquotes), so it is on no command line.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    --set role="$role" --set password_file="$password_file" <<'SQL'
\set password `cat :'password_file'`
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'password';
SQL
echo "portal-role.sh: the portal's role $role may log in; migrate grants it its privileges"
