"""The run directory: the contract between training and everything else.

```
runs/<name>/
  config.json        resolved configuration + versions + device
  history.csv        one row per epoch
  soft_labels.npz    one C x C matrix per soft-label update, named stage_1 ...
  checkpoints/last.pt     everything needed to resume (atomic write)
  checkpoints/stage_K.pt  model weights at the end of stage K
  summary.json       final metrics and timings
  tensorboard/       event files, when trained with --log tensorboard (a mirror; the files above are the truth)
```
`config.json` and `summary.json` carry the run-directory `format` (RUN_FORMAT; the schema is in
docs/ARCHITECTURE.md); a reader refuses a format newer than it knows, naming it.

Every file is written atomically (temporary file in the same folder, fsync,
rename), so a crash never leaves a half-written file (a stale temporary file
is removed when the next trainer locks the folder). Checkpoints and soft
labels are read without executing code (`torch.load(weights_only=True)`,
`np.load(allow_pickle=False)`).

The folder is the tool's own: training writes only into a folder it created, an empty one, or one that holds a
run (the marker file `.colam_run`, or a `config.json` written by training); it takes the lock (`.lock`,
`filelock`) before it reads anything there; it never reads or writes through a symbolic link inside the folder
(`.lock`, `checkpoints/` and every file of the contract are checked) and never deletes a file it did not write.

Fault injection (tests only): `COLAM_FAULT=POINT[:N]` makes the process
SIGKILL itself the N-th time (default 1) it reaches POINT, one of
`FAULT_POINTS`: `batch` (after a training step), `eval_pass` (inside the
stage-end soft-label pass, after its first batch), `stage_files` (after the
stage's soft labels and stage checkpoint are written, before last.pt) and
`checkpoint` (halfway through writing a checkpoint's temporary file).
Unset, the check is one comparison with None.
"""
from ..errors import RunError  # noqa: F401 - the error of this module, importable from it
from .layout import (
    CHECKPOINT_DIR, CONFIG_FILE, FINGERPRINT_EXCLUDED, HISTORY_COLUMNS, HISTORY_FILE, LAST_CHECKPOINT,
    LOCK_FILE, MARKER_FILE, MLFLOW_ARTIFACTS, MLFLOW_DB, REPLACED_PREFIX, RUN_FILES, RUN_FORMAT,
    SOFT_LABELS_FILE, SUMMARY_FILE, TENSORBOARD_DIR, check_label_matrix, dataset_kwargs, describe_difference,
    fingerprint_diff, is_stage_key, load_soft_label_matrix, own_entry, regular_file, split_soft_label_spec,
    stage_key, stage_number, stage_numbers,
)
from .files import (
    FAULT, FAULT_POINTS, atomic_torch_save, atomic_write_bytes, atomic_write_text, check_fault_spec,
    check_format, fault_point, load_checkpoint, load_json, program_name, read_json, resume_command,
    source_commit, versions,
)
from .directory import (
    RunDir,
)
from .reader import (
    Run, is_run_dir, load_run, load_runs,
)

__all__ = [
    "CHECKPOINT_DIR", "CONFIG_FILE", "FAULT", "FAULT_POINTS", "FINGERPRINT_EXCLUDED", "HISTORY_COLUMNS",
    "HISTORY_FILE", "LAST_CHECKPOINT", "LOCK_FILE", "MARKER_FILE", "MLFLOW_ARTIFACTS", "MLFLOW_DB",
    "REPLACED_PREFIX", "RUN_FILES", "RUN_FORMAT", "Run", "RunDir", "SOFT_LABELS_FILE", "SUMMARY_FILE",
    "TENSORBOARD_DIR", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text", "check_fault_spec",
    "check_format", "check_label_matrix", "dataset_kwargs", "describe_difference", "fault_point",
    "fingerprint_diff", "is_run_dir", "is_stage_key", "load_checkpoint", "load_json", "load_run", "load_runs",
    "load_soft_label_matrix", "own_entry", "program_name", "read_json", "regular_file", "resume_command",
    "source_commit", "split_soft_label_spec", "stage_key", "stage_number", "stage_numbers", "versions",
]
