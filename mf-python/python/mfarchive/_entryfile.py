"""The file object :meth:`mfarchive.Archive.open_entry` returns."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from ._native import EntryHandle


class EntryFile(io.RawIOBase):
    """A read-only, seekable binary file over one archive entry. Reads decode only the zstd frames they
    touch (the last partly read frame is kept for the next read); uncompressed entries are copied
    straight from the archive's mapping. Wrap it in :class:`io.BufferedReader` for many tiny reads.

    It keeps the archive's data alive by itself: it stays usable after the archive is closed.
    Whole-entry checksums are not checked here (each zstd frame still is); use
    :meth:`Archive.read` or :meth:`Archive.verify` for that."""

    def __init__(self, handle: EntryHandle) -> None:
        super().__init__()
        self._handle = handle
        self._position = 0

    @property
    def name(self) -> str:
        """The entry's path in the archive."""
        return self._handle.path

    @property
    def size(self) -> int:
        """The entry's content size in bytes."""
        return self._handle.size

    def readable(self) -> bool:
        self._check_closed()
        return True

    def seekable(self) -> bool:
        self._check_closed()
        return True

    def tell(self) -> int:
        self._check_closed()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_closed()
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self._handle.size + offset
        else:
            raise ValueError(f"invalid whence ({whence!r}, should be 0, 1 or 2)")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._check_closed()
        if self._position >= self._handle.size:
            return 0
        count = self._handle.readinto(self._position, buffer)
        self._position += count
        return count

    def read(self, size: int | None = -1) -> bytes:
        self._check_closed()
        if size is None or size < 0:
            return self.readall()
        data = self._handle.read(self._position, size)
        self._position += len(data)
        return data

    def readall(self) -> bytes:
        self._check_closed()
        data = self._handle.read(self._position, max(self._handle.size - self._position, 0))
        self._position += len(data)
        return data

    def _check_closed(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed entry file")

    def __repr__(self) -> str:
        return f"<mfarchive.EntryFile {self._handle.path!r} size={self._handle.size}>"
