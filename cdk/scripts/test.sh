#!/usr/bin/env bash
# The CDK app's whole check, offline: no AWS account, no Docker, no cargo.
#
#   bash cdk/scripts/test.sh
#
# 1. npm ci (when node_modules is missing or older than package-lock.json)
# 2. cfn-lint and checkov, pinned, into cdk/.venv (when missing)
# 3. tsc --noEmit
# 4. node:test suites in cdk/test (aws-cdk-lib/assertions; cdk-nag runs in every synthesis)
# 5. the templates of every configuration in test/configurations.ts (the tests' own
#    assemblies, shared through PG_ROTATION_SYNTH_CACHE) into a temporary cdk.out
# 6. the deployment rehearsal: the pinned CLI's own `cdk deploy --all`
#    orchestration over each assembly, AWS stubbed (scripts/rehearse.ts)
# 7. cfn-lint on the templates      (ignores: compliance/cfn-lint.yaml)
# 8. checkov --skip-download         (skips:   compliance/checkov-skips*.yaml)
#
# Every step runs even if an earlier one failed (except when a prerequisite is
# missing); the exit status is non-zero if any failed. A summary ends the output.

set -uo pipefail

CFN_LINT_VERSION=1.58.0
CHECKOV_VERSION=3.3.30

CDK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$CDK_DIR"

# Synthesis stages assets and writes assemblies under the temporary directory,
# hundreds of them across the suites: give them one of their own, removed on
# exit, so nothing is left in /tmp.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/cdk-test.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export TMPDIR=$SCRATCH

declare -a SUMMARY=()
FAILED=0
record() { # name status detail seconds
  SUMMARY+=("$(printf '%-10s %-4s %5ss  %s' "$1" "$2" "$4" "$3")")
  [[ "$2" == ok ]] || FAILED=1
}
now() { date +%s; }
die() { echo "test.sh: $*" >&2; exit 2; }

command -v node >/dev/null || die "node (>= 20) is required"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || die "node >= 20 is required, found $(node --version)"
command -v python3 >/dev/null || die "python3 (>= 3.9) is required for cfn-lint and checkov"

# 1. Node dependencies
t=$(now)
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund || die "npm ci failed"
fi
record deps ok "node_modules" $(( $(now) - t ))

# 2. Python tools, pinned, in a private virtualenv (or, where python3 has no
#    venv module, a private --target directory run through PYTHONPATH).
t=$(now)
VENV="$CDK_DIR/.venv"
tools_from_venv() { CFN_LINT=("$VENV/bin/cfn-lint"); CHECKOV=("$VENV/bin/checkov"); }
tools_from_target() {
  CFN_LINT=(env PYTHONPATH="$VENV/site" python3 "$VENV/site/bin/cfn-lint")
  CHECKOV=(env PYTHONPATH="$VENV/site" python3 "$VENV/site/bin/checkov")
}
have_tools() {
  [[ "$("${CFN_LINT[@]}" --version 2>/dev/null)" == "cfn-lint $CFN_LINT_VERSION" ]] &&
    [[ "$("${CHECKOV[@]}" --version 2>/dev/null)" == "$CHECKOV_VERSION" ]]
}
PINNED=("cfn-lint==$CFN_LINT_VERSION" "checkov==$CHECKOV_VERSION")
if [[ -d "$VENV/site" ]]; then tools_from_target; else tools_from_venv; fi
if ! have_tools; then
  echo "== installing ${PINNED[*]} into $VENV"
  if python3 -m venv "$VENV" 2>/dev/null && [[ -x "$VENV/bin/pip" ]]; then
    tools_from_venv
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINNED[@]}" || die "pip install failed"
  else
    echo "   (python3 -m venv unavailable: installing with pip --target)"
    tools_from_target
    python3 -m pip install --quiet --disable-pip-version-check --target "$VENV/site" "${PINNED[@]}" ||
      die "pip install failed (install python3-venv or pip)"
  fi
  have_tools || die "cfn-lint/checkov not usable after installation"
fi
record tools ok "cfn-lint $CFN_LINT_VERSION, checkov $CHECKOV_VERSION" $(( $(now) - t ))

OUT="$(mktemp -d "${TMPDIR:-/tmp}/pg-rotation-cdk.XXXXXX")"
# (inside $SCRATCH, removed on exit)
# Each configuration is synthesised (cdk-nag, template validation) once per run;
# the test processes and step 5 share the assemblies (scripts/offline.ts).
export PG_ROTATION_SYNTH_CACHE="$OUT/synth-cache"
mkdir -p "$PG_ROTATION_SYNTH_CACHE"

# 3. Types
t=$(now)
echo "== tsc --noEmit"
if npx --no-install tsc --noEmit; then record tsc ok "no type errors" $(( $(now) - t ))
else record tsc FAIL "type errors" $(( $(now) - t )); fi

# 4. Unit tests (synthesis with cdk.json's context, cdk-nag included)
t=$(now)
echo "== node --test"
node --import tsx --test --test-concurrency=2 --test-reporter=spec test/*.test.ts 2>&1 |
  grep -v -e '^\[WARNING\] aws-cdk-lib' -e '^  Use `add\(Resource\|Stack\)Dependency`' | tee "$OUT/node-test.log"
status=${PIPESTATUS[0]}
pass=$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$OUT/node-test.log" | tail -1)
fail=$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$OUT/node-test.log" | tail -1)
if [[ $status -eq 0 ]]; then record tests ok "${pass:-?} passed, ${fail:-?} failed" $(( $(now) - t ))
else record tests FAIL "${pass:-?} passed, ${fail:-?} failed" $(( $(now) - t )); fi

# 5. Templates
t=$(now)
echo "== synth into $OUT/cdk.out"
node --import tsx scripts/synth.ts "$OUT/cdk.out" 2>&1 | grep -v -e '^\[WARNING\] aws-cdk-lib' -e '^  Use `add\(Resource\|Stack\)Dependency`'
status=${PIPESTATUS[0]}
templates=("$OUT"/cdk.out/*/*.template.json)
if [[ $status -eq 0 && -f "${templates[0]}" ]]; then
  record synth ok "${#templates[@]} templates (cdk-nag: no unacknowledged findings)" $(( $(now) - t ))
else
  record synth FAIL "synthesis failed" $(( $(now) - t ))
  templates=()
fi

if [[ ${#templates[@]} -gt 0 ]]; then
  # 6. Rehearsal: build, publish and deploy in the CLI's order against an empty, bootstrapped (stub) account.
  t=$(now)
  echo "== rehearsal (the CLI's deploy orchestration, AWS stubbed)"
  if node --import tsx scripts/rehearse.ts "$OUT"/cdk.out/*/; then
    record rehearsal ok "$(ls -d "$OUT"/cdk.out/*/ | wc -l) assemblies deploy in an empty account" $(( $(now) - t ))
  else
    record rehearsal FAIL "see above" $(( $(now) - t ))
  fi

  # 7. cfn-lint: errors and warnings fail; ignores are justified in the config file.
  t=$(now)
  echo "== cfn-lint"
  if "${CFN_LINT[@]}" --config-file compliance/cfn-lint.yaml -- "${templates[@]}"; then
    record cfn-lint ok "0 findings in ${#templates[@]} templates" $(( $(now) - t ))
  else
    record cfn-lint FAIL "findings above" $(( $(now) - t ))
  fi

  # 8. checkov: per configuration, skips from the compliance files.
  skips() { sed -n 's/^ *- \(CKV[A-Z0-9_]*\).*/\1/p' "$@" | paste -sd, -; }
  t=$(now)
  ck_pass=0; ck_fail=0; ck_status=ok
  for dir in "$OUT"/cdk.out/*/; do
    name=$(basename "$dir")
    files=(compliance/checkov-skips.yaml)
    [[ "$name" == *-default-keys ]] && files+=(compliance/checkov-skips-default-keys.yaml)
    echo "== checkov $name (skips: ${files[*]})"
    "${CHECKOV[@]}" --framework cloudformation --skip-download --compact --quiet \
      --skip-check "$(skips "${files[@]}")" -d "$dir" 2>&1 | tee "$OUT/checkov-$name.log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || ck_status=FAIL
    counts=$(sed -n 's/^Passed checks: \([0-9]*\), Failed checks: \([0-9]*\),.*/\1 \2/p' "$OUT/checkov-$name.log")
    if [[ -n "$counts" ]]; then
      read -r p f <<<"$counts"
      ck_pass=$((ck_pass + p)); ck_fail=$((ck_fail + f))
    else
      ck_status=FAIL
    fi
  done
  [[ $ck_fail -eq 0 ]] || ck_status=FAIL
  record checkov "$ck_status" "$ck_pass passed, $ck_fail failed" $(( $(now) - t ))
fi

echo
echo "== summary (cdk)"
printf '%s\n' "${SUMMARY[@]}"
if [[ $FAILED -ne 0 ]]; then
  echo "FAILED"
  exit 1
fi
echo "all green"
