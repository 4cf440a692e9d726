# Shared helpers for scripts/*: paths and messages. Sourced, never executed.
# shellcheck shell=bash
CX_ROOT=${CX_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CX_TOOLS=${CREDEX_TOOLS_DIR:-$CX_ROOT/.tools}   # git-ignored: go-installed tools, venv, stamps
CX_VENV=$CX_TOOLS/venv
CX_RUN=${CREDEX_RUN_DIR:-$CX_ROOT/.run}         # git-ignored: dev PKI, keys, data, logs, pids
export PATH="$CX_TOOLS/bin:$PATH"

cx_say() { printf 'credex: %s\n' "$*" >&2; }
cx_die() { printf 'credex: error: %s\n' "$*" >&2; exit 1; }
