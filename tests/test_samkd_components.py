"""Components of the dual-task SAM-distillation bundle: networks, losses, fused prompt, gradient routing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_testing import bundle_fixture, use_bundle  # same directory, on sys.path under pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = use_bundle("samkd_dualtask_skin")
_bundle_scripts = bundle_fixture("samkd_dualtask_skin")

from scripts.augment import apply_dihedral, invert_dihedral  # noqa: E402
from scripts.fused_prompt import fused_mask_logits, fused_prompts  # noqa: E402
from scripts.mobilenet_unet import MobileNetDualTaskUNet  # noqa: E402
from scripts.model import parameter_groups, sam_adapters, training_state  # noqa: E402
from scripts.trainer import DualTaskSamKDTrainer  # noqa: E402
from scripts.vit_dual_task import ViTDualTaskNet  # noqa: E402

from samssl.data import signed_distance_map  # noqa: E402
from samssl.foundation import DensePromptDecoder, build_foundation_model  # noqa: E402
from samssl.foundation.peft_tuning import add_decoder_adapters  # noqa: E402
from samssl.losses import DualTaskLoss, dual_task_consistency_loss, sdf_regression_loss  # noqa: E402
from samssl.networks import DualTaskOutputs, fold_batch_norm  # noqa: E402

SIZE = 64


def _disc(size: int = SIZE, radius: float = 0.25) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy - size / 2) ** 2 + (xx - size / 3) ** 2) < (radius * size) ** 2).float()[None, None]


@pytest.fixture(scope="module")
def sam():
    """Random-init LiteMedSAM (same architecture; the wiring, not the weights, is under test) with adapters."""
    torch.manual_seed(0)
    segmenter = build_foundation_model("litemedsam", random_init=True, cache={"max_bytes": 1 << 28})
    add_decoder_adapters(segmenter)
    return segmenter


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    label = torch.cat([_disc(), _disc(radius=0.3).flip(-1)])
    image = torch.rand(2, 3, SIZE, SIZE) * 0.3 + label * 0.5
    sdf = torch.stack([signed_distance_map(m[0])[None] for m in label])
    return {"image": image, "sam_image": image.clone(), "label": label, "label_sdf": sdf}


# ---------------------------------------------------------------------------------------- networks
def test_main_network_is_small_dual_headed_and_scriptable(tmp_path):
    net = MobileNetDualTaskUNet().eval()
    params = sum(p.numel() for p in net.parameters())
    assert params <= 3_000_000, f"main network has {params} parameters, the method's budget is 3.0M"
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        logits, sdf = net.forward_dual(x)
        assert logits.shape == (2, 2, SIZE, SIZE) and sdf.shape == (2, 1, SIZE, SIZE)
        assert float(sdf.abs().max()) <= 1.0  # tanh head: the SDF convention's range
        assert torch.allclose(net(x), logits)  # the deployed output is the mask head
        scripted = torch.jit.script(net)
        assert torch.allclose(scripted(x), logits, atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="input"):
        net(torch.rand(1, 1, SIZE, SIZE))
    with pytest.raises(FileNotFoundError):
        MobileNetDualTaskUNet(encoder_weights=str(tmp_path / "missing_mobilenet_v2.pth"))


def test_main_network_accepts_either_memory_format_and_returns_contiguous_outputs():
    network = MobileNetDualTaskUNet().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = network(x)
        b = network(x.contiguous(memory_format=torch.channels_last))
    assert a.is_contiguous() and torch.allclose(a, b, atol=1e-6)
    network.train()
    logits, sdf = network.forward_dual(torch.rand(2, 3, 64, 64))
    (logits.mean() + sdf.mean()).backward()
    assert all(p.grad is not None for p in network.parameters())


def _trained_looking(network: torch.nn.Module) -> torch.nn.Module:
    """Give every batch norm non-trivial statistics and affine terms, as training would."""
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(c, generator=generator) - 0.5)
    return network.eval()


def test_folding_the_deployed_main_network_removes_every_batch_norm_and_keeps_its_outputs():
    """What evaluate.json and inference.json run: ``samssl.networks.fold_batch_norm`` on the main network."""
    network = _trained_looking(MobileNetDualTaskUNet())
    folded = fold_batch_norm(network)
    count = lambda net: sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # noqa: E731
    assert count(network) == 63 and count(folded) == 0
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        expected, (logits, sdf) = network.forward_dual(x), folded.forward_dual(x)
    scale = expected[0].abs().max()
    assert scale > 1e-3  # the comparison below is not between two near-zero tensors
    assert torch.allclose(logits, expected[0], atol=1e-4 * scale) and torch.allclose(sdf, expected[1], atol=1e-5)
    # The copy keeps the network's channels_last weights; the original is untouched.
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in folded.parameters() if p.ndim == 4)
    assert set(network.state_dict()) == set(MobileNetDualTaskUNet().state_dict())


def test_main_network_loads_a_local_mobilenet_v2_file_and_refuses_another_backbone(tmp_path):
    from torchvision.models import mobilenet_v2, resnet18

    torch.manual_seed(0)
    imagenet_like = mobilenet_v2(weights=None)
    good = tmp_path / "mobilenet_v2.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in imagenet_like.state_dict().items()}}, good)
    net = MobileNetDualTaskUNet(encoder_weights=str(good))
    first_conv = next(p for name, p in net.named_parameters() if p.ndim == 4)
    torch.testing.assert_close(first_conv, imagenet_like.features[0][0].weight)

    wrong = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="encoder_weights .* is not a torchvision MobileNetV2 state dict"):
        MobileNetDualTaskUNet(encoder_weights=str(wrong))


def test_teacher_network_frozen_encoder_reads_the_cache_and_finetuned_copy_trains(sam, batch):
    teacher = ViTDualTaskNet(sam, freeze_encoder=True)
    assert not any("encoder" in n for n, _ in teacher.named_parameters())  # SAM's weights are not the teacher's
    hits = sam.embedding_cache.hits
    logits, sdf = teacher(batch["image"])
    logits2, _ = teacher(batch["image"])
    assert logits.shape == (2, 2, SIZE, SIZE) and sdf.shape == (2, 1, SIZE, SIZE)
    assert float(sdf.detach().abs().max()) <= 1.0
    assert sam.embedding_cache.hits >= hits + 2  # the second pass is served by the cache

    tuned = ViTDualTaskNet(sam, freeze_encoder=False)
    before = {n: p.clone() for n, p in sam.image_encoder.named_parameters()}
    out, out_sdf = tuned(batch["image"][:1])
    (out.sum() + out_sdf.sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned.encoder.parameters())
    assert all(p.grad is None for p in sam.image_encoder.parameters())
    assert all(torch.equal(p, before[n]) for n, p in sam.image_encoder.named_parameters())
    with pytest.raises(ValueError, match="frozen encoder"):
        tuned(batch["image"][:1], embeddings=torch.zeros(1, 256, 64, 64))


def test_dual_task_outputs_wraps_forward_dual():
    net = MobileNetDualTaskUNet().eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(DualTaskOutputs(net)(x), net.forward_dual(x)))
    with pytest.raises(TypeError):
        DualTaskOutputs(torch.nn.Conv2d(3, 2, 1))


# ---------------------------------------------------------------------------------------- losses
def test_dual_task_loss_terms(batch):
    label, sdf = batch["label"], batch["label_sdf"]
    perfect_logits = torch.cat([(1 - label) * 20 - 10, label * 20 - 10], dim=1)
    terms = DualTaskLoss()(perfect_logits, sdf, label, sdf)
    assert set(terms) == {"loss", "seg", "sdf", "consistency"}
    assert float(terms["sdf"]) == 0.0 and float(terms["consistency"]) < 0.05
    wrong = DualTaskLoss()(-perfect_logits, -sdf, label, sdf)
    assert float(wrong["loss"]) > float(terms["loss"]) + 1.0
    assert float(dual_task_consistency_loss(-perfect_logits, sdf)) > 0.5  # the heads disagree everywhere
    with pytest.raises(ValueError, match="does not match"):
        sdf_regression_loss(sdf, sdf[:, :, :32])
    with pytest.raises(ValueError):
        DualTaskLoss(sdf_weight=-1.0)


# ---------------------------------------------------------------------------------------- prompts
def test_fused_prompt_combines_region_and_boundary(batch):
    label, sdf = batch["label"][:1], batch["label_sdf"][:1]
    confident = torch.cat([(1 - label) * 8 - 4, label * 8 - 4], dim=1)  # p = sigmoid(+-8)
    fused = fused_mask_logits(confident, sdf, alpha=0.5, k=20.0)
    assert fused.shape == (1, 1, SIZE, SIZE)
    assert float(fused[label.bool()].min()) > 0 and float(fused[~label.bool()].max()) < 0  # agreement: the mask
    deep = sdf < -0.5
    assert float(fused[deep].mean()) > float(fused[label.bool() & (sdf > -0.1)].mean())  # graded by the distance
    disagree = fused_mask_logits(confident, -sdf, alpha=0.5, k=8.0)
    assert float(disagree.abs().mean()) < 0.5 * float(fused.abs().mean())  # heads disagree: "undecided" prompt
    assert torch.allclose(fused_mask_logits(confident, sdf, alpha=1.0), confident[:, 1:] - confident[:, :1])

    prompts = fused_prompts(confident.requires_grad_(), sdf)
    assert not prompts.mask_prompt.requires_grad  # the prompt never trains the main network
    rows, cols = torch.nonzero(label[0, 0], as_tuple=True)
    box = prompts.boxes[0, 0].tolist()
    assert box == [cols.min().item(), rows.min().item(), cols.max().item(), rows.max().item()]  # (x0, y0, x1, y1)
    assert bool(prompts.valid.all())
    assert fused_prompts(confident, sdf, use_box=False).boxes is None
    empty = fused_prompts(torch.tensor([[10.0, -10.0]]).view(1, 2, 1, 1).expand(1, 2, SIZE, SIZE), sdf.abs())
    assert not bool(empty.valid.any())


def test_untrained_prompt_decoder_leaves_sam_unchanged(sam, batch):
    embeddings = sam.encode(batch["sam_image"])
    psi = DensePromptDecoder()
    prompts = fused_prompts(torch.cat([-batch["label"], batch["label"]], 1) * 5, batch["label_sdf"])
    with torch.no_grad():
        plain = sam.decode(embeddings, **prompts.as_kwargs()).mask_logits
        prompted = sam.decode(embeddings, dense_prompt=psi(embeddings.features), **prompts.as_kwargs()).mask_logits
    assert torch.allclose(plain, prompted)
    with pytest.raises(ValueError, match="image embedding"):
        psi(torch.zeros(1, 128, 64, 64))


# ---------------------------------------------------------------------------------------- augmentation
def test_dihedral_augmentation_is_exact_and_invertible():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    seen = set()
    for code in range(8):
        codes = torch.tensor([code, (code + 3) % 8])
        y = apply_dihedral(x, codes)
        assert torch.equal(invert_dihedral(y, codes), x)
        seen.add(tuple(y[0, 0].flatten().tolist()))
    assert len(seen) == 8  # the eight symmetries of the square are distinct
    with pytest.raises(ValueError, match="square"):
        apply_dihedral(torch.zeros(1, 1, 4, 6), torch.tensor([1]))


# ---------------------------------------------------------------------------------------- gradient routing
def _trainer(sam, main, teacher, psi):
    loader = [{"image": torch.zeros(1, 3, SIZE, SIZE), "label": torch.zeros(1, 1, SIZE, SIZE)}]
    groups = parameter_groups(main, teacher, psi, sam_adapters(sam))
    return DualTaskSamKDTrainer(
        device="cpu", max_epochs=1, train_data_loader=loader, network=DualTaskOutputs(main),
        optimizer=torch.optim.AdamW(groups), loss_function=DualTaskLoss(), teacher_network=teacher, sam=sam,
        prompt_decoder=psi, sam_parameters=list(psi.parameters()) + list(sam_adapters(sam).parameters()),
        unlabeled_data_loader=loader, augment=True,
    )


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_kd_trains_only_the_main_network_and_sam_loss_only_psi_and_adapters(sam, batch):
    torch.manual_seed(0)
    main, psi = MobileNetDualTaskUNet(), DensePromptDecoder()
    teacher = ViTDualTaskNet(sam, freeze_encoder=True)
    trainer = _trainer(sam, main, teacher, psi)
    trainer.state.iteration = 1
    adapters = sam_adapters(sam)

    # KD on unlabelled images: gradients reach the main network only.
    unlabelled = {"image": batch["image"], "sam_image": batch["sam_image"]}
    _, terms = trainer.unlabelled_losses(unlabelled)
    terms["kd"].backward()
    assert _grad_norm(main) > 0
    assert _grad_norm(psi) == 0 and _grad_norm(adapters) == 0 and _grad_norm(teacher) == 0
    assert all(p.grad is None for p in sam.image_encoder.parameters())
    assert all(p.grad is None for n, p in sam.named_parameters() if ".adapter." not in n)
    for module in (main, psi, adapters, teacher):
        module.zero_grad(set_to_none=True)

    # L_sam on labelled images: gradients reach psi and the adapters, not the main network or SAM's weights.
    terms = trainer.compute_losses(trainer, batch, None)
    assert {"supervised", "teacher_supervised", "sam", "loss"} <= set(terms)
    terms["sam"].backward()
    assert _grad_norm(psi.project) > 0 and _grad_norm(adapters) > 0
    assert _grad_norm(main) == 0 and _grad_norm(teacher) == 0
    assert all(p.grad is None for p in sam.image_encoder.parameters())

    # Saved state: every trained module, none of SAM's frozen weights.
    state = training_state(main, teacher, psi, adapters).state_dict()
    assert any(k.startswith("sam_adapters.") for k in state) and not any("image_encoder" in k for k in state)


def test_trainer_requires_the_dual_task_loss_and_the_label_sdf(sam, batch):
    main = MobileNetDualTaskUNet()
    loader = [{"image": torch.zeros(1, 3, SIZE, SIZE), "label": torch.zeros(1, 1, SIZE, SIZE)}]
    with pytest.raises(TypeError, match="DualTaskLoss"):
        DualTaskSamKDTrainer(device="cpu", max_epochs=1, train_data_loader=loader, network=DualTaskOutputs(main),
                             optimizer=torch.optim.SGD(main.parameters(), lr=0.1), loss_function=torch.nn.MSELoss())
    trainer = DualTaskSamKDTrainer(device="cpu", max_epochs=1, train_data_loader=loader, network=DualTaskOutputs(main),
                                   optimizer=torch.optim.SGD(main.parameters(), lr=0.1), loss_function=DualTaskLoss())
    trainer.state.iteration = 1
    with pytest.raises(KeyError, match="label_sdf"):
        trainer.compute_losses(trainer, {"image": batch["image"], "label": batch["label"]}, None)


def test_embedding_warmup_encodes_only_what_the_cache_lacks_and_does_nothing_without_a_segmenter(tmp_path):
    from samssl.foundation import EmbeddingCache
    from samssl.handlers import PrecomputeEmbeddings

    class CountingSegmenter:  # the two members the handler uses, with a real cache
        def __init__(self):
            self.embedding_cache = EmbeddingCache(directory=tmp_path / "cache")
            self.encoded = 0

        def cache_namespace(self):
            return "counting|v1"

        def encode(self, images):
            from samssl.foundation.base import ImageEmbeddings
            from samssl.foundation.cache import image_key

            self.encoded += len(images)
            for image in images:
                item = ImageEmbeddings(features=image.mean(0, keepdim=True)[None], high_res_features=(),
                                       original_sizes=[tuple(image.shape[-2:])], input_sizes=[tuple(image.shape[-2:])])
                self.embedding_cache.put(image_key(self.cache_namespace(), image), item)

    images = [{"sam_image": torch.full((3, 8, 8), float(i))} for i in range(5)]
    more = [{"sam_image": torch.full((3, 16, 16), 9.0)}]  # another size: encoded in its own call
    segmenter = CountingSegmenter()
    warmup = PrecomputeEmbeddings([images, None, more], segmenter=segmenter, batch_size=2, progress=False)
    assert warmup() == 6 and segmenter.encoded == 6
    assert warmup() == 0 and segmenter.encoded == 6  # everything cached now (memory and disk)

    class NoEmbeddings:  # a trainer whose step reads no embeddings (SupOnly)
        def embedding_segmenter(self):
            return None

    assert PrecomputeEmbeddings([images], progress=False)(NoEmbeddings()) == 0
    with pytest.raises(KeyError, match="sam_image"):
        PrecomputeEmbeddings([[{"image": torch.zeros(3, 8, 8)}]], segmenter=segmenter, progress=False)()

    # A MONAI dataset is read up to its first random transform: the augmentation never runs, so the
    # training's random streams are untouched (a random transform before the image would be an error).
    from monai.data import Dataset
    from monai.transforms import Compose, CopyItemsd, RandomizableTransform

    class NeverCalled(RandomizableTransform):
        def __call__(self, data):
            raise AssertionError("the warm-up ran a random transform")

    fresh = CountingSegmenter()
    fresh.embedding_cache = EmbeddingCache()  # memory only: nothing cached yet
    dataset = Dataset([{"image": torch.full((3, 8, 8), 7.0)}], transform=Compose([CopyItemsd("image", names="sam_image"), NeverCalled()]))
    assert PrecomputeEmbeddings([dataset], segmenter=fresh, progress=False)() == 1 and fresh.encoded == 1
