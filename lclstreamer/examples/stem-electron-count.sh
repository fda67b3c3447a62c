#!/usr/bin/env bash
# 4D-STEM electron counting on one machine, one command (docs/stem.md):
#   4 sector producers (mpirun -n 4 lclstreamer, stem-sectors.yaml)
#   -> 1 aggregator (nngstream --route-by frame_number --delivery acked)
#   -> 2 consumer ranks (mpirun -n 2 stem-count count), rank 0 writes counts.h5 (stempy's format).
# TRANSPORT=zmq: the same over ZMQ (zmq_push producers, nngstream --in-proto zmq --out-proto zmq
#   --route-by frame_number, stem-count --proto zmq): at most once, and cheaper (docs/stem.md).
# Usage: stem-electron-count.sh [WORKDIR]
#   (env: SCAN="32 32" FRAME="576 576" CONSUMERS=2 TRANSPORT=acked|zmq)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="${1:-$(mktemp -d -t stem-XXXX)}"
scan="${SCAN:-32 32}"
frame="${FRAME:-576 576}"
consumers="${CONSUMERS:-2}"
transport="${TRANSPORT:-acked}"
case "$transport" in
  acked) buffer_opts=(--delivery acked); handler=nng_push; consumer_opts=() ;;
  zmq) buffer_opts=(--in-proto zmq --out-proto zmq); handler=zmq_push; consumer_opts=(--proto zmq) ;;
  *) echo "stem-electron-count: TRANSPORT=$transport: choose acked or zmq" >&2; exit 2 ;;
esac
mkdir -p "$work"
cd "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# the aggregator, on free ports (the ready file says which)
rm -f ready.json
nngstream tcp://127.0.0.1:0 tcp://127.0.0.1:0 "${buffer_opts[@]}" --route-by frame_number \
  --producers 4 --metrics-interval 2 --ready-file ready.json >aggregator.jsonl 2>aggregator.log &
pids+=($!)
for _ in $(seq 100); do [ -s ready.json ] && break; sleep 0.1; done
[ -s ready.json ] || { echo "stem-electron-count: the aggregator did not start (aggregator.log)" >&2; exit 1; }
in_url=$(python3 -c 'import json;print(json.load(open("ready.json"))["in_url"])')
out_url=$(python3 -c 'import json;print(json.load(open("ready.json"))["out_url"])')

# the producers' configuration: the example with this scan, frame and aggregator
python3 - "$here/stem-sectors.yaml" "$in_url" "$scan" "$frame" "$handler" >producers.yaml <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["event_source"]["scan_shape"] = [int(x) for x in sys.argv[3].split()]
cfg["event_source"]["frame_shape"] = [int(x) for x in sys.argv[4].split()]
cfg["data_handlers"] = [{"type": sys.argv[5], "urls": [sys.argv[2]], "mode": "dial"}]
print(yaml.safe_dump(cfg, sort_keys=False))
PY
stem-count dark producers.yaml -o dark.npy

# the consumers first (keys are spread over the groups connected), then the producers
# shellcheck disable=SC2086
mpirun -n "$consumers" stem-count count "$out_url" --scan-shape $scan --frame-shape $frame \
  --dark dark.npy -o counts.h5 "${consumer_opts[@]}" >consumers.json 2>consumers.log &
cons=$!
pids+=($cons)
for _ in $(seq 300); do
  grep -q "\"consumers\":$consumers" aggregator.jsonl 2>/dev/null && break
  sleep 0.1
done
start=$(date +%s.%N)
mpirun -n 4 lclstreamer -c producers.yaml >producers.log 2>&1
wait "$cons"
end=$(date +%s.%N)
echo "stem-electron-count: $work"
echo "accounting: $(tail -n 1 consumers.json)"
python3 -c "import sys; print('seconds: %.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$start" "$end"
