"""Downloads, resume, checksums and safe extraction against a local HTTP server.

Every archive is built in ``tmp_path`` and served from 127.0.0.1 by a small
threaded server that honours ``Range`` (the stdlib handler does not), can be
told to ignore it, and can drop the connection once after N bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from asr import download as dl
from asr.download import Resource, download, extract, fetch, gunzip, read_checksum_file
from asr.errors import AsrError

PAYLOAD = bytes(range(256)) * 64  # 16 KiB


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# Local server
# --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.0)


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    """A symlink, hard link or (with ``kind=CHRTYPE``) device entry."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------


def test_download_verifies_checksum_and_skips_existing(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    out = download(url, tmp_path / "dl", sha256=_sha256(PAYLOAD), progress=False)
    assert out == tmp_path / "dl" / "data.bin"
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "dl" / "data.bin.part").exists()
    assert server.requests == [("/data.bin", None)]

    # the final file matches: no second request
    again = download(Resource(url, sha256=_sha256(PAYLOAD)), tmp_path / "dl", progress=False)
    assert again == out and len(server.requests) == 1


def test_download_md5_and_progress_bar(server, tmp_path, capsys):
    url = server.serve("data.bin", PAYLOAD)
    out = download(url, tmp_path, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=True)
    assert out.read_bytes() == PAYLOAD
    assert "data.bin" in capsys.readouterr().err


def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    wrong = "0" * 64
    with pytest.raises(AsrError) as excinfo:
        download(url, tmp_path, sha256=wrong, progress=False)
    message = str(excinfo.value)
    assert "data.bin" in message and wrong in message and _sha256(PAYLOAD) in message
    assert "\n" not in message
    assert not (tmp_path / "data.bin").exists()
    assert not (tmp_path / "data.bin.part").exists()


def test_stale_final_file_is_downloaded_again(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    (tmp_path / "data.bin").write_bytes(b"old contents")
    out = download(url, tmp_path, sha256=_sha256(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD and len(server.requests) == 1


def test_interrupted_download_resumes_on_next_call(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    server.drop_after = 5000
    with pytest.raises(AsrError, match="resume"):
        download(url, tmp_path, sha256=_sha256(PAYLOAD), progress=False, retries=0)
    part = tmp_path / "data.bin.part"
    assert part.stat().st_size == 5000
    assert not (tmp_path / "data.bin").exists()

    out = download(url, tmp_path, sha256=_sha256(PAYLOAD), progress=False, retries=0)
    assert out.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data.bin", "bytes=5000-")
    assert server.statuses == [200, 206]
    assert not part.exists()


def test_interrupted_download_resumes_within_one_call(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    server.drop_after = 1234
    out = download(url, tmp_path, sha256=_sha256(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == [None, "bytes=1234-"]


def test_server_ignoring_range_starts_over(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    server.ranges = False
    (tmp_path / "data.bin.part").write_bytes(b"garbage that must be thrown away")
    out = download(url, tmp_path, sha256=_sha256(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert server.requests[0][1] is not None  # a Range was asked for...
    assert server.statuses == [200]  # ...and ignored


def test_complete_part_file_is_finished_after_416(server, tmp_path):
    url = server.serve("data.bin", PAYLOAD)
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    out = download(url, tmp_path, sha256=_sha256(PAYLOAD), progress=False)
    assert out.read_bytes() == PAYLOAD
    assert server.statuses == [416]


def test_http_and_network_errors_are_one_line(server, tmp_path):
    dest = tmp_path / "dl"
    with pytest.raises(AsrError, match="HTTP 404") as excinfo:
        download(f"{server.base_url}/missing.tar.gz", dest, progress=False)
    assert "\n" not in str(excinfo.value)

    url = f"http://127.0.0.1:{closed_port()}/data.tar.gz"
    with pytest.raises(AsrError, match="cannot download") as excinfo:
        download(url, dest, progress=False, timeout=5)
    assert "\n" not in str(excinfo.value)
    with pytest.raises(AsrError, match="cannot download"):
        download("nonsense://nowhere/data.tar.gz", dest, progress=False)
    assert not list(dest.iterdir())


# --------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------


def test_extract_tar_gz_and_second_call_is_noop(tmp_path):
    archive = tmp_path / "corpus.tar.gz"
    archive.write_bytes(
        make_tar([file_member("corpus/a.txt", b"alpha"), file_member("corpus/sub/b.txt", b"beta"),
                  link_member("corpus/link.txt", "a.txt")])
    )
    out = extract(archive, tmp_path / "out", progress=False)
    assert out == tmp_path / "out"
    assert (out / "corpus" / "a.txt").read_bytes() == b"alpha"
    assert (out / "corpus" / "sub" / "b.txt").read_bytes() == b"beta"
    assert (out / "corpus" / "link.txt").read_bytes() == b"alpha"
    assert (out / ".corpus.tar.gz.extracted").exists()

    (out / "corpus" / "a.txt").unlink()
    extract(archive, out, progress=False)
    assert not (out / "corpus" / "a.txt").exists()


@pytest.mark.parametrize("mode, suffix", [("w", ".tar"), ("w:bz2", ".tar.bz2"), ("w:gz", ".tgz")])
def test_extract_other_tar_flavours(tmp_path, mode, suffix):
    archive = tmp_path / f"x{suffix}"
    archive.write_bytes(make_tar([file_member("x/a.txt", b"alpha")], mode=mode))
    extract(archive, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "x" / "a.txt").read_bytes() == b"alpha"


def bad_members(tmp_path: Path) -> dict[str, list]:
    outside = str(tmp_path / "abs_evil")  # absolute, but still inside the test's own directory
    return {
        "dotdot": [file_member("../evil", b"x")],
        "nested-dotdot": [file_member("ok/../../evil", b"x")],
        "absolute": [file_member(outside, b"x")],
        "symlink-out": [link_member("evil", "../../evil")],
        "symlink-abs": [link_member("evil", outside)],
        "hardlink-out": [link_member("evil", "../evil", tarfile.LNKTYPE)],
        "symlink-chain": [link_member("a", "."), link_member("b", "a/..")],
        "through-symlink": [link_member("up", ".."), file_member("up/evil", b"x")],
        "device": [link_member("dev", "", tarfile.CHRTYPE)],
    }


@pytest.mark.parametrize(
    "case",
    ["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out",
     "symlink-chain", "through-symlink", "device"],
)
def test_extract_refuses_unsafe_members_and_extracts_nothing(tmp_path, case):
    members = bad_members(tmp_path)[case]
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_tar([file_member("good.txt", b"fine"), *members]))
    target = tmp_path / "sandbox" / "out"
    with pytest.raises(AsrError, match="refusing to extract bad.tar.gz"):
        extract(archive, target, progress=False)
    assert list(target.iterdir()) == []  # not even good.txt, and no marker
    assert not (tmp_path / "sandbox" / "evil").exists()
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "abs_evil").exists()


def test_extract_zip(tmp_path):
    archive = tmp_path / "master.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ESC-50-master/meta/esc50.csv", "filename,fold\n")
        zf.writestr("ESC-50-master/audio/1-100032-A-0.wav", b"RIFF")
    out = extract(archive, tmp_path / "out", progress=False)
    assert (out / "ESC-50-master" / "meta" / "esc50.csv").read_text() == "filename,fold\n"
    assert (out / "ESC-50-master" / "audio" / "1-100032-A-0.wav").read_bytes() == b"RIFF"
    assert (out / ".master.zip.extracted").exists()


def test_extract_zip_refuses_dotdot(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good.txt", "fine")
        zf.writestr("../evil", "x")
    with pytest.raises(AsrError, match="outside"):
        extract(archive, tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_rejects_unknown_and_corrupt_archives(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(AsrError, match="unsupported archive"):
        extract(tmp_path / "notes.txt", tmp_path / "out")
    (tmp_path / "broken.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(AsrError, match="cannot extract"):
        extract(tmp_path / "broken.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out" / ".broken.tar.gz.extracted").exists()


# --------------------------------------------------------------------------
# fetch, checksum files, gunzip
# --------------------------------------------------------------------------


def test_fetch_from_mirror_with_checksums(server, tmp_path):
    data = make_tar([file_member("LibriSpeech/dev-clean/1/2/1-2.trans.txt", b"1-2-0000 HELLO\n")])
    server.serve("mirror/dev-clean.tar.gz", data)
    resource = dl.LIBRISPEECH["dev-clean"]

    # the built-in digest is the real corpus's: the fixture does not match it
    with pytest.raises(AsrError, match="checksum mismatch for dev-clean.tar.gz"):
        fetch(resource, tmp_path / "dl", tmp_path / "data", mirror=f"{server.base_url}/mirror", progress=False)

    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# fixtures\n{_sha256(data)}  ./dev-clean.tar.gz\n")
    out = fetch(resource, tmp_path / "dl", tmp_path / "data", mirror=f"{server.base_url}/mirror/",
                checksums=read_checksum_file(sums), progress=False)
    assert out == tmp_path / "data"
    assert (out / "LibriSpeech/dev-clean/1/2/1-2.trans.txt").read_text() == "1-2-0000 HELLO\n"
    assert (tmp_path / "dl" / "dev-clean.tar.gz").read_bytes() == data
    assert {path for path, _ in server.requests} == {"/mirror/dev-clean.tar.gz"}


def test_fetch_from_local_directory_and_plain_files(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    arpa = b"\\data\\\nngram 1=1\n"
    (mirror / "3-gram.pruned.1e-7.arpa.gz").write_bytes(gzip.compress(arpa))
    resource = dl.LIBRISPEECH_LM["3-gram.pruned.1e-7.arpa.gz"]
    digest = _sha256((mirror / resource.filename).read_bytes())
    path = fetch(resource, tmp_path / "dl", tmp_path / "lm", mirror=mirror,
                 checksums={resource.filename: digest}, progress=False)
    assert path == tmp_path / "dl" / "3-gram.pruned.1e-7.arpa.gz"  # not an archive: returned as is
    assert gunzip(path).read_bytes() == arpa
    assert (tmp_path / "dl" / "3-gram.pruned.1e-7.arpa").exists()


def test_gunzip_is_atomic(tmp_path):
    bad = tmp_path / "lm.arpa.gz"
    bad.write_bytes(gzip.compress(b"x" * 1000)[:-20])
    with pytest.raises(AsrError, match="cannot decompress"):
        gunzip(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.arpa.gz"]


def test_read_checksum_file(tmp_path):
    a, b = _sha256(b"a"), hashlib.md5(b"b").hexdigest()
    path = tmp_path / "sums"
    path.write_text(f"{a.upper()}  dir/a.tar.gz\n\n{b} *b.zip\n")
    assert read_checksum_file(path) == {"a.tar.gz": a, "b.zip": b}
    path.write_text("not a checksum line\n")
    with pytest.raises(AsrError, match=":1:"):
        read_checksum_file(path)


def test_official_tables():
    assert set(dl.LIBRISPEECH) == {
        "dev-clean", "dev-other", "test-clean", "test-other",
        "train-clean-100", "train-clean-360", "train-other-500",
    }
    for name, res in dl.LIBRISPEECH.items():
        assert res.url == f"https://www.openslr.org/resources/12/{name}.tar.gz"
        assert res.filename == f"{name}.tar.gz"
        assert re.fullmatch(r"[0-9a-f]{64}", res.sha256)
    for name, res in dl.LIBRISPEECH_LM.items():
        assert res.url == f"https://www.openslr.org/resources/11/{name}"
        assert re.fullmatch(r"[0-9a-f]{32}", res.md5)
    assert dl.SPEECH_COMMANDS["v0.02"].filename == "speech_commands_v0.02.tar.gz"
    assert dl.ESC50.filename == "master.zip"
