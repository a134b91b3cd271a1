#!/usr/bin/env bash
# Asks a rotation function "would a rotation of SECRET succeed right now?" and
# prints its answer as a table. The function checks and writes nothing (see
# README.md, "Pre-flight"). Exits 0 when the secret is ready, 1 when a check
# failed, 2 on a usage or invocation error.
#
#   tests/scripts/preflight.sh --endpoint-url http://127.0.0.1:PORT --function rotation-single SECRET
#   tests/scripts/preflight.sh --function pg-rotation-AppRotation... SECRET      # deployed (real AWS)
#
# --endpoint-url: a local Secrets Manager endpoint (sm-local serves Lambda's
# Invoke API too, so the function runs through it); without it, the aws CLI's
# own configuration (a deployed function). With an endpoint and no AWS
# credentials in the environment, sm-local's dummy ones are used.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
endpoint="" function="" secret=""
while [ $# -gt 0 ]; do
  case "$1" in
    --endpoint-url) endpoint=${2:-}; shift 2 ;;
    --function) function=${2:-}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "preflight.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$secret" ] || usage; secret=$1; shift ;;
  esac
done
[ -n "$secret" ] && [ -n "$function" ] || usage
command -v aws >/dev/null || { echo "preflight.sh: the aws CLI is needed (tests/.venv/bin after tests/scripts/install-deps.sh)" >&2; exit 2; }

args=(lambda invoke --function-name "$function")
# aws CLI v2 reads --payload as base64 unless told otherwise; v1 sends it as is.
case "$(aws --version 2>&1)" in aws-cli/2*) args+=(--cli-binary-format raw-in-base64-out) ;; esac
if [ -n "$endpoint" ]; then
  args+=(--endpoint-url "$endpoint" --region "${AWS_REGION:-us-east-1}")
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
payload=$(python3 -c 'import json,sys; print(json.dumps({"Operation": "preflight", "SecretId": sys.argv[1]}))' "$secret")
if ! aws "${args[@]}" --payload "$payload" "$out" >/dev/null; then
  echo "preflight.sh: the invocation failed" >&2
  exit 2
fi
python3 - "$out" <<'PY'
import json, sys, textwrap
answer = json.load(open(sys.argv[1]))
if "checks" not in answer:
    print("the function answered with an error:", json.dumps(answer), file=sys.stderr)
    sys.exit(2)
width = max(len(c["check"]) for c in answer["checks"])
print(f"pre-flight of {answer['secret']} ({answer['strategy']})\n")
print(f"{'STATUS':<6}  {'CHECK':<{width}}  DETAIL")
for c in answer["checks"]:
    indent = " " * (6 + 2 + width + 2)
    detail = textwrap.fill(c["detail"], 120, initial_indent="", subsequent_indent=indent) if c["detail"] else ""
    print(f"{c['status'].upper():<6}  {c['check']:<{width}}  {detail}")
    if c.get("fix"):
        print(textwrap.fill("fix: " + c["fix"], 120, initial_indent=indent, subsequent_indent=indent + "     "))
ready = "READY" if answer["ready"] else "NOT READY"
print(f"\n{ready}: {answer['failed']} failed, {answer['warnings']} warning(s)")
sys.exit(0 if answer["ready"] else 1)
PY
