#!/usr/bin/env bash
# Certificates for the integration suites: the development set (certs/make-dev-certs.sh) plus
#   wrongname.crt/.key   a server certificate from the same CA for a name the gateway does not
#                        expect (wrong.example), to prove the upstream hostname check
#   rogue-ca.crt, rogue-client.crt/.key   a client certificate from a CA the gateway does not trust
#   jwt-ps.key/.pub.pem        an RSA 3072 key pair for PS256/384/512 tokens (test_algorithms)
#   jwt-ed25519.key/.pub.pem   an Ed25519 key pair for EdDSA tokens
#   jwt-ed448.key/.pub.pem     an Ed448 key pair, which the gateway must refuse
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
"$here/../../certs/make-dev-certs.sh" "$out" >/dev/null
cd "$out"
umask 077
if [ ! -f wrongname.crt ]; then
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=wrong.example \
    -keyout wrongname.key -out wrongname.csr 2>/dev/null
  printf 'subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth\n' > wrongname.ext
  openssl x509 -req -in wrongname.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile wrongname.ext -out wrongname.crt 2>/dev/null
  rm -f wrongname.csr wrongname.ext
fi
if [ ! -f rogue-client.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=rogue CA" -keyout rogue-ca.key -out rogue-ca.crt 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=rogue-client \
    -keyout rogue-client.key -out rogue-client.csr 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > rogue.ext
  openssl x509 -req -in rogue-client.csr -CA rogue-ca.crt -CAkey rogue-ca.key -CAcreateserial \
    -days 30 -extfile rogue.ext -out rogue-client.crt 2>/dev/null
  rm -f rogue-client.csr rogue.ext
fi
if [ ! -f jwt-ps.key ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out jwt-ps.key 2>/dev/null
  openssl pkey -in jwt-ps.key -pubout -out jwt-ps.pub.pem
fi
for k in ed25519 ed448; do
  if [ ! -f jwt-$k.key ]; then
    openssl genpkey -algorithm "$k" -out jwt-$k.key 2>/dev/null
    openssl pkey -in jwt-$k.key -pubout -out jwt-$k.pub.pem
  fi
done
chmod 644 ./*.crt
