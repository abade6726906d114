"""Where uploaded files live: one small interface, a directory by default (UPLOAD_DIR, config.py).

Keys are relative paths (`<institution>/<random>.jpg`) stored on the `uploads` rows, so web processes
and workers find the same file when they share the directory (one machine, or a shared volume), as
export files do under EXPORT_DIR (app/jobs/storage.py). Another backend (an object store) implements
the same four methods and is chosen by UPLOAD_STORAGE.
"""

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from flask import current_app


class Storage(Protocol):
    def write(self, key: str, data: bytes) -> None: ...

    def open(self, key: str) -> BinaryIO: ...

    def delete(self, key: str) -> bool: ...

    def exists(self, key: str) -> bool: ...


class DirectoryStorage:
    def __init__(self, root):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:  # keys are ours, but a row must never point outside the root
            raise ValueError(f"refusing a key outside {self.root}")
        return path

    def write(self, key: str, data: bytes) -> None:
        """Visible under its key only once complete: written aside, synced, renamed (atomic)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")  # noqa: SIM115 - the caller (send_file) closes it

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


BACKENDS = {"directory": lambda app: DirectoryStorage(app.config["UPLOAD_DIR"])}


def storage() -> Storage:
    """The configured backend (UPLOAD_STORAGE); built per call, so a changed UPLOAD_DIR applies."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    return BACKENDS[app.config["UPLOAD_STORAGE"]](app)


def new_key(institution_id: int, extension: str) -> str:
    return f"{institution_id}/{uuid.uuid4().hex}.{extension}"
