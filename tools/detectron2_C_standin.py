"""
Stand-in for ``detectron2._C``, the compiled extension of detectron2.

The detectron2 0.6 source distribution that ``make install`` builds ships without its C++ sources,
so it is installed with no extension modules and this file is placed at ``detectron2/_C.py``.
detectron2 imports ``_C`` at import time (deformable conv, rotated boxes, rotated ROIAlign, the
fast COCO evaluator) but calls it only when one of those ops runs; DisAlign needs none of them.
Every op here raises a RuntimeError that names the op; the three introspection functions that
``detectron2.utils.collect_env`` calls describe the build instead of failing.
"""

_MESSAGE = (
    "detectron2._C.{name}: this op needs detectron2's compiled extension, which this pure-Python "
    "build of detectron2 does not have; install detectron2 from source with its C++ ops to use it"
)


def get_compiler_version():
    return "none (pure-Python build of detectron2, compiled ops not available)"


def get_cuda_version():
    return "none (pure-Python build of detectron2, compiled ops not available)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing_op(*args, **kwargs):
        raise RuntimeError(_MESSAGE.format(name=name))

    missing_op.__name__ = name
    return missing_op
