# -*- coding: utf-8 -*-
"""
detectron2's DetectionCheckpointer, made safe:

* loading never executes code from the file: ``.pth`` files are read with
  ``torch.load(weights_only=True)``, ``.pkl`` files (Detectron / detectron2 model-zoo format) with
  an unpickler that only rebuilds NumPy arrays and plain containers;
* a checkpoint is written under a temporary name and renamed when complete, and ``last_checkpoint``
  is replaced the same way, so that a write interrupted half-way never leaves a file that the
  next ``--resume`` takes for good;
* a checkpoint whose box predictor, mask head or classifier has another shape than the model's
  (e.g. a model-zoo ``.pkl`` or ``detectron2://`` model trained on another number of classes) is
  an error, where detectron2 only warns and leaves those layers randomly initialised.

:func:`check_weights` runs these refusals on a config's weights before a run writes anything.
"""

import io
import os
import pickle
from typing import Any, Dict
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import convert_c2_detectron_names
from detectron2.utils.file_io import Detectron2Handler, PathManager
from iopath.common.file_io import get_cache_dir

from ..compat import forget_failed_url
from ..input_checks import InputError
from .file_io import write_atomically

__all__ = [
    "CheckpointMismatchError",
    "check_weights",
    "SafeDetectionCheckpointer",
    "UnsafeCheckpointError",
    "download_cache_path",
    "load_pickle_safely",
]

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


# modules whose parameters depend on the number of classes: a checkpoint's parameter of another
# shape there must not be skipped (stage 2 would align a random, frozen classifier)
_CLASS_DEPENDENT_MODULES = ("box_predictor", "mask_head", "cls_score")


class CheckpointMismatchError(InputError):
    """A checkpoint whose class-dependent layers do not fit the model (another class count)."""


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

    def check(self, path: str) -> None:
        """
        Raise the error that loading ``path`` would raise (a file that would run code or cannot be
        read, weights that do not fit the model), without loading anything into the model.
        """
        self._check_only = True
        try:
            self.load(path, checkpointables=[])
        finally:
            self._check_only = False

    def load(self, path: str, *args, **kwargs):
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        except OSError as e:  # a URL that cannot be downloaded (no internet, wrong name)
            if "://" not in str(path) or isinstance(e, FileNotFoundError):
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnsafeCheckpointError(
                f"MODEL.WEIGHTS: cannot download '{path}' ({reason}); without internet, copy "
                f"the file to {download_cache_path(path)}"
            ) from None
        finally:
            forget_failed_url(self)

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

    def _load_model(self, checkpoint: Dict[str, Any]):
        if checkpoint.get("matching_heuristics", False):
            self._convert_ndarray_to_tensor(checkpoint["model"])
            if checkpoint.get("__author__", None) == "Caffe2":  # rename once, here
                checkpoint["model"], _ = convert_c2_detectron_names(checkpoint["model"])
                checkpoint["__author__"] = "Caffe2 (names converted)"
        loading = getattr(self, "_loading", "?")
        model_state = self.model.state_dict()
        heuristics = checkpoint.get("matching_heuristics", False)
        paired = _paired_keys(model_state, checkpoint["model"], heuristics)
        skipped = _class_dependent_mismatches(model_state, checkpoint["model"], paired)
        if skipped:
            key, key_checkpoint, shape_checkpoint, shape_model = skipped[0]
            if shape_checkpoint[:1] == shape_model[:1]:  # the same outputs: another input width
                what = "model"
                hint = (
                    "the same number of outputs but inputs of another width: a box head or "
                    "features of another size (MODEL.ROI_BOX_HEAD, the backbone)"
                )
            else:
                what, hint = "model's classes", "check the config's NUM_CLASSES"
            raise CheckpointMismatchError(
                f"MODEL.WEIGHTS: checkpoint '{loading}' does not fit the {what}: its "
                f"'{key_checkpoint}' has shape {shape_checkpoint}, the model's '{key}' "
                f"{shape_model} ({hint}; {len(skipped)} class-dependent parameter(s) differ)"
            )
        not_provided = _not_provided(model_state, checkpoint["model"], paired)
        if getattr(self.model, "alignment_stage", False):
            frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}
            not_provided = [entry for entry in not_provided if entry[0] in frozen]
            if not_provided:
                key, reason = not_provided[0]
                raise CheckpointMismatchError(
                    f"MODEL.WEIGHTS: checkpoint '{loading}' {reason} for the frozen parameter "
                    f"'{key}' ({len(not_provided)} frozen parameter(s) not provided): the "
                    f"alignment stage would keep them random; give it the stage-1 model of "
                    f"this config"
                )
        if getattr(self, "_check_only", False):
            return None
        if not_provided:  # stage 1: detectron2's behaviour (e.g. ImageNet weights, no heads)
            named = ", ".join(key for key, _ in not_provided[:3])
            self.logger.warning(
                f"{len(not_provided)} model parameter(s) keep their initialisation, not in "
                f"'{loading}' with their shape: {named}{', ...' if len(not_provided) > 3 else ''}"
            )
        return super()._load_model(checkpoint)

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


def check_weights(cfg):
    """
    Refuse ``cfg.MODEL.WEIGHTS`` before anything is written or trained, as
    :class:`SafeDetectionCheckpointer` would refuse it when the run loads it: the checkpoint is
    checked against a throwaway model built on the CPU. Checked are the weights of the alignment
    stage (stage 2), which must provide every frozen parameter, and otherwise a local ``.pth``
    file (a downloaded or model-zoo file is checked when the run loads it).

    Raises:
        InputError: the checkpointer's one-line refusal.
    """
    weights = cfg.MODEL.WEIGHTS
    local_pth = weights.endswith(".pth") and os.path.isfile(weights)
    if not weights or not (cfg.MODEL.DISALIGN.ALIGNMENT_STAGE or local_pth):
        return
    from detectron2.modeling import build_model

    cpu_cfg = cfg.clone()
    cpu_cfg.defrost()
    cpu_cfg.MODEL.DEVICE = "cpu"
    SafeDetectionCheckpointer(build_model(cpu_cfg)).check(weights)


def download_cache_path(url: str) -> str:
    """
    Where detectron2's PathManager keeps the download of ``url`` (``detectron2://...`` or
    ``https://...``): ``$FVCORE_CACHE`` (default ``~/.torch/iopath_cache``) followed by the URL's
    path. A file put there is used without downloading.
    """
    if url.startswith(Detectron2Handler.PREFIX):
        url = Detectron2Handler.S3_DETECTRON2_PREFIX + url[len(Detectron2Handler.PREFIX) :]
    return os.path.join(get_cache_dir(), urlparse(url).path.lstrip("/"))


def _paired_keys(model_state, checkpoint_state, matching_heuristics) -> Dict[str, Any]:
    """
    The checkpoint key paired with each of the model's keys (None where there is none), as
    detectron2 pairs them: by name, or with ``matching_heuristics`` by the longest checkpoint name
    that is a dot-separated suffix of the model's (as align_and_update_state_dicts).
    """
    if not matching_heuristics:
        return {key: key if key in checkpoint_state else None for key in model_state}
    paired = {}
    for key in model_state:
        candidates = [k for k in checkpoint_state if key == k or key.endswith("." + k)]
        paired[key] = max(candidates, key=len, default=None)
    return paired


def _class_dependent_mismatches(model_state, checkpoint_state, paired):
    """
    The parameters of the model's box predictor, mask head or classifier that ``checkpoint_state``
    has with another shape, as (model key, checkpoint key, checkpoint shape, model shape); keys
    paired by :func:`_paired_keys`.
    """
    mismatches = []
    for key, value in model_state.items():
        if not any(m in key.split(".") for m in _CLASS_DEPENDENT_MODULES):
            continue
        key_checkpoint = paired[key]
        if key_checkpoint is None:
            continue  # absent (e.g. DisAlign's alignment when loading a stage-1 model)
        shape = tuple(checkpoint_state[key_checkpoint].shape)
        if shape != tuple(value.shape):
            mismatches.append((key, key_checkpoint, shape, tuple(value.shape)))
    return mismatches


def _not_provided(model_state, checkpoint_state, paired):
    """
    The model's entries that ``checkpoint_state`` lacks, or has with another shape, as (model key,
    what is wrong); keys paired by :func:`_paired_keys`.
    """
    found = []
    for key, value in model_state.items():
        key_checkpoint = paired[key]
        if key_checkpoint is None:
            found.append((key, "has no entry"))
            continue
        shape = tuple(checkpoint_state[key_checkpoint].shape)
        if shape != tuple(value.shape):
            found.append((key, f"has shape {shape}, not {tuple(value.shape)},"))
    return found


def _model_zoo_pickle(data: Dict[str, Any]) -> Dict[str, Any]:
    """The checkpoint dict of a Detectron2 model-zoo or Detectron (Caffe2) ``.pkl`` file."""
    if "model" in data and "__author__" in data:  # detectron2's model-zoo format
        return data
    if "blobs" in data:  # Detectron detection models keep their weights in "blobs"
        data = data["blobs"]
    weights = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
