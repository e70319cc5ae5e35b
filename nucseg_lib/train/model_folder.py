"""The format of a trained-model folder, and reading and writing it safely: one module that training, StarDist,
the workflow's jobs, ``nucseg predict`` and the exports share.

A U-Net model folder holds ``config.json`` (the training configuration), ``weights.pt`` (the final
weights; present only when training finished), ``history.csv``, ``checkpoint.pt`` (resume state;
removed when training finishes), optionally ``snapshots/step-NNNNNN.pt`` + ``.json``, and ``diverged.json``
when training produced a non-finite loss (:class:`TrainingDiverged`). Every file is written atomically (a temporary file,
then ``os.replace``), so an interruption leaves the old file or the new one, never half of one.
Every read error is a :class:`ModelFolderError` naming the file; weights are loaded with
``weights_only=True``, so a crafted file cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# torch and pandas are imported where they are used: the workflow's jobs record their machine and write JSON with
# this module before their notebook's kernel imports them (about 3 s and 0.4 s of a 2-core CPU that a job need not
# spend twice)


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or validation score.

    The model folder then holds ``diverged.json`` (epoch, step, the last losses) and no
    ``weights.pt``: a diverged model is never cached as a trained one. Asking for the same
    configuration again raises this error again without retraining (training is
    deterministic for a configuration, so it would diverge again).
    """

    def __init__(self, folder: Path, record: dict):
        self.folder, self.record = Path(folder), record
        super().__init__(
            f"{folder}: training diverged at epoch {record['epoch']}, step {record['step']} "
            f"({record['what']}); recorded in diverged.json, no weights saved"
        )


class ModelFolderError(RuntimeError):
    """A model folder's file is unreadable, corrupt or belongs to another configuration; names the file."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def torch_load(path: Path, device):
    """``torch.load`` with ``weights_only=True`` (a crafted file cannot run code); errors name the file."""
    import torch

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, or a pickle that is not plain tensors and numbers
        raise ModelFolderError(
            f"{path}: cannot load ({type(exc).__name__}: {str(exc)[:300]}); delete the file to "
            f"start that training again"
        ) from exc


def save_atomic(obj, path: Path):
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def check_snapshot_steps(steps, steps_per_epoch: int, epochs: int) -> set[int]:
    """The snapshot step counts as a set; ValueError unless each is a whole number of epochs within the run."""
    steps = {int(n) for n in steps}
    off = sorted(n for n in steps if n % steps_per_epoch or not 0 < n <= epochs * steps_per_epoch)
    if off:
        raise ValueError(
            f"snapshot steps {off} are not multiples of steps_per_epoch ({steps_per_epoch}) "
            f"within the {epochs * steps_per_epoch} training steps"
        )
    return steps


def write_json_atomic(obj, path: Path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def load_trained(folder, device=None):
    """Load a trained-model folder: returns ``(model in eval mode, config dict, history DataFrame)``.

    Errors name the file: a missing ``weights.pt`` (training unfinished), an unreadable
    ``config.json``, weights that are corrupt or do not fit the configuration, a broken
    ``history.csv``.
    """
    folder = Path(folder)
    if (folder / "diverged.json").exists():
        raise TrainingDiverged(folder, read_json(folder / "diverged.json"))
    if not (folder / "weights.pt").is_file():
        raise FileNotFoundError(f"{folder}: no weights.pt (training did not finish; run train() to resume)")
    import pandas as pd

    model, cfg = model_with_weights(folder, folder / "weights.pt", device)
    hist = pd.DataFrame()
    if (folder / "history.csv").exists():
        try:
            hist = pd.read_csv(folder / "history.csv")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ModelFolderError(f"{folder / 'history.csv'}: cannot read ({type(exc).__name__}: {exc})") from exc
    return model, cfg, hist


def snapshots(folder) -> pd.DataFrame:
    """The snapshots of a model folder, by step: ``steps, train_seconds, val_dice, precision, weights``."""
    import pandas as pd

    rows = [
        {**read_json(j), "weights": j.with_suffix(".pt")}
        for j in sorted((Path(folder) / "snapshots").glob("step-[0-9][0-9][0-9][0-9][0-9][0-9].json"))
    ]
    return pd.DataFrame(rows, columns=["steps", "train_seconds", "val_dice", "precision", "weights"])


def load_snapshot(folder, weights, device=None):
    """The model of ``folder`` with the snapshot ``weights`` (a path from :func:`snapshots`), in eval mode."""
    return model_with_weights(Path(folder), Path(weights), device)[0]


def model_with_weights(folder: Path, weights: Path, device=None):
    """``(model in eval mode, config dict)``: the model of ``folder/config.json`` with ``weights`` loaded."""
    import torch

    from ..model import build_model, pick_device

    cfg = read_json(folder / "config.json")
    device = device or pick_device()
    try:
        model = build_model(cfg["out_channels"], "scratch", cfg["depth"], cfg["decoder_base"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(
            f"{folder / 'config.json'}: not a model configuration ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        model.load_state_dict(torch_load(weights, "cpu"))
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelFolderError(f"{weights}: weights do not fit the model of config.json ({str(exc)[:300]})") from exc
    model.to(device).to(memory_format=torch.channels_last).eval()
    model.precision = cfg.get("precision", "fp32")
    return model, cfg
