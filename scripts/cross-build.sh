#!/bin/sh
# cross-build.sh: build static zerotouch binaries for the ARM gateways of
# the field (the device agent, `zerotouch device run`, runs on them).
#
#   scripts/cross-build.sh [OUTDIR]     (default: dist)
#
# Produces OUTDIR/zerotouch-linux-arm64 and OUTDIR/zerotouch-linux-armv7.
# CGO_ENABLED=0 works because every dependency is pure Go (the SQLite
# driver included), so no cross C toolchain is needed and the binaries run
# on any Linux of that architecture.
set -eu

cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"

build() { # GOARCH GOARM NAME
	echo "building $out/$3" >&2
	CGO_ENABLED=0 GOOS=linux GOARCH=$1 GOARM=$2 \
		go build -trimpath -ldflags='-s -w' -o "$out/$3" ./cmd/zerotouch
}

build arm64 "" zerotouch-linux-arm64
build arm 7 zerotouch-linux-armv7
