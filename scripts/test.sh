#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# Debian packages the tests use for real: git (gitpython reads a real repository), Chromium with
# its driver (the HTML report is opened in a headless browser), openssl (the TLS tests make their
# certificate).
need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # the TLS tests make their certificate with it
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
# The real Collector distribution and Prometheus 3, built from their Go modules into .cache/stack-bin/
# (minutes on a fresh machine, reused after); the tests start them from the shipped configs.
bash scripts/stack-bin.sh
# Lint and type errors fail the run before the suite starts (the rules and line length: pyproject.toml).
.venv/bin/ruff check lezea_otel lezea_mlops tests scripts --select E,F,B,UP,SIM,I
.venv/bin/python -m mypy --strict lezea_otel lezea_mlops
exec .venv/bin/python -m pytest "$@"
