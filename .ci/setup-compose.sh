#!/usr/bin/env bash
# Install Debian's docker-compose (1.29, the Python implementation) for
# tests/deployments/test_compose.py: `docker-compose config` validates
# deployments/docker-compose.yml against the Compose specification without a Docker daemon.
# Nothing is started. Idempotent.
set -euo pipefail
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  echo "installing docker-compose from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
docker-compose version 2>/dev/null | head -n1 || docker compose version
