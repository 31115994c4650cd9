#!/usr/bin/env bash
# Create (or update) a virtual environment: pinned dependencies, detectron2 and this project in
# editable mode. Called by `make install` (detectron2 0.6 built without its C++ ops, or with
# D2_SOURCE the detectron2 source given, built with its ops) and `make test-d2main`.
#   usage: [TORCH_INDEX=URL] [TORCH_PACKAGES="torch==X torchvision==Y"] \
#          tools/install.sh [VENV] [DETECTRON2_SOURCE_ARCHIVE_OR_FOLDER]
# TORCH_INDEX: a pip index to take torch and torchvision from (another CUDA build, e.g. one of
# PyTorch's own indexes); TORCH_PACKAGES: other versions of both (default: requirements.txt's).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
D2_SOURCE=${2:-}
PYTHON=${PYTHON:-python3.11}
TORCH_INDEX=${TORCH_INDEX:-}
USER_TORCH_PACKAGES=${TORCH_PACKAGES:-}
TORCH_PACKAGES=${USER_TORCH_PACKAGES:-$(grep -E '^(torch|torchvision)==' requirements.txt | tr '\n' ' ')}
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
D2_ARGS=()
TORCH_CHOICE="$TORCH_INDEX $TORCH_PACKAGES"
if [ -n "$TORCH_INDEX" ] || [ -n "$USER_TORCH_PACKAGES" ]; then
    if [ "$(cat "$VENV/.torch-choice" 2>/dev/null || true)" != "$TORCH_CHOICE" ]; then
        # replace the torch build; detectron2's compiled ops must then be rebuilt against it
        "$VENV/bin/python" -m pip uninstall --quiet -y torch torchvision || true
        INDEX_ARGS=()
        [ -n "$TORCH_INDEX" ] && INDEX_ARGS=(--index-url "$TORCH_INDEX")
        # shellcheck disable=SC2086
        "${PIP[@]}" "${INDEX_ARGS[@]}" $TORCH_PACKAGES
        echo "$TORCH_CHOICE" > "$VENV/.torch-choice"
        if [ -n "$D2_SOURCE" ]; then
            D2_ARGS+=(--force)
        elif [ -f "$VENV/.detectron2-source" ]; then
            echo "note: detectron2's compiled ops were built against the previous torch;" \
                "rebuild them with make install D2_SOURCE=..." >&2
        fi
    fi
    # the rest of the pins, without torch's (already chosen)
    grep -vE '^(torch|torchvision)==' requirements.txt > "$VENV/.requirements-without-torch.txt"
    "${PIP[@]}" -r "$VENV/.requirements-without-torch.txt"
else
    "${PIP[@]}" -r requirements.txt
fi
if [ -n "$D2_SOURCE" ]; then
    "$VENV/bin/python" tools/install_detectron2.py --source "$D2_SOURCE" "${D2_ARGS[@]}" \
        --build-dir "build/$(basename "$VENV")-detectron2"
else
    "$VENV/bin/python" tools/install_detectron2.py "${D2_ARGS[@]}"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import disalign, detectron2; print('installed: disalign', disalign.__version__, '| detectron2', detectron2.__version__, '@', detectron2.__file__)"
