#!/usr/bin/env bash
# Install sudo (Debian): psik-api's `run_as: caller` starts jobs through one sudoers rule.
set -euo pipefail
command -v sudo >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends sudo
