# Dev PKI for credex: a CA, one mTLS certificate per service, the CLI's client certificate, the
# dev JWT signing key with its JWKS, and the local-cmk root key; plus test-only certificates.
# Sourced after scripts/lib/common.sh, never executed. Uses the openssl CLI and python3 (stdlib).
#
# Layout of "$CX_PKI" (default "$CX_RUN/pki"; directory 0700, every file 0600):
#   ca.pem ca.key                  "credex dev CA", EC P-256, 10 years
#   <svc>.pem <svc>.key            svc in CX_SERVICES: URI SAN spiffe://credex.local/<svc>,
#                                  DNS:localhost, IP:127.0.0.1, serverAuth+clientAuth, 1 year
#   credexctl.pem credexctl.key    the CLI and the black-box tests: spiffe://credex.local/credexctl,
#                                  clientAuth, 1 year
#   jwt-signing.key                dev JWT issuer key, EC P-256 (ES256)
#   jwks.json                      its public key only; kid = RFC 7638 thumbprint
#   jwt-issuer.txt                 https://credex.local/dev-issuer
#   local-cmk.key                  root key of the local-cmk key provider: 32 random bytes, hex
# and, from pki_ensure_dev_callers (scripts/run calls it; pki_ensure alone does not):
#   agent-runtime.pem .key         a dev server-side caller: spiffe://credex.local/agent-runtime,
#                                  clientAuth, 1 year, so that a developer can act as an agent
#                                  runtime (`credexctl retrieve --as-service agent-runtime`)
# and, from pki_issue_caller_cert (`scripts/run cert NAME`), a certificate for any other
# server-side caller, by default in "$CX_RUN/certs".
# Creation is idempotent: existing files are kept; a certificate that is missing, no longer
# chains to the CA or expires within a week is re-issued. Keys are never printed.
# shellcheck shell=bash

CX_PKI=${CX_PKI:-$CX_RUN/pki}
CX_SERVICES=(keywrap store oauth gateway edge)
CX_TRUST_DOMAIN=credex.local
CX_CLI_IDENTITY=credexctl
CX_DEV_CALLERS=(agent-runtime)
CX_JWT_ISSUER=https://credex.local/dev-issuer

readonly _PKI_LEAF_DAYS=365 _PKI_CA_DAYS=3650 _PKI_RENEW_SECONDS=604800

# pki_ensure: create whatever part of the dev PKI is missing under $CX_PKI.
pki_ensure() {
  (
    umask 077
    mkdir -p "$CX_PKI"
    chmod 700 "$CX_PKI"
    _pki_ensure_ca "$CX_PKI" ca "credex dev CA"
    local svc
    for svc in "${CX_SERVICES[@]}"; do
      _pki_ensure_leaf "$svc" server
    done
    _pki_ensure_leaf "$CX_CLI_IDENTITY" client
    _pki_ensure_jwt
    _pki_ensure_file "$CX_PKI/jwt-issuer.txt" _pki_write_issuer
    _pki_ensure_file "$CX_PKI/local-cmk.key" _pki_write_cmk
  )
}

# pki_ensure_dev_callers: the dev server-side caller certificates (CX_DEV_CALLERS) in $CX_PKI,
# client-only like a real agent runtime's. Separate from pki_ensure so that the core PKI stays
# exactly the services' and the CLI's identities.
pki_ensure_dev_callers() {
  _pki_need_ca
  (
    umask 077
    local name
    for name in "${CX_DEV_CALLERS[@]}"; do
      _pki_ensure_leaf "$name" client
    done
  )
}

# pki_make_test_certs <dir>: test-only certificates (never used by the running stack):
#   other-ca.pem/.key   a foreign CA ("credex other CA")
#   other.pem/.key      leaf from the foreign CA claiming spiffe://credex.local/gateway
#   two-uris.pem/.key   leaf from our CA with two URI SANs (gateway and credexctl)
#   no-uri.pem/.key     leaf from our CA with no URI SAN (DNS:localhost only)
#   intruder.pem/.key   leaf from our CA for the identity "intruder"
pki_make_test_certs() {
  local dir=${1:?usage: pki_make_test_certs <dir>}
  _pki_need_ca
  (
    umask 077
    mkdir -p "$dir"
    _pki_ensure_ca "$dir" other-ca "credex other CA"
    _pki_issue "$dir/other-ca" "$dir/other" gateway "URI:$(_pki_spiffe gateway),DNS:localhost" both
    _pki_issue "$CX_PKI/ca" "$dir/two-uris" two-uris \
      "URI:$(_pki_spiffe gateway),URI:$(_pki_spiffe "$CX_CLI_IDENTITY"),DNS:localhost" both
    _pki_issue "$CX_PKI/ca" "$dir/no-uri" no-uri "DNS:localhost,IP:127.0.0.1" both
  )
  pki_make_identity_cert "$dir" intruder
}

# pki_make_identity_cert <dir> <name>: <dir>/<name>.pem/.key from our CA for
# spiffe://credex.local/<name> (serverAuth+clientAuth), e.g. an identity no allow-list knows.
pki_make_identity_cert() {
  local dir=${1:?usage: pki_make_identity_cert <dir> <name>} name=${2:?missing identity name}
  _pki_valid_name "$name" || cx_die "pki: bad identity name '$name' (expected [a-z0-9-]+)"
  _pki_need_ca
  (
    umask 077
    mkdir -p "$dir"
    _pki_issue "$CX_PKI/ca" "$dir/$name" "$name" "URI:$(_pki_spiffe "$name"),DNS:localhost,IP:127.0.0.1" both
  )
}

# pki_issue_caller_cert <dir> <name>: <dir>/<name>.pem/.key from our CA for the server-side
# caller spiffe://credex.local/<name> (clientAuth only, 1 year, like the dev callers); <dir> is
# created 0700, the files are 0600. Existing files are replaced: callers check first.
pki_issue_caller_cert() {
  local dir=${1:?usage: pki_issue_caller_cert <dir> <name>} name=${2:?missing identity name}
  _pki_valid_name "$name" || cx_die "pki: bad identity name (expected 1..63 of [a-z0-9-])"
  _pki_need_ca
  (
    umask 077
    mkdir -p "$dir"
    chmod 700 "$dir"
    _pki_issue "$CX_PKI/ca" "$dir/$name" "$name" "URI:$(_pki_spiffe "$name")" client
    chmod 600 "$dir/$name.pem" "$dir/$name.key"
  )
}

# pki_issue_server_cert <dir> <name> <dns-name>...: <dir>/<name>.pem/.key from our CA for the
# service spiffe://credex.local/<name> (serverAuth+clientAuth, 1 year) with these DNS names, for
# peers that dial it by a name other than localhost (compose/bootstrap.sh: the compose service
# names). Existing files are replaced: callers check first.
pki_issue_server_cert() {
  local dir=${1:?usage: pki_issue_server_cert <dir> <name> <dns-name>...} name=${2:?missing identity name}
  shift 2
  _pki_valid_name "$name" || cx_die "pki: bad identity name (expected 1..63 of [a-z0-9-])"
  _pki_need_ca
  local san dns
  san="URI:$(_pki_spiffe "$name")"
  for dns in "$@"; do
    [[ $dns =~ ^[a-z0-9.-]{1,253}$ ]] || cx_die "pki: bad DNS name '$dns'"
    san="$san,DNS:$dns"
  done
  (
    umask 077
    mkdir -p "$dir"
    _pki_issue "$CX_PKI/ca" "$dir/$name" "$name" "$san" both
  )
}

# ---- internals ---------------------------------------------------------------------------

_pki_spiffe() { printf 'spiffe://%s/%s' "$CX_TRUST_DOMAIN" "$1"; }

_pki_need_ca() {
  if [ ! -s "$CX_PKI/ca.key" ] || [ ! -s "$CX_PKI/ca.pem" ]; then
    cx_die "pki: no dev CA in $CX_PKI (pki_ensure first)"
  fi
}

_pki_valid_name() { [[ $1 =~ ^[a-z0-9-]{1,63}$ ]]; }

_pki_openssl() {
  local out
  if ! out=$(openssl "$@" 2>&1); then
    cx_die "pki: openssl $1 failed: $out"
  fi
}

_pki_newkey() { _pki_openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

_pki_serial() { printf '0x%s' "$(openssl rand -hex 16)"; }

# _pki_ensure_ca <dir> <base> <CN>: <dir>/<base>.pem/.key, unless a valid one is there. A new CA
# makes every certificate it signed stale; those are re-issued by their own ensure step.
_pki_ensure_ca() {
  local dir=$1 base=$2 cn=$3
  if [ -s "$dir/$base.key" ] && _pki_cert_fresh "$dir/$base.pem"; then
    return 0
  fi
  cx_say "pki: creating CA '$cn' in $dir"
  _pki_newkey "$dir/$base.key"
  local ext
  ext=$(_pki_extfile "basicConstraints=critical,CA:TRUE,pathlen:0" \
    "keyUsage=critical,keyCertSign,cRLSign" "subjectKeyIdentifier=hash")
  _pki_openssl req -new -x509 -key "$dir/$base.key" -subj "/CN=$cn" -days "$_PKI_CA_DAYS" \
    -sha256 -set_serial "$(_pki_serial)" -config "$ext" -extensions ext -out "$dir/$base.pem"
  rm -f "$ext"
}

# _pki_ensure_leaf <name> server|client: our own certificate for one identity in $CX_PKI.
_pki_ensure_leaf() {
  local name=$1 usage=$2 san
  if [ -s "$CX_PKI/$name.key" ] && _pki_cert_fresh "$CX_PKI/$name.pem" \
    && openssl verify -CAfile "$CX_PKI/ca.pem" "$CX_PKI/$name.pem" >/dev/null 2>&1; then
    return 0
  fi
  san="URI:$(_pki_spiffe "$name")"
  if [ "$usage" = server ]; then
    san="$san,DNS:localhost,IP:127.0.0.1"
    usage=both
  fi
  cx_say "pki: issuing certificate for $(_pki_spiffe "$name")"
  _pki_issue "$CX_PKI/ca" "$CX_PKI/$name" "$name" "$san" "$usage"
}

# _pki_issue <ca-base> <out-base> <CN> <subjectAltName> both|client: a fresh key and a 1-year
# leaf certificate signed by <ca-base>.pem/.key.
_pki_issue() {
  local ca=$1 out=$2 cn=$3 san=$4 usage=$5 eku=clientAuth ext csr
  [ "$usage" = both ] && eku=serverAuth,clientAuth
  ext=$(_pki_extfile "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=$eku" "subjectAltName=$san" "subjectKeyIdentifier=hash" \
    "authorityKeyIdentifier=keyid")
  csr="$out.csr"
  _pki_newkey "$out.key"
  _pki_openssl req -new -key "$out.key" -subj "/O=credex dev/CN=$cn" -out "$csr"
  _pki_openssl x509 -req -in "$csr" -CA "$ca.pem" -CAkey "$ca.key" -set_serial "$(_pki_serial)" \
    -days "$_PKI_LEAF_DAYS" -sha256 -extfile "$ext" -extensions ext -out "$out.pem"
  rm -f "$csr" "$ext"
}

# _pki_extfile <line>...: a temporary openssl config with those lines in section [ext]; prints
# its path. The [req] section lets `req -x509` use it as its whole configuration.
_pki_extfile() {
  local f
  f=$(mktemp "${TMPDIR:-/tmp}/credex-ext.XXXXXX")
  {
    printf '[req]\ndistinguished_name=dn\n[dn]\n[ext]\n'
    printf '%s\n' "$@"
  } >"$f"
  printf '%s' "$f"
}

# True when the certificate exists and stays valid for at least a week.
_pki_cert_fresh() {
  [ -s "$1" ] && openssl x509 -in "$1" -noout -checkend "$_PKI_RENEW_SECONDS" >/dev/null 2>&1
}

_pki_ensure_file() {
  local path=$1 writer=$2
  [ -s "$path" ] && return 0
  "$writer" "$path"
}

_pki_write_issuer() { printf '%s\n' "$CX_JWT_ISSUER" >"$1"; }

_pki_write_cmk() {
  cx_say "pki: creating the local-cmk root key"
  openssl rand -hex 32 >"$1"
}

# The JWT signing key and its JWKS; the JWKS is rebuilt when the key is newer than it.
_pki_ensure_jwt() {
  local key="$CX_PKI/jwt-signing.key" jwks="$CX_PKI/jwks.json"
  if [ ! -s "$key" ]; then
    cx_say "pki: creating the dev JWT signing key (ES256)"
    _pki_newkey "$key"
    rm -f "$jwks"
  fi
  [ -s "$jwks" ] && [ ! "$key" -nt "$jwks" ] && return 0
  # Only the public key (SubjectPublicKeyInfo, DER) crosses the pipe.
  openssl pkey -in "$key" -pubout -outform DER | python3 -c "$_PKI_JWKS_PY" >"$jwks.tmp" \
    || cx_die "pki: could not build $jwks"
  mv -f "$jwks.tmp" "$jwks"
}

# Reads a P-256 SubjectPublicKeyInfo (DER) on stdin and prints a JWKS with one ES256 key whose
# kid is its RFC 7638 thumbprint.
read -r -d '' _PKI_JWKS_PY <<'PY' || true
import base64, hashlib, json, sys
der = sys.stdin.buffer.read()
# For P-256 the SPKI ends with the uncompressed point 0x04 || X(32) || Y(32).
P256_OID = bytes.fromhex("06082a8648ce3d030107")
point = der[-65:]
if len(der) != 91 or P256_OID not in der or point[0] != 4:
    sys.exit("not an uncompressed P-256 public key")
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
x, y = b64(point[1:33]), b64(point[33:65])
members = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True)
kid = b64(hashlib.sha256(members.encode()).digest())
jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"}
print(json.dumps({"keys": [jwk]}, indent=2))
PY
