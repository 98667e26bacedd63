"""The exceptions mfarchive raises. Every one is an :class:`MfError`; those about a file carry ``file``,
those about damaged data also ``entry`` and ``offset`` (``None`` when unknown), so a caller can tell what
to re-fetch. Some also derive from the matching built-in (``KeyError``, ``ValueError``, ``OSError``...)
so ordinary ``except`` clauses keep working."""

from __future__ import annotations

__all__ = [
    "MfError",
    "MfIOError",
    "CorruptError",
    "NotAnArchiveError",
    "UnsupportedVersionError",
    "NotFoundError",
    "PasswordError",
    "InvalidPathError",
    "InvalidOptionError",
    "ExistsError",
    "ExtractError",
    "NotRawError",
    "WrongBaseError",
    "AlreadyAppliedError",
    "ReleaseError",
    "SignatureError",
    "ExpiredError",
    "RollbackError",
    "FetchError",
    "LockedError",
    "UnknownInstallError",
]


class MfError(Exception):
    """Base class of every mfarchive error."""

    #: The file (archive, patch, target...) the error is about, when known.
    file: str | None = None
    #: The entry path the error is about, when known.
    entry: str | None = None
    #: The byte offset in ``file`` where damage was found, when known.
    offset: int | None = None

    def __str__(self) -> str:
        # KeyError (a base of NotFoundError) would print the message quoted.
        return str(self.args[-1]) if self.args else ""


class MfIOError(MfError, OSError):
    """An I/O failure on ``file`` (``errno`` is set when the system gave one)."""


class CorruptError(MfError):
    """Damaged data: an archive, patch or download whose bytes are not what they should be. For a
    damaged patch, ``section`` names the part of the patch ``offset`` is in."""

    section: str | None = None


class NotAnArchiveError(CorruptError):
    """The file is not an archive (or not a patch) at all: no magic at offset 0."""


class UnsupportedVersionError(MfError):
    """A format version this build does not read."""


class NotFoundError(MfError, KeyError):
    """No entry (or version) of that name."""


class PasswordError(MfError):
    """An encrypted Panda3D subfile was read without a password, or the password is wrong."""


class InvalidPathError(MfError, ValueError):
    """An entry path that breaks the path rules, is given twice, or conflicts with another."""


class InvalidOptionError(MfError, ValueError):
    """An argument out of range (a level, a frame size, a format name...)."""


class ExistsError(MfError, FileExistsError):
    """Extraction found a file (or something else) in the way; nothing was written."""


class ExtractError(MfError):
    """Some entries could not be extracted; the others were. ``failures`` holds one exception per
    failed entry or directory, ``written`` the number of files written."""

    failures: list[MfError]
    written: int


class NotRawError(MfError, ValueError):
    """A zero-copy view was asked of a compressed or encrypted entry."""


class WrongBaseError(MfError):
    """The file a patch is applied to is not the one it was made from."""


class AlreadyAppliedError(WrongBaseError):
    """The file already is the patch's result."""


class ReleaseError(MfError):
    """Publishing or updating from a release repository failed."""


class SignatureError(ReleaseError):
    """The manifest's signature does not verify with the trusted key, or a key is malformed."""


class ExpiredError(SignatureError):
    """The manifest expired: a stale or frozen repository."""


class RollbackError(SignatureError):
    """The manifest is older than one this install already trusted."""


class FetchError(ReleaseError, ConnectionError):
    """Downloading from the repository failed (network, HTTP status, timeout)."""


class LockedError(ReleaseError):
    """Another update of the same install is running."""


class UnknownInstallError(ReleaseError):
    """The install matches no version of the repository; only ``repair=True`` replaces it."""
