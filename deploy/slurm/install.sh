#!/usr/bin/env bash
# Install the Debian packages for a single-node SLURM test cluster (run as root).
# The cluster itself is started per test session by deploy/slurm/cluster.sh
# (the tests' `slurm_cluster` fixture calls it), so nothing is left running here.
set -euo pipefail
if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null; then
    echo "slurm already installed: $(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo unknown)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: must run as root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client
echo "installed slurm $(dpkg-query -W -f='${Version}' slurmctld)"
