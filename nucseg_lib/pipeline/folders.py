"""The folders nucseg writes, and the rule that keeps the user's files safe: never delete or overwrite
a file that nucseg did not write.

- A **run folder** (the workflow's ``out=``, a notebook's ``out_dir``) may not be the repository,
  a folder above it, one of its source folders (``notebooks/``, ``nucseg_lib/``, ...) or the
  published study (``reference/``): :func:`check_run_folder`.
- A folder that a command **replaces as a whole** (``runner publish --to``, an exported model,
  ``runner publish-model --to``) is replaced only when it is empty or carries the marker file
  that the command wrote there (:func:`replace_folder`); a folder of the user's (a thesis with
  ``chapter1.tex``) is refused with an error naming it, and nothing in it is touched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: nucseg_lib/pipeline/folders.py -> .
REFERENCE = REPO / "reference"
# the repository's own folders: a run written into one of them would overwrite its sources (notebooks/ holds
# the notebooks a run executes, and a run's executed copies go to <out>/notebooks/)
SOURCE_FOLDERS = (
    "notebooks",
    "nucseg_lib",
    "book",
    "_static",
    "workflow",
    "tests",
    "models",
    "benchmarks",
    "tools",
    ".git",
)


class FolderError(ValueError):
    """A folder nucseg would write into is not one it may write into; the message names it and says why."""


def check_run_folder(folder) -> Path:
    """``folder`` (resolved) when a run may write into it, else :class:`FolderError`.

    Refused: the repository's root or a folder above it (``out=.``: the run's ``notebooks/`` would be the
    repository's own notebooks), a folder inside one of :data:`SOURCE_FOLDERS`, and ``reference/`` or a
    folder inside it (the published study changes only through ``python -m nucseg_lib.pipeline.runner publish``).
    """
    folder = Path(folder).resolve()
    repo = REPO.resolve()
    if folder == repo or folder in repo.parents:
        raise FolderError(
            f"{folder} is the repository or a folder above it: a run there would write over the repository's own "
            f"notebooks/ and results; run into a folder of its own, e.g. runs/my-run"
        )
    if REFERENCE.resolve() in [folder, *folder.parents]:
        raise FolderError(
            f"{folder} is inside reference/: run into another folder and use 'python -m nucseg_lib.pipeline.runner "
            f"publish' to replace the reference run"
        )
    for name in SOURCE_FOLDERS:
        if (repo / name) in [folder, *folder.parents]:
            raise FolderError(
                f"{folder} is inside the repository's {name}/ folder, which holds its sources; run into a folder "
                f"of its own, e.g. runs/my-run"
            )
    return folder


def foreign_files(folder, marker: str) -> list[Path]:
    """The entries of ``folder`` that say it is not ours: all of them when it lacks ``marker``, none when it
    has it (or does not exist, or is empty)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    if not folder.is_dir():
        return [folder]
    if (folder / marker).is_file():
        return []
    return sorted(folder.iterdir())


def check_replaceable(target, marker: str, what: str) -> None:
    """:class:`FolderError` naming ``target`` and some of its files when it is a folder (or file) that
    nucseg did not write; a command calls it before any work, and :func:`replace_folder` again."""
    foreign = foreign_files(target, marker)
    if foreign:
        names = ", ".join(p.name for p in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FolderError(
            f"{what} {target}: the folder exists and holds files nucseg did not write ({names}); nothing was "
            f"changed. Give an empty or new folder (a folder nucseg wrote carries {marker})"
        )


def replace_folder(stage, target, marker: str, what: str) -> Path:
    """Move the complete folder ``stage`` to ``target``, replacing an earlier one that ``marker`` says is ours.

    ``stage`` must hold ``marker``. ``target`` is replaced only when it does not exist, is empty, or holds
    ``marker``; otherwise :class:`FolderError` names ``target`` and some of its files, ``stage`` is removed
    and ``target`` is left as it was. The swap goes through ``.<target>.old`` beside it, so an
    interruption leaves either the old folder or the new one, never a mix. ``what`` names the command
    in the error (``'runner publish --to'``).
    """
    stage, target = Path(stage), Path(target)
    if not (stage / marker).is_file():
        raise FolderError(f"{stage}: no {marker}; a folder nucseg replaces must carry its marker")
    try:
        check_replaceable(target, marker, what)
    except FolderError:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(stage, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
