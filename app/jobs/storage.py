"""Where job files live on disk: under EXPORT_DIR, by institution: <id>/<job id>/ for exports and
<id>/uploads/ for uploaded imports. Rows in `files` keep paths relative to EXPORT_DIR, so the web
processes and the workers find the same file when they share the directory (one machine, or a shared
volume)."""

import os
from pathlib import Path

from flask import current_app

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
    "zip": "application/zip",  # the OneRoster CSV binding (app/oneroster/csvexport.py), subject-access exports
}


def root() -> Path:
    return Path(current_app.config["EXPORT_DIR"]).resolve()


def resolve(relative: str) -> Path:
    base = root()
    path = (base / relative).resolve()
    if base not in path.parents:  # paths are ours, but a file row must never point outside its root
        raise ValueError(f"refusing a path outside {base}")
    return path


def job_dir(institution_id: int, name) -> Path:
    """<EXPORT_DIR>/<institution>/<name>: a job's own directory, or "uploads"."""
    path = root() / str(institution_id) / str(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def relative(path: Path) -> str:
    return str(path.resolve().relative_to(root()))


def remove(relative_path: str) -> bool:
    try:
        resolve(relative_path).unlink()
        return True
    except FileNotFoundError:
        return False


def remove_partials(directory: Path):
    """Half-written files of earlier attempts (a killed worker leaves its .tmp behind)."""
    for leftover in directory.glob("*.tmp"):
        leftover.unlink(missing_ok=True)


def publish(tmp: Path, final: Path):
    """Make a finished file visible under its final name in one step (rename is atomic)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
