#!/bin/sh
# First start of the PostgreSQL container (docker-entrypoint-initdb.d): the two roles ragworks needs.
# The owner migrates and owns the tables; the application role serves every request under
# row-level security — neither superuser, owner nor BYPASSRLS (docs/operations.md,
# "Production database roles"). The superuser of the image (POSTGRES_USER) is for administration
# only: it installs pgvector (when the server has it) and marks the text match LEAKPROOF, which only
# a superuser may.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v database="$POSTGRES_DB" \
  -v owner="${RAGWORKS_OWNER_ROLE:-ragworks_owner}" -v owner_password="$RAGWORKS_OWNER_PASSWORD" \
  -v app="${RAGWORKS_APP_ROLE:-ragworks_app}" -v app_password="$RAGWORKS_APP_PASSWORD" <<'SQL'
create role :"owner" login password :'owner_password' nosuperuser nobypassrls;
create role :"app" login password :'app_password' nosuperuser nobypassrls;
alter database :"database" owner to :"owner";
alter schema public owner to :"owner";
select exists (select 1 from pg_available_extensions where name = 'vector') as has_vector \gset
\if :has_vector
create extension if not exists vector;
\endif
alter function pg_catalog.ts_match_vq(tsvector, tsquery) leakproof;
SQL
