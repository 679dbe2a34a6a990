"""Trainers: the two-stream semi-supervised trainer, mean teacher / UA-MT, self-training, patch training;
the evaluator and the precision decision (``amp``) they share.

Engines only; what is attached to an engine lives in :mod:`samssl.handlers`, loss terms in
:mod:`samssl.losses`, and no concrete foundation-model backend is imported here.
"""


from samssl.engines.evaluation import SupervisedEvaluator
from samssl.engines.frameworks import FRAMEWORKS, build_consistency_trainer
from samssl.engines.mean_teacher import MeanTeacherTrainer, UncertaintyAwareMeanTeacherTrainer, predictive_entropy
from samssl.engines.precision import Precision, resolve_precision
from samssl.engines.self_training import SelfTrainingTrainer
from samssl.engines.semi_supervised import SemiSupervisedTrainer

__all__ = [
    "FRAMEWORKS",
    "MeanTeacherTrainer",
    "Precision",
    "SelfTrainingTrainer",
    "SemiSupervisedTrainer",
    "SupervisedEvaluator",
    "UncertaintyAwareMeanTeacherTrainer",
    "build_consistency_trainer",
    "predictive_entropy",
    "resolve_precision",
]
