"""
Installing: `make install D2_SOURCE=...` builds that detectron2 source and rebuilds it when the
source changes; TORCH_INDEX / TORCH_PACKAGES reach tools/install.sh; the default install does
nothing when nothing changed.
"""

import hashlib
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import install_detectron2  # noqa: E402


def _source_folder(root, mark):
    """A stand-in detectron2 source folder: a setup.py and a package that says which it is."""
    (root / "detectron2").mkdir(parents=True, exist_ok=True)
    (root / "setup.py").write_text(
        'from setuptools import setup\nsetup(name="detectron2", version="0.6", '
        'packages=["detectron2"])\n'
    )
    (root / "detectron2" / "__init__.py").write_text(f"MARK = {mark}\n")
    for name in ("modeling", "engine"):
        (root / "detectron2" / f"{name}.py").write_text("")
    return root


def test_source_digest_follows_the_content(tmp_path):
    folder = _source_folder(tmp_path / "src", 1)
    first = install_detectron2.source_digest(folder)
    # build products and version control do not count
    (folder / "build").mkdir()
    (folder / "build" / "x.o").write_bytes(b"object")
    (folder / "detectron2" / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"elf")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    assert install_detectron2.source_digest(folder) == first
    (folder / "detectron2" / "__init__.py").write_text("MARK = 2\n")
    assert install_detectron2.source_digest(folder) != first
    # an archive: its sha256
    archive = tmp_path / "src.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="detectron2-src")
    expected = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert install_detectron2.source_digest(archive) == expected


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory):
    """A venv with a stand-in torch (no CUDA toolkit) and what building a setup.py needs."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "wheel==0.45.1"], check=True)
    site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    os.makedirs(os.path.join(site, "torch", "utils"))
    for name in ("__init__.py", "utils/__init__.py"):
        open(os.path.join(site, "torch", name), "w").close()
    with open(os.path.join(site, "torch", "utils", "cpp_extension.py"), "w") as f:
        f.write("CUDA_HOME = None\n")
    return python


def _install(python, source, build_dir):
    result = subprocess.run(
        [python, os.path.join(REPO_ROOT, "tools", "install_detectron2.py")]
        + ["--source", str(source), "--build-dir", str(build_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    mark = subprocess.run(
        [python, "-c", "import detectron2; print(detectron2.MARK)"], capture_output=True, text=True
    ).stdout.strip()
    return result.stdout, mark


def test_a_source_is_built_once_and_again_when_it_changes(bare_venv, tmp_path):
    source = _source_folder(tmp_path / "detectron2-src", 1)
    out, mark = _install(bare_venv, source, tmp_path / "build")
    expected = "no CUDA toolkit with a GPU or TORCH_CUDA_ARCH_LIST found: building the CPU ops only"
    assert expected in out
    assert mark == "1"
    assert not (source / "build").exists()  # built from a copy
    out, mark = _install(bare_venv, source, tmp_path / "build")
    assert f"detectron2 from {source} is already installed; nothing to do" in out
    (source / "detectron2" / "__init__.py").write_text("MARK = 2\n")
    out, mark = _install(bare_venv, source, tmp_path / "build")
    assert "pip install" in out and mark == "2"
    # an archive of another source replaces it
    archive = tmp_path / "other.tar.gz"
    _source_folder(tmp_path / "other", 3)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "other", arcname="detectron2-other")
    out, mark = _install(bare_venv, archive, tmp_path / "build")
    assert mark == "3"


def _make_n(*args):
    result = subprocess.run(
        ["make", "-n", "install", *args], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_install_runs_again_only_when_asked(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()  # newer than every install file
    assert "install.sh" not in _make_n(f"VENV={venv}")
    commands = _make_n(f"VENV={venv}", "D2_SOURCE=../detectron2.tar.gz")
    assert f"bash tools/install.sh {venv} ../detectron2.tar.gz" in commands
    commands = _make_n(f"VENV={venv}", "TORCH_INDEX=https://example.org/whl/cu126")
    assert 'TORCH_INDEX="https://example.org/whl/cu126"' in commands
    assert f"bash tools/install.sh {venv}" in commands
