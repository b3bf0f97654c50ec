"""Fetch corpora and language models: resumable downloads, checksums, safe extraction.

Everything here is standard library (``urllib``, ``tarfile``, ``zipfile``) plus
tqdm for progress bars. The flow for one resource is::

    Resource ──► download() ──► <dest>/<name>.part ──► checksum ──► <dest>/<name>
                                                                     │
                              extract() ◄──── fetch() ◄──────────────┘

Nothing half-done ever carries a final name: a download lives in ``.part``
until its checksum matches, ``gunzip`` writes to ``.part`` and renames, and
``extract`` leaves a marker file only after the last member is written, so
every step can be re-run after an interruption and either resumes or skips.

The official tables (``LIBRISPEECH``, ``LIBRISPEECH_LM``, ``SPEECH_COMMANDS``,
``ESC50``) carry the publishers' URLs and published checksums. ``fetch`` takes
a ``mirror`` (another base URL, or a local directory) and a ``checksums``
table that overrides the built-in digests for mirrors holding other files.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import posixpath
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from asr.errors import AsrError

__all__ = [
    "DownloadConfig",
    "Resource",
    "download",
    "extract",
    "fetch",
    "gunzip",
    "read_checksum_file",
    "is_archive",
    "LIBRISPEECH",
    "LIBRISPEECH_LM",
    "SPEECH_COMMANDS",
    "ESC50",
]

@dataclass
class DownloadConfig:
    """The ``[download]`` table of a recipe."""

    mirror: str = ""  # another host (or local folder) holding the same files
    checksums: str = ""  # sha256sum-style file overriding the built-in digests


USER_AGENT = "asr-download/1 (+python-urllib)"
RETRY_DELAY_S = 2.0  # multiplied by the attempt number between resumed attempts
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".zip")


@dataclass(frozen=True)
class Resource:
    """A file on the web and the digests it must match (either may be None)."""

    url: str
    sha256: str | None = None
    md5: str | None = None

    @property
    def filename(self) -> str:
        """The last component of the URL path, e.g. ``dev-clean.tar.gz``."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.url).path)
        return posixpath.basename(path.rstrip("/"))


# --------------------------------------------------------------------------
# Official resources
# --------------------------------------------------------------------------

_OPENSLR = "https://www.openslr.org/resources"


def _resources(url: str, digests: dict[str, str], algorithm: str) -> dict[str, Resource]:
    """Resources by name: ``url`` formatted with each name, with its digest."""
    return {name: Resource(url.format(name=name), **{algorithm: digest}) for name, digest in digests.items()}


# SHA-256 digests as published with torchaudio's LIBRISPEECH dataset.
LIBRISPEECH: dict[str, Resource] = _resources(f"{_OPENSLR}/12/{{name}}.tar.gz", {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}, "sha256")

# OpenSLR resource 11 publishes MD5 digests only.
LIBRISPEECH_LM: dict[str, Resource] = _resources(f"{_OPENSLR}/11/{{name}}", {
    "3-gram.pruned.1e-7.arpa.gz": "9a0f1325bcaf3a0f7b7be4be10823c2a",
    "3-gram.pruned.3e-7.arpa.gz": "8f67ec741827742eee05799ab7605b50",
    "4-gram.arpa.gz": "6abdcd5b055bd482e4f9defe91d40408",
    "librispeech-lm-norm.txt.gz": "c83c64c726a1aedfe65f80aa311de402",
}, "md5")

# SHA-256 digests as published with torchaudio's SPEECHCOMMANDS dataset.
SPEECH_COMMANDS: dict[str, Resource] = _resources("http://download.tensorflow.org/data/speech_commands_{name}.tar.gz", {
    "v0.01": "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    "v0.02": "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
}, "sha256")

# CMU's AN4 in NIST SPHERE files (64 MB). CMU publishes no digest; this is the SHA-256 of the copy
# that the dldata-public mirror of the same file serves (a mismatch stops; [download] checksums overrides).
AN4 = Resource("http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz",
               sha256="a0525579493735d32b60fb6fa5975dd0eaacde087b0a4eeb7f13b7ef33077b12")

# A snapshot of a git branch: its bytes change with every commit, so no digest.
ESC50 = Resource("https://github.com/karoldvl/ESC-50/archive/master.zip")


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


class _Interrupted(Exception):
    """The transfer stopped part-way; the ``.part`` file can be resumed."""


def download(
    url_or_resource: str | Resource,
    dest_dir: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Download a file into ``dest_dir`` and return its path.

    The bytes go to ``<dest_dir>/<filename>.part``; once complete and matching
    every given digest they are renamed atomically to ``<dest_dir>/<filename>``.
    A final file that already matches is returned without any network traffic.
    An existing ``.part`` is resumed with an HTTP ``Range`` request (a server
    that ignores ranges makes it start over). A transfer that breaks off is
    resumed up to ``retries`` times; after that the ``.part`` is kept and a
    later call resumes it. ``sha256``/``md5`` override the resource's digests.

    Raises ``AsrError`` on HTTP/network errors and on a checksum mismatch (the
    bad file is deleted first).
    """
    resource = url_or_resource if isinstance(url_or_resource, Resource) else Resource(url_or_resource)
    resource = Resource(
        resource.url,
        sha256=sha256 if sha256 is not None else resource.sha256,
        md5=md5 if md5 is not None else resource.md5,
    )
    if not resource.filename:
        raise AsrError(f"cannot tell a file name from the URL {resource.url!r}")

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / resource.filename
    if final.is_file():
        if _mismatch(final, resource) is None:
            return final
        final.unlink()  # stale or corrupt: fetch it again

    part = final.with_name(final.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(resource.url, part, chunk_size=chunk_size, timeout=timeout, progress=progress)
            break
        except _Interrupted as exc:
            if attempt == retries:
                raise AsrError(
                    f"download of {resource.url} interrupted ({exc}); "
                    f"{part} was kept, run again to resume"
                ) from None
            time.sleep(RETRY_DELAY_S * (attempt + 1))

    problem = _mismatch(part, resource)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise AsrError(f"{problem}; the file was deleted")
    os.replace(part, final)
    return final


def _transfer(url: str, part: Path, *, chunk_size: int, timeout: float, progress: bool) -> None:
    """One HTTP request that appends to (or restarts) ``part``."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:  # nothing left to send past `offset`
                if _range_total(exc.headers.get("Content-Range")) == offset:
                    return
                part.unlink()
                raise _Interrupted("the server refused to resume; starting over") from None
            raise AsrError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AsrError(f"cannot download {url}: {reason}") from None

    with response:
        status = getattr(response, "status", None) or 200  # file: URLs have no status
        if status == 206:
            if _range_start(response.headers.get("Content-Range")) != offset:
                part.unlink()
                raise _Interrupted("the server resumed at the wrong offset; starting over")
            mode = "ab"
        else:  # 200: the server ignored the range, start over
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.strip().isdigit() else None
        received = 0
        with open(part, mode) as out, tqdm(
            total=None if expected is None else offset + expected,
            initial=offset,
            desc=part.name[: -len(".part")],
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=not progress,
        ) as bar:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Interrupted(f"{type(exc).__name__}: {exc}") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:
        raise _Interrupted(f"got {offset + received} of {offset + expected} bytes")


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+[^/]*/(\d+)", content_range or "")
    return int(match.group(1)) if match else None


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mismatch(path: Path, resource: Resource) -> str | None:
    """None when ``path`` matches every digest the resource has, else why not."""
    for algorithm, expected in (("sha256", resource.sha256), ("md5", resource.md5)):
        if expected:
            actual = _digest(path, algorithm)
            if actual != expected.strip().lower():
                return (
                    f"checksum mismatch for {path.name.removesuffix('.part')}: "
                    f"expected {algorithm} {expected}, got {actual}"
                )
    return None


def read_checksum_file(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``sha256sum``-style file into ``{filename: hex digest}``.

    Lines are ``<hex>  <name>`` (``<hex> *<name>`` in binary mode); blank lines
    and ``#`` comments are skipped. Names are keyed by their last component, as
    ``fetch`` looks them up.
    """
    table: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{32,128})\s+\*?(.+)", line)
        if match is None:
            raise AsrError(f"{path}:{number}: expected '<hex digest>  <file name>', got {line!r}")
        table[posixpath.basename(match.group(2).strip())] = match.group(1).lower()
    return table


# --------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``extract`` knows the file type from its name."""
    return str(path).lower().endswith(_ARCHIVE_SUFFIXES)


def extract(archive: str | os.PathLike, target_dir: str | os.PathLike, *, progress: bool = True) -> Path:
    """Unpack a .tar(.gz/.bz2/.xz), .tgz or .zip into ``target_dir``; return it.

    Every member is checked before anything is written: a member whose path
    resolves outside ``target_dir`` (absolute names, ``..``, or a path through
    a symlink), a symlink or hard link pointing outside or to an absolute path,
    and device files or FIFOs make the whole archive refused with ``AsrError``.
    Tar extraction also runs under ``tarfile``'s ``"data"`` filter where the
    Python version has it. A marker ``target_dir/.<archive name>.extracted``
    makes a second call a no-op.
    """
    archive = Path(archive)
    target_dir = Path(target_dir)
    marker = target_dir / f".{archive.name}.extracted"
    if marker.exists():
        return target_dir
    if not archive.is_file():
        raise AsrError(f"archive not found: {archive}")
    if not is_archive(archive):
        raise AsrError(f"unsupported archive type: {archive.name} (expected one of {', '.join(_ARCHIVE_SUFFIXES)})")

    target_dir.mkdir(parents=True, exist_ok=True)
    base = os.path.realpath(target_dir)
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, base, progress)
        else:
            _extract_tar(archive, base, progress)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise AsrError(f"cannot extract {archive}: {exc}") from None
    marker.write_text(f"{archive.name}\n")
    return target_dir


def _extract_tar(archive: Path, base: str, progress: bool) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()  # reads the whole index before writing anything
        links = {_join(base, m.name): m.linkname for m in members if m.issym()}
        for member in members:
            _check_tar_member(member, base, links, archive)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        for member in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
            tar.extract(member, base, **kwargs)


def _check_tar_member(member: tarfile.TarInfo, base: str, links: dict[str, str], archive: Path) -> None:
    def refuse(why: str):
        raise AsrError(f"refusing to extract {archive.name}: member {member.name!r} {why}")

    if member.ischr() or member.isblk() or member.isfifo():
        refuse("is a device file or FIFO")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        refuse("has an unsupported type")
    if _is_absolute(member.name):
        refuse("has an absolute path")
    path = _join(base, member.name)
    parent = _resolve(posixpath.dirname(path), links)
    if member.issym() or member.islnk():  # links replace what is there
        location = posixpath.join(parent, posixpath.basename(path))
    else:  # files are written through an existing link, so follow it
        location = _resolve(path, links)
    if not _inside(base, location) or (location == base and not member.isdir()):
        refuse("would be written outside the target directory")
    if member.issym() or member.islnk():
        if _is_absolute(member.linkname):
            refuse(f"links to the absolute path {member.linkname!r}")
        # a symlink is relative to its own directory, a hard link to the archive root
        start = parent if member.issym() else base
        if not _inside(base, _resolve(posixpath.join(start, member.linkname), links)):
            refuse(f"links outside the target directory ({member.linkname!r})")


def _extract_zip(archive: Path, base: str, progress: bool) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            if _is_absolute(info.filename):
                raise AsrError(f"refusing to extract {archive.name}: member {info.filename!r} has an absolute path")
            if not _inside(base, _resolve(_join(base, info.filename), {})):
                raise AsrError(
                    f"refusing to extract {archive.name}: member {info.filename!r} "
                    "would be written outside the target directory"
                )
        for info in tqdm(infos, desc=f"extract {archive.name}", unit="file", disable=not progress):
            zf.extract(info, base)


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name))


def _join(base: str, name: str) -> str:
    return posixpath.normpath(posixpath.join(base, name))


def _inside(base: str, path: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _resolve(path: str, links: dict[str, str], depth: int = 0) -> str:
    """Resolve an absolute path through the archive's own symlinks and the disk's.

    ``links`` maps a symlink's absolute destination path to its link text. The
    walk follows them component by component, as the kernel would once they
    exist, so chains such as ``a -> .`` plus ``b -> a/..`` are caught before
    any of them is written.
    """
    if depth > 40:
        raise AsrError(f"too many levels of symbolic links resolving {path}")
    parts: list[str] = []
    for component in path.split("/"):
        if component in ("", "."):
            continue
        if component == "..":
            if parts:
                parts.pop()
            continue
        parts.append(component)
        current = "/" + "/".join(parts)
        target = links.get(current)
        if target is None and os.path.islink(current):
            target = os.readlink(current)
        if target is not None:
            parent = "/" + "/".join(parts[:-1])
            resolved = _resolve(posixpath.join(parent, target), links, depth + 1)
            parts = [p for p in resolved.split("/") if p]
    return "/" + "/".join(parts)


def gunzip(path: str | os.PathLike) -> Path:
    """Decompress ``x.gz`` next to itself as ``x`` (atomically); return ``x``.

    An output newer than the ``.gz`` is returned as is.
    """
    path = Path(path)
    if path.suffix != ".gz":
        raise AsrError(f"not a .gz file: {path}")
    out = path.with_suffix("")
    if out.is_file() and out.stat().st_mtime >= path.stat().st_mtime:
        return out
    part = out.with_name(out.name + ".part")
    try:
        with gzip.open(path, "rb") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        part.unlink(missing_ok=True)
        raise AsrError(f"cannot decompress {path}: {exc}") from None
    os.replace(part, out)
    return out


# --------------------------------------------------------------------------
# Download + extract
# --------------------------------------------------------------------------


def fetch(
    resource: Resource | str,
    download_dir: str | os.PathLike,
    extract_dir: str | os.PathLike,
    mirror: str | os.PathLike | None = None,
    checksums: dict[str, str] | str | os.PathLike | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Download ``resource`` into ``download_dir`` and unpack it into ``extract_dir``.

    ``mirror`` replaces everything before the file name in the URL: with
    ``mirror="http://host/x"`` the file comes from ``http://host/x/<filename>``;
    a local directory works too. ``checksums`` (``{filename: sha256}``, or the
    path of a ``sha256sum`` file) overrides the built-in digests of the files
    it names. Returns ``extract_dir`` for archives; a file that is not an
    archive (e.g. ``4-gram.arpa.gz``) is returned as downloaded (see
    ``gunzip``).
    """
    if not isinstance(resource, Resource):
        resource = Resource(str(resource))
    name = resource.filename
    url = resource.url
    if mirror is not None:
        base = str(mirror)
        if not urllib.parse.urlsplit(base).scheme or re.match(r"[A-Za-z]:[\\/]", base):
            base = Path(base).resolve().as_uri()
        url = f"{base.rstrip('/')}/{urllib.parse.quote(name)}"
    if checksums is not None and not isinstance(checksums, dict):
        checksums = read_checksum_file(checksums)
    if checksums and name in checksums:
        resource = Resource(url, sha256=checksums[name])
    else:
        resource = Resource(url, sha256=resource.sha256, md5=resource.md5)

    path = download(resource, download_dir, progress=progress)
    if not is_archive(path):
        return path
    return extract(path, extract_dir, progress=progress)
