#!/usr/bin/env bash
# `envoy`, from a container image: lets the end-to-end suite run against released Envoy and Istio
# proxies without installing them.
#
#   ENVOY_IMAGE=envoyproxy/envoy:v1.32.3 ENVOY_BIN=$PWD/tests/ci/envoy-docker.sh make e2e
#
# The harness starts `$ENVOY_BIN -c <config> …` and stops it with SIGTERM (SIGKILL after a grace
# period), so this wrapper must behave like the binary:
#  - host network: the harness's provider, echo service and free ports are on 127.0.0.1;
#  - the repository mounted at the same path: configs, the .wasm and logs live under it;
#  - the caller's uid, so Envoy can write the access logs the harness reads;
#  - `exec` + docker's signal proxy: SIGTERM reaches Envoy, and the container's exit code is ours.
# A container orphaned by a SIGKILL carries the label below; CI removes those at the end.
set -euo pipefail

: "${ENVOY_IMAGE:?set ENVOY_IMAGE to an image with Envoy at /usr/local/bin/envoy, e.g. envoyproxy/envoy:v1.32.3}"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# --entrypoint: envoyproxy/envoy's entrypoint would switch to its own user, and istio/proxyv2's
# is pilot-agent; both images have the plain binary at /usr/local/bin/envoy.
exec docker run --rm --init --sig-proxy=true \
  --label mesh-oidc-e2e=1 \
  --network host \
  --user "$(id -u):$(id -g)" \
  --volume "$repo:$repo" \
  --workdir "$PWD" \
  --entrypoint /usr/local/bin/envoy \
  "$ENVOY_IMAGE" "$@"
