# -*- coding: utf-8 -*-
from .build import build_evaluator
from .classification import ClassificationEvaluator, group_accuracies, shot_group
