#!/bin/sh
# The container's entry point (deploy/Dockerfile); CI runs it outside a container too.
#   entrypoint.sh serve     the production server (granian) on $ASSAY_BIND (default 0.0.0.0:8000)
#   entrypoint.sh migrate   the schema to the newest version: once per release (a Job),
#                           never from every replica at once
#   entrypoint.sh CMD ...   anything else, e.g. `assay study launch ...`
set -eu
: "${DATABASE_URL:?DATABASE_URL must be set (postgresql+psycopg://user:password@host/db)}"
ROOT="${ASSAY_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"
case "${1:-serve}" in
  serve)
    : "${ASSAY_SECRET_KEY:?ASSAY_SECRET_KEY must be set, the same on every replica}"
    export ASSAY_BIND="${ASSAY_BIND:-0.0.0.0:8000}"
    cd "$ROOT"
    exec assay serve --production
    ;;
  migrate)
    exec assay db upgrade --database-url "$DATABASE_URL"
    ;;
  *)
    exec "$@"
    ;;
esac
