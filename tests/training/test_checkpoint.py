"""Seeding, random-state capture, atomic checkpoints and the checkpoint manager."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from graphattn.training import (
    CheckpointManager,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)


def _draws() -> tuple[float, float, float, float]:
    return (random.random(), random.gauss(0, 1), float(np.random.rand()), torch.rand(1).item())


def test_seed_everything_repeats_every_stream():
    g = seed_everything(123)
    first = _draws(), torch.rand(2, generator=g)
    g = seed_everything(123)
    second = _draws(), torch.rand(2, generator=g)
    assert first[0] == second[0]
    assert torch.equal(first[1], second[1])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "0"])
def test_seed_everything_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be"):
        seed_everything(seed)


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    seed_everything(0)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    np.random.standard_normal()  # and one in NumPy's
    state = rng_state()
    expected = _draws()
    _draws()
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    set_rng_state(load_checkpoint(path)["rng"])  # weights_only=True inside
    assert _draws() == expected


def test_set_rng_state_names_what_is_wrong():
    with pytest.raises(TypeError, match="state must be a dict"):
        set_rng_state([1, 2])  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="numpy"):
        set_rng_state({"python": {}, "torch": torch.get_rng_state()})


def test_checkpoint_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary left


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"step": 1})

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # temporary removed


def test_manager_keeps_the_newest(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep=2)
    assert manager.latest() is None
    for step in (5, 10, 15, 1_000_000):
        manager.save(step, {"step": step})
    names = [p.name for _, p in manager.checkpoints()]
    assert names == ["step_000015.pt", "step_1000000.pt"]
    assert manager.load_latest()["step"] == 1_000_000


def test_manager_skips_a_corrupt_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2, 3):
        manager.save(step, {"step": step, "w": torch.randn(100)})
    newest = manager.path_for(3)
    newest.write_bytes(newest.read_bytes()[:50])  # truncated
    manager.path_for(2).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint") as record:
        step, path, state = manager.latest()
    assert (step, state["step"]) == (1, 1)
    assert len(record) == 2 and "step_000003.pt" in str(record[0].message)


def test_manager_removes_stale_temporaries(tmp_path):
    stale = tmp_path / ".step_000004.pt.deadbeef.tmp"
    stale.write_bytes(b"killed mid-write")
    CheckpointManager(tmp_path).save(5, {"step": 5})
    assert not stale.exists()


@pytest.mark.parametrize("keep", [0, -1, 1.5])
def test_manager_rejects_bad_keep(tmp_path, keep):
    with pytest.raises(ValueError, match="keep must be"):
        CheckpointManager(tmp_path, keep=keep)
