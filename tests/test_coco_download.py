"""The COCO val2017 subset: the packaged id list, `--dataset coco`, and the downloader against a local HTTP server.

The server (127.0.0.1 only, bounded in requests and lifetime) serves a small zip built from the real COCO photos in
../shared/images/coco_val2017/, laid out like the official val2017.zip; a per-test plan makes it cut a transfer
short or flip a byte, so resuming and checksum failures are exercised for real.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import shared_path
from vision_tokenizers import coco
from vision_tokenizers.coco import Archive, DownloadError, download_coco, ids_sha256, select, verify_folder
from vision_tokenizers.datasets import open_dataset

PUBLISHED_IDS_SHA256 = "a09cf1f86962bc572e64e1cbb87c7f4b5ef0145ebf2c30d9f45c55514564ef2e"  # COCO.md
IN_SUBSET = (87038, 785, 14439)   # photos in ../shared/images/coco_val2017 that are in the list, at [3], [201], [842]
NOT_IN_SUBSET = "000000040083.jpg"
MAX_REQUESTS = 20
LIFETIME_S = 60.0


# ---------------------------------------------------------------------------------------------------------------------
# the packaged list


def test_packaged_list_is_the_shared_one():
    shared = shared_path("reference", "coco_val2017_first1000.json")
    packaged = Path(coco.__file__).parent / "data" / coco.LIST_FILE
    assert packaged.read_bytes() == shared.read_bytes()
    entries = coco.coco_subset()
    assert len(entries) == 1000 and len({e.id for e in entries}) == 1000
    assert (entries[0].id, entries[0].file_name, entries[0].width, entries[0].height) == \
        (397133, "000000397133.jpg", 640, 427)
    assert entries[3].id == 87038 and entries[999].id == 508602
    assert [entries[i].id for i in (961, 225, 362, 281, 650)] == [1000, 100582, 100624, 101068, 101420]
    assert ids_sha256(entries) == PUBLISHED_IDS_SHA256
    assert [e.id for e in select(3)] == [397133, 37777, 252219]
    with pytest.raises(ValueError, match="1000"):
        select(1001)


def test_dataset_coco_is_the_list_in_order(tmp_path, monkeypatch):
    photo = shared_path("images", "coco_val2017", "000000087038.jpg")
    first4 = select(4)
    for entry in first4:  # only the names matter here: order, selection and hash
        (tmp_path / entry.file_name).write_bytes(photo.read_bytes())
    (tmp_path / "000000000001.jpg").write_bytes(photo.read_bytes())  # sorts first, but is not in the list
    monkeypatch.setenv("VTOK_COCO", str(tmp_path))
    images = open_dataset("coco", num_images=4)
    assert [p.name for p in images.paths] == [e.file_name for e in first4]  # the list's order, not sorted
    assert [p.name for p in images.paths] != sorted(p.name for p in images.paths)
    assert images.id_list_sha256 == hashlib.sha256(b"397133\n37777\n252219\n87038").hexdigest()
    with pytest.raises(FileNotFoundError, match="vtok download coco --num-images 5"):
        open_dataset("coco", num_images=5)
    with pytest.raises(FileNotFoundError, match="1000"):
        open_dataset("coco", num_images=5000)


# ---------------------------------------------------------------------------------------------------------------------
# a local server for the downloader


@dataclass
class Server:
    url: str
    data: bytes
    plan: list[str] = field(default_factory=list)      # per GET: "ok" | "cut" | "corrupt" (then "ok")
    requests: list[str | None] = field(default_factory=list)  # the Range header of each GET


def _handler(server_state: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest's output clean
            pass

        def do_GET(self):
            state = server_state
            if len(state.requests) >= MAX_REQUESTS:
                self.send_error(503, "test server request limit")
                return
            state.requests.append(self.headers.get("Range"))
            mode = state.plan.pop(0) if state.plan else "ok"
            start = 0
            if self.headers.get("Range", "").startswith("bytes="):
                start = int(self.headers["Range"][6:].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(state.data) - 1}/{len(state.data)}")
            else:
                self.send_response(200)
            body = state.data[start:]
            if mode == "corrupt":
                flip = len(body) // 3
                body = body[:flip] + bytes([body[flip] ^ 0xFF]) + body[flip + 1:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.write(body[:len(body) // 2] if mode == "cut" else body)  # "cut": the connection drops

    return Handler


@pytest.fixture
def archive_bytes(tmp_path_factory) -> bytes:
    """A zip laid out like val2017.zip: the three listed photos and one unlisted one."""
    folder = shared_path("images", "coco_val2017")
    path = tmp_path_factory.mktemp("archive") / "val2017.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(p.name for p in folder.glob("*.jpg")):
            zf.write(folder / name, f"val2017/{name}")
    return path.read_bytes()


@pytest.fixture
def server(archive_bytes):
    state = Server("", archive_bytes)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/zips/val2017.zip"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(LIFETIME_S, httpd.shutdown)  # stops by itself even if a test hangs
    watchdog.daemon = True
    watchdog.start()
    try:
        yield state
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def listed():
    """The packaged entries of the shared photos, in the list's order."""
    by_id = {e.id: e for e in coco.coco_subset()}
    return [by_id[i] for i in IN_SUBSET]


def _archive(server: Server) -> Archive:
    return Archive(server.url, len(server.data), hashlib.sha256(server.data).hexdigest())


def _assert_images(folder: Path, listed) -> None:
    source = shared_path("images", "coco_val2017")
    for entry in listed:
        assert (folder / entry.file_name).read_bytes() == (source / entry.file_name).read_bytes()
    assert not (folder / NOT_IN_SUBSET).exists()  # only listed images are extracted
    manifest = json.loads((folder / coco.MANIFEST_FILE).read_text())["files"]
    assert set(manifest) == {e.file_name for e in listed}
    assert all(len(row["sha256"]) == 64 for row in manifest.values())


def test_interrupted_transfer_resumes(server, listed, tmp_path):
    server.plan = ["cut"]
    log: list[str] = []
    folder = tmp_path / "coco" / "val2017"
    result = download_coco(folder, entries=listed, archive=_archive(server), progress=False, log=log.append)
    half = len(server.data) // 2
    assert server.requests == [None, f"bytes={half}-"]  # the second request asks only for the missing half
    assert any(f"resuming val2017.zip at {half:,}" in line for line in log)
    assert result.downloaded and result.extracted == [e.file_name for e in listed]
    _assert_images(folder, listed)
    assert not (folder.parent / "val2017.zip").exists() and not (folder.parent / "val2017.zip.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(server, listed, tmp_path):
    folder = tmp_path / "val2017"
    (tmp_path / "val2017.zip.part").write_bytes(server.data[:1000])  # a killed earlier download
    download_coco(folder, entries=listed, archive=_archive(server), progress=False, log=lambda _: None)
    assert server.requests == ["bytes=1000-"]
    _assert_images(folder, listed)


def test_corrupted_byte_is_detected_and_fetched_again(server, listed, tmp_path):
    server.plan = ["corrupt"]
    log: list[str] = []
    folder = tmp_path / "val2017"
    download_coco(folder, entries=listed, archive=_archive(server), keep_archive=True, progress=False,
                  log=log.append)
    assert server.requests == [None, None]  # the bad copy was thrown away and fetched whole again
    assert any("sha256" in line and "fetching again" in line for line in log)
    assert (tmp_path / "val2017.zip").read_bytes() == server.data
    _assert_images(folder, listed)


def test_complete_folder_is_verified_without_download(server, listed, tmp_path):
    folder = tmp_path / "val2017"
    download_coco(folder, entries=listed, archive=_archive(server), progress=False, log=lambda _: None)
    assert len(server.requests) == 1
    again = download_coco(folder, entries=listed, archive=_archive(server), progress=False, log=lambda _: None)
    assert len(server.requests) == 1 and not again.downloaded and again.extracted == []
    # a damaged image is caught by the manifest's sha256 and only that image is extracted again
    damaged = folder / listed[1].file_name
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    assert verify_folder(folder, listed) == {listed[1].file_name: "sha256 differs from the manifest"}
    repaired = download_coco(folder, entries=listed, archive=_archive(server), progress=False, log=lambda _: None)
    assert repaired.extracted == [listed[1].file_name] and len(server.requests) == 2
    _assert_images(folder, listed)


def test_wrong_archive_and_unreachable_host_fail_in_one_line(server, listed, tmp_path):
    wrong = Archive(server.url, len(server.data), "0" * 64)
    with pytest.raises(DownloadError, match="sha256") as info:
        download_coco(tmp_path / "a", entries=listed, archive=wrong, progress=False, log=lambda _: None)
    assert "\n" not in str(info.value)
    assert len(server.requests) == 5  # bounded retries, then a clear error
    closed = Archive("http://127.0.0.1:9/val2017.zip", 10, "0" * 64)  # port 9 (discard): nothing listens
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1.*--archive PATH"):
        download_coco(tmp_path / "b", entries=listed, archive=closed, progress=False, log=lambda _: None)
    with pytest.raises(DownloadError, match="offline"):
        download_coco(tmp_path / "c", entries=listed, archive=closed, offline=True, progress=False, log=lambda _: None)


def test_cli_download_coco_offline_and_unreachable(tmp_path, capsys):
    from vision_tokenizers.cli import main

    assert main(["download", "coco", "--num-images", "2", "--dir", str(tmp_path / "x"), "--offline"]) == 1
    err = capsys.readouterr().err
    assert "offline" in err and "815,585,330 bytes" in err
    assert main(["download", "coco", "--num-images", "2", "--dir", str(tmp_path / "x"),
                 "--url", "http://127.0.0.1:9/val2017.zip"]) == 1
    assert "cannot reach 127.0.0.1" in capsys.readouterr().err
    assert main(["download", "coco", "--num-images", "0"]) == 2
