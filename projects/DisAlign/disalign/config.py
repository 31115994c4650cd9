# -*- coding: utf-8 -*-
from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config

# The allowed values of the keys below that name one of a few choices, each beside its key's name;
# disalign.input_checks.check_inputs checks them before anything is built.
CLS_HEAD_CHOICES = ("dot", "cosine")  # MODEL.DISALIGN.CLS_HEAD
CONFIDENCE_NORM_CHOICES = ("", "BN", "SyncBN", "naiveSyncBN")  # MODEL.DISALIGN.CONFIDENCE_NORM
ALIGNMENT_STAGE_TRAINABLE_CHOICES = ("alignment", "classifier")  # ...ALIGNMENT_STAGE_TRAINABLE
REDUCTION_CHOICES = ("weighted_mean", "mean")  # MODEL.DISALIGN.GRW.REDUCTION
COUNT_BY_CHOICES = ("images", "instances", "pixels")  # MODEL.DISALIGN.GRW.COUNT_BY
LVIS_EVAL_BACKENDS = ("fast", "lvis-api")  # TEST.LVIS_EVAL_BACKEND
POST_HOC_CHOICES = ("", "tau_norm", "logit_adjustment", "ncm")  # MODEL.DECOUPLED.POST_HOC


def add_disalign_config(cfg):
    """
    Add config keys for DisAlign (Distribution Alignment). Defaults are the paper's LVIS settings.
    """
    _C = cfg
    # detectron2's DeepLab project keys (DeepLabV3+ head, dilated backbones, poly schedule) for
    # the semantic segmentation models
    add_deeplab_config(_C)

    _C.MODEL.DISALIGN = CN()
    # Classifier head z = f(x) of the ROI box predictor, over K foreground classes + background:
    # "dot" (z = W x + b, nn.Linear) or "cosine" (z_j = s * cos(x, W_j); the "*" rows of the paper).
    _C.MODEL.DISALIGN.CLS_HEAD = "dot"
    # Initial value of the cosine head's learnable scale s.
    _C.MODEL.DISALIGN.COSINE_SCALE = 20.0
    # Adaptive calibration s_j = alpha_j * z_j + beta_j, mixed with z by the confidence sigma(x):
    # z^_j = sigma(x) * s_j + (1 - sigma(x)) * z_j. False gives the plain classifier (baselines and
    # stage 1, the default, as in the base configs); True adds the alignment parameters alpha,
    # beta and the confidence layer (the stage-2 configs).
    _C.MODEL.DISALIGN.CALIBRATION = False
    # Learn the per-class magnitude alpha. False fixes alpha = 1 (the "margin only" ablation).
    _C.MODEL.DISALIGN.MAGNITUDE = True
    # Learn the per-class margin beta. False fixes beta = 0 (the "magnitude only" ablation).
    _C.MODEL.DISALIGN.MARGIN = True
    # Initial magnitude alpha_j (the paper: 1.0).
    _C.MODEL.DISALIGN.ALPHA_INIT = 1.0
    # Initial margin beta_j (the paper: 0.0).
    _C.MODEL.DISALIGN.BETA_INIT = 0.0
    # Input-aware confidence sigma(x) = sigmoid(w . x + b). False fixes sigma = 1 (input-agnostic).
    _C.MODEL.DISALIGN.CONFIDENCE = True
    # Initial weight w of the confidence layer. None: w ~ N(0, 0.01^2) and b = 0 (the paper). A
    # number: every w_i set to it, b left at torch's default init; 0.1 with ALPHA_INIT 2.0 is the
    # official classifier (cvpods DisAlignLinear: confidence_layer.weight = 0.1,
    # z^ = (1 + sigma * logit_scale) * z + sigma * logit_bias with logit_scale = alpha - 1 = 1).
    _C.MODEL.DISALIGN.CONFIDENCE_WEIGHT_INIT = None
    # Normalisation inside the confidence layer. "": sigmoid(w . x + b) (the paper). "BN", "SyncBN"
    # or "naiveSyncBN": sigmoid(ReLU(norm(w . x))), so sigma >= 0.5 (the official ADE20K head,
    # DisAlignFCNHead's confidence_layer, an mmcv ConvModule with norm and ReLU).
    _C.MODEL.DISALIGN.CONFIDENCE_NORM = ""
    # Align the K foreground logits only and leave the background logit z_K unchanged (the paper's
    # detection setting). False also calibrates the background logit.
    _C.MODEL.DISALIGN.FOREGROUND_ONLY = True
    # Stage 2 (alignment): freeze every parameter except alpha, beta and the confidence layer, keep
    # the frozen modules in eval mode (no BatchNorm statistic moves, the RPN runs as at inference)
    # and compute only the losses that train something (the classification loss).
    _C.MODEL.DISALIGN.ALIGNMENT_STAGE = False
    # What the alignment stage trains: "alignment" (alpha, beta and the confidence layer: DisAlign)
    # or "classifier" (also the base classifier: the paper's ablation without calibration, where
    # stage 2 re-trains the classifier, with or without GRW).
    _C.MODEL.DISALIGN.ALIGNMENT_STAGE_TRAINABLE = "alignment"
    # Detectors, alignment stage: run the frozen RPN in training mode, as the official code does
    # (it keeps the whole model in training mode): proposals from MODEL.RPN.PRE_NMS_TOPK_TRAIN /
    # POST_NMS_TOPK_TRAIN, and the RPN's losses are computed (no gradient reaches it). False: the
    # RPN proposes as at inference (the *_TEST top-k) and computes no loss.
    _C.MODEL.DISALIGN.ALIGNMENT_STAGE_RPN_TRAIN_MODE = False

    _C.MODEL.DISALIGN.GRW = CN()
    # Generalized re-weighting of the classification loss: foreground class j gets the weight
    # w_j = r_j^(-rho), r_j = n_j / sum_k n_k, normalised so that sum_j w_j = K; background gets 1.
    # Off by default (plain cross-entropy: stage 1); the stage-2 configs turn it on.
    _C.MODEL.DISALIGN.GRW.ENABLED = False
    # The re-weighting scale rho (0.8 for LVIS; 0 is plain cross-entropy).
    _C.MODEL.DISALIGN.GRW.RHO = 0.8
    # How the weighted cross-entropy sum_i w_{y_i} * CE_i is averaged: "weighted_mean" divides it by
    # the summed weights of the targets, sum_i w_{y_i} (PyTorch's F.cross_entropy(weight=w), the
    # paper and cvpods' GRWCrossEntropyLoss); "mean" divides it by the number of target elements,
    # ignored ones included (mmseg's cross_entropy with class_weight, as the official ADE20K
    # GRWCrossEntropyLoss averages over all pixels).
    _C.MODEL.DISALIGN.GRW.REDUCTION = "weighted_mean"
    # What n_j counts in cfg.DATASETS.TRAIN: "images" (images containing class j, the LVIS
    # frequency definition; for classification, images of class j), "instances" (annotated
    # instances of class j) or "pixels" (labelled pixels, semantic segmentation; cached as JSON
    # under $DISALIGN_CACHE, default ~/.cache/disalign).
    _C.MODEL.DISALIGN.GRW.COUNT_BY = "images"

    # The decoupled long-tail baselines, from the same stage-1 model as DisAlign (Kang et al.,
    # "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020; Menon et
    # al., "Long-tail learning via logit adjustment", ICLR 2021): see disalign.modeling.decoupled.
    # cRT and LWS are alignment stages with class-balanced sampling (DATALOADER.SAMPLER_TRAIN
    # "ClassBalancedSampler": a class drawn uniformly, then one of its images); LWS is the
    # calibration's magnitude alpha alone (s_j in f_j -> s_j f_j). The post-hoc ones train nothing.
    _C.MODEL.DECOUPLED = CN()
    # cRT: a checkpoint not written by a model with this key on (the stage-1 model) leaves the
    # classifier cls_score at its fresh initialisation; with ALIGNMENT_STAGE_TRAINABLE "classifier"
    # and CALIBRATION False, stage 2 then trains it alone. The model's own checkpoints (--resume)
    # load in full.
    _C.MODEL.DECOUPLED.REINIT_CLASSIFIER = False
    # A classifier made at inference from the trained one, without training: "" (none),
    # "tau_norm" (tau-normalisation: rows w_j / ||w_j||^tau, bias dropped; dot-product head),
    # "logit_adjustment" (z_j - tau * log(pi_j), pi_j the training class frequencies of
    # DATASETS.TRAIN) or "ncm" (nearest class mean: cos(x, mu_j), mu_j the mean trunk feature of
    # class j's training images, read as the test set is).
    _C.MODEL.DECOUPLED.POST_HOC = ""
    # tau of "tau_norm" and "logit_adjustment" (0 leaves the logits unchanged); the value used
    # when the model is evaluated. tools/compare_methods.py chooses it on TUNE_DATASET.
    _C.MODEL.DECOUPLED.TAU = 1.0
    # The held-out dataset on which tau is chosen over TAU_GRID (the largest top-1, bbox AP or
    # mIoU, by task); never one of DATASETS.TEST. "" for none.
    _C.MODEL.DECOUPLED.TUNE_DATASET = ""
    # The values of tau tried on TUNE_DATASET.
    _C.MODEL.DECOUPLED.TAU_GRID = [round(0.1 * i, 1) for i in range(21)]

    # Image classification (DisAlignImageClassifier).
    _C.MODEL.IMAGE_CLASSIFIER = CN()
    # Number of classes K.
    _C.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES = 1000
    # The trunk output that is average-pooled into the feature x (detectron2's ResNet names).
    _C.MODEL.IMAGE_CLASSIFIER.IN_FEATURE = "res5"

    # Image classification input pipeline (torchvision's transforms, the standard ImageNet recipe).
    _C.INPUT.CLASSIFICATION = CN()
    # Training: a random crop of TRAIN_CROP_SIZE x TRAIN_CROP_SIZE covering a random fraction of the
    # image area in TRAIN_CROP_SCALE (RandomResizedCrop), then a random horizontal flip.
    _C.INPUT.CLASSIFICATION.TRAIN_CROP_SIZE = 224
    _C.INPUT.CLASSIFICATION.TRAIN_CROP_SCALE = (0.08, 1.0)
    # Test: resize the shorter side to TEST_RESIZE, then a centre crop of TEST_CROP_SIZE.
    _C.INPUT.CLASSIFICATION.TEST_RESIZE = 256
    _C.INPUT.CLASSIFICATION.TEST_CROP_SIZE = 224

    # LVIS AP computation: "fast" (the lvis_fast package) or "lvis-api" (detectron2's).
    _C.TEST.LVIS_EVAL_BACKEND = "fast"

    # Fixed AP and Pooled AP (Dave et al., "Evaluating Large-Vocabulary Object Detectors: The
    # Devil is in the Details", 2021), reported by the LVIS evaluator besides the standard AP.
    _C.TEST.FIXED_AP = CN()
    # On: the box predictor keeps up to DETS_PER_IMAGE detections per image (instead of
    # TEST.DETECTIONS_PER_IMAGE, which still bounds the standard AP's), and the evaluator keeps
    # each category's DETS_PER_CATEGORY top-scored over the dataset for Fixed AP and Pooled AP.
    _C.TEST.FIXED_AP.ENABLED = False
    # K: detections kept per category over the whole evaluation set (the authors' 10,000).
    _C.TEST.FIXED_AP.DETS_PER_CATEGORY = 10000
    # The box predictor's per-image cap while Fixed AP is on (-1: none); bounds the mask head's
    # work and memory per image.
    _C.TEST.FIXED_AP.DETS_PER_IMAGE = 1000


def class_count_key(cfg):
    """
    The config key that holds the model's number of classes K (without the detection
    background), and its value: ``("MODEL.ROI_HEADS.NUM_CLASSES", K)`` for the detectors,
    ``MODEL.IMAGE_CLASSIFIER.NUM_CLASSES`` for the classifier, ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
    for the segmentor.
    """
    if cfg.MODEL.META_ARCHITECTURE == "DisAlignImageClassifier":
        return "MODEL.IMAGE_CLASSIFIER.NUM_CLASSES", cfg.MODEL.IMAGE_CLASSIFIER.NUM_CLASSES
    if cfg.MODEL.META_ARCHITECTURE == "DisAlignSemanticSegmentor":
        return "MODEL.SEM_SEG_HEAD.NUM_CLASSES", cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    return "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES
