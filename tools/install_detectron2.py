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
import json
import os
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
# where the environment records the detectron2 source it was built from
SOURCE_STAMP = Path(sys.prefix) / ".detectron2-source"
# what a source folder's digest ignores: build products and version control
IGNORED_DIRS = {".git", "build", "dist", "__pycache__"}
IGNORED_SUFFIXES = (".so", ".pyd", ".pyc", ".o", ".egg-info")


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


def source_digest(source: Path) -> str:
    """sha256 of an archive, or of a folder's files (relative paths and contents, build products
    and .git left out)."""
    if source.is_file():
        return sha256(source)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(
            d for d in dirs if d not in IGNORED_DIRS and not d.endswith(IGNORED_SUFFIXES)
        )
        for name in sorted(files):
            if name.endswith(IGNORED_SUFFIXES):
                continue
            path = Path(root) / name
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            digest.update(sha256(path).encode())
    return digest.hexdigest()


def installed_source_digest():
    """The digest recorded by the last --source build of this environment, or None."""
    try:
        return json.loads(SOURCE_STAMP.read_text())["digest"]
    except (OSError, ValueError, KeyError):
        return None


def cuda_toolkit():
    """
    torch's CUDA_HOME when the CUDA ops can be built: it holds nvcc, and the GPU architectures to
    build for are known (a visible GPU, or TORCH_CUDA_ARCH_LIST set, e.g. "8.0;9.0" on a build
    machine without GPUs). Else None: an nvcc alone gives torch no architecture to compile for.
    """
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if not (CUDA_HOME and (Path(CUDA_HOME) / "bin" / "nvcc").exists()):
        return None
    if not (torch.cuda.is_available() or os.environ.get("TORCH_CUDA_ARCH_LIST")):
        return None
    return CUDA_HOME


def copy_source_folder(folder: Path, build_dir: Path) -> Path:
    """Copy a detectron2 source folder (without build products) into the build directory."""
    if not (folder / "setup.py").is_file():
        sys.exit(f"error: '{folder}' holds no setup.py; not a detectron2 source folder")
    target = build_dir / (folder.name + "-source")
    if target.exists():
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns(*IGNORED_DIRS, *(f"*{s}" for s in IGNORED_SUFFIXES))
    shutil.copytree(folder, target, ignore=ignore)
    return target


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
    parser.add_argument(
        "--source", type=Path, help="a detectron2 source archive or folder to build with its ops"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if detectron2 imports")
    args = parser.parse_args()

    if importlib.util.find_spec("torch") is None:
        sys.exit(
            "error: torch must be installed before detectron2 (pip install -r requirements.txt)"
        )
    installed = importlib.util.find_spec("detectron2") is not None
    digest = None
    if args.source:
        source = args.source.resolve()
        if not source.exists():
            sys.exit(f"error: detectron2 source '{args.source}' does not exist")
        digest = source_digest(source)
        if not args.force and installed and installed_source_digest() == digest:
            print(f"detectron2 from {args.source} is already installed; nothing to do")
            return
    elif not args.force and installed:
        print("detectron2 is already installed; nothing to do (--force rebuilds it)")
        return
    args.build_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.source:
        if source.is_dir():
            source = copy_source_folder(source, args.build_dir)
        else:
            source = unpack_source(source, args.build_dir)
        cuda_home = cuda_toolkit()
        if cuda_home:
            env["FORCE_CUDA"] = "1"  # build the CUDA ops even where no GPU is visible
            print(f"building detectron2's CPU and CUDA ops (CUDA toolkit: {cuda_home})", flush=True)
        else:
            print(
                "no CUDA toolkit with a GPU or TORCH_CUDA_ARCH_LIST found: "
                "building the CPU ops only",
                flush=True,
            )
    else:
        source = prepare_source(download_sdist(args.build_dir), args.build_dir)
    SOURCE_STAMP.unlink(missing_ok=True)  # a build that fails half-way leaves no stale record
    command = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps"]
    if args.source:
        command.append("--force-reinstall")  # the same version number from changed sources
    print("+", " ".join(str(c) for c in command + [source]), flush=True)
    subprocess.run([str(c) for c in command + [source]], check=True, env=env)
    run([sys.executable, "-c", "import detectron2.modeling, detectron2.engine"])
    if digest is not None:
        SOURCE_STAMP.write_text(json.dumps({"source": str(args.source), "digest": digest}))


if __name__ == "__main__":
    main()
