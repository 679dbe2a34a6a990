"""Bundle-local code of the dual-task SAM-distillation bundle (imported by MONAI as the top-level package ``scripts``)."""

from pathlib import Path

BUNDLE_ROOT = str(Path(__file__).resolve().parents[1])
