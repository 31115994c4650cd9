# -*- coding: utf-8 -*-
"""
python -m lvis_fast: LVIS AP / AR of a results file, printed as one JSON object (lvis-api's metric
names, 0-1 scale); a line on stderr says which areas decided the small / medium / large ranges.

    python -m lvis_fast --gt lvis_v1_val.json --dt results.json --iou-type segm
    # Fixed AP and Pooled AP (Dave et al. 2021)
    python -m lvis_fast --gt lvis_v1_val.json --dt results.json --iou-type segm \
        --max-dets -1 --dets-per-category 10000 --pooled
"""

import argparse
import json
import sys

from .evaluation import _Evaluation
from .params import IOU_TYPES


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lvis_fast",
        description="LVIS AP / AR of a results file, as lvis-api computes them; printed as one "
        "JSON object (lvis-api's metric names, 0-1 scale).",
    )
    parser.add_argument("--gt", required=True, help="LVIS-format ground truth JSON file")
    parser.add_argument("--dt", required=True, help="results JSON file: a list of detections")
    parser.add_argument("--iou-type", choices=IOU_TYPES, default="bbox")
    parser.add_argument(
        "--max-dets", type=_integer, default=300, help="detections per image (-1: no limit)"
    )
    parser.add_argument(
        "--dets-per-category",
        type=_integer,
        default=None,
        metavar="K",
        help="keep only each category's K top-scored detections over all images (Fixed AP: "
        "10000 with --max-dets -1)",
    )
    parser.add_argument(
        "--pooled",
        action="store_true",
        help="also print Pooled AP over all, rare, common and frequent categories "
        "(AP-pooled-all, -r, -c, -f)",
    )
    parser.add_argument(
        "--mask-areas",
        action="store_true",
        help="segm: area ranges from the masks' areas, the results' boxes left out (what "
        "detectron2's evaluator and train_net.py report); default: lvis-api's rule, the boxes' "
        "areas when the results have a 'bbox'",
    )
    args = parser.parse_args(argv)
    try:
        evaluation = _Evaluation(
            args.gt,
            args.dt,
            args.iou_type,
            args.max_dets,
            args.mask_areas,
            args.dets_per_category,
            args.pooled,
        )
    except (OSError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    except (KeyError, TypeError) as e:  # a ground truth without a required field
        print(
            f"error: malformed ground truth or results ({type(e).__name__}: {e})", file=sys.stderr
        )
        return 1
    areas = "box areas (the results' 'bbox')" if evaluation.box_areas else "mask areas"
    print(f"area ranges from {areas}", file=sys.stderr)
    print(json.dumps(evaluation.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
