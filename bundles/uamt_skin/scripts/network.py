"""The UAMT student: DeepLabv3 on a ResNet-50 backbone with a second, FCN, head.

Mu et al. (UAMT, section III-B) give the student two segmentation heads that read the same
backbone features: an FCN head and a DeepLabv3 (ASPP) head. Both heads here sit on ResNet-50's
``layer4`` output. (torchvision's own ``aux_classifier`` reads ``layer3`` instead; the paper asks
for heads on shared features, so we build the pair ourselves from torchvision's head classes.)

The DeepLabv3 head is the main head: it is what ``forward`` returns and what is deployed. The FCN
head only exists during training and can be switched off (``aux_head=False``) for the paper's
ablations and for the SupOnly / MT baselines, so every variant trains the same backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from samssl.networks.pretrained import load_backbone_state_dict

#: ResNet stride-to-dilation settings: output stride 8 is DeepLabv3's accurate setting (the
#: paper's), 16 is four times cheaper on a CPU.
_DILATIONS = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


class DualHeadDeepLabV3(nn.Module):
    """DeepLabv3-ResNet50 student with an optional auxiliary FCN head on the same features.

    Args:
        num_classes: output channels (2 = background + lesion, softmax).
        output_stride: 8 (paper), 16 or 32; lower is more accurate and slower.
        aux_head: build the FCN head (UAMT) or not (ablation "no aux head", baselines).
        backbone_weights: optional path to a torchvision ResNet-50 state dict (e.g. ImageNet
            weights a user downloaded); nothing is downloaded here.
    """

    def __init__(
        self,
        num_classes: int = 2,
        output_stride: int = 8,
        aux_head: bool = True,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in _DILATIONS:
            raise ValueError(f"output_stride must be one of {sorted(_DILATIONS)}, got {output_stride}")
        resnet = resnet50(weights=None, replace_stride_with_dilation=_DILATIONS[output_stride])
        if backbone_weights:
            load_backbone_state_dict(resnet, backbone_weights, option="backbone_weights", architecture="ResNet-50",
                                     head_prefixes=("fc.",), strip_prefixes=("module.", "backbone."))
        self.backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
        self.deeplab_head = DeepLabHead(2048, num_classes)
        self.fcn_head = FCNHead(2048, num_classes) if aux_head else None

    @property
    def has_aux_head(self) -> bool:
        return self.fcn_head is not None

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Main-head logits at input resolution; ``(main, aux)`` when ``return_aux`` is set.

        ``aux`` is ``None`` when the model was built without the FCN head, so callers can treat
        all variants alike.
        """
        size = x.shape[-2:]
        features = self.backbone(x)["out"]
        main = F.interpolate(self.deeplab_head(features), size=size, mode="bilinear", align_corners=False)
        if not return_aux:
            return main
        aux = None
        if self.fcn_head is not None:
            aux = F.interpolate(self.fcn_head(features), size=size, mode="bilinear", align_corners=False)
        return main, aux


class DeployedWeights:
    """The deployable part of a :class:`DualHeadDeepLabV3`: everything but the training-only FCN head.

    Used as the object saved to ``models/model.pt`` (``CheckpointSaver(save_dict={"model":
    DeployedWeights(network)})``), so the file loads strictly into the network built with
    ``aux_head=False`` by ``inference.json``, ``evaluate.json``, ``ckpt_export`` and MONAI Label.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network.module if hasattr(network, "module") else network

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.network.state_dict().items() if not k.startswith("fcn_head.")}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> object:
        return self.network.load_state_dict(state_dict, strict=strict and not self.network.has_aux_head)


#: Student networks by name: the paper's DeepLabv3-ResNet50 (from scratch, or from ImageNet weights
#: a user supplies) and LiteMedSAM's TinyViT encoder with a light decoder (pretrained on medical
#: images, shipped with its weights: the warm start available offline).
STUDENTS = ("deeplabv3_resnet50", "litemedsam_tinyvit")


def build_student(name: str = "deeplabv3_resnet50", num_classes: int = 2, output_stride: int = 8,
                  aux_head: bool = True, backbone_weights: str | None = None) -> nn.Module:
    """The student network ``name`` with the main + auxiliary head interface UAMT trains.

    ``output_stride`` and ``backbone_weights`` apply to the DeepLabv3 student only.
    """
    if name == "deeplabv3_resnet50":
        return DualHeadDeepLabV3(num_classes, output_stride, aux_head, backbone_weights)
    if name == "litemedsam_tinyvit":
        if backbone_weights:
            raise ValueError("backbone_weights is for the ResNet-50 student; the TinyViT student starts from "
                             "LiteMedSAM's own weights")
        # imported here: the teacher layer (segment-anything, LiteMedSAM) loads only for this student
        from samssl.foundation import build_foundation_model
        from samssl.networks import SAMEncoderSegNet

        return SAMEncoderSegNet(build_foundation_model("litemedsam"), num_classes=num_classes, aux_head=aux_head)
    raise ValueError(f"student must be one of {STUDENTS}, got {name!r}")
