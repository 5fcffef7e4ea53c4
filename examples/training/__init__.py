"""The training tools the examples share and no library provides in this form.

What a library already does is left to it: batches are a ``torch.utils.data.DataLoader``
over a ``DistributedSampler`` (:class:`BatchLoader`), downloads are checksummed by ``pooch``
(:func:`ensure_dataset`), data parallelism is ``DistributedDataParallel``. What stays here:

- :class:`Trainer`: a loop whose checkpoints resume bitwise, mid-epoch included;
- :func:`save_checkpoint` / :class:`CheckpointManager`: atomic writes, ``weights_only`` loads;
- :func:`seed_everything` / :func:`rng_state`: every random stream, as checkpoint-safe values;
- :class:`LazyAdamW` (dense AdamW + lazy sparse Adam in one optimizer) and :class:`Muon`
  (float32 Newton-Schulz, with AdamW for the other parameters in one optimizer);
- :func:`plot_curves`, the data-set registry (:data:`DATASETS`) and the default data folder.

This package belongs to the examples, not to ``graphattn``: ``import graphattn`` never loads
it. It needs NumPy, and pooch for downloads; plotting needs matplotlib and the progress bar
tqdm (``pip install -e ".[examples]"``), both imported only when used.
"""

from ._atomic import atomic_write
from .batches import BatchLoader
from .checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from .data import (
    DATASETS,
    ENV_VAR,
    DatasetSource,
    RemoteArchive,
    RemoteFile,
    ensure_dataset,
    resolve_data_dir,
)
from .distributed import DistInfo, cleanup, init_distributed, unwrap_model, wrap_ddp
from .loop import NonFiniteLossError, TrainConfig, Trainer, TrainResult, train
from .optim import LazyAdamW, Muon, orthogonalize
from .plots import load_metrics, plot_curves
from .seed import rng_state, seed_everything, set_rng_state

__all__ = [
    # seeding
    "seed_everything",
    "rng_state",
    "set_rng_state",
    # files
    "atomic_write",
    # checkpoints
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointManager",
    # the loop
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "train",
    "NonFiniteLossError",
    "BatchLoader",
    "LazyAdamW",
    "Muon",
    "orthogonalize",
    # curves
    "plot_curves",
    "load_metrics",
    # data
    "ENV_VAR",
    "resolve_data_dir",
    "RemoteFile",
    "RemoteArchive",
    "DatasetSource",
    "DATASETS",
    "ensure_dataset",
    # data parallel
    "DistInfo",
    "init_distributed",
    "wrap_ddp",
    "unwrap_model",
    "cleanup",
]
