"""An ignite/MONAI trainer with a labelled and an unlabelled data stream.

The semi-supervised papers implemented here (UA-MT, SemiSAM, SFR, ...) train on iterations, not
epochs of a single data set: every iteration takes one labelled batch and one unlabelled batch,
and the (usually larger) unlabelled set is cycled independently of the labelled one. In this
trainer the labelled loader is the engine's data (so ``epoch_length``, ``DistributedSampler``
epochs, MONAI handlers and ``key_train_metric`` behave as in ``SupervisedTrainer``) and the
unlabelled loader is a second stream that is restarted whenever it runs out; it never ends an
epoch.

A method is a subclass that overrides one of two levels:

* ``compute_losses(engine, labelled, unlabelled) -> dict``: the usual case. Return the named loss
  terms with the total under ``"loss"``; the base ``train_step`` runs it under autocast (the run's
  ``amp`` precision; a network output that reaches a loss is cast to float32 first, as
  ``student_forward`` and ``forward_float32`` do), checks the total is finite, back-propagates, steps the optimiser and updates the EMA teacher.
* ``train_step(engine, labelled, unlabelled) -> dict``: for methods with several optimiser steps per
  iteration (e.g. a two-stage student); call :meth:`optimize` and :meth:`update_teacher` yourself.

The base ``compute_losses`` is the supervised loss on the labelled batch only, so
``unlabeled_data_loader=None`` is the supervised-only ("SupOnly") baseline of the papers, trained by
the same code path as the methods it is compared with.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import Trainer
from monai.engines.utils import (
    IterationEvents,
    default_metric_cmp_fn,
    default_prepare_batch,
)
from monai.engines.workflow import Workflow
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Transform
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from samssl.engines.precision import AmpSetting, announce_precision, resolve_precision, to_float32
from samssl.losses.auxiliary import Batch, LossTerms
from samssl.losses.ramps import Constant
from samssl.networks.ema import EMATeacher, unwrap_model
from samssl.utils.errors import NonFiniteLossError
from samssl.utils.reproducibility import (
    capture_global_rng,
    capture_pass_start,
    restore_global_rng,
    restore_pass_start,
    skip_batches,
)

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")

__all__ = ["SemiSupervisedTrainer"]




def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain ``torch.Tensor`` view of a (Meta)Tensor: losses need no metadata, and MetaTensor
    arithmetic is slower and confuses ``torch.compile``."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def _length(loader: Any) -> int | None:
    """Batches per pass of ``loader``, or None when it has no length (a generator, an IterableDataset)."""
    if not isinstance(loader, Sized):
        return None
    try:
        return len(loader)
    except TypeError:  # a DataLoader over an IterableDataset
        return None


class SemiSupervisedTrainer(Trainer):
    """Trainer with a labelled stream (the engine's data) and an optional unlabelled stream.

    The arguments shared with ``monai.engines.SupervisedTrainer`` mean the same; the new ones:

    Args:
        unlabeled_data_loader: iterable of unlabelled batches (dicts with ``"image"``), or ``None``
            for supervised-only training (steps then receive ``unlabelled=None``). One batch is drawn
            per iteration; the iterator is re-created when exhausted.
        teacher: an :class:`EMATeacher` of ``network``, updated after each optimiser step, or ``None``.
        consistency_weight: ``callable(iteration) -> float`` (a ramp from :mod:`.ramps`), a number
            (constant weight) or ``None``; methods read it through :meth:`consistency_weight_at`.
        loss_function: the supervised loss ``loss_function(logits, label)`` on labelled batches.
        epoch_length: iterations per epoch; default ``len(train_data_loader)``.
        optim_set_to_none: ``optimizer.zero_grad(set_to_none=...)``; default True (torch's default).
        amp: the precision of the forward passes (:mod:`samssl.engines.precision`): ``"auto"``
            (bfloat16 autocast on a CPU with native bfloat16, float16 + ``GradScaler`` on CUDA),
            ``True`` (the same), ``"bf16"``, ``"fp16"`` or ``False`` (float32). ``amp_kwargs`` go to
            ``torch.autocast``. Network outputs are cast to float32 before the losses; weights,
            gradients, optimiser state and the EMA teacher stay float32.

    Each iteration hands ``train_step`` two dicts on the device: ``labelled`` with ``"image"`` and
    ``"label"``, ``unlabelled`` with ``"image"``; other tensor entries of a batch dict (e.g. cached
    SAM embeddings, a pseudo-label) are moved along under their names. A ``"label"`` entry of an
    unlabelled batch is always dropped, so no method can read the ground truth of the data it
    treats as unlabelled.

    ``engine.state.output`` is a dict of floats, ``"loss"`` first, then every other scalar term the
    method returned (``"supervised"``, ``"consistency"``, ``"consistency_weight"``, ...):
    ``StatsHandler(output_transform=lambda x: x)`` (or ``TensorBoardStatsHandler``) logs every term,
    ``lambda x: x["loss"]`` the total. (MONAI's ``from_engine(["loss"], first=True)`` returns a
    1-tuple for a dict output, which ``StatsHandler`` ignores.)
    Non-scalar tensors a method returns (e.g. ``"pred"``/``"label"`` of the labelled batch for a
    ``key_train_metric``) are passed on detached; with ``decollate=True`` MONAI then turns the
    output into a list of per-sample dicts, exactly as for ``SupervisedTrainer``.

    A non-finite total loss raises ``FloatingPointError`` before the optimiser steps, so the
    weights and the last checkpoint stay those of the last good iteration.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        *,
        unlabeled_data_loader: Iterable | DataLoader | None = None,
        teacher: EMATeacher | None = None,
        consistency_weight: Callable[[int], float] | float | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Inferer | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: AmpSetting = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = True,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        compile: bool = False,
        compile_kwargs: dict | None = None,
    ) -> None:
        if _length(unlabeled_data_loader) == 0:
            raise ValueError(
                "the unlabelled stream has no images: every case of the training pool is labelled, or the unlabelled "
                "list/folder is empty. Lower num_labelled, point the unlabelled data at a folder with images, or "
                "train the supervised-only baseline (configs/baselines/suponly.json)."
            )
        if teacher is not None and not isinstance(teacher, EMATeacher):
            raise TypeError(f"teacher must be an EMATeacher or None, got {type(teacher).__name__}.")
        if teacher is not None and teacher.student is not unwrap_model(network):
            raise ValueError("the EMA teacher follows a different network than the one this trainer trains.")
        self.precision = resolve_precision(amp, device)
        announce_precision(self.precision)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=self.precision.enabled,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        if compile:
            network = torch.compile(network, **(compile_kwargs or {}))  # type: ignore[assignment]
        self.network = network
        self.compile = compile
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.optim_set_to_none = optim_set_to_none
        self.teacher = teacher
        if consistency_weight is not None and not callable(consistency_weight):
            consistency_weight = Constant(float(consistency_weight))
        self.consistency_weight = consistency_weight
        self.unlabeled_data_loader = unlabeled_data_loader
        self._unlabelled_iterator: Iterator | None = None
        # Batches drawn from the unlabelled stream so far; saved with the engine state so that a
        # resumed run continues the unlabelled pass where the checkpoint left it.
        self.state.unlabelled_draws = 0
        self.state_dict_user_keys.append("unlabelled_draws")
        # Random state at the start of each stream's current pass, and what a loaded checkpoint
        # asks to restore (see samssl.utils.reproducibility): resume is exact mid-pass.
        self._pass_start: dict[str, dict[str, Any] | None] = {"labelled": None, "unlabelled": None}
        self._pending_resume: dict[str, Any] = {}
        self.add_event_handler(Events.STARTED, self._restart_unlabelled_stream_on_fresh_run)

    # ------------------------------------------------------------------ running
    def run(self) -> None:  # type: ignore[override]
        """Run training (continuing from the current state, e.g. after a checkpoint was loaded)."""
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.uses_grad_scaler else None
        Workflow.run(self)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes: ``torch.autocast`` in the run's precision, a no-op in float32."""
        return self.precision.autocast(**self.amp_kwargs)

    def forward_float32(self, network: Callable, images: torch.Tensor) -> Any:
        """``inferer(images, network)`` under autocast, its output cast to float32 for the losses."""
        with self.autocast():
            return to_float32(self.inferer(images, network))

    # ------------------------------------------------------------------ checkpointed state
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The engine state plus what an exact mid-pass resume needs: the global random generators
        now and the random state at the start of each stream's current pass."""
        state = dict(super().state_dict())
        state["global_rng"] = capture_global_rng()
        state["labelled_pass"] = self._pass_start["labelled"]
        state["unlabelled_pass"] = self._pass_start["unlabelled"]
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:  # type: ignore[override]
        """Load the engine state; the random state is restored when the data streams restart.

        Checkpoints written before the random state was saved still load (the resume is then exact
        in weights and counters, not in the data order of a pass begun before the checkpoint)."""
        extra = ("global_rng", "labelled_pass", "unlabelled_pass")
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in extra})
        self._pending_resume = {k: state_dict[k] for k in extra if state_dict.get(k) is not None}
        self._unlabelled_iterator = None

    # ------------------------------------------------------------------ data streams
    def _restart_unlabelled_stream_on_fresh_run(self, engine: Engine) -> None:
        if engine.state.iteration == 0:
            engine.state.unlabelled_draws = 0
            self._unlabelled_iterator = None
            self._pending_resume = {}

    def _setup_dataloader_iter(self) -> None:
        """Ignite starts a pass over the labelled stream: record its random state, or, on resume,
        replay the interrupted pass up to the checkpoint and restore the global generators."""
        loader = self.state.dataloader
        if loader is None:
            super()._setup_dataloader_iter()
            return
        snapshot = self._pending_resume.pop("labelled_pass", None)
        if snapshot is None:
            self._pass_start["labelled"] = capture_pass_start(loader, self.state.iteration)
            super()._setup_dataloader_iter()
            return
        restore_pass_start(loader, snapshot)
        self._pass_start["labelled"] = snapshot
        super()._setup_dataloader_iter()
        skip_batches(self._dataloader_iter, self.state.iteration - snapshot["draws"])
        if "global_rng" in self._pending_resume:
            restore_global_rng(self._pending_resume.pop("global_rng"))

    def _start_unlabelled_pass(self) -> Iterator:
        """A new pass over the unlabelled stream, or the interrupted one replayed after a resume."""
        loader = self.unlabeled_data_loader
        assert loader is not None
        length = self._unlabelled_length()
        snapshot = self._pending_resume.pop("unlabelled_pass", None)
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler) and length:
            start = self.state.unlabelled_draws if snapshot is None else snapshot["draws"]
            sampler.set_epoch(start // length)
        if snapshot is None:
            self._pass_start["unlabelled"] = capture_pass_start(loader, self.state.unlabelled_draws)
            return iter(loader)
        now = capture_global_rng()  # the replay must not move the generators the training step uses
        restore_pass_start(loader, snapshot)
        self._pass_start["unlabelled"] = snapshot
        iterator = skip_batches(iter(loader), self.state.unlabelled_draws - snapshot["draws"])
        restore_global_rng(now)
        return iterator

    def _unlabelled_length(self) -> int | None:
        return _length(self.unlabeled_data_loader)

    def _fast_forward_unlabelled(self, iterator: Iterator) -> None:
        """After a resume, skip the part of the current unlabelled pass the checkpointed run used."""
        length = self._unlabelled_length()
        if not length or self.state.unlabelled_draws == 0:
            return
        skip = self.state.unlabelled_draws % length
        if skip:
            self.logger.info(f"resuming the unlabelled stream: skipping {skip} batches of the current pass")
        for _ in range(skip):
            next(iterator)

    def next_unlabelled_batch(self) -> Any:
        """The next raw batch of the unlabelled stream, starting a new pass when one is exhausted."""
        if self.unlabeled_data_loader is None:
            raise RuntimeError("this trainer has no unlabeled_data_loader.")
        if self._unlabelled_iterator is None:
            replay = "unlabelled_pass" in self._pending_resume
            self._unlabelled_iterator = self._start_unlabelled_pass()
            if not replay:
                self._fast_forward_unlabelled(self._unlabelled_iterator)
        try:
            batch = next(self._unlabelled_iterator)
        except StopIteration:
            self._unlabelled_iterator = self._start_unlabelled_pass()
            try:
                batch = next(self._unlabelled_iterator)
            except StopIteration:
                raise ValueError("unlabeled_data_loader yielded no batch: is the unlabelled data list empty?") from None
        self.state.unlabelled_draws += 1
        return batch

    def prepare_stream_batch(self, batchdata: Any, labelled: bool) -> Batch:
        """Move one raw batch to the device as ``{"image", ["label"], extra tensor entries}``."""
        batch = self.prepare_batch(batchdata, self.state.device, self.non_blocking, **self.to_kwargs)
        if isinstance(batch, torch.Tensor):
            image, label = batch, None
        elif len(batch) == 2:
            image, label = batch
        else:
            raise ValueError(
                "prepare_batch returned extra network arguments (the 4-tuple form), which the semi-supervised "
                "trainers do not pass on; put extra inputs in the batch dict instead."
            )
        prepared: Batch = {Keys.IMAGE: _plain(image)}
        if labelled:
            if label is None:
                raise ValueError(f"a labelled batch must carry {Keys.LABEL!r}; prepare_batch returned none.")
            prepared[Keys.LABEL] = _plain(label)
        if isinstance(batchdata, Mapping):
            for key, value in batchdata.items():
                if key in (Keys.IMAGE, Keys.LABEL) or not isinstance(value, torch.Tensor):
                    continue
                prepared[key] = _plain(value.to(device=self.state.device, non_blocking=self.non_blocking))
        return prepared

    # ------------------------------------------------------------------ one iteration
    def _iteration(self, engine: SemiSupervisedTrainer, batchdata: Any) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        labelled = self.prepare_stream_batch(batchdata, labelled=True)
        unlabelled = None
        if self.unlabeled_data_loader is not None:
            unlabelled = self.prepare_stream_batch(self.next_unlabelled_batch(), labelled=False)
        engine.network.train()
        terms = self.train_step(engine, labelled, unlabelled)
        engine.state.output = self._output_from_terms(terms)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def train_step(self, engine: SemiSupervisedTrainer, labelled: Batch, unlabelled: Batch | None) -> LossTerms:
        """One optimisation step: losses (forward passes autocast, loss arithmetic on float32 outputs),
        finite check, backward, step, EMA update."""
        with self.autocast():
            terms = self.compute_losses(engine, labelled, unlabelled)
        if "loss" not in terms:
            raise ValueError(
                f"{type(self).__name__}.compute_losses must return the total loss under 'loss'; got {sorted(terms)}."
            )
        engine.state.output = terms
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self.optimize(engine, terms["loss"], terms)  # type: ignore[arg-type]
        self.update_teacher(engine)
        return terms

    def compute_losses(self, engine: SemiSupervisedTrainer, labelled: Batch, unlabelled: Batch | None) -> LossTerms:
        """Named loss terms of one iteration, total under ``"loss"``; here supervised only (SupOnly)."""
        supervised = self.supervised_loss(engine, labelled)
        return {"loss": supervised, "supervised": supervised}

    def student_forward(self, images: torch.Tensor) -> torch.Tensor:
        """The student's logits for ``images`` (through the inferer, as in ``SupervisedTrainer``),
        computed under autocast and returned in float32."""
        return self.forward_float32(self.network, images)

    def supervised_loss(self, engine: SemiSupervisedTrainer, labelled: Batch) -> torch.Tensor:
        """``loss_function(student(image), label)`` on the labelled batch, averaged to a scalar."""
        logits = self.student_forward(labelled[Keys.IMAGE])
        return self.loss_function(logits, labelled[Keys.LABEL]).mean()

    def consistency_weight_at(self, iteration: int) -> float:
        """The unsupervised-loss weight at ``iteration``; 1.0 when no schedule was given."""
        return 1.0 if self.consistency_weight is None else float(self.consistency_weight(iteration))

    def optimize(
        self, engine: SemiSupervisedTrainer, loss: torch.Tensor, terms: Mapping[str, Any] | None = None
    ) -> None:
        """Zero the gradients, back-propagate ``loss`` (scaled under CUDA amp) and step the optimiser.

        Raises:
            FloatingPointError: when ``loss`` is NaN or infinite; nothing is changed in that case.
        """
        if not bool(torch.isfinite(loss.detach()).all()):
            self._raise_not_finite(engine, loss, terms)
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()

    @staticmethod
    def _raise_not_finite(engine: SemiSupervisedTrainer, loss: torch.Tensor, terms: Mapping[str, Any] | None) -> None:
        values = {"loss": loss} if terms is None else terms
        described = ", ".join(
            f"{name}={float(value.detach()) if isinstance(value, torch.Tensor) else value:.6g}"
            for name, value in values.items()
            if not isinstance(value, torch.Tensor) or value.numel() == 1
        )
        raise NonFiniteLossError(
            f"non-finite loss at iteration {engine.state.iteration} ({described}); the optimiser did not step, "
            "so the weights are those of the previous iteration. Lower the learning rate (or clip gradients), "
            "or check the inputs of this iteration for NaN/Inf (e.g. intensity normalisation of a constant image)."
        )

    def update_teacher(self, engine: SemiSupervisedTrainer) -> None:
        """EMA update of the teacher for this iteration (recorded, so an attached EMA handler skips it)."""
        if self.teacher is not None:
            self.teacher.update(engine.state.iteration)

    @staticmethod
    def _output_from_terms(terms: Mapping[str, Any]) -> dict[str, Any]:
        output: dict[str, Any] = {}
        for name in ["loss", *(k for k in terms if k != "loss")]:
            value = terms[name]
            if isinstance(value, torch.Tensor):
                value = float(value.detach()) if value.numel() == 1 else value.detach()
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
            output[name] = value
        if not math.isfinite(output["loss"]):  # a train_step override that skipped optimize()
            raise FloatingPointError(f"non-finite loss {output['loss']} in the output of the iteration.")
        return output
