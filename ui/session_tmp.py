"""A private temporary folder per browser session, removed when the session ends.

Pages that must write files (for example a library that only reads from a
path) use :func:`session_dir` instead of ``tempfile`` directly. The folder is
held in ``st.session_state``; when Streamlit drops the session (the user closes
the tab and the server forgets the session) the holder is garbage-collected
and ``weakref.finalize`` removes the folder. Streamlit discards a session some
time after its browser disconnected (``server.disconnectedSessionTTL``, 120 s by
default). The same finaliser runs at server exit, and folders left by a server
that was killed are swept away the next time a server creates one.

Uploaded file names are never used as paths: :func:`session_path` keeps only a
sanitised stem (``core.io.safe_name``) and always resolves inside the folder.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path

import streamlit as st

from core.io import safe_name

__all__ = ["SessionTmp", "session_dir", "session_path", "cleanup", "sweep_orphans"]

_KEY = "_orelens_session_tmp"
_PREFIX = "orelens-session-"
_swept = False


class SessionTmp:
    """Owner of one temporary folder; removing the last reference removes the folder.

    Parameters
    ----------
    prefix : str
        Prefix of the folder name under the system temporary directory.
    """

    def __init__(self, *, prefix: str = _PREFIX) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), ignore_errors=True)

    def cleanup(self) -> None:
        """Remove the folder now (idempotent)."""
        self._finalizer()

    @property
    def alive(self) -> bool:
        """True until the folder has been removed."""
        return self._finalizer.alive


def sweep_orphans() -> int:
    """Remove session folders left by server processes that no longer exist (e.g. killed ones).

    Returns
    -------
    n : int
        Number of folders removed.
    """
    n = 0
    for d in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        m = re.match(rf"{_PREFIX}(\d+)-", d.name)
        if not m or not d.is_dir():
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # its server is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's running process
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    return n


def session_dir() -> Path:
    """The current session's private temporary folder (created on first use).

    Returns
    -------
    path : Path
        An existing folder that only this session writes to.
    """
    global _swept
    holder = st.session_state.get(_KEY)
    if holder is None or not holder.alive or not holder.path.is_dir():
        if not _swept:
            _swept = True
            sweep_orphans()
        holder = SessionTmp()
        st.session_state[_KEY] = holder
    return holder.path


def session_path(name: str, *, suffix: str = "") -> Path:
    """A path inside :func:`session_dir` built from a sanitised version of ``name``.

    Parameters
    ----------
    name : str
        Any name, typically an uploaded file's name; only its sanitised stem is kept.
    suffix : str
        Extension to append, e.g. ``".png"``.
    """
    d = session_dir()
    p = (d / (safe_name(name) + suffix)).resolve()
    if p.parent != d.resolve():  # safe_name cannot produce separators; keep the guarantee explicit
        raise ValueError(f"{name!r} is not a usable file name")
    return p


def cleanup() -> None:
    """Remove the current session's temporary folder now (e.g. on a "clear session" action)."""
    holder = st.session_state.pop(_KEY, None)
    if holder is not None:
        holder.cleanup()
