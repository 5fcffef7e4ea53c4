"""A training loop that logs, evaluates, checkpoints and resumes exactly.

:class:`Trainer` runs ``step_fn(model, batch) -> loss`` over ``data`` for
``TrainConfig.max_steps`` optimizer steps with:

- a tqdm progress bar showing the loss and the throughput (samples/s);
- training metrics averaged over ``log_every`` steps and evaluation metrics, kept in memory
  (:attr:`TrainResult.history`) and appended to ``out_dir/metrics.jsonl`` (one JSON object a
  line), and a summary ``out_dir/metrics.json`` written atomically at the end;
- checkpoints in ``out_dir/checkpoints/step_XXXXXX.pt`` holding the model, optimizer,
  scheduler, every random stream (per rank), the step, and the position in the data
  (epoch, batches consumed, and the random state at the start of the epoch);
- NaN/inf detection: a non-finite loss raises :class:`NonFiniteLossError` before
  ``backward``, so nothing is trained through it.

Exact resume: a run interrupted after step ``k`` and restarted with the same configuration
ends with bitwise the same weights as an uninterrupted run, because the checkpoint restores
every piece of state the next step reads:

- the data order: the data is re-iterated once per epoch (``iter(data)``); on resume the
  random state saved at the start of the epoch is restored, the epoch is passed to
  ``set_epoch`` when the data (or its sampler) has one, the iterator is rebuilt and
  fast-forwarded past the batches already used (they are loaded again: cheap for tensors in
  memory, :class:`~examples.training.BatchLoader`, or a ``DataLoader`` with
  ``num_workers=0``), and then the random state of the checkpoint is restored;
- evaluation runs between saved random states, so it never changes the training run.

Not covered: a ``DataLoader`` with a ``generator=`` of its own (its state is not saved; use
the global generator or a sampler with ``set_epoch``), and worker processes that draw random
numbers from anything but the seed torch hands them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._atomic import atomic_write
from .checkpoint import CheckpointManager
from .distributed import DistInfo, current, unwrap_model
from .seed import rng_state, set_rng_state

__all__ = ["TrainConfig", "Trainer", "TrainResult", "NonFiniteLossError", "train"]

StepOutput = Tensor | Mapping[str, Any]
StepFn = Callable[[nn.Module, Any], StepOutput]
EvalFn = Callable[[nn.Module], Mapping[str, Any]]
Callback = Callable[["Trainer"], None]


class NonFiniteLossError(FloatingPointError):
    """A loss (or gradient norm) was NaN or infinite; training stopped before using it.

    Attributes:
        step: the 1-based number of the optimizer step that failed.
        value: the offending value.
        quantity: ``"loss"`` or ``"gradient norm"``.
        epoch: the epoch of the batch.
        batch: the 1-based position of the batch in its epoch.
    """

    def __init__(
        self, step: int, value: float, quantity: str = "loss", epoch: int = 0, batch: int = 0
    ) -> None:
        self.step = step
        self.value = value
        self.quantity = quantity
        self.epoch = epoch
        self.batch = batch
        super().__init__(
            f"non-finite {quantity} {value} at step {step} (epoch {epoch}, batch {batch}); "
            "stopped before applying it. Lower the learning rate, clip gradients "
            "(TrainConfig.grad_clip), or check the inputs of this batch."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.step, self.value, self.quantity, self.epoch, self.batch)


@dataclass
class TrainConfig:
    """What :class:`Trainer` does and writes. Every ``*_every`` counts optimizer steps."""

    max_steps: int = 1000  # total optimizer steps; a resumed run continues up to this number
    eval_every: int = 0  # call eval_fn every this many steps; 0: only once, at the end
    log_every: int = 10  # average the training metrics over this many steps, then log them
    checkpoint_every: int = 0  # save every this many steps; 0: only at the end (needs out_dir)
    keep_checkpoints: int = 2  # the newest checkpoints kept on disk; older ones are deleted
    grad_clip: float | None = None  # clip the global gradient norm to this; None: no clipping
    out_dir: str | os.PathLike | None = None  # metrics and checkpoints go here; None: no files
    resume: bool = True  # continue from out_dir's newest readable checkpoint; False: start
    # over, deleting the checkpoints and metrics an earlier run left in out_dir
    progress: bool = True  # show a tqdm bar (main process only)

    def __post_init__(self) -> None:
        for name in ("max_steps", "eval_every", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an int >= 0, got {value!r}")
        keep = self.keep_checkpoints
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"TrainConfig.keep_checkpoints must be an int >= 1, got {keep!r}")
        clip = self.grad_clip
        if clip is not None and not (isinstance(clip, int | float) and 0 < clip < math.inf):
            raise ValueError(f"TrainConfig.grad_clip must be None or a float > 0, got {clip!r}")
        if self.checkpoint_every and self.out_dir is None:
            raise ValueError(
                f"TrainConfig.checkpoint_every={self.checkpoint_every} needs an out_dir to "
                "write checkpoints to"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings), for JSON and checkpoints."""
        out = dataclasses.asdict(self)
        if out["out_dir"] is not None:
            out["out_dir"] = str(out["out_dir"])
        return out


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Args:
        step: optimizer steps taken in total (including those before a resume).
        epoch: the epoch of the last batch.
        train: the last logged training record (``loss``, extra metrics, ``lr``, ...).
        eval: the last evaluation record (empty without ``eval_fn``).
        elapsed_s: wall time of the whole run, resumed parts included.
        resumed_from: the step of the checkpoint this run started from (0: a fresh start).
        history: every logged record in order, training (``"kind": "train"``) and evaluation
            (``"kind": "eval"``) alike: what ``metrics.jsonl`` holds, also without ``out_dir``.
            After a resume it starts with the records the earlier part of the run wrote.
    """

    step: int
    epoch: int
    train: dict[str, Any]
    eval: dict[str, Any]
    elapsed_s: float
    resumed_from: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def values(self, name: str, kind: str = "train") -> list[float]:
        """The logged values of metric ``name`` in the records of ``kind``, in step order.

        Example:
            >>> r = TrainResult(2, 0, {}, {}, 0.0, history=[
            ...     {"kind": "train", "step": 1, "loss": 2.0},
            ...     {"kind": "eval", "step": 1, "acc": 0.5},
            ...     {"kind": "train", "step": 2, "loss": 1.0}])
            >>> r.values("loss"), r.values("acc", "eval")
            ([2.0, 1.0], [0.5])
        """
        return [r[name] for r in self.history if r.get("kind") == kind and name in r]


class _Meter:
    """Sums of the training metrics since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.samples = 0

    def add(self, values: Mapping[str, float], samples: int) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.samples += samples

    def means(self) -> dict[str, float]:
        return {key: total / self.steps for key, total in self.sums.items()}

    def state_dict(self) -> dict[str, Any]:
        # no sample count: throughput after a resume is measured from the resume on
        return {"sums": dict(self.sums), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {str(k): float(v) for k, v in state["sums"].items()}
        self.steps = int(state["steps"])
        self.samples = 0


def _count_samples(batch: Any) -> int:
    """Leading size of the first tensor found in ``batch`` (1 if none)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        return _count_samples(next(iter(batch.values()))) if batch else 1
    if isinstance(batch, list | tuple):
        return _count_samples(batch[0]) if batch else 1
    return 1


def _set_epoch(data: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the data, or on a ``DataLoader``'s sampler, if one has it."""
    batch_sampler = getattr(data, "batch_sampler", None)
    for obj in (data, getattr(data, "sampler", None), getattr(batch_sampler, "sampler", None)):
        set_epoch = getattr(obj, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
            return


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {name!r} must be a scalar, got shape {tuple(value.shape)}")
        return float(value.detach())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}") from None


class Trainer:
    """Runs ``step_fn`` over ``data`` with logging, evaluation, checkpoints and exact resume.

    One optimizer step per batch: ``zero_grad``, ``step_fn``, finite check, ``backward``,
    optional gradient clipping, ``optimizer.step()``, ``scheduler.step()``.

    Args:
        model: the module (may be wrapped in ``DistributedDataParallel``; checkpoints hold
            the inner module's ``state_dict``).
        optimizer: its optimizer.
        step_fn: ``step_fn(model, batch)`` returns the scalar loss, or a mapping with
            ``"loss"`` and extra scalar metrics to log (e.g. ``"acc"``), optionally
            ``"num_samples"`` (else the leading size of the first tensor in the batch).
        data: an iterable that is iterated once per epoch (a ``DataLoader``, a
            :class:`~examples.training.BatchLoader`, a list); may be endless. A one-shot
            iterator is refused: it could not be rebuilt on resume.
        config: :class:`TrainConfig`.
        scheduler: a learning-rate scheduler, stepped after every optimizer step.
        eval_fn: ``eval_fn(model) -> {"name": number}``, called in ``eval()`` mode under
            ``torch.no_grad()``; its random draws are undone afterwards.
        callbacks: ``callback(trainer)`` after every step (after its logging, evaluation and
            checkpoint); read ``trainer.step``, ``trainer.last_train``, ``trainer.last_eval``.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> data = [(torch.ones(4, 2), torch.zeros(4, 1))]
        >>> def step_fn(model, batch):
        ...     x, y = batch
        ...     return nn.functional.mse_loss(model(x), y)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> config = TrainConfig(max_steps=5, progress=False)
        >>> result = Trainer(model, opt, step_fn, data, config).fit()
        >>> result.step, result.train["loss"] < 1
        (5, True)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step_fn: StepFn,
        data: Iterable[Any],
        config: TrainConfig | None = None,
        *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        eval_fn: EvalFn | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if isinstance(data, Iterator):
            raise TypeError(
                f"data must be re-iterable (a DataLoader, a BatchLoader, a list), got the "
                f"one-shot iterator {type(data).__name__}: it cannot be rebuilt on resume"
            )
        if not isinstance(data, Iterable):
            raise TypeError(f"data must be an iterable, got {type(data).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.step_fn = step_fn
        self.data = data
        self.config = config if config is not None else TrainConfig()
        self.scheduler = scheduler
        self.eval_fn = eval_fn
        self.callbacks = tuple(callbacks)
        self.dist: DistInfo = current()
        self.out_dir = None if self.config.out_dir is None else Path(self.config.out_dir)
        self.checkpoints = (
            None
            if self.out_dir is None
            else CheckpointManager(self.out_dir / "checkpoints", keep=self.config.keep_checkpoints)
        )
        self.step = 0  # optimizer steps taken
        self.epoch = 0  # epoch of the current iterator
        self.batch_in_epoch = 0  # batches taken from the current iterator
        self.last_train: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []  # every logged record (TrainResult.history)
        self.resumed_from = 0
        self._iter: Iterator[Any] | None = None
        self._epoch_rng: dict[str, Any] | None = None
        self._meter = _Meter()
        self._elapsed_before = 0.0  # wall time of earlier (interrupted) parts of the run
        self._saved_step = -1
        self._evaluated_step = -1
        self._t_fit: float | None = None
        self._t_interval = 0.0

    # ------------------------------------------------------------------ files
    @property
    def metrics_path(self) -> Path | None:
        """``out_dir/metrics.jsonl`` (``None`` without ``out_dir``)."""
        return None if self.out_dir is None else self.out_dir / "metrics.jsonl"

    @property
    def summary_path(self) -> Path | None:
        """``out_dir/metrics.json`` (``None`` without ``out_dir``)."""
        return None if self.out_dir is None else self.out_dir / "metrics.json"

    def _append(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.metrics_path is None or not self.dist.is_main:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """Keep the records up to ``step`` (drop those of steps a crash made unsaved)."""
        path = self.metrics_path
        if path is None or not self.dist.is_main or not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if isinstance(record, dict) and record.get("step", math.inf) <= step:
                kept.append(record)
                if record.get("kind") == "train":
                    self.last_train = record
                elif record.get("kind") == "eval":
                    self.last_eval = record
        self.history = list(kept)
        with atomic_write(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def _start_over(self) -> None:
        """``resume=False``: remove what an earlier run left in ``out_dir``."""
        if self.out_dir is None or not self.dist.is_main:
            return
        old = [p for _, p in self.checkpoints.checkpoints()] if self.checkpoints else []
        old += [p for p in (self.metrics_path, self.summary_path) if p and p.exists()]
        if old:
            warnings.warn(
                f"resume=False: deleting {len(old)} files of an earlier run in {self.out_dir}",
                stacklevel=3,
            )
        for path in old:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ state
    def _gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (a one-item list in one process)."""
        if not self.dist.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(out, obj)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs. Under DDP every rank must call it (it gathers the
        random states of all ranks)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": self._gather(rng_state()),  # per rank
            "epoch_rng": self._gather(self._epoch_rng),  # per rank, at the start of the epoch
            "meter": self._meter.state_dict(),
            "elapsed_s": self._elapsed(),
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`: weights, optimizer, scheduler, counters, the data
        position (the iterator is rebuilt and fast-forwarded) and the random streams."""
        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            if state["scheduler"] is None:
                raise ValueError("the checkpoint has no scheduler state but a scheduler is set")
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self._meter.load_state_dict(state["meter"])
        self._elapsed_before = float(state["elapsed_s"])
        rank = self.dist.rank
        if len(state["rng"]) != self.dist.world_size:
            warnings.warn(
                f"checkpoint written by {len(state['rng'])} processes, resumed by "
                f"{self.dist.world_size}: the random streams cannot continue exactly",
                stacklevel=2,
            )
            rank = rank % len(state["rng"])
        epoch_rng = state["epoch_rng"][rank]
        self._iter = None
        if epoch_rng is not None:
            self._epoch_rng = epoch_rng
            set_rng_state(epoch_rng)
            _set_epoch(self.data, self.epoch)
            self._iter = iter(self.data)
            for taken in range(self.batch_in_epoch):
                try:
                    next(self._iter)
                except StopIteration:
                    raise ValueError(
                        f"the checkpoint is at batch {self.batch_in_epoch} of epoch "
                        f"{self.epoch}, but the data now yields only {taken} batches in that "
                        "epoch; was the data or the batch size changed?"
                    ) from None
        set_rng_state(state["rng"][rank])
        self._saved_step = self._evaluated_step = -1

    def _resume(self) -> None:
        cfg = self.config
        if self.checkpoints is None:
            return
        if not cfg.resume:
            self._start_over()
            return
        found = self.checkpoints.latest()
        if found is None:
            self._truncate_metrics(0)
            return
        step, path, state = found
        self.load_state_dict(state)
        self.resumed_from = step
        self._saved_step = step
        self._truncate_metrics(step)
        if self.dist.is_main and cfg.progress:
            print(f"resumed from {path} (step {step})", flush=True)

    # ------------------------------------------------------------------ steps
    def _elapsed(self) -> float:
        started = self._t_fit
        return self._elapsed_before + (0.0 if started is None else time.perf_counter() - started)

    def _start_epoch(self) -> None:
        self._epoch_rng = rng_state()
        _set_epoch(self.data, self.epoch)
        self._iter = iter(self.data)

    def _next_batch(self) -> Any:
        if self._iter is None:
            self._start_epoch()
        assert self._iter is not None
        try:
            batch = next(self._iter)
        except StopIteration:
            if self.batch_in_epoch == 0:
                raise ValueError(f"data yielded no batches in epoch {self.epoch}") from None
            self.epoch += 1
            self.batch_in_epoch = 0
            self._start_epoch()
            try:
                batch = next(self._iter)
            except StopIteration:
                raise ValueError(f"data yielded no batches in epoch {self.epoch}") from None
        self.batch_in_epoch += 1
        return batch

    def _check_finite(self, quantity: str, value: Tensor) -> None:
        bad = not bool(torch.isfinite(value.detach()).all())
        if self.dist.is_distributed:  # every rank must stop together, or the others hang
            flag = torch.tensor([float(bad)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = bool(flag.item())
        if bad:
            raise NonFiniteLossError(
                self.step + 1, float(value.detach()), quantity, self.epoch, self.batch_in_epoch
            )

    def _train_step(self, batch: Any) -> tuple[dict[str, float], int]:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = self.step_fn(self.model, batch)
        extras: dict[str, float] = {}
        samples = None
        if isinstance(out, Mapping):
            if "loss" not in out:
                raise KeyError(f"step_fn returned a mapping without 'loss': keys {list(out)}")
            loss = out["loss"]
            for key, value in out.items():
                if key == "num_samples":
                    samples = int(value)
                elif key != "loss":
                    extras[key] = _as_float(key, value)
        else:
            loss = out
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"step_fn must return a scalar loss tensor, got {got}")
        self._check_finite("loss", loss)
        loss.backward()
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self._check_finite("gradient norm", norm)
            extras["grad_norm"] = float(norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        values = {"loss": float(loss.detach()), **extras}
        return values, _count_samples(batch) if samples is None else samples

    def _log_train(self, bar: Any) -> None:
        means = self._meter.means()
        if self.dist.is_distributed:  # average over ranks (every rank logs at the same step)
            keys = sorted(means)
            buf = torch.tensor([means[k] for k in keys], dtype=torch.float64)
            dist.all_reduce(buf)
            means = {k: float(v) / self.dist.world_size for k, v in zip(keys, buf, strict=True)}
        now = time.perf_counter()
        seconds = max(now - self._t_interval, 1e-9)
        samples_per_s = self._meter.samples * self.dist.world_size / seconds
        record = {
            "kind": "train",
            "step": self.step,
            "epoch": self.epoch,
            **means,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "samples_per_s": samples_per_s,
            "elapsed_s": self._elapsed(),
        }
        self.last_train = record
        self._append(record)
        if bar is not None:
            bar.set_postfix({"loss": f"{means['loss']:.4f}", "samples/s": f"{samples_per_s:.0f}"})
        self._meter = _Meter()
        self._t_interval = now

    def evaluate(self) -> dict[str, Any]:
        """Run ``eval_fn`` now (eval mode, no grad, random streams untouched) and log it."""
        if self.eval_fn is None:
            raise ValueError("evaluate() needs an eval_fn")
        saved = rng_state()
        self.model.eval()
        try:
            with torch.no_grad():
                metrics = self.eval_fn(self.model)
        finally:
            self.model.train()
            set_rng_state(saved)
        if not isinstance(metrics, Mapping):
            raise TypeError(f"eval_fn must return a mapping, got {type(metrics).__name__}")
        record = {"kind": "eval", "step": self.step, "epoch": self.epoch}
        record.update({str(k): _as_float(str(k), v) for k, v in metrics.items()})
        record["elapsed_s"] = self._elapsed()
        self.last_eval = record
        self._evaluated_step = self.step
        self._append(record)
        return record

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank must call it)."""
        if self.checkpoints is None:
            raise ValueError("save_checkpoint() needs TrainConfig.out_dir")
        state = self.state_dict()
        path = self.checkpoints.save(self.step, state) if self.dist.is_main else None
        if self.dist.is_distributed:
            dist.barrier()  # nobody reads or overwrites it before it is complete
        self._saved_step = self.step
        return path

    def _write_summary(self) -> None:
        if self.summary_path is None or not self.dist.is_main:
            return
        summary = {
            "step": self.step,
            "epoch": self.epoch,
            "elapsed_s": self._elapsed(),
            "resumed_from": self.resumed_from,
            "world_size": self.dist.world_size,
            "train": self.last_train,
            "eval": self.last_eval,
            "config": self.config.to_dict(),
        }
        with atomic_write(self.summary_path, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")

    def _progress_bar(self) -> Any:
        if not (self.config.progress and self.dist.is_main):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - depends on the environment
            warnings.warn("progress=True needs tqdm (pip install tqdm); no bar", stacklevel=3)
            return None
        return tqdm(
            total=self.config.max_steps, initial=min(self.step, self.config.max_steps), unit="step"
        )

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train up to ``config.max_steps`` (resuming first when configured) and return the
        last metrics. Raises :class:`NonFiniteLossError` on a NaN/inf loss."""
        cfg = self.config
        self._resume()
        self._t_fit = self._t_interval = time.perf_counter()
        bar = self._progress_bar()
        try:
            while self.step < cfg.max_steps:
                batch = self._next_batch()
                values, samples = self._train_step(batch)
                self.step += 1
                self._meter.add(values, samples)
                if bar is not None:
                    bar.update(1)
                if cfg.log_every and self.step % cfg.log_every == 0:
                    self._log_train(bar)
                if self.eval_fn is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback(self)
            if self._meter.steps:
                self._log_train(bar)
            if self.eval_fn is not None and self._evaluated_step != self.step:
                self.evaluate()
            if self.checkpoints is not None and self._saved_step != self.step:
                self.save_checkpoint()
            self._write_summary()
        finally:
            if bar is not None:
                bar.close()
        return TrainResult(
            step=self.step,
            epoch=self.epoch,
            train=self.last_train,
            eval=self.last_eval,
            elapsed_s=self._elapsed(),
            resumed_from=self.resumed_from,
            history=list(self.history),
        )


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    data: Iterable[Any],
    config: TrainConfig | None = None,
    **kwargs: Any,
) -> TrainResult:
    """``Trainer(model, optimizer, step_fn, data, config, **kwargs).fit()``."""
    return Trainer(model, optimizer, step_fn, data, config, **kwargs).fit()
