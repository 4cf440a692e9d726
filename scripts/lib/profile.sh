# scripts/bench profile: instructions per call of the gateway and store under callgrind.
# Sourced by scripts/bench (after its common set-up), never executed. docs/PERFORMANCE.md
# ("Per-call work") describes the method and records the figures.
# shellcheck shell=bash

# The services counted, and the options of their valgrind: no instrumentation until the hook
# switches it on (start-up is not counted, and runs at near-native speed meanwhile).
PROFILE_SERVICES=(gateway store)

profile_usage() {
  cx_die "usage: scripts/bench profile [--calls N] [--out DIR] | --report DIR"
}

# Total instructions (Ir) of one callgrind dump: its `totals:` line (`summary:` can wrap
# around when instrumentation is switched on and off in a threaded process).
profile_total() {
  awk '/^totals:/ {print $2; exit}' "$1"
}

# The dump of process `pid` labelled `label` by the hook (callgrind_control -d label).
profile_dump_of() {
  local dir=$1 svc=$2 label=$3 f
  for f in "$dir"/callgrind.$svc.*; do
    grep -q "^desc: Trigger: dump $label\$" "$f" 2>/dev/null && { printf '%s' "$f"; return 0; }
  done
  return 1
}

profile_main() {
  local calls=300 out="" port_names ports i svc
  while [ $# -gt 0 ]; do
    case $1 in
      --calls) [ $# -ge 2 ] || profile_usage; calls=$2; shift 2 ;;
      --out) [ $# -ge 2 ] || profile_usage; out=$2; shift 2 ;;
      --report) [ $# -ge 2 ] || profile_usage; profile_report "$2"; return ;;
      *) profile_usage ;;
    esac
  done
  [[ $calls =~ ^[1-9][0-9]{0,5}$ ]] || cx_die "profile: --calls must be 1..999999"
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
    || cx_die "profile: needs valgrind (apt-get install valgrind)"
  out=${out:-$root/build/profile/$(date +%Y%m%d-%H%M%S)}
  mkdir -p "$out"
  out=$(realpath "$out")
  ninja -C "$root/build/release" >/dev/null

  # A stack of its own: a fresh run folder and free loopback ports, so that a stack already
  # running (scripts/run start) is neither disturbed nor measured.
  local run="$out/run"
  rm -rf "$run"
  port_names=(keywrap store oauth gateway edge edge-http ferretdb openfga-http openfga-grpc
    keywrap-ops store-ops oauth-ops gateway-ops edge-ops)
  read -ra ports < <(python3 -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s:
    x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])' "${#port_names[@]}")
  local -a env=(CREDEX_RUN_DIR="$run" CREDEX_BUILD_DIR="$root/build/release" CREDEX_SKIP_BUILD=1
    CREDEX_SKIP_SETUP=1 CREDEX_START_TIMEOUT=180 CREDEX_STOP_TIMEOUT=60)
  for i in "${!port_names[@]}"; do
    case ${port_names[$i]} in
      edge-http) env+=(CREDEX_EDGE_HTTP_ADDR="127.0.0.1:${ports[$i]}") ;;
      ferretdb) env+=(CREDEX_FERRETDB_PORT="${ports[$i]}") ;;
      openfga-http) env+=(CREDEX_OPENFGA_HTTP_PORT="${ports[$i]}") ;;
      openfga-grpc) env+=(CREDEX_OPENFGA_GRPC_PORT="${ports[$i]}") ;;
      *-ops)
        svc=${port_names[$i]%-ops}
        env+=("CREDEX_${svc^^}_OPS_ADDR=127.0.0.1:${ports[$i]}")
        ;;
      *) env+=("CREDEX_${port_names[$i]^^}_ADDR=127.0.0.1:${ports[$i]}") ;;
    esac
  done
  for svc in "${PROFILE_SERVICES[@]}"; do
    env+=("CREDEX_RUN_WRAP_${svc^^}=valgrind --tool=callgrind --instr-atstart=no --dump-instr=no --callgrind-out-file=$out/callgrind.$svc.%p")
  done
  echo "profile: starting a stack under callgrind in $run"
  if ! env "${env[@]}" "$root/scripts/run" start >"$out/run.log" 2>&1; then
    tail -n 30 "$out/run.log" >&2
    env "${env[@]}" "$root/scripts/run" stop >/dev/null 2>&1 || true
    cx_die "profile: the stack did not start (see $out/run.log)"
  fi
  for svc in "${PROFILE_SERVICES[@]}"; do
    : >"$run/pids/$svc.profiled"
  done
  # shellcheck disable=SC2064
  trap "env ${env[*]@Q} '$root/scripts/run' stop >/dev/null 2>&1 || true" EXIT

  # The background: what the processes do with no call at all, per second.
  export CX_PROFILE_DIR="$run"
  : >"$run/windows"
  "$root/scripts/bench" _profile_hook idle 0 start
  sleep 5
  "$root/scripts/bench" _profile_hook idle 0 stop 0

  local ctl="$root/build/release/tools/credexctl/credexctl" tokens="$out/tokens" attempt
  mkdir -p "$tokens"
  # Under valgrind a first connection can outlast the client's connect timeout on a busy
  # machine; the bench is tried again then, as long as it measured nothing yet.
  for attempt in 1 2 3; do
    if (
      # shellcheck disable=SC1091
      . "$run/env"
      "$ctl" token --service agent-runtime --ttl 86400 >"$tokens/service.jwt"
      "$ctl" token --user bench-user --ttl 86400 >"$tokens/user.jwt"
      "$root/build/release/bench/retrieve_bench" --addr "$CREDEX_GATEWAY_ADDR" \
        --ca "$CREDEX_TLS_CA" --cert "$run/pki/agent-runtime.pem" \
        --key "$run/pki/agent-runtime.key" --service-token "$tokens/service.jwt" \
        --user-token "$tokens/user.jwt" --secrets 16 --callers 1 --write-callers 1 \
        --calls "$calls" --hook "$root/scripts/bench _profile_hook"
    ) >"$out/bench.log" 2>&1; then
      break
    fi
    if [ "$attempt" = 3 ] || [ "$(wc -l <"$run/windows")" != 1 ]; then
      cat "$out/bench.log" >&2
      cx_die "profile: the bench failed"
    fi
    echo "profile: the bench failed before measuring (attempt $attempt), trying again"
  done
  env "${env[@]}" "$root/scripts/run" stop >/dev/null 2>&1 || true
  trap - EXIT
  profile_report "$out"
}

# Instructions per call: the window's total less the idle rate over the window's length.
profile_report() {
  local out=$1 run="$1/run" label n t0 t1 f total per report="$1/report.txt" idle_s svc
  local -A idle_rate
  idle_s=$(awk '$1 == "idle-0" { print $4 - $3 }' "$run/windows")
  for svc in "${PROFILE_SERVICES[@]}"; do
    idle_rate[$svc]=$(awk -v t="$(profile_total "$(profile_dump_of "$out" "$svc" idle-0)")" \
      -v s="$idle_s" 'BEGIN { printf "%.0f", t / s }')
  done
  {
    printf '%-12s %6s' "operation" calls
    for svc in "${PROFILE_SERVICES[@]}"; do printf ' %16s' "$svc Ir/call"; done
    printf '\n'
    while read -r label n t0 t1; do
      [ "$label" = idle-0 ] && continue
      printf '%-12s %6s' "$label" "$n"
      for svc in "${PROFILE_SERVICES[@]}"; do
        f=$(profile_dump_of "$out" "$svc" "$label") || { printf ' %16s' "?"; continue; }
        total=$(profile_total "$f")
        per=$(awk -v t="$total" -v r="${idle_rate[$svc]}" -v a="$t0" -v b="$t1" -v n="$n" \
          'BEGIN { printf "%.0f", (t - r * (b - a)) / n }')
        printf ' %16s' "$per"
        callgrind_annotate --inclusive=yes "$f" >"$out/top.$svc.$label.txt" 2>/dev/null || true
        callgrind_annotate "$f" >"$out/self.$svc.$label.txt" 2>/dev/null || true
      done
      printf '\n'
    done <"$run/windows"
    for svc in "${PROFILE_SERVICES[@]}"; do
      printf 'idle %s: %s Ir/s (subtracted over each window)\n' "$svc" "${idle_rate[$svc]}"
    done
  } | tee "$report"
  echo "profile: dumps, per-function listings (top.*, self.*) and the report in $out"
}
