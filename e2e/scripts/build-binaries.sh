#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy at the versions pinned in
# e2e/versions.env, into a cache outside the repository keyed by version. A part whose folder
# holds a .complete stamp is reused, so a warm run does no Go work at all.
#
#   e2e/scripts/build-binaries.sh            build what is missing
#   BFTKUBE_CACHE_DIR=/somewhere ...         use another cache (default ~/.cache/bftkube)
#   BFTKUBE_SKIP_BINARIES=1 ...              do nothing (for machines that only run unit tests)
set -euo pipefail

if [[ "${BFTKUBE_SKIP_BINARIES:-}" == "1" ]]; then
  echo "build-binaries: skipped (BFTKUBE_SKIP_BINARIES=1)"
  exit 0
fi

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../versions.env
source "$here/../versions.env"
cache="${BFTKUBE_CACHE_DIR:-$HOME/.cache/bftkube}"
mkdir -p "$cache/bin" "$cache/build" "$cache/logs"

# Go itself is published on the module proxy as golang.org/toolchain: a machine without Go gets the
# pinned toolchain from there into the cache (this is what GOTOOLCHAIN downloads do).
go_toolchain_version=go1.26.8
ensure_go() {
  if command -v go >/dev/null; then return; fi
  local dir="$cache/toolchain/$go_toolchain_version"
  if [[ ! -x "$dir/go/bin/go" ]]; then
    local proxy="${GOPROXY:-https://proxy.golang.org}"; proxy="${proxy%%,*}"
    local zip="$cache/toolchain/$go_toolchain_version.zip"
    mkdir -p "$cache/toolchain"
    echo "build-binaries: no go on PATH; fetching $go_toolchain_version from $proxy"
    curl -fsSL -o "$zip" "$proxy/golang.org/toolchain/@v/v0.0.1-$go_toolchain_version.linux-amd64.zip"
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m zipfile -e "$zip" "$dir"
    # The module zip nests the tree under golang.org/toolchain@<version>/.
    mv "$dir"/golang.org/toolchain@*/ "$dir/go" && rm -rf "$dir/golang.org" "$zip"
    chmod +x "$dir/go/bin/"* "$dir/go/pkg/tool/"*/* 2>/dev/null || true
  fi
  export PATH="$dir/go/bin:$PATH"
}
ensure_go
command -v go >/dev/null || { echo "BFT_ERR_GO_MISSING: the Go toolchain is needed to build the control plane (go >= 1.26)" >&2; exit 1; }

# Never let go download another toolchain: the pinned modules declare go 1.26.0, which the installed
# Go satisfies; a toolchain line in a dependency must not turn into a network fetch.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# Builds share the machine with tests: stay out of their way.
nice_cmd=(nice -n 10)
ldflags_strip="-s -w"
# Kubernetes and etcd rebuilt from modules otherwise report v0.0.0-master; helm's kubeVersion checks
# and `kubectl version` read these.
build_date="1970-01-01T00:00:00Z"

timing() { # name seconds
  echo "$1 $2" >>"$cache/logs/build-times.txt"
  echo "build-binaries: $1 built in $2 s"
}

build_etcd() {
  local out="$cache/bin/etcd-$ETCD_VERSION"
  [[ -f "$out/.complete" ]] && { echo "build-binaries: etcd $ETCD_VERSION cached in $out"; return; }
  local started=$SECONDS dir="$cache/build/etcd-$ETCD_VERSION"
  mkdir -p "$dir" "$out"
  # etcd's server module carries replace directives, so `go install ...@version` refuses it; a
  # one-file module that calls etcdmain.Main is the supported way to get the same binary.
  cat >"$dir/go.mod" <<MOD
module bftkube.local/build/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && GOFLAGS=-mod=mod go mod tidy && GOFLAGS=-mod=mod "${nice_cmd[@]}" go build -trimpath \
    -ldflags "$ldflags_strip" -o "$out/etcd" .)
  touch "$out/.complete"
  timing "etcd-$ETCD_VERSION" $((SECONDS - started))
}

build_kubernetes() {
  local out="$cache/bin/kubernetes-$KUBERNETES_VERSION"
  [[ -f "$out/.complete" ]] && { echo "build-binaries: kubernetes $KUBERNETES_VERSION cached in $out"; return; }
  local started=$SECONDS dir="$cache/build/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$dir" "$out"
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging paths,
  # which do not exist outside its repository. Each staging module is published as k8s.io/<name>
  # v0.X.Y matching v1.X.Y: pin every one of them here.
  local mods=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
    cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt
    kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
    mount-utils pod-security-admission sample-apiserver streaming)
  {
    echo "module bftkube.local/build/kubernetes"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    for m in "${mods[@]}"; do echo "	k8s.io/$m => k8s.io/$m $staging"; done
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="$ldflags_strip"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  (cd "$dir" && GOFLAGS=-mod=mod go mod tidy -e && GOFLAGS=-mod=mod "${nice_cmd[@]}" go build -trimpath \
    -ldflags "$ldflags" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  touch "$out/.complete"
  timing "kubernetes-$KUBERNETES_VERSION" $((SECONDS - started))
}

# CoreDNS and helm carry no replace directives: `go install module@version` builds them with exactly
# the dependency versions they were released with.
build_installable() { # name version package ldflags
  local name=$1 version=$2 pkg=$3 ldflags=$4
  local out="$cache/bin/$name-$version"
  [[ -f "$out/.complete" ]] && { echo "build-binaries: $name $version cached in $out"; return; }
  local started=$SECONDS
  mkdir -p "$out"
  GOFLAGS= GOBIN="$out" "${nice_cmd[@]}" go install -trimpath -ldflags "$ldflags" "$pkg@$version"
  touch "$out/.complete"
  timing "$name-$version" $((SECONDS - started))
}

build_etcd
build_kubernetes
build_installable coredns "$COREDNS_VERSION" github.com/coredns/coredns "$ldflags_strip"
build_installable helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm \
  "$ldflags_strip -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
echo "build-binaries: all parts present under $cache/bin"
