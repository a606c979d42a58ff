#!/usr/bin/env bash
# The README's walkthrough as a script: every step of the API with curl and jq, every id captured into
# a variable, budgets small enough to finish in minutes on two cores. CI runs it against a fresh
# service (.ci/run), so it stays true.
#
#   BASE_URL=http://localhost:3000 bash docs/walkthrough.sh        # SPARSOUP_API_KEY=… if API_KEYS is set
#
# Environment: BASE_URL (default http://localhost:3000), SPARSOUP_API_KEY (sent as a bearer token),
# OUT (folder for report.svg and the downloaded model, default a temp folder), EPOCHS (dense
# training epochs, default 0.5).
set -euo pipefail

BASE_URL="${BASE_URL:-http://localhost:3000}"
BASE_URL="${BASE_URL%/}"
OUT="${OUT:-$(mktemp -d)}"
EPOCHS="${EPOCHS:-0.5}"
mkdir -p "$OUT"
for tool in curl jq; do command -v "$tool" >/dev/null || { echo "walkthrough: $tool is required" >&2; exit 1; }; done

auth=()
if [ -n "${SPARSOUP_API_KEY:-}" ]; then auth=(-H "authorization: Bearer $SPARSOUP_API_KEY"); fi

# api METHOD PATH [JSON BODY]: prints the response body; any status outside 2xx stops the script
# with the problem's detail.
api() {
  local method=$1 path=$2 body=${3:-} res status
  local args=(-sS -X "$method" "${auth[@]}" -w '\n%{http_code}')
  if [ -n "$body" ]; then args+=(-H 'content-type: application/json' --data-binary "$body"); fi
  res=$(curl "${args[@]}" "$BASE_URL$path")
  status=${res##*$'\n'}
  res=${res%$'\n'*}
  if [[ ! $status =~ ^2 ]]; then
    echo "walkthrough: $method $path answered HTTP $status: $res" >&2
    exit 1
  fi
  printf '%s' "$res"
}

# step TITLE: closes the previous step with its duration and opens the next one.
last=$SECONDS
step() {
  [ -z "${opened:-}" ] || echo "   ($((SECONDS - last)) s)"
  opened=1
  last=$SECONDS
  echo
  echo "== $*"
}

# follow RUN: the run's server-sent events, live, one line per event that says something; returns
# when the stream ends (after run-finished), then fails unless the run succeeded.
follow() {
  local run=$1 line type
  curl -sS -N --fail "${auth[@]}" "$BASE_URL/runs/$run/events" | while IFS= read -r line; do
    case $line in
      event:*) type=${line#event: } ;;
      data:*)
        case $type in
          progress) jq -r '"  \(.candidateId[0:8]) epoch \(.epoch) step \(.step)/\(.steps) loss \(.loss // "-" | tostring | .[0:6])"' <<<"${line#data: }" ;;
          candidate-succeeded) jq -r '"  \(.candidateId[0:8]) succeeded: val \(.valAccuracy) test \(.testAccuracy)"' <<<"${line#data: }" ;;
          phase-*|run-finished|candidate-failed|candidate-retry) echo "  $type $(jq -c 'del(.at, .candidateId)' <<<"${line#data: }")" ;;
        esac ;;
    esac
  done
  local status
  status=$(api GET "/runs/$run" | jq -r .status)
  [ "$status" = succeeded ] || { echo "walkthrough: run $run $status: $(api GET "/runs/$run" | jq -r '.error // "no error recorded"')" >&2; exit 1; }
}

step "health"
api GET /health | jq -c '{status, database: .database.driver, backend: .backend.name}'

step "a template: lenet-300-100 sized for Fashion-MNIST (untrained)"
TEMPLATE=$(api POST /models/templates '{"architecture": "lenet-300-100", "datasetId": "fashion-mnist", "seed": 1}' | jq -r .id)
echo "TEMPLATE=$TEMPLATE"

step "dense training: $EPOCHS epochs"
TRAIN=$(api POST /runs '{"kind": "train", "modelId": "'"$TEMPLATE"'", "datasetId": "fashion-mnist",
  "training": {"epochs": '"$EPOCHS"', "batchSize": 128, "learningRate": 0.1, "schedule": "linear", "seed": 1}}' | jq -r .id)
echo "TRAIN=$TRAIN"
follow "$TRAIN"
DENSE=$(api GET "/runs/$TRAIN" | jq -r '.candidates[0].resultModelId')
echo "DENSE=$DENSE  test accuracy $(api GET "/runs/$TRAIN" | jq -r '.candidates[0].testAccuracy')"

step "prune: global magnitude to 90 %"
PRUNE=$(api POST "/models/$DENSE/prune" '{"method": "magnitude-global", "sparsity": 0.9}')
PRUNED=$(jq -r .model.id <<<"$PRUNE")
MASK=$(jq -r .mask.id <<<"$PRUNE")
echo "PRUNED=$PRUNED MASK=$MASK  sparsity $(jq -r .model.sparsity <<<"$PRUNE")"
OTHER=$(api POST "/models/$DENSE/prune" '{"method": "random", "sparsity": 0.9, "seed": 1}' | jq -r .mask.id)
echo "OTHER=$OTHER (a random mask at the same sparsity)"
api GET "/masks/$MASK/diff/$OTHER" | jq -c '{equal, hamming, tensors: [.tensors[] | {name, hamming}]}'

step "retrain m = 3 candidates under the mask (seeds differ), followed live"
RUN=$(api POST /runs '{"kind": "retrain", "modelId": "'"$PRUNED"'", "maskId": "'"$MASK"'", "datasetId": "fashion-mnist", "m": 3, "vary": "seed",
  "training": {"epochs": 0.2, "learningRate": 0.05, "schedule": "linear"}}' | jq -r .id)
echo "RUN=$RUN"
follow "$RUN"
mapfile -t CANDIDATES < <(api GET "/runs/$RUN" | jq -r '.candidates[].resultModelId')
C1=${CANDIDATES[0]} C2=${CANDIDATES[1]} C3=${CANDIDATES[2]}
echo "C1=$C1 C2=$C2 C3=$C3"

step "soups: uniform (201, answered at once) and greedy (202, scored on val)"
UNIFORM=$(api POST /soups '{"modelIds": ["'"$C1"'", "'"$C2"'", "'"$C3"'"], "method": "uniform", "datasetId": "fashion-mnist"}')
echo "UNIFORM=$(jq -r .id <<<"$UNIFORM")  result $(jq -r .resultModelId <<<"$UNIFORM")  sparsity $(jq -r .sparsity <<<"$UNIFORM")"
GREEDY=$(api POST /soups '{"modelIds": ["'"$C1"'", "'"$C2"'", "'"$C3"'"], "method": "greedy", "datasetId": "fashion-mnist"}' | jq -r .id)
echo "GREEDY=$GREEDY"
while :; do
  SOUP=$(api GET "/soups/$GREEDY")
  case $(jq -r .status <<<"$SOUP") in
    succeeded) break ;;
    failed|cancelled) echo "walkthrough: greedy soup $GREEDY $(jq -r '.status + ": " + (.error // "")' <<<"$SOUP")" >&2; exit 1 ;;
  esac
  sleep 1
done
jq -r '"greedy soup: val \(.valAccuracy), accepted \([.steps[] | select(.accepted)] | length) of \(.steps | length)"' <<<"$SOUP"
api GET "/runs/$RUN/report" | jq -c '.phases[] | {candidates: (.candidates | length), meanTest: .candidateMean.testAccuracy, soup: (.soup.method // null)}'

step "evaluate the uniform soup's model under a corruption"
api POST "/models/$(jq -r .resultModelId <<<"$UNIFORM")/evaluations" '{"datasetId": "fashion-mnist", "split": "test", "corruptions": [{"name": "gaussian-noise", "severity": 3}]}' \
  | jq -c '{accuracy, ece, meanCorruptionAccuracy}'

step "SMS: T = 2 phases toward S = 0.9, m = 2 candidates each, uniform soups (and IMP as the baseline)"
COMMON='"modelId": "'"$DENSE"'", "datasetId": "fashion-mnist", "goalSparsity": 0.9, "phases": 2, "training": {"epochs": 0.1, "learningRate": 0.05, "schedule": "linear"}'
SMS=$(api POST /runs '{"kind": "sms", '"$COMMON"', "m": 2, "soup": {"method": "uniform"}}' | jq -r .id)
IMP=$(api POST /runs '{"kind": "imp", '"$COMMON"'}' | jq -r .id)
echo "SMS=$SMS IMP=$IMP"
follow "$SMS"
follow "$IMP"

step "report, comparison and plot"
api GET "/runs/$SMS/report" | jq -r '.phases[] | "phase \(.index): sparsity \(.actualSparsity) mean candidate test \(.candidateMean.testAccuracy) soup test \(.result.testAccuracy)"'
api GET "/runs/compare?ids=$SMS,$IMP" | jq -r '.runs as $runs | .rows[] | "phase \(.phase): " + ([.cells | to_entries[] | "\($runs[.key].kind) test \(.value.testAccuracy)"] | join(", "))' 
api GET "/runs/$SMS/report.svg?baselineIds=$IMP" >"$OUT/report.svg"
grep -q '<svg' "$OUT/report.svg" || { echo "walkthrough: report.svg is not an SVG" >&2; exit 1; }
echo "wrote $OUT/report.svg ($(wc -c <"$OUT/report.svg") bytes)"

echo "   ($((SECONDS - last)) s)"
echo
echo "walkthrough finished in ${SECONDS} s"
