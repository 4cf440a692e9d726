# Keycloak for credex's tests and local runs: installed from Maven Central, started per use.
# Sourced after scripts/lib/common.sh, never executed. docs/KEYCLOAK.md tells the whole story.
#
# Install (keycloak_install; `scripts/setup keycloak`): the artifact
# org.keycloak:keycloak-quarkus-dist:<version>:tar.gz through Maven itself (`mvn -C`: the download
# fails unless it matches the .sha1 published beside it), checked again against that .sha1 and
# against the SHA-256 pinned below, unpacked into "$CX_TOOLS/keycloak" and built once
# (`kc.sh build`: in-memory database, health endpoints) so that every start is an optimized one.
# The stamp "$CX_TOOLS/stamps/keycloak" holds version, digest and build options.
#
# An instance (keycloak_start <dir> ...) runs from its own home <dir>: a copy of bin/kc.sh and
# links to the installation's lib, conf, themes and providers, so that its data/ (the realm files
# imported at start, Keycloak's temporary files) is its own and instances never share state.
# shellcheck shell=bash

CX_KEYCLOAK_VERSION=26.7.3
CX_KEYCLOAK_SHA256=77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47
CX_KEYCLOAK_DIR=$CX_TOOLS/keycloak
CX_KEYCLOAK_JAVA_MIN=21
# Build-time options; run-time ones are in keycloak_start.
_KC_BUILD_OPTS=(--db=dev-mem --health-enabled=true --http-management-health-enabled=false)
_KC_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

# keycloak_java_home: print the home of the newest JDK with Java $CX_KEYCLOAK_JAVA_MIN or later,
# probing JAVA_HOME, every JDK under /usr/lib/jvm and the java on PATH by what `java -version`
# says (no path is assumed). Fails naming what is needed when none fits.
keycloak_java_home() {
  local candidates=() c best="" best_major=0 major java
  [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
  for c in /usr/lib/jvm/*/; do
    [ -d "$c" ] && candidates+=("${c%/}")
  done
  java=$(command -v java 2>/dev/null || true)
  [ -n "$java" ] && candidates+=("$(dirname "$(dirname "$(readlink -f "$java")")")")
  for c in "${candidates[@]}"; do
    [ -x "$c/bin/java" ] || continue
    major=$(_kc_java_major "$c/bin/java")
    if [ "${major:-0}" -ge "$CX_KEYCLOAK_JAVA_MIN" ] && [ "$major" -gt "$best_major" ]; then
      best=$c best_major=$major
    fi
  done
  [ -n "$best" ] || cx_die "Keycloak $CX_KEYCLOAK_VERSION needs Java $CX_KEYCLOAK_JAVA_MIN or newer, and" \
    "no such JDK was found (probed JAVA_HOME, /usr/lib/jvm/*, java on PATH): install a JDK" \
    "$CX_KEYCLOAK_JAVA_MIN+ under /usr/lib/jvm or point JAVA_HOME at one"
  printf '%s\n' "$best"
}

# The major version a java binary reports: "25.0.3" -> 25, "1.8.0_392" -> 8; empty if none.
_kc_java_major() {
  "$1" -version 2>&1 | awk -F'"' '/version "/ {
    split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]) + 0; exit }'
}

# keycloak_install: install Keycloak into $CX_KEYCLOAK_DIR unless the stamp says it is there.
keycloak_install() {
  local stamp="$CX_TOOLS/stamps/keycloak" want java_home tmp v=$CX_KEYCLOAK_VERSION
  want="$v $CX_KEYCLOAK_SHA256 ${_KC_BUILD_OPTS[*]}"
  if [ -x "$CX_KEYCLOAK_DIR/bin/kc.sh" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  java_home=$(keycloak_java_home) || exit 1
  command -v mvn >/dev/null || cx_die "Maven (mvn) is needed to fetch Keycloak from Maven Central"
  cx_say "installing Keycloak $v from Maven Central (first time only, about a minute)"
  mkdir -p "$CX_TOOLS/stamps"
  tmp=$(mktemp -d "$CX_TOOLS/.keycloak.XXXXXX")
  # A private local repository: nothing is left in ~/.m2, and the .sha1 read below is the one
  # this very download brought.
  mvn -B -q -C -Dmaven.repo.local="$tmp/m2" "$_KC_DEPENDENCY_PLUGIN:copy" \
    -Dartifact="org.keycloak:keycloak-quarkus-dist:$v:tar.gz" -DoutputDirectory="$tmp" \
    >"$tmp/mvn.log" 2>&1 || { cat "$tmp/mvn.log" >&2; rm -rf "$tmp"; cx_die "Maven could not fetch Keycloak $v"; }
  local tgz="$tmp/keycloak-quarkus-dist-$v.tar.gz" published
  published=$(cut -c1-40 "$tmp/m2/org/keycloak/keycloak-quarkus-dist/$v/keycloak-quarkus-dist-$v.tar.gz.sha1")
  if [ "$(sha1sum "$tgz" | cut -d' ' -f1)" != "$published" ] ||
    [ "$(sha256sum "$tgz" | cut -d' ' -f1)" != "$CX_KEYCLOAK_SHA256" ]; then
    rm -rf "$tmp"
    cx_die "keycloak-quarkus-dist-$v.tar.gz does not match its published SHA-1 or the pinned SHA-256"
  fi
  tar -xzf "$tgz" -C "$tmp"
  rm -rf "$CX_KEYCLOAK_DIR"
  mv "$tmp/keycloak-$v" "$CX_KEYCLOAK_DIR"
  rm -rf "$tmp"
  # The build (Quarkus augmentation, ~25 s) writes lib/quarkus once, so that starts skip it.
  if ! JAVA_HOME=$java_home "$CX_KEYCLOAK_DIR/bin/kc.sh" build "${_KC_BUILD_OPTS[@]}" \
    >"$CX_TOOLS/keycloak-build.log" 2>&1; then
    tail -20 "$CX_TOOLS/keycloak-build.log" >&2
    cx_die "kc.sh build failed (log: $CX_TOOLS/keycloak-build.log)"
  fi
  echo "$want" >"$stamp"
}

# keycloak_start <dir> <https-port> <cert> <key> <ca> [public-url] [timeout-s]: start Keycloak
# in the background from instance home <dir> (made here; realm files: deploy/keycloak/realm-*.json,
# imported at start), listening on https://127.0.0.1:<https-port> only, with that certificate, and
# wait until /health/ready says UP (verified against <ca>). <public-url> (default
# https://127.0.0.1:<https-port>) is the base of every URL Keycloak names, so realm R's issuer
# is <public-url>/realms/R whatever address a request came to. Log <dir>/keycloak.log, pid
# <dir>/keycloak.pid.
keycloak_start() {
  local dir=${1:?usage: keycloak_start <dir> <https-port> <cert> <key> <ca> [public-url] [timeout-s]}
  local port=${2:?missing port} cert=${3:?missing cert} key=${4:?missing key} ca=${5:?missing CA file}
  local public=${6:-https://127.0.0.1:$2} timeout=${7:-180} java_home
  [ -x "$CX_KEYCLOAK_DIR/bin/kc.sh" ] || cx_die "Keycloak is not installed in $CX_KEYCLOAK_DIR: run scripts/setup keycloak"
  java_home=$(keycloak_java_home) || exit 1
  _kc_make_home "$dir"
  JAVA_HOME=$java_home nohup "$dir/bin/kc.sh" start --optimized --import-realm --cache=local \
    --http-enabled=false --http-host=127.0.0.1 --https-port="$port" \
    --https-certificate-file="$cert" --https-certificate-key-file="$key" \
    --hostname="$public" </dev/null >"$dir/keycloak.log" 2>&1 &
  local pid=$! deadline=$((SECONDS + timeout))
  echo "$pid" >"$dir/keycloak.pid"
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || { tail -30 "$dir/keycloak.log" >&2; cx_die "Keycloak exited during start-up"; }
    if curl -sf --cacert "$ca" --max-time 2 "https://127.0.0.1:$port/health/ready" 2>/dev/null |
      tr -d ' \n' | grep -q '^{"status":"UP"'; then
      return 0
    fi
    sleep 0.25
  done
  tail -30 "$dir/keycloak.log" >&2
  keycloak_stop "$dir"
  cx_die "Keycloak not ready within ${timeout}s (log: $dir/keycloak.log)"
}

# keycloak_stop <dir>: stop the instance started from <dir>: TERM to kc.sh, which hands it to
# its java and waits for the graceful shutdown; after 30 s both are killed. Quiet when it is not
# running.
keycloak_stop() {
  local dir=${1:?usage: keycloak_stop <dir>} pid java i
  pid=$(cat "$dir/keycloak.pid" 2>/dev/null) || return 0
  java=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ' || true)
  if kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < 120; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    # shellcheck disable=SC2086 # java: the child pids, one per word
    kill -KILL "$pid" $java 2>/dev/null || true
  fi
  rm -f "$dir/keycloak.pid"
}

# The instance home: kc.sh resolves its home from its own location, so a copy of it (not a
# link) makes <dir> the home, while the installation's read-only parts are linked.
_kc_make_home() {
  local dir=$1 part
  mkdir -p "$dir/bin" "$dir/data/import"
  cp "$CX_KEYCLOAK_DIR/bin/kc.sh" "$dir/bin/kc.sh"
  for part in lib conf themes providers; do
    ln -sfn "$CX_KEYCLOAK_DIR/$part" "$dir/$part"
  done
  cp "$CX_ROOT"/deploy/keycloak/realm-*.json "$dir/data/import/"
}
