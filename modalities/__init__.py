"""Modality adapters: turn text, images, audio and RL observations into graph nodes.

The adapters (``NodeSet``, ``TextAdapter``, ``PatchAdapter``, ``AudioFrameAdapter``,
``RLStateEncoder``, fusion) are tracked in the project's "Modalities" issue. This package is
installed beside :mod:`graphattn` so that adapters can be added without changing the
distribution's layout. Note: an unrelated PyPI project also installs a top-level package
named ``modalities``; the two cannot share one environment.
"""

__all__: list[str] = []
