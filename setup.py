# The package's metadata is in setup.cfg; this adds its one compiled module, the C kernel of the
# fast LVIS evaluation (lvis_fast/_rle.c), built by `pip install -e .`.
from setuptools import Extension, setup

setup(ext_modules=[Extension("lvis_fast._rle", ["projects/DisAlign/lvis_fast/_rle.c"])])
