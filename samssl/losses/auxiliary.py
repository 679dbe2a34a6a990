"""The auxiliary-loss protocol: extra weighted terms on the unlabelled batch, plugged into any trainer.

A method's own target (SemiSAM's SAM-assisted consistency, SFR's pseudo-labels, ...) is an object
with a ``name`` that, called with the engine, the unlabelled batch and the student's logits,
returns its unweighted loss under ``name`` and its weight under ``name + "_weight"``. Trainers
(:mod:`samssl.engines`) add ``weight * loss`` to their own loss, so one trainer serves every
method and a method's term serves every trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["AuxiliaryTerm", "Batch", "LossTerms", "add_auxiliary_terms", "checked_auxiliary_terms"]

Batch = dict[str, torch.Tensor]
LossTerms = dict[str, "torch.Tensor | float"]


@runtime_checkable
class AuxiliaryTerm(Protocol):
    """An extra consistency term on the unlabelled batch, attachable to any mean-teacher trainer.

    ``term(engine, unlabelled, student_logits)`` returns a dict with the unweighted loss under
    ``term.name``, its weight (a float) under ``term.name + "_weight"`` and any scalars worth logging.
    The trainer adds ``weight * loss`` to the total. ``unlabelled`` never carries a label.
    """

    name: str

    def __call__(self, engine: Any, unlabelled: Batch, student_logits: torch.Tensor) -> LossTerms: ...


def checked_auxiliary_terms(terms: Sequence[AuxiliaryTerm | None] | None) -> list[AuxiliaryTerm]:
    """The non-``None`` terms, each callable with a unique ``name`` (raises otherwise)."""
    checked = [t for t in (terms or []) if t is not None]
    for term in checked:
        if not callable(term) or not isinstance(getattr(term, "name", None), str):
            raise TypeError(f"an auxiliary term must be callable and have a str 'name', got {term!r}.")
    names = [term.name for term in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"auxiliary term names must be unique, got {names}.")
    return checked


def add_auxiliary_terms(terms: Sequence[AuxiliaryTerm], engine: Any, unlabelled: Batch, student_logits: torch.Tensor,
                        loss: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
    """``loss + sum(weight * term)`` over ``terms``, and every value they return (for logging)."""
    extra: LossTerms = {}
    for auxiliary in terms:
        aux_terms = auxiliary(engine, unlabelled, student_logits)
        aux_weight = float(aux_terms[f"{auxiliary.name}_weight"])
        if aux_weight != 0.0:
            loss = loss + aux_weight * aux_terms[auxiliary.name]
        extra.update(aux_terms)
    return loss, extra
