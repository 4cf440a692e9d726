#!/usr/bin/env bash
# One-shot bootstrap of the compose stack (compose/compose.yaml, service `bootstrap`), run before
# the credex services start; idempotent, so every `docker compose up` runs it again:
#   1. the dev PKI (scripts/lib/pki.sh) in the `pki` volume, laid out per consumer so that each
#      container mounts only its own directory (a volume subpath) at /var/run/credex/tls:
#        <svc>/ca.pem tls.pem tls.key   svc in keywrap store oauth gateway edge, certificates
#                                       with spiffe://credex.local/<svc> and DNS <svc>, localhost
#        keywrap/local-cmk.key           the local-cmk root key (development only)
#        keycloak/ca.pem tls.pem tls.key Keycloak's https certificate (DNS keycloak, localhost)
#        credexctl/ca.pem tls.pem tls.key the CLI's client certificate
#   2. the OpenFGA store and authorization model (deploy/openfga/model.json), their ids written
#      to the `bootstrap` volume as openfga.env, which the gateway's entrypoint sources (with
#      the model file's hash, so that the model is written again only when it changed);
#   3. the MongoDB indexes (credexctl db init-indexes).
# Development only: the CA key stays in the pki volume (mounted here only), and Keycloak's key
# is readable by Keycloak's own user. Environment: CREDEX_MONGO_URI, CREDEX_MONGO_DB,
# CREDEX_OPENFGA_URL (set by compose.yaml); and, for running it outside its image (the test
# tests/e2e/test_compose.py does, against the test stack's FerretDB and OpenFGA):
# CREDEX_BOOTSTRAP_ROOT [/opt/credex] (holds scripts/lib and deploy/openfga, as the repository
# does), CREDEX_BOOTSTRAP_PKI_DIR [/pki], CREDEX_BOOTSTRAP_STATE_DIR [/bootstrap].
set -euo pipefail
CX_ROOT=${CREDEX_BOOTSTRAP_ROOT:-/opt/credex}
. "$CX_ROOT/scripts/lib/common.sh"
readonly PKI_ROOT=${CREDEX_BOOTSTRAP_PKI_DIR:-/pki} BOOT=${CREDEX_BOOTSTRAP_STATE_DIR:-/bootstrap}
export CX_RUN=$PKI_ROOT/.run CX_PKI=$PKI_ROOT/.ca
. "$CX_ROOT/scripts/lib/pki.sh"

# has_dns <cert> <name>: the certificate lists DNS:<name>.
has_dns() { openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | grep -q "DNS:$2\(,\|$\)"; }

# lay_out <dir> <cert> <key>: a consumer's directory with the CA, its certificate and key.
lay_out() {
  local dir=$1
  mkdir -p "$dir"
  install -m 0644 "$CX_PKI/ca.pem" "$dir/ca.pem"
  install -m 0644 "$2" "$dir/tls.pem"
  install -m 0600 "$3" "$dir/tls.key"
}

make_pki() {
  local svc
  pki_ensure
  for svc in "${CX_SERVICES[@]}" keycloak; do
    if ! has_dns "$CX_PKI/$svc.pem" "$svc"; then
      cx_say "issuing the $svc certificate for the compose network"
      pki_issue_server_cert "$CX_PKI" "$svc" "$svc" localhost
    fi
    lay_out "$PKI_ROOT/$svc" "$CX_PKI/$svc.pem" "$CX_PKI/$svc.key"
  done
  install -m 0600 "$CX_PKI/local-cmk.key" "$PKI_ROOT/keywrap/local-cmk.key"
  # Keycloak runs as its image's own user, not credex's: its key must be readable by it.
  chmod 0644 "$PKI_ROOT/keycloak/tls.key"
  lay_out "$PKI_ROOT/credexctl" "$CX_PKI/credexctl.pem" "$CX_PKI/credexctl.key"
}

fga() {
  local args=(-sS --fail-with-body --max-time 10 -X "$1" -H 'content-type: application/json')
  [ $# -ge 3 ] && args+=(--data-binary "@$3")
  curl "${args[@]}" "$CREDEX_OPENFGA_URL$2"
}

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# setting <name>: a value recorded in openfga.env by an earlier run (empty if none).
setting() {
  [ -f "$BOOT/openfga.env" ] || return 0
  sed -n "s/^\(export \)\{0,1\}$1=//p" "$BOOT/openfga.env"
}

# The store is kept across runs; the model is written again only when model.json changed.
make_openfga() {
  local store model sum resp body model_json=$CX_ROOT/deploy/openfga/model.json
  store=$(setting CREDEX_OPENFGA_STORE_ID)
  model=$(setting CREDEX_OPENFGA_MODEL_ID)
  sum=$(sha256sum "$model_json" | cut -d' ' -f1)
  if [ -z "$store" ] || ! fga GET "/stores/$store" >/dev/null 2>&1; then
    body=$(mktemp)
    printf '{"name":"credex"}' >"$body"
    resp=$(fga POST /stores "$body") || cx_die "could not create an OpenFGA store: $resp"
    store=$(json_field id <<<"$resp")
    model=""
    rm -f "$body"
  fi
  if [ -z "$model" ] || [ "$(setting model_sha256)" != "$sum" ] \
    || ! fga GET "/stores/$store/authorization-models/$model" >/dev/null 2>&1; then
    resp=$(fga POST "/stores/$store/authorization-models" "$model_json") \
      || cx_die "OpenFGA rejected the model: $resp"
    model=$(json_field authorization_model_id <<<"$resp")
  fi
  printf 'export CREDEX_OPENFGA_STORE_ID=%s\nexport CREDEX_OPENFGA_MODEL_ID=%s\nmodel_sha256=%s\n' \
    "$store" "$model" "$sum" >"$BOOT/openfga.env.tmp"
  mv -f "$BOOT/openfga.env.tmp" "$BOOT/openfga.env"
  cx_say "OpenFGA store $store, model $model"
}

make_pki
make_openfga
credexctl db init-indexes
cx_say "bootstrap done"
