# The package's metadata is in setup.cfg; this adds its one compiled module, the C kernel of the
# fast LVIS evaluation (disalign/evaluation/_rle.c), built by `pip install -e .`.
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("disalign.evaluation._rle", ["projects/DisAlign/disalign/evaluation/_rle.c"])
    ]
)
