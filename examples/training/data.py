"""Where data sets live, and fetching them from their public sources when asked.

- :func:`resolve_data_dir`: the data folder, from ``--data-dir``, else the environment
  variable ``GRAPHATTN_DATA``, else ``../shared/data`` next to the repository (what tests and
  CI use), else the user cache (``pooch.os_cache("graphattn")``: ``~/.cache/graphattn`` on
  Linux, or ``$XDG_CACHE_HOME/graphattn``).
- :data:`DATASETS` and :func:`ensure_dataset`: the public sources of the data sets the
  examples use; nothing is downloaded unless ``download=True``. Each file is fetched by
  ``pooch.retrieve``, which streams it to a temporary file in the destination folder and
  moves it into place only when its SHA-256 matches. Archives are then unpacked here, member
  by member: ``pooch.Untar`` extracts whole folders under their archive names, and on Python
  3.11 without tarfile's ``"data"`` filter, so it would neither rename the commit-named top
  folder of a GitHub archive nor refuse a member that climbs out of the data folder.

These belong to the examples, not to ``graphattn``: the library reads no data set itself.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from ._atomic import atomic_write

__all__ = [
    "ENV_VAR",
    "resolve_data_dir",
    "RemoteFile",
    "RemoteArchive",
    "DatasetSource",
    "DATASETS",
    "ensure_dataset",
]

ENV_VAR = "GRAPHATTN_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_CHUNK = 1 << 20

PathLike = str | os.PathLike


def resolve_data_dir(arg: PathLike | None = None) -> Path:
    """The data folder: ``arg``, else ``$GRAPHATTN_DATA``, else ``../shared/data`` relative
    to the repository if that folder exists, else the user cache.

    Args:
        arg: an explicit folder (``--data-dir``); ``None`` or ``""`` means "not given".

    Returns:
        An absolute path with every symbolic link resolved (it need not exist yet: downloads
        create it), so that two spellings of one folder compare equal.
    """
    if arg is not None and str(arg) != "":
        return Path(arg).expanduser().resolve()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser().resolve()
    shared = _REPO_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        return shared.resolve()
    import pooch  # only here and for downloads: the examples run from ../shared without it

    return Path(pooch.os_cache("graphattn")).expanduser().resolve()


def _retrieve(url: str, dest: Path, sha256: str | None) -> Path:
    """``pooch.retrieve`` of ``url`` into ``dest`` (SHA-256 checked when pinned; a present
    file with the right digest is not fetched again, one with a wrong digest is)."""
    import pooch

    known = None if sha256 is None else f"sha256:{sha256}"
    return Path(pooch.retrieve(url, known, fname=dest.name, path=dest.parent))


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set.

    Args:
        url: where it is downloaded from.
        path: where it goes, relative to the data set's folder.
        sha256: its digest, or ``None`` when it is not pinned.
    """

    url: str
    path: str
    sha256: str | None


@dataclass(frozen=True)
class RemoteArchive:
    """A ``.tar.gz`` / ``.zip`` whose members are extracted into the data set's folder.

    Args:
        url: where it is downloaded from.
        sha256: its digest, or ``None`` when it is not pinned (GitHub's generated archives are
            not guaranteed to stay byte-identical).
        members: ``(prefix in the archive, prefix in the folder)`` pairs; only members under
            one of these prefixes are extracted, with the prefix replaced.
    """

    url: str
    sha256: str | None
    members: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DatasetSource:
    """Where a data set comes from and what it looks like on disk.

    Args:
        name: registry key.
        folder: its folder, relative to the data folder.
        layout: glob patterns (relative to ``folder``) that must each match a file for the
            data set to count as present.
        files: single files to download.
        archives: archives to download and extract.
        homepage: the original source.
        licence: its licence, as stated by the source.
        notes: anything a user should know (size, encoding, what reads it).
    """

    name: str
    folder: str
    layout: tuple[str, ...]
    files: tuple[RemoteFile, ...] = ()
    archives: tuple[RemoteArchive, ...] = ()
    homepage: str = ""
    licence: str = ""
    notes: str = ""

    def is_present(self, root: Path) -> bool:
        """Whether every ``layout`` pattern matches a file under ``root``."""
        return root.is_dir() and all(
            any(p.is_file() for p in root.glob(pattern)) for pattern in self.layout
        )

    def urls(self) -> list[str]:
        """Every URL the data set is downloaded from."""
        return [f.url for f in self.files] + [a.url for a in self.archives]


_FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
_PLANETOID_COMMIT = "af6abf468a772cc055bec88c52e4d6f51b7c37e3"
_CHAR_RNN_COMMIT = "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e"
_CNN_TEXT_COMMIT = "18762b459e21d9c70e5c242f8d43fc4e6db37a0d"

# digests of the copies in ../shared/data, taken from these pinned commits
_CORA_SHA256 = {
    "x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
}

DATASETS: dict[str, DatasetSource] = {
    "fsdd": DatasetSource(
        name="fsdd",
        folder="fsdd",
        layout=("recordings/*.wav",),
        archives=(
            RemoteArchive(
                url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/"
                f"{_FSDD_COMMIT}.tar.gz",
                sha256=None,
                members=(
                    (f"free-spoken-digit-dataset-{_FSDD_COMMIT}/recordings/", "recordings/"),
                    (f"free-spoken-digit-dataset-{_FSDD_COMMIT}/README.md", "README.md"),
                ),
            ),
        ),
        homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
        licence="CC BY-SA 4.0",
        notes="3000 WAV files, 8 kHz mono, {digit}_{speaker}_{index}.wav; index 0-4 is the "
        "test split. About 21 MB (the archive is larger).",
    ),
    "cora": DatasetSource(
        name="cora",
        folder="planetoid",
        layout=tuple(f"Cora/raw/ind.cora.{part}" for part in _CORA_SHA256),
        files=tuple(
            RemoteFile(
                url="https://raw.githubusercontent.com/kimiyoung/planetoid/"
                f"{_PLANETOID_COMMIT}/data/ind.cora.{part}",
                path=f"Cora/raw/ind.cora.{part}",
                sha256=digest,
            )
            for part, digest in _CORA_SHA256.items()
        ),
        homepage="https://github.com/kimiyoung/planetoid",
        licence="MIT",
        notes="the folder is the root for torch_geometric.datasets.Planetoid(root, 'Cora') "
        "(which needs scipy); 0.6 MB.",
    ),
    "tinyshakespeare": DatasetSource(
        name="tinyshakespeare",
        folder="text/tinyshakespeare",
        layout=("input.txt",),
        files=(
            RemoteFile(
                url="https://raw.githubusercontent.com/karpathy/char-rnn/"
                f"{_CHAR_RNN_COMMIT}/data/tinyshakespeare/input.txt",
                path="input.txt",
                sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            ),
        ),
        homepage="https://github.com/karpathy/char-rnn",
        licence="MIT (char-rnn)",
        notes="1.1 M characters of plain text.",
    ),
    "rt-polarity": DatasetSource(
        name="rt-polarity",
        folder="text/rt-polarity",
        layout=("rt-polarity.pos", "rt-polarity.neg"),
        files=tuple(
            RemoteFile(
                url="https://raw.githubusercontent.com/dennybritz/cnn-text-classification-tf/"
                f"{_CNN_TEXT_COMMIT}/data/rt-polaritydata/rt-polarity.{part}",
                path=f"rt-polarity.{part}",
                sha256=digest,
            )
            for part, digest in (
                ("pos", "4134882974a28d0c7b5151256f0e33a6169984ee7372c279e673f1114f475d58"),
                ("neg", "2d11cfbc790f1cd96d78339f41ce53ced1efa83cd22d37d6788fa3fe3d17e2fd"),
            )
        ),
        homepage="https://www.cs.cornell.edu/people/pabo/movie-review-data/ "
        "(sentence polarity dataset v1.0, rt-polaritydata.tar.gz)",
        licence="no explicit licence; cite Pang & Lee (2005)",
        notes="5331 positive and 5331 negative sentences, one a line, UTF-8. Downloaded from a "
        "pinned GitHub copy whose bytes are pinned here; the Cornell tarball is the "
        "original (its text encoding may differ).",
    ),
}


def _archive_members(archive: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """``(name, file)`` for every regular file in a ``.tar.*`` or ``.zip`` archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    with zf.open(info) as f:
                        yield info.filename, f
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isfile():
                f = tf.extractfile(member)
                if f is not None:
                    yield member.name, f


def _extract(archive: Path, spec: RemoteArchive, root: Path) -> int:
    """Extract the members ``spec`` selects into ``root``; returns how many."""
    count = 0
    for name, f in _archive_members(archive):
        for prefix, local in spec.members:
            if not name.startswith(prefix):
                continue
            rel = PurePosixPath(local + name[len(prefix) :])
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise ValueError(f"refusing unsafe archive member {name!r} in {spec.url}")
            with atomic_write(root.joinpath(*rel.parts), "wb") as out:
                shutil.copyfileobj(f, out, _CHUNK)
            count += 1
            break
    return count


def ensure_dataset(name: str, data_dir: PathLike | None = None, download: bool = False) -> Path:
    """The local folder of a registered data set, downloading it only when asked.

    Args:
        name: a key of :data:`DATASETS` (``"fsdd"``, ``"cora"``, ``"tinyshakespeare"``,
            ``"rt-polarity"``).
        data_dir: the data folder (``--data-dir``); ``None`` resolves it with
            :func:`resolve_data_dir`.
        download: fetch missing files from the public source with ``pooch.retrieve``
            (SHA-256 verified where pinned; an unpinned file's digest is logged by pooch).
            Without it a missing data set raises ``FileNotFoundError``.

    Returns:
        ``data_dir / DATASETS[name].folder``.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    source = DATASETS[name]
    root = resolve_data_dir(data_dir) / source.folder
    if source.is_present(root):
        return root
    if not download:
        raise FileNotFoundError(
            f"data set {name!r} not found: expected {list(source.layout)} under {root}. "
            f"Either point --data-dir or ${ENV_VAR} at a folder holding {source.folder}/, or "
            f"download it with ensure_dataset({name!r}, download=True) "
            f"(from {source.homepage or source.urls()[0]}; licence: {source.licence})."
        )
    for remote in source.files:
        _retrieve(remote.url, root.joinpath(*PurePosixPath(remote.path).parts), remote.sha256)
    for spec in source.archives:
        archive = root / f".{name}-archive.download"
        try:
            _retrieve(spec.url, archive, spec.sha256)
            if _extract(archive, spec, root) == 0:
                raise ValueError(f"no member of {spec.url} matched {spec.members}")
        finally:
            archive.unlink(missing_ok=True)
    if not source.is_present(root):
        raise FileNotFoundError(
            f"downloaded {name!r} but {list(source.layout)} are still missing under {root}"
        )
    return root
