#!/usr/bin/env bash
# Create (or update) the project's virtual environment: pinned dependencies, detectron2 0.6 built
# without its C++ ops, and this project in editable mode. Called by `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3.11}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
"$VENV/bin/python" tools/install_detectron2.py
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import disalign, detectron2; print('installed: disalign', disalign.__version__, '| detectron2', detectron2.__version__, '@', detectron2.__file__)"
