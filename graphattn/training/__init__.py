"""Training utilities shared by the examples: seeding, a training loop with progress, metrics
and exact resume, atomic checkpoints, curves, data folders and downloads, and data-parallel
training with ``torchrun``.

Import it as ``graphattn.training`` (``import graphattn`` does not load it). Plotting needs
matplotlib and the progress bar tqdm (``pip install graphattn[examples]``); both are
imported only when used.
"""

from ._atomic import atomic_write
from .batches import BatchLoader
from .checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from .data import (
    DATASETS,
    ENV_VAR,
    ChecksumError,
    DatasetSource,
    RemoteArchive,
    RemoteFile,
    add_data_dir_argument,
    download,
    ensure_dataset,
    resolve_data_dir,
)
from .distributed import (
    DistInfo,
    cleanup,
    init_distributed,
    shard_indices,
    unwrap_model,
    wrap_ddp,
)
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
    "add_data_dir_argument",
    "download",
    "ChecksumError",
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
    "shard_indices",
    "cleanup",
]
