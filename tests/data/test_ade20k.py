"""
ADE20K's head / body / tail split (Table 7 of the paper's supplementary material) and its
registered metadata.
"""

from detectron2.data import MetadataCatalog

from disalign.data.ade20k import ADE20K_CLASS_GROUPS, ADE20K_PIXEL_RATIOS
from disalign.evaluation import pixel_ratio_group


def test_ade20k_table7_split():
    assert len(ADE20K_PIXEL_RATIOS) == 150
    assert [pixel_ratio_group(r) if r != 0.001 else "tail" for _, r, _ in ADE20K_PIXEL_RATIOS] == (
        ADE20K_CLASS_GROUPS
    )  # the paper prints 'swivel chair' (0.1%, rounded) as tail
    assert [ADE20K_CLASS_GROUPS.count(g) for g in ("head", "body", "tail")] == [20, 55, 75]
    for name in ("ade20k_sem_seg_train", "ade20k_sem_seg_val"):
        metadata = MetadataCatalog.get(name)
        assert metadata.class_groups == ADE20K_CLASS_GROUPS
        assert len(metadata.stuff_classes) == 150 and metadata.stuff_classes[0] == "wall"
