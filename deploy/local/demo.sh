#!/usr/bin/env bash
# The certified + signer demo, all on this machine:
#   a CA-backed server identity, a user certificate issued by the signer from the UNIX
#   login, an app served over mTLS, a call with `message`, the access-log line naming
#   the user, then revocation and the refusal that follows.
# Run through `make demo` (which puts .venv/bin first on PATH).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="${DEMO_DIR:-$ROOT/demo-run}"
rm -rf "$RUN"
mkdir -p "$RUN"
chmod 700 "$RUN"
cd "$RUN"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() {  # wait_for DESCRIPTION COMMAND...
    local what="$1"; shift
    for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "timed out waiting for $what" >&2; exit 1
}

PORT="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="https://127.0.0.1:$PORT"
LOGIN="$(id -un)"

step "1. Facility: create the server identity and the signer's CA"
certified init demo-server --host 127.0.0.1 --host localhost --config server
certified init facility-signer --config signer-ca

step "2. Facility: start the signer on a UNIX socket"
signer serve --socket "$RUN/signer.sock" --config signer-ca 2>signer.log &
PIDS+=($!)
wait_for "the signer socket" test -S "$RUN/signer.sock"

step "3. User '$LOGIN': get a certificate from the login (the private key stays here)"
signer request --socket "$RUN/signer.sock" --config user
certified add-service hello "$URL" server/CA.crt --config user

step "4. Facility: trust users signed by the signer; serve an app over mTLS with its CRL"
certified add-client signer signer-ca/CA.crt --config server
certified serve certified.whoami:app "$URL" --config server \
    --crl "unix:$RUN/signer.sock" --crl-refresh 0.5 2>server.log &
PIDS+=($!)
wait_for "the server on $URL" python -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)"

step "5. User: call the app with 'message https://hello/'"
message https://hello/ --config user

step "6. The server's JSON access log line, naming the user"
sleep 0.3
grep '"certified.access"' server.log | tail -1

step "7. Facility: revoke the user's certificates"
SERIAL="$(python -c "
from certified.keys import load_certificate; from pathlib import Path
print(format(load_certificate(Path('user/id.crt')).serial_number, 'x'))")"
signer revoke --user "$LOGIN" --config signer-ca
signer status "$SERIAL" --config signer-ca

step "8. User: the same call is now refused"
sleep 1
if message https://hello/ --config user; then
    echo "ERROR: a revoked certificate was accepted" >&2
    exit 1
fi
grep '"certified.access"' server.log | tail -1

step "Demo complete: identities, signer, mTLS, access log and revocation all worked."
echo "Files are in $RUN"
