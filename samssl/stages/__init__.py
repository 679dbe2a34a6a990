"""Multi-stage methods: resumable stages with fingerprinted inputs, and the offline pseudo-label writer.

A method with steps (SFR: fine-tune -> pseudo-label -> route -> re-train; SSL-MedSAM2: TFFS -> FSL
rounds -> fold ensemble) lists them in its ``train.json`` under ``"stages"``; :func:`run_stages`
runs them after the config is resolved. Each step is a :class:`Stage` (an output folder with a
manifest, done when the manifest says so, computed by process 0 while other processes wait).
"""

from samssl.stages.deferred import DeferredDataset, DeferredModule
from samssl.stages.stage import MANIFEST, FunctionStage, Stage, Step, process_rank, run_stages

__all__ = [
    "MANIFEST",
    "DeferredDataset",
    "DeferredModule",
    "FunctionStage",
    "Stage",
    "Step",
    "process_rank",
    "run_stages",
]
