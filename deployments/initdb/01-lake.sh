#!/bin/sh
# A second database for the DuckLake catalog (the first, POSTGRES_DB=prefect, is Prefect's),
# owned by the role from deployments/.env. Run once by the postgres image on an empty volume.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE lake OWNER \"$POSTGRES_USER\""
