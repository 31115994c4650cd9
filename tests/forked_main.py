"""
The child side of ``conftest.run_script``: a script run as ``python script args`` would run it, in
a process forked from the tests' fork server. Imports nothing heavy itself, so that the modules
that read the environment when imported (detectron2's dataset registration) see the run's.
"""

import atexit
import os
import runpy
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _in_tests(path):
    path = os.path.abspath(path)
    return path == TESTS_DIR or path.startswith(TESTS_DIR + os.sep)


def run_as_main(path, args, env, cwd, stdout_path, stderr_path):
    """
    Run the script at ``path`` as ``__main__`` with ``sys.argv = [path, *args]``, the environment
    ``env`` (replacing this process's), in ``cwd``, its file descriptors 1 and 2 written to the
    two files; ``sys.path[0]`` is the script's folder, as for ``python path``. Exit handlers run
    at the end, as at an interpreter's exit.
    """
    os.environ.clear()
    os.environ.update(env)
    for fd, name in ((1, stdout_path), (2, stderr_path)):
        target = os.open(name, os.O_WRONLY | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    # the test process's own entries: its working folder (python -m pytest), this folder and the
    # test files' subfolders
    inherited = [p for p in sys.path if p not in ("", os.getcwd()) and not _in_tests(p)]
    sys.path[:] = [os.path.dirname(os.path.abspath(path)), *inherited]
    os.chdir(cwd)
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        atexit._run_exitfuncs()
