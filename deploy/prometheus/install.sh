#!/usr/bin/env bash
# Debian's Prometheus server (and promtool): the metrics tests scrape lclstream-api and
# psik-api with it over mTLS, using a certified identity as docs/operators.md shows.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends prometheus
# the package starts a system service where systemd runs; the tests start their own
if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now prometheus || true
fi
