# -*- coding: utf-8 -*-
"""
detectron2's DetectionCheckpointer, made safe:

* loading never executes code from the file: ``.pth`` files are read with
  ``torch.load(weights_only=True)``, ``.pkl`` files (Detectron / detectron2 model-zoo format) with
  an unpickler that only rebuilds NumPy arrays and plain containers;
* a checkpoint is written under a temporary name and renamed when complete, and ``last_checkpoint``
  is replaced the same way, so that a write interrupted half-way never leaves a file that the
  next ``--resume`` takes for good.
"""

import io
import os
import pickle
from typing import Any, Dict

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .file_io import write_atomically
from .validation import InputError

__all__ = ["SafeDetectionCheckpointer", "UnsafeCheckpointError", "load_pickle_safely"]

# what a model-zoo .pkl may reference: NumPy arrays, scalars and dtypes, and ordered dicts
_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class UnsafeCheckpointError(InputError):
    """A checkpoint that would run code, or could not be read, when loaded."""


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it references '{module}.{name}'")


def load_pickle_safely(f: io.BufferedIOBase) -> Any:
    """Unpickle ``f`` (latin-1 strings, as Detectron's files), allowing only NumPy arrays."""
    return _ArrayUnpickler(f, encoding="latin1").load()


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that refuses files which would run code, and writes atomically."""

    def load(self, path: str, *args, **kwargs):
        try:
            return super().load(path, *args, **kwargs)
        finally:  # current detectron2 leaves this set when loading fails, refusing the next load
            if getattr(self, "_parsed_url_during_load", None) is not None:
                self._parsed_url_during_load = None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            if filename.endswith(".pkl"):
                with PathManager.open(filename, "rb") as f:
                    return _model_zoo_pickle(load_pickle_safely(f))
            if filename.endswith(".pyth"):
                return super()._load_file(filename)  # torch.load, weights only by default
            with PathManager.open(filename, "rb") as f:
                loaded = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            reason = str(e).strip().splitlines()[0]
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint '{filename}': it is not plain weights ({reason})"
            ) from None
        except (RuntimeError, EOFError, OSError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnsafeCheckpointError(f"cannot read checkpoint '{filename}': {reason}") from None
        return loaded if "model" in loaded else {"model": loaded}

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        write_atomically(save_file, lambda f: torch.save(data, f), "wb")
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        write_atomically(path, lambda f: f.write(last_filename_basename), "w")


def _model_zoo_pickle(data: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint dict of a Detectron2 model-zoo or Detectron (Caffe2) ``.pkl`` file."""
    if "model" in data and "__author__" in data:  # detectron2's model-zoo format
        return data
    if "blobs" in data:  # Detectron detection models keep their weights in "blobs"
        data = data["blobs"]
    weights = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
