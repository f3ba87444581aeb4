#!/bin/sh
# Creates what is missing (CA, server certificate, state), hands the CA certificate, and
# only it, to the host through the /var/lib/airlock/ca mount, then runs airlock.
set -eu
airlock init >/dev/null
if cp /var/lib/airlock/certs/ca.pem /var/lib/airlock/ca/ca.pem.tmp 2>/dev/null; then
  mv /var/lib/airlock/ca/ca.pem.tmp /var/lib/airlock/ca/ca.pem
else
  echo "airlock: cannot write the CA certificate to ./airlock-ca on the host (make it owned by uid 10001); agents need it as AWS_CA_BUNDLE" >&2
fi
exec airlock "$@"
