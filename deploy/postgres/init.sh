#!/bin/sh
# One database and one user per service (SPEC §2: no service reads another's database), each
# user with its own password from the environment (CRM_<SERVICE>_DB_PASSWORD). Run by the
# postgres image on first start (docker-entrypoint-initdb.d), as the superuser.
set -eu
for service in intake case notification analytics; do
  var="CRM_$(echo "$service" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
  eval "password=\${$var:?set $var}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v user="crm_$service" -v password="$password" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"user" OWNER :"user";
REVOKE ALL ON DATABASE :"user" FROM PUBLIC;
SQL
done
