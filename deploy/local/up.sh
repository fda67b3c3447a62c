#!/usr/bin/env bash
# The whole suite on 127.0.0.1 with fresh identities: signer (UNIX socket), psik-api and
# lclstream-api (mTLS), and a user certificate from the signer.
#   source deploy/local/up.sh RUN_DIR   # sets SUITE_PIDS, LCLSTREAM_URL, PSIK_URL; run
#   suite_down                           # when done (also on EXIT if you trap it)
# Needs the suite's venv first on PATH (`make demo` does that).

RUN="$1"
mkdir -p "$RUN"
chmod 700 "$RUN"
SUITE_PIDS=()

suite_down() {
    local pid
    for pid in "${SUITE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${SUITE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    SUITE_PIDS=()
}

_wait_port() {  # _wait_port WHAT PORT
    for _ in $(seq 1 200); do
        python -c "import socket; socket.create_connection(('127.0.0.1', $2), 1)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for $1 on port $2" >&2
    return 1
}

_free_ports() {  # N distinct free TCP ports on 127.0.0.1
    python -c "
import socket
ss = [socket.socket() for _ in range($1)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*(s.getsockname()[1] for s in ss))"
}

read -r PSIK_PORT LCLSTREAM_PORT < <(_free_ports 2)
PSIK_URL="https://127.0.0.1:$PSIK_PORT"
LCLSTREAM_URL="https://127.0.0.1:$LCLSTREAM_PORT"
BUFFER_PORTS_LOW=$(( (RANDOM % 200) * 100 + 40000 ))

(
    set -euo pipefail
    cd "$RUN"
    # identities: the signer's CA, one per service; services trust each other by name
    certified init facility-signer --config signer-ca
    certified init psik-api --host 127.0.0.1 --host localhost --config psik-api-id
    certified init lclstream-api --host 127.0.0.1 --host localhost --config lclstream-api-id
    certified add-client lclstream-api lclstream-api-id/CA.crt --config psik-api-id
    certified add-client psik-api psik-api-id/CA.crt --config lclstream-api-id
    certified add-client signer signer-ca/CA.crt --users --config lclstream-api-id
    certified add-client signer signer-ca/CA.crt --users --config psik-api-id
    certified add-service psik "$PSIK_URL" psik-api-id/CA.crt --config lclstream-api-id
    certified add-service lclstream "$LCLSTREAM_URL" lclstream-api-id/CA.crt --config psik-api-id

    cat > psik-api.yaml <<YAML
certified: $RUN/psik-api-id
listen: $PSIK_URL
crl: unix:$RUN/signer.sock
run_as: service
delegators: [cn:lclstream-api]
psik:
  prefix: $RUN/jobs
  kill_grace: 2.0
  backends:
    default: {type: local}
  callback:
    allowed: [lclstream]
YAML
    cat > lclstream-api.yaml <<YAML
certified: $RUN/lclstream-api-id
listen: $LCLSTREAM_URL
crl: unix:$RUN/signer.sock
database: $RUN/lclstream-api/transfers.db
psik_api: https://psik
advertise_host: 127.0.0.1
port_range: [$BUFFER_PORTS_LOW, $((BUFFER_PORTS_LOW + 99))]
callback_base: https://lclstream
job_identity: $RUN/psik-api-id
reconcile_interval: 2.0
metrics_interval: 1.0
YAML
)
cd "$RUN"
signer serve --socket "$RUN/signer.sock" --config signer-ca 2>signer.log &
SUITE_PIDS+=($!)
for _ in $(seq 1 100); do test -S "$RUN/signer.sock" && break; sleep 0.1; done
psik-api serve --config psik-api.yaml 2>psik-api.log &
SUITE_PIDS+=($!)
lclstream-api serve --config lclstream-api.yaml 2>lclstream-api.log &
SUITE_PIDS+=($!)
_wait_port psik-api "$PSIK_PORT"
_wait_port lclstream-api "$LCLSTREAM_PORT"

# the user: a certificate from the signer (the key stays here), and the service's name
signer request --socket "$RUN/signer.sock" --config user
certified add-service lclstream "$LCLSTREAM_URL" lclstream-api-id/CA.crt --config user
cd - >/dev/null
