"""Type stubs of the Rust extension (mf-python/src). Everything here is re-exported by ``mfarchive``."""

import os
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, overload

from ._entryfile import EntryFile
from ._errors import MfError

__version__: str

_Path = str | os.PathLike[str]

class Entry:
    """One entry's metadata: a snapshot, valid after the archive is closed."""

    @property
    def path(self) -> str:
        """Path inside the archive, ``/``-separated."""
    @property
    def size(self) -> int:
        """Content size in bytes."""
    @property
    def stored_size(self) -> int:
        """Bytes the entry occupies in the archive."""
    @property
    def offset(self) -> int:
        """Absolute offset of the entry's stored bytes in the archive file."""
    @property
    def mode(self) -> int:
        """Unix permission bits (0o644 for Panda3D subfiles)."""
    @property
    def mtime(self) -> float | None:
        """Modification time in seconds since the epoch, or None when not recorded."""
    @property
    def compression(self) -> Literal["none", "zstd", "zlib"]:
        """How the content is stored: ``zstd`` (mf), ``zlib`` (Panda3D) or ``none``."""
    @property
    def is_compressed(self) -> bool: ...
    @property
    def is_encrypted(self) -> bool:
        """An encrypted Panda3D subfile (reading it needs ``open(..., password=)``)."""

class Archive:
    """An open mf archive or Panda3D multifile (read-only). A context manager; iterating yields
    :class:`Entry` objects in path order; ``path in archive`` and ``archive[path]`` look entries up.
    Safe to share between threads: reads run concurrently without the GIL."""

    @property
    def path(self) -> str: ...
    @property
    def format(self) -> Literal["mf", "panda3d"]: ...
    @property
    def version(self) -> tuple[int, int]: ...
    @property
    def total_size(self) -> int:
        """Sum of the entries' content sizes."""
    @property
    def closed(self) -> bool: ...
    def close(self) -> None:
        """Releases this object's hold on the archive; entry files and views stay valid."""
    def __enter__(self) -> Archive: ...
    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Entry]: ...
    def __contains__(self, path: object) -> bool: ...
    def __getitem__(self, path: str | Entry) -> Entry:
        """The entry at ``path``; :class:`NotFoundError` (a ``KeyError``) when there is none."""
    @overload
    def get(self, path: str) -> Entry | None: ...
    @overload
    def get(self, path: str, default: Any) -> Entry | Any: ...
    def names(self) -> list[str]:
        """Every entry path, in path order."""
    def read(self, entry: str | Entry) -> bytes:
        """The entry's whole content; its checksum is verified (:class:`CorruptError` otherwise)."""
    def read_view(self, entry: str | Entry, verify: bool = True) -> memoryview:
        """A read-only memoryview of an uncompressed entry inside the archive's mapping, without a
        copy (:class:`NotRawError` for compressed or encrypted entries). With ``verify``, the
        checksum (mf archives) is checked first. The view keeps the mapping alive."""
    def open_entry(self, entry: str | Entry) -> EntryFile:
        """A seekable binary file object over the entry, decoding only the frames reads touch."""
    def verify(self) -> list[MfError]:
        """Checks every entry; the problems found (empty when the archive is intact)."""
    def extract(self, dest: _Path, paths: Sequence[str] | None = None, *, overwrite: bool = False) -> int:
        """Extracts all entries, or the entries and directories ``paths`` names, under ``dest``: paths
        validated, nothing written outside ``dest`` or through a symlink, no existing file replaced
        unless ``overwrite``, each file complete or absent. Returns the number of files written;
        :class:`ExtractError` lists entries that failed while the others were written."""

class EntryHandle:
    """Positioned reads of one entry (the native side of :class:`EntryFile`)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    def readinto(self, offset: int, buffer: Any) -> int: ...
    def read(self, offset: int, size: int) -> bytes: ...

def open(path: _Path, password: str | None = None) -> Archive:
    """Opens an mf archive or a Panda3D multifile (detected from its first bytes); ``password``
    decrypts encrypted Panda3D subfiles."""

def pack(
    sources: _Path | Sequence[_Path],
    out: _Path,
    *,
    level: int = 9,
    store: Sequence[str] = (),
    exclude: Sequence[str] = (),
    frame_size: int = 262144,
    keep_mtime: bool = False,
    follow_symlinks: bool = False,
) -> int:
    """Packs directories into ``out`` exactly as ``mf pack`` does (same files, same bytes), written
    atomically. ``store``: extensions kept uncompressed; ``exclude``: globs. Returns the entry count."""

class Writer:
    """Writes an archive entry by entry, streaming. ``path`` appears (or is replaced) only when
    :meth:`close` succeeds; as a context manager it closes on success and aborts on an exception."""

    path: str
    def __init__(self, path: _Path, *, level: int = 9, frame_size: int = 262144) -> None: ...
    def add(
        self,
        path: str,
        data: bytes | bytearray,
        *,
        mode: int = 0o644,
        compression: Literal["auto", "store", "zstd"] = "auto",
        mtime: float | None = None,
    ) -> None:
        """Adds an entry holding ``data``."""
    def add_file(
        self,
        path: str,
        source: _Path,
        *,
        compression: Literal["auto", "store", "zstd"] = "auto",
        keep_mtime: bool = False,
    ) -> None:
        """Adds the file ``source`` as entry ``path``, streamed frame by frame."""
    def __len__(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> int:
        """Finishes the archive and moves it into place atomically; returns the entry count."""
    def abort(self) -> None:
        """Discards the archive being written; ``path`` is left as it was."""
    def __enter__(self) -> Writer: ...
    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> bool: ...

def diff(old: _Path, new: _Path, out: _Path | None, *, memory_limit: int | str | None = None) -> dict[str, Any]:
    """Writes a patch from ``old`` to ``new`` at ``out`` (``None``: report only); returns the report
    (the keys of ``mf diff --json``)."""

def apply(patch: _Path, old: _Path, out: _Path, *, format: Literal["mf", "panda3d"] | None = None) -> dict[str, Any]:
    """Rebuilds the patch's NEW from ``old`` into ``out``, verified, written atomically.
    :class:`WrongBaseError` when ``old`` is not the patch's base."""

def patch_info(patch: _Path) -> dict[str, Any]:
    """What a patch changes and costs (the keys of ``mf patch-info --json``)."""

def update(
    repo: str | os.PathLike[str],
    key: str | os.PathLike[str] | None,
    target: _Path,
    *,
    to: str | None = None,
    check: bool = False,
    repair: bool = False,
    folder: bool | None = None,
    allow_unsigned: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
    progress: Callable[[int, int, str], object] | None = None,
    verify: bool = False,
    rebuild: bool = False,
) -> dict[str, Any]:
    """Brings ``target`` (an archive, or an install folder) to the newest (or ``to``) version of the
    release repository ``repo``, verified against ``key``, by the fewest bytes, atomically. Returns
    the outcome (the keys of ``mf update --json``). ``progress(done, total, label)`` is called as
    pieces download. An mf archive is patched in place (only what changed is written; the result
    has the new version's entries, not its exact bytes) unless ``rebuild=True``; ``verify=True``
    identifies the installed archive by every entry's SHA-256 instead of trusting the state record."""
