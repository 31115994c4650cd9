#!/usr/bin/env python
"""
Build and install detectron2 into the running Python environment.

Default: detectron2 0.6 from PyPI's source distribution, without its C++ ops. With --source, a
detectron2 source archive (e.g. a current upstream checkout as .tar.gz), built with its ops.


detectron2 is not published on PyPI. The one copy on the package index, the source distribution
``pb1-detectron2==0.6``, is upstream detectron2 v0.6 renamed, but it lacks the C++ sources of its
compiled ops, so ``pip install pb1-detectron2`` fails while building them. This script:

1. downloads that source distribution with pip and checks its sha256;
2. unpacks it and sets ``ext_modules=[]`` in its setup.py (pure-Python build);
3. puts ``tools/detectron2_C_standin.py`` at ``detectron2/_C.py``: detectron2 imports ``_C`` at
   import time, and the stand-in raises a clear error only if a compiled op is called;
4. installs it with ``pip install --no-build-isolation --no-deps`` (torch must already be installed;
   the dependencies are pinned in requirements.txt).

With ``--source ARCHIVE`` it unpacks that archive instead and installs it with
``pip install --no-build-isolation --no-deps``, compiling its C++ ops (a few minutes on 2 cores).

It does nothing when detectron2 already imports (use --force to rebuild).
"""

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SDIST_REQUIREMENT = "pb1-detectron2==0.6"
SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
EXTENSION_LINE = "ext_modules=get_extensions(),"


def run(cmd):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(build_dir: Path) -> Path:
    sdist = build_dir / SDIST_NAME
    if not sdist.exists() or sha256(sdist) != SDIST_SHA256:
        run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            + ["--no-build-isolation", "--dest", build_dir, SDIST_REQUIREMENT]
        )
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        sys.exit(f"error: {sdist} has sha256 {digest}, expected {SDIST_SHA256}")
    return sdist


def prepare_source(sdist: Path, build_dir: Path) -> Path:
    source = build_dir / "pb1-detectron2-0.6"
    if source.exists():
        shutil.rmtree(source)
    with tarfile.open(sdist) as tar:
        tar.extractall(build_dir, filter="data")
    setup_py = source / "setup.py"
    text = setup_py.read_text()
    if EXTENSION_LINE not in text:
        sys.exit(f"error: {setup_py} does not contain '{EXTENSION_LINE}'; unexpected source")
    setup_py.write_text(text.replace(EXTENSION_LINE, "ext_modules=[],"))
    shutil.copyfile(
        REPO_ROOT / "tools" / "detectron2_C_standin.py", source / "detectron2" / "_C.py"
    )
    return source


def unpack_source(archive: Path, build_dir: Path) -> Path:
    """Unpack a detectron2 source archive; returns the directory holding its setup.py."""
    if not archive.is_file():
        sys.exit(f"error: detectron2 source archive '{archive}' does not exist")
    target = build_dir / archive.name.split(".tar")[0]
    if target.exists():
        shutil.rmtree(target)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    setups = sorted(target.glob("*/setup.py")) + sorted(target.glob("setup.py"))
    if not setups:
        sys.exit(f"error: '{archive}' holds no setup.py; not a detectron2 source archive")
    return setups[0].parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--build-dir", default=REPO_ROOT / "build" / "detectron2", type=Path)
    parser.add_argument("--source", type=Path, help="a detectron2 source archive to build instead")
    parser.add_argument("--force", action="store_true", help="rebuild even if detectron2 imports")
    args = parser.parse_args()

    if importlib.util.find_spec("torch") is None:
        sys.exit(
            "error: torch must be installed before detectron2 (pip install -r requirements.txt)"
        )
    if not args.force and importlib.util.find_spec("detectron2") is not None:
        print("detectron2 is already installed; nothing to do (--force rebuilds it)")
        return
    args.build_dir.mkdir(parents=True, exist_ok=True)
    if args.source:
        source = unpack_source(args.source.resolve(), args.build_dir)
    else:
        source = prepare_source(download_sdist(args.build_dir), args.build_dir)
    run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", source])
    run([sys.executable, "-c", "import detectron2.modeling, detectron2.engine"])


if __name__ == "__main__":
    main()
