#!/usr/bin/env bash
# Validate a FOCUS cost export with the FinOps Foundation focus-validator and
# fail on any MUST-level rule failure. See tools/focus/README.md.
#
#   tools/focus/validate.sh FILE.csv|FILE.parquet [OUT_DIR]
#   tools/focus/validate.sh --ensure-venv      (create/refresh the venv only)
#
# Environment:
#   FOCUS_PYTHON    interpreter (>= 3.12) used to create the venv
#   FOCUS_VENV      venv path (default: <repo>/.venv-focus)
#   FOCUS_CRITERIA  comma-separated applicability criteria (default below)
#   FOCUS_VERSION   FOCUS version to validate against (default 1.2; only 1.2 is bundled)
#   FOCUS_STRICT=1  make every failed/errored rule fatal, not only MUST/MUST NOT ones
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || (cd "$SCRIPT_DIR/../.." && pwd))
REQUIREMENTS="$SCRIPT_DIR/requirements.txt"
VENV=${FOCUS_VENV:-"$REPO_ROOT/.venv-focus"}
VERSION=${FOCUS_VERSION:-1.2}

# Applicability criteria that hold for our export (LLM APIs + GCP billing + SaaS
# seats); why each one is in or out is in README.md.
DEFAULT_CRITERIA="USAGE_MEASUREMENT_SUPPORTED,UNIT_PRICING_SUPPORTED,PUBLIC_PRICE_LIST_SUPPORTED,NEGOTIATED_PRICING_SUPPORTED,MULTIPLE_PRICING_CATEGORIES_SUPPORTED,TAGGING_SUPPORTED,SUB_ACCOUNT_SUPPORTED,MULTIPLE_SUB_ACCOUNT_TYPES_SUPPORTED,MULTIPLE_BILLING_ACCOUNT_TYPES_SUPPORTED,REGION_SUPPORTED,AVAILABILITY_ZONE_SUPPORTED"
CRITERIA=${FOCUS_CRITERIA:-$DEFAULT_CRITERIA}

die() { echo "focus: $*" >&2; exit 2; }

ENSURE_ONLY=0
if [[ "${1:-}" == "--ensure-venv" ]]; then
  ENSURE_ONLY=1
elif [[ $# -lt 1 || $# -gt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]] && exit 0
  exit 2
fi
if [[ $ENSURE_ONLY == 0 ]]; then
  DATA=$1
  OUT_DIR=${2:-"$REPO_ROOT/target/focus"}
  [[ -f "$DATA" ]] || die "no such file: $DATA"
  case "$DATA" in
    *.csv|*.parquet) ;;
    *) die "data file must end in .csv or .parquet (the validator picks the loader by extension): $DATA" ;;
  esac
  DATA_ABS="$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")"
  mkdir -p "$OUT_DIR"
  OUT_ABS=$(cd "$OUT_DIR" && pwd)
fi

py_ok() { [[ -n "$1" ]] && "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
# requirements.txt was frozen on CPython 3.12 (numpy 1.26.4 has no wheels for
# 3.13+, so pip would compile it from source there): look for a 3.12 first.
py312() { [[ -n "$1" ]] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
  if [[ -n "${FOCUS_PYTHON:-}" ]]; then
    py_ok "$FOCUS_PYTHON" || die "FOCUS_PYTHON=$FOCUS_PYTHON is not a Python >= 3.12"
    echo "$FOCUS_PYTHON"; return
  fi
  local c r roots=()
  if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root 2>/dev/null || true)"); fi
  roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv" "/root/.pyenv")
  for r in "${roots[@]}"; do
    [[ -n "$r" && -d "$r/versions" ]] || continue
    for c in $(ls -d "$r"/versions/3.12*/bin/python3 2>/dev/null | sort -rV); do
      if py312 "$c"; then echo "$c"; return; fi
    done
  done
  for c in python3.12 python3; do
    if command -v "$c" >/dev/null 2>&1 && py312 "$(command -v "$c")"; then command -v "$c"; return; fi
  done
  # Last resort: any newer interpreter (works, but numpy may build from source).
  for r in "${roots[@]}"; do
    [[ -n "$r" && -d "$r/versions" ]] || continue
    for c in $(ls -d "$r"/versions/3.1[3-9]*/bin/python3 2>/dev/null | sort -V); do
      if py_ok "$c"; then echo "focus: warning: no Python 3.12 found, using $c" >&2; echo "$c"; return; fi
    done
  done
  for c in python3.13 python3.14 python3; do
    if command -v "$c" >/dev/null 2>&1 && py_ok "$(command -v "$c")"; then
      echo "focus: warning: no Python 3.12 found, using $(command -v "$c")" >&2; command -v "$c"; return
    fi
  done
  die "no Python >= 3.12 found (set FOCUS_PYTHON, or install 3.12 with pyenv)"
}

ensure_venv() {
  local stamp="$VENV/.focus-requirements.sha256" want
  want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  if [[ -x "$VENV/bin/focus-validator" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && py_ok "$VENV/bin/python"; then
    return
  fi
  local py; py=$(find_python)
  if [[ -e "$VENV" ]] && ! py_ok "$VENV/bin/python"; then
    echo "focus: recreating $VENV (missing or Python < 3.12)" >&2
    rm -rf "$VENV"
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "focus: creating venv $VENV with $py ($("$py" -V 2>&1))" >&2
    "$py" -m venv "$VENV"
  fi
  echo "focus: installing $(basename "$REQUIREMENTS") into $VENV" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS"
  "$VENV/bin/python" -m pip check >&2 || die "pip check failed in $VENV"
  echo "$want" > "$stamp"
}

# Serialise venv creation between concurrent runs.
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  flock 9
  ensure_venv
  flock -u 9
else
  ensure_venv
fi

if [[ $ENSURE_ONLY == 1 ]]; then
  "$VENV/bin/python" -c 'import importlib.metadata as m; print("focus: focus-validator", m.version("focus-validator"), "ready")' >&2
  exit 0
fi

SITE=$("$VENV/bin/python" -c 'import focus_validator, os; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))')
MODEL=$(ls "$SITE"/focus_validator/rules/model-"$VERSION".*.json 2>/dev/null | sort -V | tail -n1 || true)
[[ -n "$MODEL" ]] || die "no bundled rules model for FOCUS $VERSION in $SITE/focus_validator/rules"

# focus-validator 2.2.1 opens "focus_validator/rules/currency_codes.csv" relative
# to the working directory: run it from a scratch dir that has that path.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/focus-validate.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/focus_validator/rules"
ln -s "$SITE/focus_validator/rules/currency_codes.csv" "$WORK/focus_validator/rules/currency_codes.csv"

XML="$OUT_ABS/focus-results.xml"
LOG="$OUT_ABS/focus-validator.log"
rm -f "$XML"
echo "focus: validating $DATA against FOCUS $VERSION ($(basename "$MODEL"))" >&2
echo "focus: criteria: $CRITERIA" >&2
set +e
(cd "$WORK" && "$VENV/bin/focus-validator" \
  --data-file "$DATA_ABS" \
  --validate-version "$VERSION" \
  --block-download \
  --applicability-criteria "$CRITERIA" \
  --output-type unittest \
  --output-destination "$XML") >"$LOG" 2>&1
rc=$?
set -e
if [[ $rc -ne 0 || ! -s "$XML" ]]; then
  tail -n 40 "$LOG" >&2
  die "focus-validator failed (exit $rc) or wrote no report; full log: $LOG"
fi

check_args=(--model "$MODEL")
[[ "${FOCUS_STRICT:-0}" != "0" && -n "${FOCUS_STRICT:-}" ]] && check_args+=(--strict)
set +e
"$VENV/bin/python" "$SCRIPT_DIR/check_results.py" "$XML" "${check_args[@]}"
rc=$?
set -e
echo "focus: report $XML (validator log: $LOG)" >&2
exit $rc
