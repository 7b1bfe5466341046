"""A run's claim on its output folder: a fresh run does not replace a previous one by accident, and two runs
never write into one folder at once (a lock held while the run lasts, which a killed run releases too)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import UserError
from .collectives import barrier

LOCK_FILE = "_mtl_hf.lock"  # "_": left out of Hub uploads, like scratch files


def _try_lock(file: IO) -> bool:
    """Takes the kernel's exclusive lock on `file` without waiting; False when another process holds it."""
    if os.name == "nt":
        import msvcrt

        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike, *, is_main_process: bool = True) -> Iterator[None]:
    """Creates `output_dir` and holds its lock while the block runs, so that a second run into the same folder
    stops at once, naming the first one's process id. Only the main process takes it."""
    if not is_main_process:
        yield
        return
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held open while the run lasts)
    except OSError as error:
        raise UserError(
            f"output_dir {folder} cannot be written ({error.strerror or error}): choose another --output_dir"
        ) from None
    if not _try_lock(lock):
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise UserError(
            f"output_dir {folder} is in use by another run (pid {owner}): wait for it to end, or "
            "choose another --output_dir"
        )
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    try:
        yield
    finally:
        lock.close()  # releases the lock


def claim_output_dir(output_dir: str | os.PathLike, *, overwrite: bool, is_main_process: bool = True) -> None:
    """A fresh run refuses an `output_dir` holding a previous run's checkpoints or model, unless told to
    `overwrite` it (its checkpoints are then deleted, so that a later resume cannot pick up the old run)."""
    folder = Path(output_dir)
    checkpoints = sorted(folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")) if folder.is_dir() else []
    saved_model = (folder / "config.json").is_file()
    if not (checkpoints or saved_model):
        return
    if not overwrite:
        if checkpoints:
            found = f"checkpoints ({', '.join(path.name for path in checkpoints)})"
            fixes = "resume it with --resume_from_checkpoint true, choose another --output_dir,"
        else:
            found, fixes = "saved model", "choose another --output_dir,"
        raise UserError(
            f"output_dir {folder} holds a previous run's {found}: {fixes} or pass --overwrite_output_dir true to "
            "replace it"
        )
    if is_main_process:
        for checkpoint in checkpoints:
            shutil.rmtree(checkpoint)
    barrier()


__all__ = ["LOCK_FILE", "claim_output_dir", "output_dir_lock"]
