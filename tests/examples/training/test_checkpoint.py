"""Seeding, random-state capture, atomic checkpoints and the checkpoint manager."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import math
import pickle
import random

import numpy as np
import pytest
import torch

from examples.training import (
    CheckpointManager,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from examples.training.checkpoint import _PLAIN_DTYPES


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


# ------------------------------------------------ save refuses what weights_only cannot load
@dataclasses.dataclass
class _Registered:  # loadable once registered with torch.serialization.add_safe_globals
    lr: float = 0.1


class _Custom:
    pass


class _Color(enum.Enum):
    RED = 1


def _cycle_list() -> list:
    items: list = [1]
    items.append(items)
    return items


def _tuple_in_cycle() -> list:
    items: list = []
    items.append((items, 2))
    return items


def _tensor_with(**attributes) -> torch.Tensor:
    t = torch.ones(2)
    for name, value in attributes.items():
        setattr(t, name, value)
    return t


def _hooked() -> torch.Tensor:
    t = torch.ones(2, requires_grad=True)
    t.register_hook(lambda grad: grad)
    return t


def _aliased(dtype: torch.dtype) -> list[torch.Tensor]:
    t = torch.arange(4.0)
    return [t, t.view(dtype)]


def _bad_sparse() -> torch.Tensor:  # index 5 in a size-2 dimension
    return torch.sparse_coo_tensor(
        torch.tensor([[5]]), torch.tensor([1.0]), (2,), check_invariants=False
    )


# what a NumPy float64 pickles through (numpy._core.multiarray.scalar in NumPy 2)
_NUMPY_SCALAR_GLOBALS = [np.float64(0).__reduce__()[0], np.dtype, type(np.dtype("float64"))]

# name: (make the value, safe globals registered while saving and loading)
_CANDIDATES = {
    # Python values
    "int": (lambda: -(2**40), []),
    "int_2000_bits": (lambda: 2**2000, []),
    "int_3000_bits": (lambda: 2**3000, []),  # LONG4 opcode, unknown to the unpickler
    "float_nan": (lambda: math.nan, []),
    "bool": (lambda: True, []),
    "complex": (lambda: 1 + 2j, []),
    "str": (lambda: "héllo \ud800", []),
    "bytes": (lambda: b"ab", []),
    "bytes_empty": (lambda: b"", []),  # pickled as GLOBAL builtins.bytes
    "bytearray": (lambda: bytearray(b"ab"), []),
    "none": (lambda: None, []),
    "ellipsis": (lambda: ..., []),
    "slice": (lambda: slice(1, 2), []),
    "range": (lambda: range(3), []),
    # containers
    "list_tuple": (lambda: [1, (2, [3])], []),
    "dict_non_str_keys": (lambda: {1: "a", (1, 2): "b", None: 3}, []),
    "set": (lambda: {1, 2}, []),
    "set_empty": (lambda: set(), []),
    "frozenset": (lambda: frozenset([1]), []),
    "ordered_dict": (lambda: collections.OrderedDict(a=1), []),
    "counter": (lambda: collections.Counter("aab"), []),
    "defaultdict": (lambda: collections.defaultdict(int, a=1), []),
    "deque": (lambda: collections.deque([1]), []),
    "namedtuple": (lambda: collections.namedtuple("Pair", "a b")(1, 2), []),
    "list_cycle": (_cycle_list, []),
    "tuple_in_cycle": (_tuple_in_cycle, []),
    "numpy_key": (lambda: {np.int64(1): 2}, []),
    # tensors
    **{
        f"tensor_{str(dtype).removeprefix('torch.')}": (
            lambda dtype=dtype: torch.ones(2, 3, dtype=dtype),
            [],
        )
        for dtype in sorted(_PLAIN_DTYPES, key=str)
    },
    "tensor_float8": (lambda: torch.ones(2, dtype=torch.float8_e4m3fn), []),
    "tensor_uint16": (lambda: torch.ones(2, dtype=torch.uint16), []),
    "tensor_int4": (lambda: torch.empty(2, dtype=torch.int4), []),  # torch.save refuses
    "tensor_0d": (lambda: torch.tensor(3.0), []),
    "tensor_empty": (lambda: torch.empty(0, 5), []),
    "tensor_requires_grad": (lambda: torch.ones(2, requires_grad=True), []),
    "tensor_non_leaf": (lambda: torch.ones(2, requires_grad=True) * 2, []),
    "tensor_with_hook": (_hooked, []),
    "parameter": (lambda: torch.nn.Parameter(torch.ones(2)), []),
    "parameter_frozen": (lambda: torch.nn.Parameter(torch.ones(2), requires_grad=False), []),
    "tensor_transposed_view": (lambda: torch.arange(6.0).view(2, 3).t(), []),
    "tensor_shared_storage": (lambda: [torch.arange(4.0), torch.arange(4.0)[1:]], []),
    "tensor_aliased_dtypes": (lambda: _aliased(torch.int32), []),  # torch.save refuses
    "tensor_conj": (lambda: torch.ones(2, dtype=torch.cfloat).conj(), []),
    "tensor_attribute": (lambda: _tensor_with(note="ok"), []),
    "tensor_numpy_attribute": (lambda: _tensor_with(note=np.float32(1)), []),
    "tensor_meta": (lambda: torch.empty(3, device="meta"), []),
    "sparse_coo": (lambda: torch.eye(3).to_sparse(), []),
    "sparse_csr": (lambda: torch.eye(3).to_sparse_csr(), []),
    "sparse_invalid": (_bad_sparse, []),
    "nested_tensor": (lambda: torch.nested.as_nested_tensor([torch.ones(2), torch.ones(3)]), []),
    "untyped_storage": (lambda: torch.ones(2).untyped_storage(), []),
    # torch values
    "dtype": (lambda: torch.bfloat16, []),
    "device": (lambda: torch.device("cpu"), []),
    "size": (lambda: torch.Size([2, 3]), []),
    "layout": (lambda: torch.sparse_coo, []),
    "memory_format": (lambda: torch.channels_last, []),
    "generator": (lambda: torch.Generator(), []),
    "module": (lambda: torch.nn.Linear(1, 1), []),
    # other types
    "numpy_scalar": (lambda: np.float64(1.5), []),
    "numpy_scalar_registered": (lambda: np.float64(1.5), _NUMPY_SCALAR_GLOBALS),
    "numpy_array": (lambda: np.zeros(2), []),
    "timedelta": (lambda: datetime.timedelta(seconds=3), []),
    "datetime": (lambda: datetime.datetime(2024, 1, 1), []),
    "enum": (lambda: _Color.RED, []),
    "custom_class": (lambda: _Custom(), []),
    "class_itself": (lambda: _Custom, []),
    "lambda": (lambda: lambda: 1, []),
    "builtin_function": (lambda: len, []),
    "dataclass": (lambda: _Registered(), []),
    "dataclass_registered": (lambda: _Registered(), [_Registered]),
    "registered_holding_numpy": (lambda: _Registered(np.float64(0.1)), [_Registered]),
    "registered_in_list": (lambda: [1, _Registered()], [_Registered]),
}
if torch.cuda.is_available():
    _CANDIDATES["tensor_cuda"] = (lambda: torch.ones(2, device="cuda"), [])
    _CANDIDATES["sparse_cuda"] = (lambda: torch.eye(3, device="cuda").to_sparse(), [])


def _round_trips(value, path) -> bool:
    """Whether plain torch.save + torch.load(weights_only=True) brings ``value`` back."""
    try:
        torch.save({"x": value}, path)
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("name", list(_CANDIDATES))
def test_save_accepts_exactly_what_weights_only_load_reads(tmp_path, name):
    make, safe = _CANDIDATES[name]
    with torch.serialization.safe_globals(safe):
        expected = _round_trips(make(), tmp_path / "plain.pt")
        path = tmp_path / "ckpt" / "ckpt.pt"
        try:
            save_checkpoint(path, {"x": make()})
        except TypeError as err:
            assert not expected, f"refused a value that round-trips: {err}"
            assert "state['x']" in str(err)
            assert not path.parent.exists()  # not even the folder
        else:
            assert expected, "accepted a value that weights_only=True cannot load"
            assert "x" in load_checkpoint(path)


def _optimizer_state() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3}


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (np.float32(0.5), "numpy.float32"),
        (np.arange(3), "numpy.ndarray"),
        (datetime.timedelta(minutes=1), "datetime.timedelta"),
        (_Custom(), "_Custom"),
        (lambda: 0, "function"),
    ],
    ids=["numpy_scalar", "numpy_array", "timedelta", "custom_class", "lambda"],
)
def test_refusal_names_the_key_path_and_writes_nothing(tmp_path, value, type_name):
    manager = CheckpointManager(tmp_path, keep=3)
    manager.save(1, _optimizer_state())
    state = _optimizer_state()
    state["optimizer"]["param_groups"][0]["lr"] = value
    with pytest.raises(TypeError) as info:
        manager.save(2, state)
    message = str(info.value)
    assert "state['optimizer']['param_groups'][0]['lr']" in message
    assert type_name in message and "weights_only=True" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000001.pt"]  # no temporary
    assert manager.load_latest()["step"] == 3


def test_refusal_finds_the_value_deep_inside(tmp_path):
    shared = torch.randn(3)
    cycle = _cycle_list()
    state = {
        "a": {"b": [shared, shared, {"c": (1, 2, [3, cycle, datetime.timedelta(1)])}]},
        "many": list(range(10_000)),
        "cycle": cycle,
    }
    with pytest.raises(TypeError, match=r"state\['a'\]\['b'\]\[2\]\['c'\]\[2\]\[2\]: a datetime"):
        save_checkpoint(tmp_path / "ckpt.pt", state)
    state["many"][7_777] = np.int64(7)
    del state["a"]
    with pytest.raises(TypeError, match=r"state\['many'\]\[7777\]: a numpy.int64"):
        save_checkpoint(tmp_path / "ckpt.pt", state)
    state["many"] = {np.int64(1): "one"}
    with pytest.raises(TypeError, match=r"the key np.int64\(1\) of state\['many'\]"):
        save_checkpoint(tmp_path / "ckpt.pt", state)
    assert list(tmp_path.iterdir()) == []


def test_refusal_blames_a_refused_container_or_a_conflict(tmp_path):
    with pytest.raises(TypeError, match=r"state\['d'\]: a collections.defaultdict"):
        save_checkpoint(tmp_path / "ckpt.pt", {"d": collections.defaultdict(list, a=[1])})
    with pytest.raises(TypeError, match=r"state\['pair'\]: a list .*same data as different"):
        save_checkpoint(tmp_path / "ckpt.pt", {"pair": _aliased(torch.int32)})


def test_shared_and_cyclic_references_round_trip(tmp_path):
    shared = torch.randn(3)
    cycle = _cycle_list()
    path = save_checkpoint(tmp_path / "ckpt.pt", {"a": shared, "b": [shared], "cycle": cycle})
    loaded = load_checkpoint(path)
    assert loaded["b"][0] is loaded["a"] and torch.equal(loaded["a"], shared)
    assert loaded["cycle"][1] is loaded["cycle"]


def test_save_checkpoint_falls_back_to_a_round_trip_without_torchs_private_unpickler(
    tmp_path, monkeypatch
):
    """A torch without ``torch._weights_only_unpickler``: the check does a real round trip."""
    import examples.training.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "_weights_only_unpickler", None)
    good = {"w": torch.ones(3), "step": 4}
    assert save_checkpoint(tmp_path / "good.pt", good).exists()
    with pytest.raises(TypeError, match=r"state\['lr'\].*numpy"):
        save_checkpoint(tmp_path / "bad.pt", {"lr": np.float64(0.1)})
    assert not (tmp_path / "bad.pt").exists()
