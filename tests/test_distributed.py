"""Every bundle's ``multi_gpu_train.json`` under ``torchrun --nproc_per_node=2`` on the CPU (gloo).

Two processes train a few iterations on real data; each writes its final student weights (a test
override of the last ``training`` step), which must be equal: DistributedDataParallel averaged
the gradients. For UAMT the same command then runs again with more iterations and must resume on
both processes from the same checkpoint (the mechanism, ``TrainingCheckpointer`` kept on every
process by ``handlers_for_rank``, is shared by all bundles). Only process 0 writes files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from bundle_testing import BUNDLES, ROOT, la_subset, ph2_subset

pytestmark = pytest.mark.slow

# The bundle's training arguments for a short run, and the data kind it trains on. A new bundle
# joins the test by an entry here.
SHORT_RUNS: dict[str, tuple[str, list[str]]] = {
    "uamt_skin": ("dermoscopy", ["--num_labelled", "4", "--num_val", "2", "--image_size", "64", "--output_stride", "32",
                                 "--batch_size", "2", "--unlabelled_batch_size", "2", "--num_workers", "0",
                                 "--epoch_length", "2", "--checkpoint_interval", "2"]),
    "samkd_dualtask_skin": ("dermoscopy", ["--num_labelled", "4", "--num_val", "2", "--image_size", "64", "--batch_size", "2",
                                           "--unlabelled_batch_size", "2", "--num_workers", "0", "--epoch_length", "2",
                                           "--checkpoint_interval", "2", "--method#freeze_teacher_encoder", "True"]),
    "semisam_la": ("volumes", ["--num_labelled", "2", "--target_spacing", "2.5", "--patch_size", "[32,32,32]",
                               "--num_workers", "0", "--epoch_length", "2", "--checkpoint_interval", "2"]),
    "sfr_la": ("volumes", ["--num_labelled", "2", "--target_spacing", "2.5", "--patch_size", "[32,32,32]",
                           "--num_workers", "0", "--epoch_length", "2", "--checkpoint_interval", "2",
                           "--sfr#patch_size", "[32,32,16]", "--sfr#finetune#num_iterations", "2",
                           "--sfr#finetune#batch_size", "1", "--sfr#finetune#checkpoint_interval", "1"]),
}

# Replaces the last step of multi_gpu_train.json's `training` list: save this process's student, then leave the group.
SAVE_EACH_RANK = ("$torch.save(samssl.networks.unwrap_model(@network).state_dict(), os.path.join(@output_dir, "
                  "'rank' + str(torch.distributed.get_rank()) + '_student.pt')) or "
                  "(torch.distributed.is_initialized() and torch.distributed.destroy_process_group())")


def _save_each_rank(bundle: Path) -> dict[str, str]:
    steps = json.loads((bundle / "configs" / "multi_gpu_train.json").read_text())["training"]
    return {f"training#{len(steps) - 1}": SAVE_EACH_RANK}


# Bundles whose processes do not form a DDP group but share independent trainings out through
# files (SSL-MedSAM2: one FSL fold per process); where that sharing is tested.
FILE_COORDINATED = {"ssl_medsam2": "tests/test_ssl_medsam2_components.py::test_two_processes_share_the_folds_and_both_end_with_every_fold"}


def test_every_bundle_has_a_short_distributed_run():
    assert set(SHORT_RUNS) | set(FILE_COORDINATED) == {
        p.parent.parent.name for p in BUNDLES.glob("*/configs/multi_gpu_train.json")}
    for test in FILE_COORDINATED.values():
        path, name = test.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), test


def _torchrun(bundle: Path, configs: list[Path], args: list[str], cwd: Path) -> str:
    config = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    with tempfile.TemporaryDirectory(prefix="torchrun-") as scratch:  # torchrun's own torchelastic_* folders
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TMPDIR=scratch)
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
             "-m", "monai.bundle", "run", "training", "--config_file", config, *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"torchrun failed for {bundle.name}:\n{output[-6000:]}"
    return output


_BATCH_NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _assert_equal_students(run: Path) -> None:
    """Every weight equal across the two processes.

    Batch-norm running statistics are left out: DDP broadcasts process 0's at each forward, so
    they differ only by each process's last batch, and process 0's are the ones saved.
    """
    first, second = (torch.load(run / f"rank{r}_student.pt", weights_only=True) for r in (0, 1))
    assert first.keys() == second.keys()
    weights = [k for k in first if not k.endswith(_BATCH_NORM_STATISTICS)]
    assert len(weights) > 10
    differing = [k for k in weights if not torch.equal(first[k], second[k])]
    assert not differing, f"ranks disagree on {differing[:5]}"


@pytest.mark.parametrize("name", sorted(SHORT_RUNS))
def test_two_process_cpu_training_keeps_ranks_equal(name, data_root, tmp_path):
    kind, args = SHORT_RUNS[name]
    bundle = BUNDLES / name
    if kind == "dermoscopy":
        dataset = ph2_subset(data_root / "dermoscopy" / "ph2", tmp_path / "data", count=10)
    else:
        dataset = la_subset(data_root / "la", tmp_path / "data", count=6)
    override = tmp_path / "save_each_rank.json"
    override.write_text(json.dumps(_save_each_rank(bundle)))
    configs = [bundle / "configs" / "train.json", bundle / "configs" / "multi_gpu_train.json", override]
    run = tmp_path / "run"
    common = ["--dataset_dir", str(dataset), "--output_dir", str(run), "--model_dir", str(run / "models"), *args]
    if name == "semisam_la":
        common += ["--sam#cache_dir", str(tmp_path / "sam_cache")]
    length = ["--num_iterations", "2"] if kind == "volumes" else ["--max_epochs", "1"]

    _torchrun(bundle, configs, common + length, cwd=bundle)
    _assert_equal_students(run)
    assert (run / "models" / "model.pt").is_file()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints and not any(p.endswith(".partial") for p in checkpoints)
    if name != "uamt_skin":
        return
    for rank_file in (run / "rank0_student.pt", run / "rank1_student.pt"):
        rank_file.unlink()

    longer = ["--num_iterations", "4"] if kind == "volumes" else ["--max_epochs", "2"]
    output = _torchrun(bundle, configs, common + longer, cwd=bundle)
    assert output.count("resumed from") == 2, "both processes must resume from the checkpoint"
    _assert_equal_students(run)
    shutil.rmtree(run, ignore_errors=True)
