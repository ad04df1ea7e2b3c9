#!/usr/bin/env bash
# Certificates for the integration suites: the development set (certs/make-dev-certs.sh) plus
#   wrongname.crt/.key   a server certificate from the same CA for a name the gateway does not
#                        expect (wrong.example), to prove the upstream hostname check
#   rogue-ca.crt, rogue-client.crt/.key   a client certificate from a CA the gateway does not trust
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
chmod 644 ./*.crt
