"""Data-parallel training on CPU with ``torchrun``: a tiny regression model, trained by
:class:`~examples.training.Trainer` in every process.

Run::

    torchrun --nproc_per_node 2 -m examples.training.ddp_demo --out-dir runs/ddp_demo
    python -m examples.training.ddp_demo --out-dir runs/ddp_demo     # one process

Each rank trains on its shard (``BatchLoader(rank=, world_size=)``), DDP averages the
gradients, and at the end each rank writes its weights to ``OUT_DIR/rank{r}.pt``: they are
identical. With ``--stop-at K`` the run stops after step ``K`` and a fresh model, optimizer
and trainer resume it from the checkpoint up to ``--steps``, as after a crash.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .batches import BatchLoader
from .distributed import cleanup, init_distributed, unwrap_model, wrap_ddp
from .loop import TrainConfig, Trainer
from .seed import seed_everything


def build(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """The model and data: ``y = x @ w + noise``.

    Shapes:
        - x: ``(64, 8)``; y: ``(64, 1)``
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g)  # (S, 8)
    w = torch.randn(8, 1, generator=g)
    y = x @ w + 0.1 * torch.randn(64, 1, generator=g)  # (S, 1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, x, y


def step_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean squared error of one batch."""
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def run(
    out_dir: Path,
    steps: int,
    batch_size: int,
    *,
    lr: float = 0.05,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    stop_at: int | None = None,
) -> nn.Module:
    """Train (in this process's share of the run) and return the unwrapped model."""

    def trainer(max_steps: int) -> tuple[nn.Module, Trainer]:
        model, x, y = build(seed)
        model = wrap_ddp(model)
        loader = BatchLoader(
            x, y, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        config = TrainConfig(
            max_steps=max_steps, log_every=2, checkpoint_every=2, out_dir=out_dir, progress=False
        )
        return model, Trainer(model, optimizer, step_fn, loader, config)

    if stop_at is not None:
        trainer(stop_at)[1].fit()
        seed_everything(seed + 1000)  # the resumed run must not depend on the current streams
    model, t = trainer(steps)
    result = t.fit()
    if rank == 0:
        print(json.dumps({"resumed_from": result.resumed_from, **result.train}), flush=True)
    return unwrap_model(model)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-at", type=int, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = init_distributed()
    try:
        seed_everything(args.seed)
        model = run(
            args.out_dir / "run",
            args.steps,
            args.batch_size,
            seed=args.seed,
            rank=info.rank,
            world_size=info.world_size,
            stop_at=args.stop_at,
        )
        torch.save(model.state_dict(), args.out_dir / f"rank{info.rank}.pt")
    except BaseException:
        cleanup()  # no barrier: the other ranks may never reach it
        raise
    cleanup(wait=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
