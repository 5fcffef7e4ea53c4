"""Data folders (in any layout of symbolic links), the registry, and downloads through pooch
from a local HTTP server only."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import re
import tarfile
import threading
from pathlib import Path

import pooch
import pytest

from examples.training import (
    DATASETS,
    ENV_VAR,
    DatasetSource,
    RemoteArchive,
    RemoteFile,
    ensure_dataset,
    resolve_data_dir,
)
from examples.training import data as data_module

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(params=["checkout", "symlinked"])
def shared(request, tmp_path, monkeypatch, no_env) -> Path:
    """``../shared/data`` as the tests spell it, in this checkout's own layout and in one where
    ``../shared`` is a symbolic link (the repository's parent folder sees the real one only
    through the link)."""
    if not SHARED.is_dir():
        pytest.skip("no ../shared/data next to this checkout")
    if request.param == "checkout":
        return SHARED
    checkout = tmp_path / "checkout"
    (checkout / "repo").mkdir(parents=True)
    (checkout / "shared").symlink_to(SHARED.resolve().parent, target_is_directory=True)
    monkeypatch.setattr(data_module, "_REPO_ROOT", checkout / "repo")
    return checkout / "shared" / "data"


def test_resolve_order(tmp_path, monkeypatch, no_env):
    tmp = tmp_path.resolve()  # tmp_path itself may lie under a symbolic link
    monkeypatch.setenv(ENV_VAR, str(tmp / "env"))
    assert resolve_data_dir(tmp / "arg") == tmp / "arg"
    assert resolve_data_dir() == tmp / "env"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setattr(data_module, "_REPO_ROOT", tmp / "checkout" / "repo")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    assert resolve_data_dir() == tmp / "cache" / "graphattn"  # no ../shared/data yet
    (tmp / "checkout" / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir("") == tmp / "checkout" / "shared" / "data"


def test_resolve_defaults_to_the_shared_data_in_this_checkout(shared):
    assert resolve_data_dir() == shared.resolve()
    assert resolve_data_dir().samefile(shared)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_ensure_dataset_finds_the_shared_copy(shared, name):
    if not DATASETS[name].is_present(shared / DATASETS[name].folder):
        pytest.skip(f"{name} not in ../shared/data")
    expected = (shared / DATASETS[name].folder).resolve()
    assert ensure_dataset(name, shared) == expected
    assert ensure_dataset(name) == expected  # the default folder is the same one


def test_every_spelling_of_a_symlinked_layout_gives_one_folder(tmp_path, monkeypatch, no_env):
    """Needs no ../shared: a data set behind a linked ``shared`` folder, reached through the
    default, ``--data-dir`` and ``$GRAPHATTN_DATA``, each spelled through the link."""
    real = tmp_path / "disk" / "shared-real"
    (real / "data" / "toy").mkdir(parents=True)
    (real / "data" / "toy" / "a.txt").write_text("a")
    checkout = tmp_path / "checkout"
    (checkout / "repo").mkdir(parents=True)
    (checkout / "shared").symlink_to(real, target_is_directory=True)
    monkeypatch.setattr(data_module, "_REPO_ROOT", checkout / "repo")
    monkeypatch.setitem(DATASETS, "toy", DatasetSource("toy", "toy", ("a.txt",)))
    linked = checkout / "shared" / "data"
    expected = (real / "data").resolve()
    assert resolve_data_dir() == expected
    assert resolve_data_dir(linked) == expected
    monkeypatch.setenv(ENV_VAR, str(linked))
    assert resolve_data_dir() == expected
    assert ensure_dataset("toy") == ensure_dataset("toy", linked) == expected / "toy"
    assert os.path.samefile(ensure_dataset("toy"), linked / "toy")


def test_registry_is_well_formed():
    assert {"fsdd", "cora", "tinyshakespeare", "rt-polarity"} <= DATASETS.keys()
    for name, source in DATASETS.items():
        assert source.name == name and source.layout and source.urls()
        for item in (*source.files, *source.archives):
            assert item.url.startswith("https://")
            assert item.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", item.sha256)


@pytest.mark.parametrize("name", ["cora", "tinyshakespeare", "rt-polarity"])
def test_pinned_checksums_match_the_shared_copies(name):
    """The shared copies come from the pinned commits, so their digests must agree."""
    source = DATASETS[name]
    root = SHARED / source.folder
    if not source.is_present(root):
        pytest.skip(f"{name} not in ../shared/data")
    for remote in source.files:
        assert pooch.file_hash(str(root / remote.path)) == remote.sha256, remote.path


def test_ensure_dataset_missing_explains_both_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir") as info:
        ensure_dataset("tinyshakespeare", tmp_path)
    assert "download=True" in str(info.value) and ENV_VAR in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was fetched
    with pytest.raises(KeyError, match="known"):
        ensure_dataset("mnist", tmp_path)


# ----------------------------------------------------------------- downloads (local HTTP)
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base name
        pass


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1 (pooch fetches http(s) URLs, not file://)."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    folder = tmp_path / "remote"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def _tar_gz(path: Path, members: list[tuple[str, bytes]]) -> bytes:
    with tarfile.open(path, "w:gz") as tf:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return path.read_bytes()


def test_ensure_dataset_downloads_files_and_archives_when_asked(tmp_path, monkeypatch, remote):
    folder, url = remote
    (folder / "labels.txt").write_bytes(b"0\n1\n")
    packed = _tar_gz(
        folder / "pack.tar.gz", [("pack-v1/audio/a.wav", b"RIFF1"), ("pack-v1/other.txt", b"x")]
    )
    source = DatasetSource(
        name="toy",
        folder="toy",
        layout=("audio/*.wav", "meta/labels.txt"),
        files=(RemoteFile(f"{url}/labels.txt", "meta/labels.txt", _sha(b"0\n1\n")),),
        archives=(
            RemoteArchive(f"{url}/pack.tar.gz", _sha(packed), (("pack-v1/audio/", "audio/"),)),
        ),
    )
    monkeypatch.setitem(DATASETS, "toy", source)
    data_dir = tmp_path / "data"
    root = ensure_dataset("toy", data_dir, download=True)
    assert root == data_dir.resolve() / "toy"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "audio",
        "audio/a.wav",
        "meta",
        "meta/labels.txt",
    ]
    assert (root / "audio/a.wav").read_bytes() == b"RIFF1"
    (folder / "labels.txt").unlink()
    assert ensure_dataset("toy", data_dir) == root  # now present: no download needed


def test_a_wrong_checksum_leaves_no_file(tmp_path, monkeypatch, remote):
    folder, url = remote
    (folder / "text.txt").write_bytes(b"tampered")
    wrong = "0" * 64
    source = DatasetSource(
        "toy", "toy", ("text.txt",), files=(RemoteFile(f"{url}/text.txt", "text.txt", wrong),)
    )
    monkeypatch.setitem(DATASETS, "toy", source)
    with pytest.raises(ValueError, match=f"does not match.*{wrong} but got {_sha(b'tampered')}"):
        ensure_dataset("toy", tmp_path / "data", download=True)
    assert list((tmp_path / "data" / "toy").iterdir()) == []  # not even a temporary file


def test_a_present_file_with_a_wrong_checksum_is_fetched_again(tmp_path, monkeypatch, remote):
    folder, url = remote
    for name in ("a.txt", "b.txt"):
        (folder / name).write_bytes(name.encode())
    source = DatasetSource(
        "toy",
        "toy",
        ("a.txt", "b.txt"),
        files=tuple(RemoteFile(f"{url}/{n}", n, _sha(n.encode())) for n in ("a.txt", "b.txt")),
    )
    monkeypatch.setitem(DATASETS, "toy", source)
    root = tmp_path / "data" / "toy"
    root.mkdir(parents=True)
    (root / "a.txt").write_bytes(b"stale")  # b.txt missing: the data set is fetched
    ensure_dataset("toy", tmp_path / "data", download=True)
    assert (root / "a.txt").read_bytes() == b"a.txt" and (root / "b.txt").read_bytes() == b"b.txt"


@pytest.mark.parametrize("member", ["pack/audio/../../../evil.wav", "pack/audio/../../x"])
def test_an_archive_member_outside_the_folder_is_refused(tmp_path, monkeypatch, remote, member):
    folder, url = remote
    _tar_gz(folder / "pack.tar.gz", [(member, b"EVIL")])
    source = DatasetSource(
        "toy",
        "toy",
        ("audio/*.wav",),
        archives=(RemoteArchive(f"{url}/pack.tar.gz", None, (("pack/audio/", "audio/"),)),),
    )
    monkeypatch.setitem(DATASETS, "toy", source)
    with pytest.raises(ValueError, match="refusing unsafe archive member"):
        ensure_dataset("toy", tmp_path / "data", download=True)
    assert not list(tmp_path.rglob("evil.wav")) and not (tmp_path / "data" / "x").exists()
    assert not list((tmp_path / "data" / "toy").iterdir())  # the archive was removed too
