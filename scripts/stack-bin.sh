#!/usr/bin/env bash
# Build the two stack components the suite runs for real, from their published Go modules, into
# .cache/stack-bin/ and print their paths, one per line (the Collector first, then Prometheus):
#   - the lezea Collector distribution: collector/builder-config.yaml (exactly the components the shipped
#     configs use, core and contrib at one release) built with the official builder
#     (go.opentelemetry.io/collector/cmd/builder) of that release;
#   - Prometheus at the release compose.yaml pins (prom/prometheus:vX.Y.Z is the Go module v0.XYY.Z),
#     its cmd/prometheus (and cmd/promtool, left beside it) built from the module's own go.mod and
#     go.sum, without the service-discovery plugins the shipped prometheus.yaml does not use
#     (-tags remove_all_sd) and without the web UI's assets (the API is all the suite and Grafana need).
# A binary already there, of the pinned versions and the same manifest, is reused: a second run takes a
# second. Build output goes to .cache/stack-src/*.log, shown when a build fails.
# Usage: bash scripts/stack-bin.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MANIFEST=collector/builder-config.yaml
BIN=.cache/stack-bin
SRC=.cache/stack-src
mkdir -p "$BIN" "$SRC"

OTELCOL_VERSION=$(sed -n 's/^  version: *//p' "$MANIFEST")
PROMETHEUS_VERSION=$(sed -n 's|^ *image: prom/prometheus:v||p' collector/compose.yaml)
CONTRIB_IMAGE_VERSION=$(sed -n 's|^ *image: otel/opentelemetry-collector-contrib:||p' collector/compose.yaml)
if [ "$OTELCOL_VERSION" != "$CONTRIB_IMAGE_VERSION" ]; then
  echo "stack-bin: $MANIFEST builds $OTELCOL_VERSION but compose.yaml runs contrib $CONTRIB_IMAGE_VERSION" >&2
  exit 1
fi
MANIFEST_HASH=$(sha256sum "$MANIFEST" | cut -c1-12)
OTELCOL="$BIN/otelcol-lezea-$OTELCOL_VERSION-$MANIFEST_HASH"
PROMETHEUS="$BIN/prometheus-$PROMETHEUS_VERSION"  # promtool-$PROMETHEUS_VERSION beside it

need_go() {  # only to build: binaries already there are used without it
  if ! command -v go >/dev/null 2>&1; then
    echo "stack-bin: building needs Go 1.26 or newer and its module proxy (this project's machines have both)" >&2
    exit 1
  fi
}

run_logged() {  # run_logged LOG CMD...: quiet unless it fails
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    echo "stack-bin: failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

if [ ! -x "$OTELCOL" ]; then
  need_go
  started=$SECONDS
  echo "stack-bin: building the collector $OTELCOL_VERSION ($MANIFEST)..." >&2
  BUILDER="$SRC/builder-$OTELCOL_VERSION"
  if [ ! -x "$BUILDER" ]; then
    run_logged "$SRC/builder-install.log" env GOBIN="$PWD/$SRC/gobin" \
      go install "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
    mv "$SRC/gobin/builder" "$BUILDER"
  fi
  run_logged "$SRC/otelcol-build.log" "$BUILDER" --config "$MANIFEST"
  out=$(sed -n 's/^  output_path: *//p' "$MANIFEST")
  cp "$out/otelcol-lezea" "$OTELCOL.tmp" && mv "$OTELCOL.tmp" "$OTELCOL"
  echo "stack-bin: collector built in $((SECONDS - started)) s" >&2
fi

if [ ! -x "$PROMETHEUS" ] || [ ! -x "$BIN/promtool-$PROMETHEUS_VERSION" ]; then
  need_go
  started=$SECONDS
  echo "stack-bin: building Prometheus $PROMETHEUS_VERSION..." >&2
  IFS=. read -r major minor patch <<<"$PROMETHEUS_VERSION"
  module_version=$(printf 'v0.%d%02d.%d' "$major" "$minor" "$patch")
  run_logged "$SRC/prometheus-download.log" go mod download -json "github.com/prometheus/prometheus@$module_version"
  dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' "$SRC/prometheus-download.log")
  # The module's go.work names folders its published zip leaves out: build from its go.mod alone.
  for command in prometheus promtool; do  # promtool checks and unit-tests the rule files
    run_logged "$SRC/$command-build.log" env -C "$dir" GOWORK=off go build -tags remove_all_sd \
      -ldflags "-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
      -o "$PWD/$BIN/$command-$PROMETHEUS_VERSION.tmp" "./cmd/$command"
  done
  mv "$BIN/promtool-$PROMETHEUS_VERSION.tmp" "$BIN/promtool-$PROMETHEUS_VERSION"
  mv "$PROMETHEUS.tmp" "$PROMETHEUS"
  echo "stack-bin: Prometheus built in $((SECONDS - started)) s" >&2
fi

echo "$PWD/$OTELCOL"
echo "$PWD/$PROMETHEUS"
