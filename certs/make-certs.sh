#!/usr/bin/env bash
# Makes development certificates for h3gate: a private CA and a server
# certificate for localhost, 127.0.0.1 and ::1 that it signs. For tests and
# local use only: nothing here is fit for a public site.
#
#   certs/make-certs.sh [DIR]      (DIR defaults to certs/out beside this script)
#
# Writes into DIR:
#   ca.crt, ca.key             the CA (ECDSA P-256, 10 years); trust ca.crt
#   server.crt, server.key     the server certificate (ECDSA P-256, SHA-256,
#                              serverAuth, 825 days) and its key
#   server-chain.crt           server.crt then ca.crt, for h3gate's cert =
#   spki.txt                   base64 SHA-256 of the server's public key, for
#                              chromium --ignore-certificate-errors-spki-list
#
# Idempotent: when every file is there, the server certificate is signed by
# ca.crt and stays valid for more than a day, it does nothing. Otherwise it
# reissues what is needed, keeping a CA that is still valid for 30 days, so
# a CA already imported into a trust store keeps working.
set -euo pipefail

DIR=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/out"}
# 825 days: the longest validity Apple's platforms accept for a TLS server
# certificate from a private CA; Chromium accepts it too.
LEAF_DAYS=825
CA_DAYS=3650
DAY=86400

log() { printf 'make-certs: %s\n' "$*" >&2; }

command -v openssl >/dev/null || { log "the openssl command is missing"; exit 1; }
mkdir -p "$DIR"
cd "$DIR"
# Private keys are readable by their owner only.
umask 077

valid_for() { # FILE SECONDS: the certificate in FILE is valid that long
  openssl x509 -in "$1" -noout -checkend "$2" >/dev/null 2>&1
}

leaf_ok() {
  local f
  for f in ca.crt ca.key server.crt server.key server-chain.crt spki.txt; do
    [ -s "$f" ] || return 1
  done
  valid_for server.crt "$DAY" &&
    openssl verify -CAfile ca.crt server.crt >/dev/null 2>&1
}

if leaf_ok; then
  log "certificates in $DIR are current (server.crt valid for more than a day)"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ -s ca.crt ] && [ -s ca.key ] && valid_for ca.crt $((30 * DAY)); then
  log "keeping the CA in $DIR/ca.crt"
else
  log "making a development CA"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$WORK/ca.key"
  cat > "$WORK/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca_ext
[dn]
O = h3gate development
CN = h3gate development CA
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl req -new -x509 -config "$WORK/ca.cnf" -key "$WORK/ca.key" \
    -sha256 -days "$CA_DAYS" -set_serial "0x$(openssl rand -hex 16)" \
    -out "$WORK/ca.crt"
  mv "$WORK/ca.key" ca.key
  mv "$WORK/ca.crt" ca.crt
  chmod 644 ca.crt
fi

log "making the server certificate for localhost, 127.0.0.1, ::1"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
  -out "$WORK/server.key"
openssl req -new -key "$WORK/server.key" -subj "/O=h3gate development/CN=localhost" \
  -out "$WORK/server.csr"
cat > "$WORK/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl x509 -req -in "$WORK/server.csr" -CA ca.crt -CAkey ca.key \
  -set_serial "0x$(openssl rand -hex 16)" -days "$LEAF_DAYS" -sha256 \
  -extfile "$WORK/server.ext" -out "$WORK/server.crt" 2>/dev/null
openssl verify -CAfile ca.crt "$WORK/server.crt" >/dev/null
cat "$WORK/server.crt" ca.crt > "$WORK/server-chain.crt"
openssl x509 -in "$WORK/server.crt" -noout -pubkey |
  openssl pkey -pubin -outform DER |
  openssl dgst -sha256 -binary | openssl base64 -A > "$WORK/spki.txt"
echo >> "$WORK/spki.txt"

mv "$WORK/server.key" server.key
mv "$WORK/server.crt" server.crt
mv "$WORK/server-chain.crt" server-chain.crt
mv "$WORK/spki.txt" spki.txt
chmod 644 server.crt server-chain.crt spki.txt

log "wrote $DIR: ca.crt server.crt server-chain.crt server.key spki.txt"
log "chromium: --origin-to-force-quic-on=localhost:443 --ignore-certificate-errors-spki-list=$(cat spki.txt)"
