#!/usr/bin/env bash
# The suite on one machine, until the transfer service lands:
#   identities and a signer-issued user certificate; an app served over mTLS and called
#   with `message`; then a real stream: the user submits a buffer job (nngstream) and a
#   2-rank MPI streamer job (lclstreamer) to psik-api over mTLS, pulls the stream,
#   and summarizes what arrived; finally the user is denied (revoked) and refused.
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

free_ports() {  # free_ports N: N distinct free TCP ports on 127.0.0.1
    python -c "
import socket
ss = [socket.socket() for _ in range($1)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*(s.getsockname()[1] for s in ss))"
}

PORT="$(free_ports 1)"
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
certified add-client signer signer-ca/CA.crt --users --config server
certified serve certified.whoami:app "$URL" --config server \
    --crl "unix:$RUN/signer.sock" --crl-refresh 0.5 2>server.log &
PIDS+=($!)
wait_for "the server on $URL" python -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)"

step "5. User: call the app with 'message https://hello/'"
message https://hello/ --config user

step "6. The server's JSON access log line, naming the user"
sleep 0.3
grep '"certified.access"' server.log | tail -1

step "7. Facility: start psik-api (jobs over mTLS; users from the signer, CRL enforced)"
PSIK_PORT="$(free_ports 1)"
certified init psik-api --host 127.0.0.1 --host localhost --config psik-api-id
certified add-client signer signer-ca/CA.crt --users --config psik-api-id
echo "(single-user machine: run_as: service, every job runs as $(id -un), the account"
echo " psik-api runs as; a shared deployment uses run_as: caller, see docs/operators.md)"
cat > psik-api.yaml <<YAML
certified: $RUN/psik-api-id
listen: https://127.0.0.1:$PSIK_PORT
crl: unix:$RUN/signer.sock
run_as: service
psik:
  prefix: $RUN/jobs
  backends:
    default: {type: local}
YAML
psik-api serve --config psik-api.yaml 2>psik-api.log &
PIDS+=($!)
wait_for "psik-api" python -c "import socket; socket.create_connection(('127.0.0.1', $PSIK_PORT), 1)"
certified add-service psik "https://127.0.0.1:$PSIK_PORT" psik-api-id/CA.crt --config user

step "8. User: submit a buffer job (nngstream) to psik-api"
read -r IN_PORT OUT_PORT < <(free_ports 2)
cat > buffer-job.yaml <<YAML
name: buffer
script: nngstream tcp://127.0.0.1:$IN_PORT tcp://127.0.0.1:$OUT_PORT --producers 2 --metrics-interval 2
resources: {duration: 10}
YAML
BUF_JOB="$(message https://psik/jobs --yaml buffer-job.yaml --config user | tee /dev/stderr \
    | python -c 'import json, sys; print(json.load(sys.stdin)["jobid"])')"

step "9. User: submit the streamer job: mpirun -n 2 lclstreamer (synthetic epix10k2M, HDF5 + bitshuffle/LZ4)"
EVENTS=320
sed -e "s#@IN_URL@#tcp://127.0.0.1:$IN_PORT#" -e "s#@EVENTS@#$EVENTS#" \
    "$ROOT/deploy/local/stream.yaml" > stream.yaml
cat > streamer-job.yaml <<YAML
name: streamer
script: \$mpirun -n 2 lclstreamer -c $RUN/stream.yaml --no-progress
resources: {duration: 10, process_count: 2}
YAML
STREAM_JOB="$(message https://psik/jobs --yaml streamer-job.yaml --config user | tee /dev/stderr \
    | python -c 'import json, sys; print(json.load(sys.stdin)["jobid"])')"

step "10. User: receive the stream from the buffer and summarize it"
nngstream pull "tcp://127.0.0.1:$OUT_PORT" --out received
python "$ROOT/deploy/local/summarize.py" received --expect "$EVENTS"

step "11. The jobs' final states and the buffer's last metrics line (from psik-api)"
for job in "$BUF_JOB" "$STREAM_JOB"; do
    for _ in $(seq 1 100); do
        state="$(message "https://psik/jobs/$job" --config user \
            | python -c 'import json, sys; print(json.load(sys.stdin)["state"])')"
        case "$state" in completed|failed|canceled) break;; esac
        sleep 0.2
    done
    echo "job $job: $state"
    [ "$state" = completed ] || { message "https://psik/jobs/$job/logs/stderr" --config user; exit 1; }
done
echo "streamer run summary (rank 0's stdout):"
message "https://psik/jobs/$STREAM_JOB/logs/stdout" --config user
echo "buffer's final metrics:"
message "https://psik/jobs/$BUF_JOB/logs/stdout" --config user | grep . | tail -1

step "12. Facility: deny the user (their certificates are revoked, no new ones issued)"
SERIAL="$(python -c "
from certified.keys import load_certificate; from pathlib import Path
print(format(load_certificate(Path('user/id.crt')).serial_number, 'x'))")"
signer deny "$LOGIN" --config signer-ca
signer status "$SERIAL" --config signer-ca

step "13. User: the same call is refused with a TLS alert; the server logs why"
sleep 1
if message https://hello/ --config user; then
    echo "ERROR: a revoked certificate was accepted" >&2
    exit 1
fi
grep '"certified.tls"' server.log | tail -1
if signer request --socket "$RUN/signer.sock" --config user --new-key; then
    echo "ERROR: a denied user got a certificate" >&2
    exit 1
fi

step "Demo complete: identities, signer, mTLS, jobs, a 2-rank stream through the buffer, revocation."
echo "Files are in $RUN"
