"""The training loop: exact resume, NaN detection, metrics, progress, configuration."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from examples.training import (
    BatchLoader,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    load_metrics,
    seed_everything,
)

NUM_SAMPLES, BATCH = 40, 8  # 5 batches an epoch


class _Crash(RuntimeError):
    pass


def _make(data_kind: str, seed: int = 0, lr_decay: bool = True):
    """A tiny classifier with dropout (so the random streams matter), Adam and a scheduler."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(NUM_SAMPLES, 4, generator=g)
    y = torch.randint(0, 3, (NUM_SAMPLES,), generator=g)
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7) if lr_decay else None
    if data_kind == "batchloader":
        data = BatchLoader(x, y, batch_size=BATCH, seed=5)
    else:  # shuffled by torch's global generator, fetched by the main process
        data = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    return model, opt, sched, data


def _step(model, batch):
    x, y = batch
    logits = model(x)
    acc = (logits.argmax(-1) == y).float().mean()
    return {"loss": nn.functional.cross_entropy(logits, y), "acc": acc}


def _run(tmp, data_kind, max_steps, *, crash_at=None, eval_fn=None, **config):
    model, opt, sched, data = _make(data_kind)
    callbacks = []
    if crash_at is not None:

        def crash(trainer):
            if trainer.step == crash_at:
                raise _Crash(f"killed after step {trainer.step}")

        callbacks.append(crash)
    cfg = TrainConfig(max_steps=max_steps, out_dir=tmp, progress=False, **config)
    trainer = Trainer(
        model, opt, _step, data, cfg, scheduler=sched, eval_fn=eval_fn, callbacks=callbacks
    )
    result = trainer.fit()
    return model, result


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def _train_records(path):
    return [(r["step"], r["loss"], r["acc"]) for r in load_metrics(path) if r["kind"] == "train"]


@pytest.mark.parametrize("data_kind", ["batchloader", "dataloader"])
@pytest.mark.parametrize(
    ("checkpoint_every", "crash_at"),
    [(4, 10), (5, 7)],  # resume mid-epoch (step 8 = batch 3 of epoch 1); at an epoch's end (5)
)
def test_crash_and_resume_is_bitwise_exact(tmp_path, data_kind, checkpoint_every, crash_at):
    n = 13
    cfg = dict(log_every=3, checkpoint_every=checkpoint_every)
    reference, ref_result = _run(tmp_path / "ref", data_kind, n, **cfg)

    with pytest.raises(_Crash):
        _run(tmp_path / "run", data_kind, n, crash_at=crash_at, **cfg)
    seed_everything(999)  # a restarted process starts from other random streams
    resumed, result = _run(tmp_path / "run", data_kind, n, **cfg)

    assert result.resumed_from == crash_at // checkpoint_every * checkpoint_every
    assert result.step == n and result.epoch == ref_result.epoch
    _assert_same_weights(reference, resumed)
    # the log of the resumed run is the log of the uninterrupted run
    assert _train_records(tmp_path / "run/metrics.jsonl") == _train_records(
        tmp_path / "ref/metrics.jsonl"
    )
    summary = json.loads((tmp_path / "run/metrics.json").read_text())
    assert summary["step"] == n and summary["train"]["step"] == n


def test_history_comes_back_in_memory(tmp_path):
    """TrainResult.history holds what metrics.jsonl holds, also without out_dir and across
    a resume (the resumed part starts from the records the earlier part wrote)."""

    def eval_fn(model):
        return {"score": 1.0}

    _, ref = _run(tmp_path / "ref", "batchloader", 9, log_every=2, eval_every=4, eval_fn=eval_fn)
    assert ref.history == load_metrics(tmp_path / "ref/metrics.jsonl")
    assert [r["step"] for r in ref.history if r["kind"] == "eval"] == [4, 8, 9]
    assert ref.values("loss") == [r["loss"] for r in ref.history if r["kind"] == "train"]
    assert ref.values("score", "eval") == [1.0, 1.0, 1.0]
    with pytest.raises(_Crash):
        _run(tmp_path / "run", "batchloader", 9, crash_at=6, log_every=2, checkpoint_every=4)
    _, resumed = _run(tmp_path / "run", "batchloader", 9, log_every=2, checkpoint_every=4)
    steps = [(r["step"], r["loss"]) for r in resumed.history]
    assert resumed.resumed_from == 4 and steps == [(s, loss) for s, loss in _losses(ref)]
    model, opt, _, data = _make("batchloader")
    no_files = Trainer(
        model, opt, _step, data, TrainConfig(max_steps=3, log_every=1, progress=False)
    )
    assert [r["step"] for r in no_files.fit().history] == [1, 2, 3]


def _losses(result):
    return [(r["step"], r["loss"]) for r in result.history if r["kind"] == "train"]


def test_stop_and_continue_with_more_steps(tmp_path):
    reference, _ = _run(tmp_path / "ref", "batchloader", 9, checkpoint_every=2)
    _run(tmp_path / "run", "batchloader", 4, checkpoint_every=2)  # stops cleanly at 4
    resumed, result = _run(tmp_path / "run", "batchloader", 9, checkpoint_every=2)
    assert result.resumed_from == 4
    _assert_same_weights(reference, resumed)


def test_evaluation_does_not_change_training(tmp_path):
    def eval_fn(model):  # draws random numbers and runs the model: both must not matter
        x = torch.randn(6, 4)
        return {"score": model(x).sum(), "noise": torch.rand(()).item()}

    plain, _ = _run(tmp_path / "a", "batchloader", 8)
    evaluated, result = _run(tmp_path / "b", "batchloader", 8, eval_every=3, eval_fn=eval_fn)
    _assert_same_weights(plain, evaluated)
    evals = [r for r in load_metrics(tmp_path / "b/metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 8]
    assert result.eval["step"] == 8 and "score" in result.eval
    assert evaluated.training  # back in training mode


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_stops_before_backward(bad):
    model, opt, _, data = _make("batchloader", lr_decay=False)
    snapshot = {}

    def step(model, batch):
        loss = _step(model, batch)["loss"]
        return loss * bad if trainer.step == 2 else loss  # the third step goes bad

    def remember(t):
        snapshot.update({k: v.clone() for k, v in model.state_dict().items()})

    trainer = Trainer(
        model, opt, step, data, TrainConfig(max_steps=10, progress=False), callbacks=[remember]
    )
    with pytest.raises(NonFiniteLossError, match="at step 3") as info:
        trainer.fit()
    assert info.value.step == 3 and info.value.quantity == "loss"
    assert (math.isnan(info.value.value) and math.isnan(bad)) or info.value.value == bad
    assert trainer.step == 2
    for key, value in model.state_dict().items():  # nothing was trained through
        assert torch.equal(value, snapshot[key])
        assert all(p.grad is None for p in model.parameters())


def test_non_finite_gradient_norm_is_reported():
    w = nn.Parameter(torch.zeros(3))
    model = nn.Module()
    model.w = w
    opt = torch.optim.SGD([w], lr=0.1)
    cfg = TrainConfig(max_steps=3, grad_clip=1.0, progress=False)
    trainer = Trainer(model, opt, lambda m, b: (m.w**2).sum().sqrt(), [None], cfg)
    with pytest.raises(NonFiniteLossError, match="gradient norm") as info:
        trainer.fit()
    assert info.value.step == 1 and torch.equal(w.detach(), torch.zeros(3))


def test_progress_bar_shows_loss_and_throughput(tmp_path, capsys):
    model, opt, _, data = _make("batchloader")
    cfg = TrainConfig(max_steps=4, log_every=2, progress=True)
    Trainer(model, opt, _step, data, cfg).fit()
    err = capsys.readouterr().err
    assert "loss=" in err and "samples/s=" in err and "4/4" in err


def test_metrics_records(tmp_path):
    _, result = _run(tmp_path, "batchloader", 7, log_every=3)
    records = load_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [3, 6, 7]  # the last, partial interval is logged
    first = records[0]
    assert {"loss", "acc", "lr", "samples_per_s", "epoch", "elapsed_s"} <= first.keys()
    assert first["samples_per_s"] > 0 and math.isfinite(first["loss"])
    assert result.train == records[-1]
    assert (tmp_path / "checkpoints/step_000007.pt").exists()  # saved at the end


def test_resume_false_starts_over(tmp_path):
    _run(tmp_path, "batchloader", 4, checkpoint_every=2)
    with pytest.warns(UserWarning, match="resume=False: deleting"):
        _, result = _run(tmp_path, "batchloader", 3, resume=False)
    assert result.resumed_from == 0
    assert [r["step"] for r in load_metrics(tmp_path / "metrics.jsonl")] == [3]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_steps": -1}, "max_steps"),
        ({"log_every": 1.5}, "log_every"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"checkpoint_every": 5}, "needs an out_dir"),
    ],
)
def test_config_names_the_bad_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_trainer_refuses_one_shot_iterators():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="re-iterable"):
        Trainer(model, opt, _step, iter([1, 2]), TrainConfig(progress=False))


def test_step_fn_must_return_a_scalar_loss():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(
        model, opt, lambda m, b: m(b), [torch.ones(3, 2)], TrainConfig(progress=False)
    )
    with pytest.raises(ValueError, match=r"scalar loss tensor, got \(3, 1\)"):
        trainer.fit()
