#!/usr/bin/env python
"""
Cost of DisAlign's alignment stage (stage 2) against stage 1, on the same detector and the same
batch of images, and the inference latency of the DisAlign model against its baseline.

    python tools/benchmark_alignment_stage.py \
        [--config-file configs/Miniature-LVIS/mask_rcnn_R_18_FPN_disalign.yaml] \
        [--iters 5] [--warmup 2] [--repeats 3] [--inference-iters 10] [--threads N] [KEY VALUE ...]

The config is a stage-2 (DisAlign) config; KEY VALUE pairs override it. From it:

* the stage-1 model: the same config with MODEL.DISALIGN.ALIGNMENT_STAGE, CALIBRATION and
  GRW.ENABLED off (the baseline detector), every parameter trained;
* the stage-2 model: the config with ALIGNMENT_STAGE on, only the alignment parameters trained;
* for reference, "plain freeze": the stage-2 model frozen by ``requires_grad=False`` alone
  (:func:`disalign.modeling.alignment.freeze_for_alignment_stage` on a model built with
  ALIGNMENT_STAGE off, and the stage's savings off, :func:`frozen_work_kept`): every module in
  train mode,
  autograd enabled everywhere, the RPN, mask and box regression losses computed (they train
  nothing), BatchNorm statistics updated.

All models share the same weights: MODEL.WEIGHTS when it names a checkpoint that exists, else the
stage-1 model's seeded random initialisation. One batch (SOLVER.IMS_PER_BATCH images of the first
training dataset, from the project's training loader) is used for every iteration of every model.

Training iterations are those of detectron2's SimpleTrainer: forward, sum of the losses,
zero_grad, backward, optimizer step (detectron2's build_optimizer; SOLVER.BASE_LR defaults to 1e-4
here so that repeating one batch cannot diverge; the cost of a step does not depend on it). Each
model runs in a fresh subprocess: ``--warmup`` untimed iterations, then ``--iters`` timed ones;
stage-1 and stage-2 processes alternate ``--repeats`` times, and the medians over all timed
iterations are compared, so that load from other processes affects both alike.

The process' CPU time per iteration (all its threads) is shown too: with one thread it is barely
affected by other processes on the machine, unlike the wall-clock time.

Peak memory is the peak during the timed iterations above the resting state before them (the
model, its optimizer state and the batch loaded, warm-up done): the working memory of a training
step, activations kept for backward and gradients included.

* CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``memory_allocated()`` at rest.
* CPU: the process' resident set size (RSS) from /proc/self/status. At rest, after
  ``gc.collect()`` and glibc's ``malloc_trim(0)`` (freed heap memory goes back to the system), the
  peak RSS (VmHWM) is reset by writing 5 to /proc/self/clear_refs; after the timed iterations
  VmHWM minus the resting RSS is the peak increase. It counts what the allocator really holds
  (fragmentation included), in a process that ran nothing else.

Inference latency: the baseline (stage-1) model and the DisAlign (stage-2) model in eval mode under
``torch.no_grad()``, on the same images (the batch's), alternating call by call in one fresh
process per repeat; the ratio is the median of the per-pair ratios.
"""

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from tabulate import tabulate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "projects", "DisAlign"))

DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs/Miniature-LVIS/mask_rcnn_R_18_FPN_disalign.yaml")
# applied after the config file and before the command-line KEY VALUE pairs
BENCHMARK_DEFAULTS = ["SOLVER.BASE_LR", 1e-4, "DATALOADER.NUM_WORKERS", 0]
STAGE_OPTS = {
    "stage1": [
        "MODEL.DISALIGN.ALIGNMENT_STAGE",
        False,
        "MODEL.DISALIGN.CALIBRATION",
        False,
        "MODEL.DISALIGN.GRW.ENABLED",
        False,
    ],
    "stage2": ["MODEL.DISALIGN.ALIGNMENT_STAGE", True],
    "plain-freeze": ["MODEL.DISALIGN.ALIGNMENT_STAGE", False],
}
MIB = 2.0**20


def build_cfg(config_file, opts, stage):
    """The frozen config of one model ("stage1", "stage2", "plain-freeze")."""
    from detectron2.config import get_cfg

    from disalign import add_disalign_config

    cfg = get_cfg()
    add_disalign_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(BENCHMARK_DEFAULTS + list(opts) + STAGE_OPTS[stage])
    cfg.freeze()
    return cfg


def build_stage_model(cfg, weights_file):
    """``cfg``'s model, with the shared weights (a state dict file) loaded."""
    from detectron2.modeling import build_model

    from disalign.modeling.alignment import alignment_parameter_names

    model = build_model(cfg)
    state = torch.load(weights_file, map_location=cfg.MODEL.DEVICE)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # only the alignment parameters, absent from a stage-1 model, may be missing
    extra = set(missing) - set(alignment_parameter_names(model))
    if extra or unexpected:
        raise RuntimeError(f"weights do not fit: missing {sorted(extra)}, unexpected {unexpected}")
    return model


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakMemory:
    """Peak memory above the resting state, see the module docstring."""

    def __init__(self, device):
        self.device = device

    def start(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.rest = torch.cuda.memory_allocated(self.device)
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: freed memory may stay resident
            pass
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.rest = _proc_status("VmRSS")

    def stop(self):
        """Returns (peak above rest, rest) in bytes."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.rest, self.rest
        return _proc_status("VmHWM") - self.rest, self.rest


def train_worker(args):
    """Time ``args.iters`` training iterations of one model; print a JSON line."""
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    import disalign.modeling.alignment

    cfg = build_cfg(args.config_file, args.opts, args.worker_stage)
    device = torch.device(cfg.MODEL.DEVICE)
    model = build_stage_model(cfg, args.weights_file)
    if args.worker_stage == "plain-freeze":  # (this process times this model alone)
        contextlib.ExitStack().enter_context(disalign.modeling.alignment.frozen_work_kept())
        disalign.modeling.alignment.freeze_for_alignment_stage(
            model, cfg.MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE
        )
    model.train()
    optimizer = build_optimizer(cfg, model)
    batch = torch.load(args.batch_file, weights_only=False)
    loss_names = None

    def step():
        nonlocal loss_names
        loss_dict = model(batch)
        loss_names = sorted(loss_dict)
        losses = sum(loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()

    memory = PeakMemory(device)
    with EventStorage():
        for _ in range(args.warmup):
            step()
        times, cpu_times = [], []
        for _ in range(args.iters):
            _synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            _synchronize(device)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        # memory on further iterations: returning freed memory to the system would slow the next
        # iteration down (page faults), which must not be timed
        memory.start()
        for _ in range(args.memory_iters):
            step()
        peak, rest = memory.stop()
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        json.dumps(
            {
                "times": times,
                "cpu_times": cpu_times,
                "peak": peak,
                "rest": rest,
                "losses": loss_names,
                "trained": trained,
            }
        )
    )


def inference_worker(args):
    """Time the baseline and the DisAlign model at inference, alternating; print a JSON line."""
    cfgs = {s: build_cfg(args.config_file, args.opts, s) for s in ("stage1", "stage2")}
    device = torch.device(cfgs["stage1"].MODEL.DEVICE)
    models = {s: build_stage_model(cfg, args.weights_file).eval() for s, cfg in cfgs.items()}
    batch = torch.load(args.batch_file, weights_only=False)
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batch]
    times = {s: [] for s in models}
    with torch.no_grad():
        for i in range(args.warmup + args.inference_iters):
            order = ("stage1", "stage2") if i % 2 == 0 else ("stage2", "stage1")
            for s in order:
                _synchronize(device)
                start = time.perf_counter()
                models[s](inputs)
                _synchronize(device)
                if i >= args.warmup:
                    times[s].append(time.perf_counter() - start)
    print(json.dumps({"times": times}))


def _run_worker(args, kind, stage, files):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--worker-stage", stage]
    cmd += ["--config-file", args.config_file, "--weights-file", files["weights"]]
    cmd += ["--batch-file", files["batch"], "--iters", str(args.iters)]
    cmd += ["--warmup", str(args.warmup), "--memory-iters", str(args.memory_iters)]
    cmd += ["--inference-iters", str(args.inference_iters)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += list(args.opts)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.getcwd())
    if proc.returncode != 0:
        sys.exit(f"{kind} worker for {stage} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(args, workdir):
    """Write the shared weights and the batch; return their files."""
    from detectron2.modeling import build_model

    from disalign.data import build_train_loader
    from disalign.engine.checkpoint import SafeDetectionCheckpointer

    cfg = build_cfg(args.config_file, args.opts, "stage1")
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    model = build_model(cfg)
    weights = cfg.MODEL.WEIGHTS
    if weights and (os.path.isfile(weights) or "://" in weights):
        SafeDetectionCheckpointer(model).load(weights)
        source = weights
    else:
        source = "random initialisation (seeded)" + (
            f"; '{weights}' does not exist" if weights else ""
        )
    files = {"weights": os.path.join(workdir, "weights.pth"), "batch": os.path.join(workdir, "b")}
    torch.save(model.state_dict(), files["weights"])
    batch = next(iter(build_train_loader(cfg)))
    torch.save(batch, files["batch"])
    return files, source, len(batch), tuple(batch[0]["image"].shape)


def main(args):
    with tempfile.TemporaryDirectory() as workdir:
        files, source, num_images, image_shape = prepare(args, workdir)
        train = {s: [] for s in STAGE_OPTS}
        cpu = {s: [] for s in STAGE_OPTS}
        peaks = {s: [] for s in STAGE_OPTS}
        rests = {s: [] for s in STAGE_OPTS}
        info = {}
        inference = {"stage1": [], "stage2": []}
        for r in range(args.repeats):
            for stage in STAGE_OPTS:
                out = _run_worker(args, "train", stage, files)
                train[stage] += out["times"]
                cpu[stage] += out["cpu_times"]
                peaks[stage].append(out["peak"])
                rests[stage].append(out["rest"])
                info[stage] = (out["losses"], out["trained"])
                print(
                    f"repeat {r + 1}/{args.repeats} {stage:13s} iteration "
                    f"{statistics.median(out['times']):.3f} s, peak +{out['peak'] / MIB:.1f} MiB",
                    flush=True,
                )
            out = _run_worker(args, "inference", "stage2", files)
            for s in inference:
                inference[s] += out["times"][s]
            print(f"repeat {r + 1}/{args.repeats} inference done", flush=True)

    cfg = build_cfg(args.config_file, args.opts, "stage2")
    med = {s: statistics.median(v) for s, v in train.items()}
    med_cpu = {s: statistics.median(v) for s, v in cpu.items()}
    peak = {s: statistics.median(v) for s, v in peaks.items()}
    rest = {s: statistics.median(v) for s, v in rests.items()}
    inf = {s: statistics.median(v) for s, v in inference.items()}
    pair_ratio = statistics.median(b / a for a, b in zip(inference["stage1"], inference["stage2"]))
    print()
    print(
        f"config {args.config_file}, device {cfg.MODEL.DEVICE}, {torch.get_num_threads()} "
        f"threads here, weights: {source}; batch of {num_images} images {image_shape}"
    )
    for s in STAGE_OPTS:
        losses, trained = info[s]
        print(f"  {s}: {trained} trained parameters, losses {losses}")
    mem_note = "CUDA allocated" if cfg.MODEL.DEVICE.startswith("cuda") else "RSS"
    rows = [
        [
            "training iteration time (s, median)",
            f"{med['stage1']:.3f}",
            f"{med['stage2']:.3f}",
            f"{med['stage2'] / med['stage1']:.3f}",
            f"{med['plain-freeze']:.3f} ({med['plain-freeze'] / med['stage1']:.3f})",
        ],
        [
            "the same, CPU time of the process (s, median)",
            f"{med_cpu['stage1']:.3f}",
            f"{med_cpu['stage2']:.3f}",
            f"{med_cpu['stage2'] / med_cpu['stage1']:.3f}",
            f"{med_cpu['plain-freeze']:.3f} ({med_cpu['plain-freeze'] / med_cpu['stage1']:.3f})",
        ],
        [
            f"peak memory above rest (MiB, {mem_note})",
            f"{peak['stage1'] / MIB:.1f}",
            f"{peak['stage2'] / MIB:.1f}",
            f"{peak['stage2'] / peak['stage1']:.3f}",
            f"{peak['plain-freeze'] / MIB:.1f} ({peak['plain-freeze'] / peak['stage1']:.3f})",
        ],
        [
            "inference latency (s, median; ratio: median of pairs)",
            f"{inf['stage1']:.3f}",
            f"{inf['stage2']:.3f}",
            f"{pair_ratio:.3f}",
            "",
        ],
    ]
    print(
        tabulate(
            rows,
            headers=[
                f"{args.repeats} x {args.iters} iterations",
                "stage 1 / baseline",
                "stage 2 / DisAlign",
                "ratio",
                "plain freeze (ratio)",
            ],
        )
    )
    print(
        f"resting memory (MiB, {mem_note}): "
        + ", ".join(f"{s} {v / MIB:.1f}" for s, v in rest.items())
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="a stage-2 config")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--memory-iters", type=int, default=2, help="then, for peak memory")
    parser.add_argument("--repeats", type=int, default=3, help="processes per model")
    parser.add_argument("--inference-iters", type=int, default=20, help="per model and repeat")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", choices=("train", "inference"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-stage", choices=tuple(STAGE_OPTS), help=argparse.SUPPRESS)
    parser.add_argument("--weights-file", help=argparse.SUPPRESS)
    parser.add_argument("--batch-file", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "train":
        train_worker(args)
    elif args.worker == "inference":
        inference_worker(args)
    else:
        main(args)
