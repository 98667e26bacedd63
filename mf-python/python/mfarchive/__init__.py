"""mf multifile archives for Python.

Read mf archives and Panda3D multifiles in place (:func:`open`), pack directories (:func:`pack`) or write
archives entry by entry (:class:`Writer`), make and apply patches (:func:`diff`, :func:`apply`,
:func:`patch_info`) and update installs from release repositories (:func:`update`). Everything is a call
into the Rust libraries of mf; long work releases the GIL, and one :class:`Archive` may be read from
many threads at once. Errors are :class:`MfError` subclasses.
"""

from __future__ import annotations

from . import _errors
from ._entryfile import EntryFile
from ._errors import (
    AlreadyAppliedError,
    CorruptError,
    ExistsError,
    ExpiredError,
    ExtractError,
    FetchError,
    InvalidOptionError,
    InvalidPathError,
    LockedError,
    MfError,
    MfIOError,
    NotAnArchiveError,
    NotFoundError,
    NotRawError,
    PasswordError,
    ReleaseError,
    RollbackError,
    SignatureError,
    UnknownInstallError,
    UnsupportedVersionError,
    WrongBaseError,
)
from ._native import (
    Archive,
    Entry,
    Writer,
    __version__,
    apply,
    diff,
    open,
    pack,
    patch_info,
    update,
)

__all__ = [
    "open",
    "Archive",
    "Entry",
    "EntryFile",
    "pack",
    "Writer",
    "diff",
    "apply",
    "patch_info",
    "update",
    "__version__",
] + _errors.__all__
