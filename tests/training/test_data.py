"""Data folders, checksummed downloads (from local file:// URLs only) and the registry."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from graphattn.training import (
    DATASETS,
    ENV_VAR,
    ChecksumError,
    DatasetSource,
    RemoteArchive,
    RemoteFile,
    download,
    ensure_dataset,
    resolve_data_dir,
)
from graphattn.training import data as data_module

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_resolve_order(tmp_path, monkeypatch, no_env):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv(ENV_VAR)
    repo = tmp_path / "checkout" / "repo"
    monkeypatch.setattr(data_module, "_REPO_ROOT", repo)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "graphattn"  # no ../shared/data yet
    (tmp_path / "checkout" / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir("") == tmp_path / "checkout" / "shared" / "data"


def test_resolve_defaults_to_the_shared_data_in_this_checkout(no_env):
    if not SHARED.is_dir():
        pytest.skip("no ../shared/data next to this checkout")
    assert resolve_data_dir() == SHARED.resolve()


def test_download_with_the_right_checksum(tmp_path):
    payload = b"graph attention\n" * 1000
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    dest = tmp_path / "out" / "file.bin"
    assert download(src.as_uri(), dest, _sha(payload).upper()) == dest
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]
    # present and matching: not fetched again (the source may even be gone)
    src.unlink()
    assert download(src.as_uri(), dest, _sha(payload)) == dest


def test_download_with_a_wrong_checksum_leaves_no_file(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"tampered")
    dest = tmp_path / "out" / "file.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=f"expected {wrong}, got {_sha(b'tampered')}"):
        download(src.as_uri(), dest, wrong)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_download_existing_file_with_a_wrong_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"new")
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumError, match="force=True"):
        download(src.as_uri(), dest, _sha(b"new"))
    download(src.as_uri(), dest, _sha(b"new"), force=True)
    assert dest.read_bytes() == b"new"


def test_download_unpinned_warns_with_the_digest(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    with pytest.warns(UserWarning, match=_sha(b"abc")):
        download(src.as_uri(), tmp_path / "file.bin", None)


@pytest.mark.parametrize(
    ("url", "sha", "match"),
    [("ftp://x/y", None, "url must be"), ("file:///x", "abc", "sha256 must be 64 hex")],
)
def test_download_checks_its_arguments(tmp_path, url, sha, match):
    with pytest.raises(ValueError, match=match):
        download(url, tmp_path / "f", sha)


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
        assert data_module.sha256_of(root / remote.path) == remote.sha256, remote.path


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_ensure_dataset_finds_the_shared_copy(name):
    if not DATASETS[name].is_present(SHARED / DATASETS[name].folder):
        pytest.skip(f"{name} not in ../shared/data")
    assert ensure_dataset(name, SHARED) == SHARED / DATASETS[name].folder


def test_ensure_dataset_missing_explains_both_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir") as info:
        ensure_dataset("tinyshakespeare", tmp_path)
    assert "download=True" in str(info.value) and ENV_VAR in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was fetched
    with pytest.raises(KeyError, match="known"):
        ensure_dataset("mnist", tmp_path)


def test_ensure_dataset_downloads_files_and_archives_when_asked(tmp_path, monkeypatch):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "labels.txt").write_bytes(b"0\n1\n")
    archive = remote / "pack.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, payload in [("pack-v1/audio/a.wav", b"RIFF1"), ("pack-v1/other.txt", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    source = DatasetSource(
        name="toy",
        folder="toy",
        layout=("audio/*.wav", "labels.txt"),
        files=(RemoteFile((remote / "labels.txt").as_uri(), "labels.txt", _sha(b"0\n1\n")),),
        archives=(
            RemoteArchive(
                archive.as_uri(), _sha(archive.read_bytes()), (("pack-v1/audio/", "audio/"),)
            ),
        ),
    )
    monkeypatch.setitem(DATASETS, "toy", source)
    data_dir = tmp_path / "data"
    root = ensure_dataset("toy", data_dir, download=True)
    assert root == data_dir / "toy"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "audio",
        "audio/a.wav",
        "labels.txt",
    ]
    assert (root / "audio/a.wav").read_bytes() == b"RIFF1"
    assert ensure_dataset("toy", data_dir) == root  # now present: no download needed
