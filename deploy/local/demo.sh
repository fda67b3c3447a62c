#!/usr/bin/env bash
# The suite on one machine, one command: bring up signer, psik-api and lclstream-api on
# 127.0.0.1 with fresh identities; the user runs `lclstream get` on a synthetic epix10k2M
# run with 2 MPI ranks (the service provisions the buffer and the producers through
# psik-api, over mTLS); then the summary, `lclstream ls`, the transfer's transition log,
# and teardown. Run through `make demo` (which puts .venv/bin first on PATH).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="${DEMO_DIR:-$ROOT/demo-run}"
rm -rf "$RUN"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Facility: fresh identities; signer, psik-api and lclstream-api on 127.0.0.1"
trap 'declare -F suite_down >/dev/null && suite_down' EXIT  # also if bring-up fails
# shellcheck source=deploy/local/up.sh
source "$ROOT/deploy/local/up.sh" "$RUN"
echo "psik-api $PSIK_URL, lclstream-api $LCLSTREAM_URL"
echo "(single-user machine: psik-api has run_as: service, so every job runs as $(id -un), the"
echo " account psik-api runs as; a shared deployment uses run_as: caller, see docs/operators.md)"
grep -h '"lclstream_api"' "$RUN/lclstream-api.log" | head -1

step "2. User '$(id -un)': one request starts the whole stream (2 producer ranks)"
EVENTS=320
sed -e "s#@EVENTS@#$EVENTS#" "$ROOT/deploy/local/stream.yaml" > "$RUN/stream.yaml"
cd "$RUN"
lclstream validate stream.yaml
lclstream get stream.yaml --producers 2 --out received --config user | tee summary.json

step "3. What arrived, every event exactly once"
python "$ROOT/deploy/local/summarize.py" received --expect "$EVENTS"

step "4. lclstream ls"
lclstream ls --config user

step "5. The transfer's transition log (with the source of each transition)"
TID="$(python -c 'import json; print(json.load(open("summary.json"))["transfer"])')"
lclstream status "$TID" --log --config user

step "6. Teardown"
suite_down
trap - EXIT
echo "Demo complete. Files are in $RUN"
