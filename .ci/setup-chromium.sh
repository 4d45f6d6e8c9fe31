#!/usr/bin/env bash
# CI: headless Chromium + chromedriver for the browser check of the Prefect UI
# (tests/flows/test_e2e_deployment.py). Idempotent; runs as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
chromium --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1 || chromium --version
{
  echo "TRADELOOP_CHROMIUM=$(command -v chromium)"
  echo "TRADELOOP_CHROMEDRIVER=$(command -v chromedriver)"
} >> .ci/env
