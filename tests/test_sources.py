"""Dataset fetching: cache, checksums, archive and wheel routes, failures; no internet needed."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ract.cli import main
from ract.data import sources
from ract.data.readers import FORMATS, read_interactions
from ract.data.sources import DATASETS, Dataset, WheelRoute, fetch_dataset
from ract.errors import RactError

U_DATA = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
INTER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(path: Path, members: dict) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path.read_bytes()


def grouplens_like(tmp_path, md5=None, offline=()) -> Dataset:
    """A dataset whose 'publisher' archive is a local file:// zip."""
    data = make_zip(tmp_path / "remote" / "toy.zip", {"toy/u.data": U_DATA, "toy/README": b"hi"})
    return Dataset(
        name="toy",
        format="ml-100k",
        url=(tmp_path / "remote" / "toy.zip").as_uri(),
        md5=hashlib.md5(data).hexdigest() if md5 is None else md5,
        member="toy/u.data",
        offline=offline,
    )


def fake_wheel(path: Path, member_data: bytes = INTER) -> WheelRoute:
    data = make_zip(path, {"pkg/data/toy.inter": member_data, "pkg/__init__.py": b""})
    return WheelRoute(
        package="pkg",
        version="1.0",
        wheel=path.name,
        wheel_sha256=sha256(data),
        member="pkg/data/toy.inter",
        member_size=len(INTER),
        member_sha256=sha256(INTER),
        format="recbole",
    )


def unreachable(tmp_path) -> str:
    return (tmp_path / "remote" / "missing.zip").as_uri()


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(route, wheels, timeout):
        raise sources._RouteFailed("pip download failed: ERROR: No matching distribution found")

    monkeypatch.setattr(sources, "_pip_download", refuse)


def no_leftovers(folder: Path):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".")]


def test_registry():
    assert {"ml-100k", "ml-1m", "ml-20m"} <= set(DATASETS)
    for dataset in DATASETS.values():
        assert dataset.format in FORMATS
        assert all(route.format in FORMATS for route in dataset.offline)
    ml100k = DATASETS["ml-100k"]
    assert ml100k.md5 == "0e33842e24a9c977be4e0107933c0723" and ml100k.member == "ml-100k/u.data"
    assert ml100k.offline[0].member == "recbole/dataset_example/ml-100k/ml-100k.inter"


def test_unknown_dataset(tmp_path):
    with pytest.raises(RactError, match="unknown dataset 'ml-5m'; known datasets: ml-100k"):
        fetch_dataset("ml-5m", tmp_path)


def test_archive_route_via_file_url(tmp_path, no_pip):
    dataset = grouplens_like(tmp_path)
    cache = tmp_path / "cache"
    path, fmt = fetch_dataset(dataset, cache)
    assert (path, fmt) == (cache / "toy" / "u.data", "ml-100k")
    assert path.read_bytes() == U_DATA
    assert (cache / "toy" / "u.data.sha256").read_text().split() == [sha256(U_DATA), "u.data"]
    assert (cache / "toy" / "toy.zip").is_file()  # kept: re-extraction needs no network
    assert no_leftovers(cache) == []
    assert read_interactions(path, fmt)["user"].tolist() == [196, 186]


def test_cache_hit_needs_no_network(tmp_path, monkeypatch):
    dataset = grouplens_like(tmp_path)
    cache = tmp_path / "cache"
    fetch_dataset(dataset, cache)

    def boom(*args, **kwargs):
        raise AssertionError("network used on a cache hit")

    monkeypatch.setattr(sources.urllib.request, "urlopen", boom)
    monkeypatch.setattr(sources, "_pip_download", boom)
    assert fetch_dataset(dataset, cache) == (cache / "toy" / "u.data", "ml-100k")


def test_corrupt_cache_entry_is_replaced(tmp_path, no_pip):
    dataset = grouplens_like(tmp_path)
    cache = tmp_path / "cache"
    path, _ = fetch_dataset(dataset, cache)
    path.write_bytes(b"truncated")
    (cache / "toy" / "toy.zip").unlink()
    assert fetch_dataset(dataset, cache)[0].read_bytes() == U_DATA


def edit_in_place(path: Path) -> None:
    """Change one byte, keeping the size (the edit a size check alone would miss)."""
    data = path.read_bytes()
    path.write_bytes(data.replace(b"196", b"197", 1))


def age(path: Path, seconds: float = 3600) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_cached_file_is_hashed_again_only_when_size_or_mtime_changed(
    tmp_path, no_pip, monkeypatch
):
    dataset = grouplens_like(tmp_path)
    cache = tmp_path / "cache"
    path, _ = fetch_dataset(dataset, cache)
    age(path)  # checked again: hashed once, and its size and mtime recorded
    assert fetch_dataset(dataset, cache)[0] == path
    assert (cache / "toy" / "u.data.sha256").read_text().splitlines()[1].startswith("# checked")
    hashed = []
    monkeypatch.setattr(sources, "_hash_file", lambda *a: hashed.append(a) or "0" * 64)
    assert fetch_dataset(dataset, cache)[0] == path and hashed == []  # unchanged: no hashing
    monkeypatch.undo()
    edit_in_place(path)  # same size, new mtime
    assert fetch_dataset(dataset, cache)[0].read_bytes() == U_DATA  # re-extracted from the zip


def test_prepare_refuses_an_edited_cache_file(tmp_path, no_pip, capsys):
    path, fmt = fetch_dataset(grouplens_like(tmp_path), tmp_path / "cache")
    edit_in_place(path)
    assert (
        main(["prepare", "--input", str(path), "--format", fmt, "--out", str(tmp_path / "split")])
        == 1
    )
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ract: error: {path}: changed since it was downloaded (its SHA-256 no longer matches "
        "u.data.sha256); delete it; the next `ract fetch` or `ract prepare --dataset` fetches "
        "it again"
    )
    assert not (tmp_path / "split").exists()


# workflow/scripts/prepare_data.py run as Snakemake runs it, on the pointer obtain_data wrote
PREPARE_DATA = """
import runpy, sys
from types import SimpleNamespace as N
sys.path.insert(0, {scripts!r})


class Files(list):  # Snakemake's named file lists: iterable, and by name
    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)


snakemake = N(params=N(reader=dict(format=None, columns=None, sep=None, header=None),
                       settings={{}}),
              input=Files(raw={pointer!r}), output=Files(manifest={out!r} + "/manifest.json"),
              wildcards=N(dataset="toy"), log=[{log!r}], rule="prepare_data")
runpy.run_path({script!r}, init_globals=dict(snakemake=snakemake))
"""


def test_workflow_prepare_data_refuses_an_edited_cache_file(tmp_path, no_pip):
    path, fmt = fetch_dataset(grouplens_like(tmp_path), tmp_path / "cache")
    edit_in_place(path)
    pointer = tmp_path / "toy.json"
    pointer.write_text(json.dumps({"dataset": "toy", "path": str(path), "format": fmt}))
    scripts = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
    job = PREPARE_DATA.format(
        scripts=str(scripts),
        script=str(scripts / "prepare_data.py"),
        pointer=str(pointer),
        out=str(tmp_path / "split"),
        log=str(tmp_path / "log"),
    )
    r = subprocess.run([sys.executable, "-c", job], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        f"ract: error: {path}: changed since it was downloaded (its SHA-256 no longer matches "
        f"u.data.sha256); delete it and {pointer}; the next run fetches it again"
    )
    assert not (tmp_path / "split").exists()


def test_checksum_mismatch(tmp_path, no_pip):
    dataset = grouplens_like(tmp_path, md5="0" * 32)
    got = hashlib.md5((tmp_path / "remote" / "toy.zip").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(RactError) as info:
        fetch_dataset(dataset, cache)
    assert f"MD5 mismatch: expected {'0' * 32}, got {got} (download deleted)" in str(info.value)
    assert not (cache / "toy" / "toy.zip").exists() and not (cache / "toy" / "u.data").exists()
    assert no_leftovers(cache) == []


def test_manually_placed_archive_used_offline(tmp_path, monkeypatch):
    dataset = grouplens_like(tmp_path)
    cache = tmp_path / "cache"
    (cache / "toy").mkdir(parents=True)
    (cache / "toy" / "toy.zip").write_bytes((tmp_path / "remote" / "toy.zip").read_bytes())
    monkeypatch.setattr(sources.urllib.request, "urlopen", None)  # any download would crash
    assert fetch_dataset(dataset, cache, offline=True) == (cache / "toy" / "u.data", "ml-100k")


def test_wheel_route_from_cached_wheel(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    route = fake_wheel(cache / "wheels" / "pkg-1.0-py3-none-any.whl")
    dataset = Dataset(
        "toy", "ml-100k", unreachable(tmp_path), None, "toy/u.data", offline=(route,)
    )
    monkeypatch.setattr(sources.urllib.request, "urlopen", None)  # offline: never called
    monkeypatch.setattr(sources, "_pip_download", None)  # wheel already cached
    path, fmt = fetch_dataset(dataset, cache, offline=True)
    assert (path, fmt) == (cache / "toy" / "toy.inter", "recbole")
    assert path.read_bytes() == INTER
    assert read_interactions(path, fmt)["item"].tolist() == [242]
    assert fetch_dataset(dataset, cache, offline=True) == (path, fmt)  # now a cache hit


def test_wheel_member_checksum_mismatch(tmp_path, no_pip):
    cache = tmp_path / "cache"
    good = fake_wheel(tmp_path / "good.whl")
    route = fake_wheel(
        cache / "wheels" / "pkg-1.0-py3-none-any.whl", member_data=INTER.replace(b"3", b"4")
    )
    route = WheelRoute(**{**route.__dict__, "member_sha256": good.member_sha256})
    dataset = Dataset(
        "toy", "ml-100k", unreachable(tmp_path), None, "toy/u.data", offline=(route,)
    )
    with pytest.raises(RactError) as info:
        fetch_dataset(dataset, cache, offline=True)
    expected = f"SHA-256 mismatch for pkg/data/toy.inter: expected {good.member_sha256}, got "
    assert expected in str(info.value)
    assert not (cache / "toy" / "toy.inter").exists()
    assert no_leftovers(cache) == []


def test_pip_download_flow(tmp_path, monkeypatch):
    """The pip subprocess is faked: it saves the wheel into --dest like pip does."""
    cache = tmp_path / "cache"
    route = fake_wheel(tmp_path / "index" / "pkg-1.0-py3-none-any.whl")
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        (dest / route.wheel).write_bytes((tmp_path / "index" / route.wheel).read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    dataset = Dataset(
        "toy", "ml-100k", unreachable(tmp_path), None, "toy/u.data", offline=(route,)
    )
    path, fmt = fetch_dataset(dataset, cache, offline=True, timeout=3)
    assert fmt == "recbole" and path.read_bytes() == INTER
    assert (cache / "wheels" / route.wheel).is_file()
    command = calls[0]
    assert (
        command[1:4] == ["-m", "pip", "download"]
        and "pkg==1.0" in command
        and "--no-deps" in command
    )
    assert command[command.index("--timeout") + 1] == "3"
    assert no_leftovers(cache) == []


def test_pip_download_wrong_wheel_checksum(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    route = fake_wheel(tmp_path / "index" / "pkg-1.0-py3-none-any.whl")
    route = WheelRoute(**{**route.__dict__, "wheel_sha256": "f" * 64})

    def fake_run(command, **kwargs):
        dest = Path(command[command.index("--dest") + 1])
        (dest / route.wheel).write_bytes((tmp_path / "index" / route.wheel).read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    dataset = Dataset(
        "toy", "ml-100k", unreachable(tmp_path), None, "toy/u.data", offline=(route,)
    )
    with pytest.raises(
        RactError, match=f"SHA-256 mismatch for {route.wheel}: expected {'f' * 64}, got"
    ):
        fetch_dataset(dataset, cache, offline=True)
    assert list((cache / "wheels").iterdir()) == []


def test_all_routes_failed(tmp_path, monkeypatch):
    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(
            command,
            1,
            "",
            "Looking in indexes: x\nERROR: No matching distribution found for pkg==1.0\n",
        )

    monkeypatch.setattr(sources.subprocess, "run", failing_run)
    route = fake_wheel(tmp_path / "index" / "pkg-1.0-py3-none-any.whl")
    dataset = Dataset(
        "toy", "ml-100k", unreachable(tmp_path), "0" * 32, "toy/u.data", offline=(route,)
    )
    cache = tmp_path / "cache"
    with pytest.raises(RactError) as info:
        fetch_dataset(dataset, cache)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"could not obtain dataset 'toy': (1) {dataset.url}: ")
    assert (
        "(2) pip download pkg==1.0 (pkg/data/toy.inter): pip download failed: ERROR: No matching"
        in message
    )
    assert f"save it as {cache / 'toy' / 'missing.zip'}" in message
    assert "`prepare --input` with format 'ml-100k'" in message


def test_offline_without_routes_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.urllib.request, "urlopen", None)
    dataset = Dataset("toy", "ml-100k", "https://example.invalid/toy.zip", None, "toy/u.data")
    with pytest.raises(RactError, match="offline mode does not download"):
        fetch_dataset(dataset, tmp_path, offline=True)


def test_hanging_server_times_out(tmp_path, no_pip):
    with socket.socket() as server:  # accepts connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        dataset = Dataset("toy", "ml-100k", f"http://127.0.0.1:{port}/toy.zip", None, "toy/u.data")
        with pytest.raises(RactError, match=r"toy.zip: no response within 0.3 s"):
            fetch_dataset(dataset, tmp_path, timeout=0.3)


def test_real_offline_route_gives_ml100k(tmp_path, download_cache):
    """The real wheel, fetched from the package registry with pip download once for the whole
    test run (conftest.py), verified and unpacked like any cached wheel."""
    path, fmt = fetch_dataset("ml-100k", download_cache(tmp_path), offline=True, timeout=30)
    assert (path, fmt) == (tmp_path / "ml-100k" / "ml-100k.inter", "recbole")
    frame = read_interactions(path, fmt)
    assert len(frame) == 100_000
    assert frame["user"].nunique() == 943 and frame["item"].nunique() == 1682
