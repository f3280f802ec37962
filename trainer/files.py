"""Writing files safely: every file the pack writes goes to a temporary name in the same folder first and is moved
into place only when complete, so a crash or a full disk never leaves a truncated file under the real name."""
import os
import tempfile


def _open_for_write(fd):
    return os.fdopen(fd, "wb")


def _write_temp(folder: str, data: bytes) -> str:
    """Writes ``data`` to a new temporary file in ``folder`` (flushed to disk); returns its path. On any error the
    temporary file is removed and the error propagates."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fluxlora-", suffix=".tmp")
    try:
        with _open_for_write(fd) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return tmp


def write_replacing(path: str, data: bytes):
    """Writes ``path`` atomically, replacing an older version of it (caches, training state). The folder must exist."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = _write_temp(folder, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_exclusive(path: str, data: bytes) -> bool:
    """Writes ``path`` atomically only if no file of that name exists (never overwrites). Returns False if it exists.
    The folder must exist."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.lexists(path):
        return False
    tmp = _write_temp(folder, data)
    try:
        try:
            os.link(tmp, path)  # atomic and exclusive: fails if the name exists meanwhile
        except FileExistsError:
            return False
        except OSError:  # file systems without hard links: a rename (still atomic) after the existence check
            if os.path.lexists(path):
                return False
            os.replace(tmp, path)
            return True
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return True


def unique_path(folder: str, stem: str, suffix: str) -> str:
    """``folder/stem<suffix>``, or with ``-2``, ``-3`` ... before the suffix if that name is taken."""
    path, n = os.path.join(folder, stem + suffix), 1
    while os.path.lexists(path):
        n += 1
        path = os.path.join(folder, f"{stem}-{n}{suffix}")
    return path
