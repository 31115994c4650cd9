#!/usr/bin/env bash
# Create (or update) a virtual environment: pinned dependencies, detectron2 and this project in
# editable mode. Called by `make install` (detectron2 0.6 built without its C++ ops) and
# `make test-d2main` (detectron2 built with its ops from the source archive given as $2).
#   usage: tools/install.sh [VENV] [DETECTRON2_SOURCE_ARCHIVE]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
D2_SOURCE=${2:-}
PYTHON=${PYTHON:-python3.11}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
if [ -n "$D2_SOURCE" ]; then
    "$VENV/bin/python" tools/install_detectron2.py --source "$D2_SOURCE" \
        --build-dir "build/$(basename "$VENV")-detectron2"
else
    "$VENV/bin/python" tools/install_detectron2.py
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import disalign, detectron2; print('installed: disalign', disalign.__version__, '| detectron2', detectron2.__version__, '@', detectron2.__file__)"
