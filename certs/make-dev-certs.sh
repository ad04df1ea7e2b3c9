#!/usr/bin/env bash
# Makes the development PKI and signing keys the demo and the tests use:
#   ca.crt/ca.key            a throwaway development CA
#   gateway.crt/.key         the gateway's server certificate (localhost, 127.0.0.1, ::1)
#   sandbox.crt/.key         ghl-sandbox's server certificate (same names)
#   client.crt/.key          a client certificate for mutual TLS
#   jwt-rs256.key/.pub.pem   an RSA 2048 key pair for signing development JWTs
#   jwt-es256.key/.pub.pem   an EC P-256 key pair for signing development JWTs
#   jwt-hs256.secret         a 32-byte HMAC secret (base64url text)
# Usage: certs/make-dev-certs.sh [OUTDIR]   (default: certs/dev next to this script)
# Existing files are kept; delete OUTDIR to start over. Nothing here is for production, and
# nothing this script writes is committed (certs/dev/ is in .gitignore).
set -euo pipefail
out=${1:-"$(cd "$(dirname "$0")" && pwd)/dev"}
mkdir -p "$out"
cd "$out"
umask 077
days=825

if [ ! -f ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/CN=ghl-gateway development CA" -keyout ca.key -out ca.crt \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
fi

leaf() { # name subject extensions
  local name=$1 cn=$2 ext=$3
  [ -f "$name.crt" ] && return 0
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1'
leaf gateway "ghl-gateway (development)" "$server_ext"
leaf sandbox "ghl-sandbox (development)" "$server_ext"
leaf client "internal-tool (development)" 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

if [ ! -f jwt-rs256.key ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt-rs256.key 2>/dev/null
  openssl pkey -in jwt-rs256.key -pubout -out jwt-rs256.pub.pem
fi
if [ ! -f jwt-es256.key ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out jwt-es256.key 2>/dev/null
  openssl pkey -in jwt-es256.key -pubout -out jwt-es256.pub.pem
fi
if [ ! -f jwt-hs256.secret ]; then
  openssl rand 32 | openssl base64 -A | tr '+/' '-_' | tr -d '=' > jwt-hs256.secret
fi
chmod 600 ./*.key jwt-hs256.secret
chmod 644 ./*.crt ./*.pub.pem
echo "development certificates and keys in $out"
