"""Modality adapters: turn text, images, audio and RL observations into graph nodes.

Every adapter returns a :class:`NodeSet` (features ``(B, N, D)``, a mask of real nodes,
positions, a modality label); :func:`fuse` / :class:`ModalityFusion` join node sets of several
modalities into one graph for :class:`graphattn.GraphAttention` and the transformer layers;
:class:`ModalityTransformer` runs on it with one attention projection per modality.

==========================  ===================================================  ============
adapter                     input                                                module
==========================  ===================================================  ============
``TextAdapter``             strings (byte tokenizer or any tokenizer) or ids     ``text``
``PatchAdapter``            images ``(B, C, H, W)``: ViT patches                 ``image``
``CNNFeatureAdapter``       images: cells of a torchvision CNN feature map       ``image``
``AudioFrameAdapter``       waveforms: log-mel frames or AST patches             ``audio``
``UtteranceNorm``           log-mel hook: per-utterance mean/variance norm       ``audio``
``SpecAugment``             log-mel hook: frequency and time masks (training)    ``audio``
``VTLP``                    log-mel hook: vocal tract length warp (training)     ``audio``
``RLStateEncoder``          vectors, entities, any gymnasium space -> heads      ``rl``
==========================  ===================================================  ============

:mod:`modalities.sb3` (imported on its own: ``import modalities`` never imports
stable-baselines3) wraps ``RLStateEncoder`` as a stable-baselines3 features extractor.

Errors: every public entry point checks its arguments. A wrong type (``None`` included)
raises :class:`TypeError`, a right type with a wrong value :class:`ValueError`, and the
message starts with the argument's name and shows its value (``"dim must be an int, got
'8' (str)"``; long values shortened, tensors shown by shape and dtype). :func:`load_wav`
refuses an empty, truncated or inconsistent file with a :class:`ValueError` that names the
file and the fault, never returning part of it. Padded nodes are left out of every pooling
and masking step with :func:`torch.where`, so NaN or inf in a padded position never
reaches a real output.

This package is installed beside :mod:`graphattn`. Note: an unrelated PyPI project also
installs a top-level package named ``modalities``; the two cannot share one environment.
"""

from ._common import masked_mean
from .audio import (
    VTLP,
    AudioFrameAdapter,
    SpecAugment,
    SpecTransform,
    UtteranceNorm,
    load_wav,
)
from .fusion import (
    LATENT,
    FusedGraph,
    FusionMode,
    ModalityAttention,
    ModalityFusion,
    ModalityTransformer,
    ModalityTransformerLayer,
    fuse,
)
from .image import CNNFeatureAdapter, PatchAdapter, conv_stem
from .nodes import GraphKind, NodeSet, PositionKind
from .rl import EntitySpec, RLOutput, RLStateEncoder
from .text import (
    BatchEncoding,
    ByteTokenizer,
    TextAdapter,
    Tokenizer,
    TokenizerAdapter,
    batch_encode,
)

__all__ = [
    "NodeSet",
    "PositionKind",
    "GraphKind",
    "masked_mean",
    "Tokenizer",
    "ByteTokenizer",
    "TokenizerAdapter",
    "BatchEncoding",
    "batch_encode",
    "TextAdapter",
    "PatchAdapter",
    "CNNFeatureAdapter",
    "conv_stem",
    "load_wav",
    "AudioFrameAdapter",
    "SpecTransform",
    "UtteranceNorm",
    "SpecAugment",
    "VTLP",
    "EntitySpec",
    "RLOutput",
    "RLStateEncoder",
    "FusedGraph",
    "FusionMode",
    "fuse",
    "ModalityFusion",
    "LATENT",
    "ModalityAttention",
    "ModalityTransformerLayer",
    "ModalityTransformer",
]
