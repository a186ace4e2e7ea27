#!/usr/bin/env bash
# Build a real kube-apiserver and kube-controller-manager for the test-suite, from
# Debian bookworm's own `kubernetes` source package (upstream v1.20.x with vendor/).
#
# Idempotent: when ${RELAY_KUBE_CACHE:-/var/cache/relay-kube}/bin holds both binaries and a
# matching stamp, it exits 0 at once. Otherwise it installs what is missing (golang-go,
# etcd-server, ...), fetches the source through a private apt configuration (/etc/apt is
# never modified), generates the OpenAPI definitions the tarball lacks, swaps the vendored
# modern-go/reflect2 1.0.1 (crashes under Go >= 1.18) for Debian's 1.0.2, builds both binaries
# in GOPATH mode and installs them into the cache. Details go to $CACHE/build.log.
#
# Environment:
#   RELAY_KUBE_CACHE        cache directory (default /var/cache/relay-kube)
#   RELAY_KUBE_BUILD_JOBS   go build -p (default 2: ~1.3 GB of memory per job)
#   RELAY_KUBE_SRC_VERSION  pin the Debian source version (default: apt's candidate)
#   RELAY_KUBE_KEEP_WORK=1  keep the work tree and Go build cache after a successful build
set -euo pipefail

CACHE="${RELAY_KUBE_CACHE:-/var/cache/relay-kube}"
BIN="$CACHE/bin"
STAMP="$BIN/STAMP"
# Bump when the recipe changes in a way that must invalidate cached binaries.
STAMP_ID="relay-kube-build v1 kubernetes-1.20 reflect2-1.0.2"
WORK="$CACHE/work"
LOG="$CACHE/build.log"
JOBS="${RELAY_KUBE_BUILD_JOBS:-2}"
PACKAGES=(golang-go etcd-server dpkg-dev xz-utils openssl util-linux)
REFLECT2_PKG=golang-github-modern-go-reflect2-dev

say() { printf '[build-apiserver] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

binaries_ready() {
  [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -f "$STAMP" ]] &&
    [[ "$(head -n1 "$STAMP")" == "$STAMP_ID" ]]
}

fast_path_ok() { binaries_ready && command -v etcd >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; }

if fast_path_ok; then
  say "cached: $BIN ($(sed -n 2p "$STAMP"))"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get install; cache in $CACHE)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # a concurrent run (another pytest worker) builds; we wait for it
if fast_path_ok; then
  say "cached (built by a concurrent run): $BIN"
  exit 0
fi
: >"$LOG"
T0=$SECONDS

# Run "$@" with its output in the log; on failure show the log's tail.
run() {
  printf '\n+ %s\n' "$*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    say "FAILED: $* (tail of $LOG follows)" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

step() {
  local name=$1 t=$SECONDS
  shift
  say "$name ..."
  "$@"
  say "$name done in $((SECONDS - t)) s"
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] ||
      missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
}

install_packages
if binaries_ready; then
  say "binaries cached; installed missing packages only"
  exit 0
fi

# --- private apt configuration -------------------------------------------------------------
APTDIR="$CACHE/apt"
# The first URI that /etc/apt's sources (one-line or deb822) give for suite $1.
mirror_for() {
  local suite=$1 f
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -f "$f" ]] || continue
      awk -v s="$suite" '($1 == "deb" || $1 == "deb-src") {
          i = 2
          if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
          if ($(i + 1) == s) print $i
        }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -f "$f" ]] || continue
      awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" }
        {
          uris = ""; suites = ""; on = 1
          for (j = 1; j <= NF; j++) {
            l = $j; gsub(/\t/, " ", l)
            if (l ~ /^URIs:/) { sub(/^URIs: */, "", l); uris = l }
            else if (l ~ /^Suites:/) { sub(/^Suites: */, "", l); suites = " " l " " }
            else if (l ~ /^Enabled: *[Nn]o/) on = 0
          }
          if (on && uris != "" && index(suites, " " s " ")) { split(uris, u, " "); print u[1] }
        }' "$f"
    done
  } | grep -E '^(https?|file|mirror[+a-z]*):' | head -n1 || true
}

APT_OPTS=(
  -o "Dir::Etc::SourceList=$APTDIR/sources.list"
  -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$APTDIR/lists"
  -o "Dir::Cache=$APTDIR/cache"
  -o "APT::Sandbox::User=root"
)

setup_private_apt() {
  local main sec signed=""
  main=$(mirror_for bookworm)
  sec=$(mirror_for bookworm-security)
  main=${main:-http://deb.debian.org/debian}
  sec=${sec:-http://deb.debian.org/debian-security}
  [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  cat >"$APTDIR/sources.list" <<EOF
deb ${signed}${main} bookworm main
deb-src ${signed}${main} bookworm main
deb ${signed}${sec} bookworm-security main
deb-src ${signed}${sec} bookworm-security main
EOF
  say "mirrors: $main , $sec"
  run apt-get "${APT_OPTS[@]}" update
}

# --- source ----------------------------------------------------------------------------------
GOPATH_DIR="$WORK/gopath"
TREE="$GOPATH_DIR/src/k8s.io/kubernetes"
SRC_VERSION=""
UPSTREAM_VERSION=""

fetch_source() {
  SRC_VERSION="${RELAY_KUBE_SRC_VERSION:-}"
  if [[ -z "$SRC_VERSION" ]]; then
    SRC_VERSION=$(apt-cache "${APT_OPTS[@]}" showsrc kubernetes |
      awk '/^Version:/ { print $2 }' | sort -V | tail -n1)
  fi
  [[ -n "$SRC_VERSION" ]] || die "no kubernetes source package in bookworm"
  UPSTREAM_VERSION=$(sed -E 's/^[0-9]+://; s/^.*really//; s/-[^-]*$//' <<<"$SRC_VERSION")
  [[ "$UPSTREAM_VERSION" == 1.20.* ]] || die "expected kubernetes 1.20.x, apt offers $SRC_VERSION"
  rm -rf "$WORK/src" "$GOPATH_DIR"
  mkdir -p "$WORK/src" "$(dirname "$TREE")"
  (cd "$WORK/src" && run apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$SRC_VERSION")
  # dpkg-source applies Debian's patches (kubectl printing fixes, CVE-2021-25743).
  run dpkg-source -x "$WORK/src/kubernetes_${SRC_VERSION#*:}.dsc" "$TREE"
  [[ -d "$TREE/cmd/kube-apiserver" && -d "$TREE/vendor" ]] || die "unexpected source tree in $TREE"
}

replace_reflect2() {
  local d="$WORK/reflect2" deb src dst="$TREE/vendor/github.com/modern-go/reflect2"
  rm -rf "$d" && mkdir -p "$d"
  (cd "$d" && run apt-get "${APT_OPTS[@]}" download "$REFLECT2_PKG")
  deb=$(ls "$d"/*.deb)
  run dpkg -x "$deb" "$d/root"
  src="$d/root/usr/share/gocode/src/github.com/modern-go/reflect2"
  [[ -f "$src/reflect2.go" ]] || die "reflect2 sources not found in $deb"
  [[ -f "$src/go_above_118.go" ]] || die "$deb is not reflect2 >= 1.0.2 (no go_above_118.go)"
  rm -rf "$dst" && mkdir -p "$dst"
  cp -r "$src/." "$dst/"
  say "vendored reflect2 replaced by $(basename "$deb")"
}

# --- Go ----------------------------------------------------------------------------------------
go_env() {
  env GO111MODULE=off GOFLAGS= GOPATH="$GOPATH_DIR" GOCACHE="$WORK/gocache" GOPROXY=off \
    CGO_ENABLED=0 "$@"
}

in_tree() { (cd "$TREE" && "$@"); }

generate_openapi() {
  local inputs report="$WORK/kube_violations.report"
  in_tree run go_env go build -o "$WORK/tools/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # As Makefile.generated_files does: the Go files outside ./vendor (staging/src named as
  # vendor/) with a +k8s: tag and a +k8s:openapi-gen= tag, minus code-generator and
  # sample-apiserver; their directories are the generator's input packages.
  inputs=$(cd "$TREE" && find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \
    -o -type f -name '*.go' -print0 |
    { xargs -0 grep -l -Z '^// *+k8s:' || true; } |
    { xargs -0 grep -l '+k8s:openapi-gen=' || true; } |
    sed -e 's|^./staging/src|vendor|' -e 's|^./||' |
    { grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' || true; } |
    xargs -r -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  [[ -n "$inputs" ]] || die "no +k8s:openapi-gen packages found"
  in_tree run go_env "$WORK/tools/openapi-gen" --logtostderr \
    -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$report"
  [[ -s "$TREE/pkg/generated/openapi/zz_generated.openapi.go" ]] || die "openapi-gen wrote nothing"
  if diff -q "$report" "$TREE/api/api-rules/violation_exceptions.list" >/dev/null; then
    say "openapi-gen: API rule report equals upstream's violation_exceptions.list"
  else
    say "WARNING: openapi-gen API rule report differs from upstream's list (see $report)"
  fi
}

build_binaries() {
  local pkg=k8s.io/kubernetes/vendor ldflags=() kv
  local major=${UPSTREAM_VERSION%%.*} rest=${UPSTREAM_VERSION#*.}
  for kv in "gitVersion=v$UPSTREAM_VERSION" "gitMajor=$major" "gitMinor=${rest%%.*}" \
    "gitTreeState=clean" "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    ldflags+=("-X $pkg/k8s.io/client-go/pkg/version.$kv" "-X $pkg/k8s.io/component-base/version.$kv")
  done
  mkdir -p "$WORK/out"
  in_tree run go_env go build -p "$JOBS" -trimpath -ldflags "-s -w ${ldflags[*]}" \
    -o "$WORK/out/" ./cmd/kube-apiserver ./cmd/kube-controller-manager
}

install_binaries() {
  local b
  mkdir -p "$BIN"
  rm -f "$STAMP"
  for b in kube-apiserver kube-controller-manager; do
    install -m 0755 "$WORK/out/$b" "$BIN/.$b.new"
    mv -f "$BIN/.$b.new" "$BIN/$b"
  done
  {
    echo "$STAMP_ID"
    echo "kubernetes source $SRC_VERSION (upstream v$UPSTREAM_VERSION), $(go version | awk '{print $3}')"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - T0)) s"
  } >"$STAMP.new"
  mv -f "$STAMP.new" "$STAMP"
}

say "building into $CACHE (log: $LOG)"
step "private apt lists" setup_private_apt
step "fetch source" fetch_source
step "replace reflect2" replace_reflect2
step "openapi-gen" generate_openapi
step "go build (-p $JOBS)" build_binaries
install_binaries
if [[ "${RELAY_KUBE_KEEP_WORK:-0}" != 1 ]]; then
  rm -rf "$WORK"
fi
say "ok: $("$BIN/kube-apiserver" --version) in $BIN, total $((SECONDS - T0)) s"
