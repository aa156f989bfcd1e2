"""One ``run_batch`` call's bookkeeping: ``Batch.plan`` turns inputs into tasks (or skips, or failures) from the
folder's manifest, ``Batch.record`` writes each finished task's row and keeps the report (results.csv paced, ``Batch.flush``); a
disk that refuses a write stops the batch, and ``Batch.end`` writes the rows still pending where the disk takes
them."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from selfseg import datasets, io, volumes
from selfseg.batch_inputs import input_stem
from selfseg.checks import one_line
from selfseg.runner.manifest import Manifest, cell, decide, read_manifest, settings_row, typed
from selfseg.runner.scoring import BatchReport
from selfseg.runner.task import Outcome, Task, fingerprint, output_paths, overlay_row
from selfseg.settings import FitSettings, MaskRule

__all__ = ["Batch", "clear_leftovers", "record_failure"]


def _remove_temporaries(out_dir: Path) -> None:
    """Remove the temporary files (``io.is_temporary``) in ``out_dir``: a killed run's, or those a worker left when
    it died in a write (its node lost)."""
    if out_dir.is_dir():
        for stale in out_dir.iterdir():
            if io.is_temporary(stale.name):
                stale.unlink(missing_ok=True)


def record_failure(report: BatchReport, out_dir: Path, path: Path, reason: str) -> None:
    """Report a failed input on stderr, in ``report.failures`` and in ``out_dir/failures.csv`` (sorted: the same file
    in any finishing order)."""
    tqdm.write(one_line(f"error: {path}: {reason}"), file=sys.stderr)
    report.failures.append((str(path), reason))
    io.write_csv(out_dir / "failures.csv", ("image", "reason"), sorted(report.failures))


def clear_leftovers(out_dir: Path) -> None:
    """Remove the previous run's failures.csv and the temporary files of a killed run."""
    (out_dir / "failures.csv").unlink(missing_ok=True)
    _remove_temporaries(out_dir)


@dataclass
class Batch:
    """One ``run_batch`` call: what every input is segmented with, the folder's manifest, and what happened."""

    out_dir: Path
    settings: FitSettings
    rule: MaskRule
    seed: int
    axis: int | None
    resume: bool
    ground_truth: str | os.PathLike | None
    truths: dict[str, Path]
    manifest: Manifest
    on_result: Callable[[dict], None] | None
    report: BatchReport = field(default_factory=BatchReport)
    row_values: dict[bool, dict] = field(default_factory=dict)  # volume? -> the settings' row values
    adopted: bool = False  # whether a row was taken from the files of its input (``Manifest.adopt``), not yet saved

    def __post_init__(self) -> None:
        for volume in (False, True):
            self.row_values[volume] = settings_row(self.settings, self.rule, seed=self.seed,
                                                   axis=self.axis if volume else None)

    @classmethod
    def open(cls, out_dir: str | os.PathLike, settings: FitSettings, rule: MaskRule, *, seed: int,
             axis: int | None, resume: bool, ground_truth: str | os.PathLike | None,
             on_result: Callable[[dict], None] | None) -> Batch:
        """A batch into ``out_dir``: the folder checked (``io.check_folder``, an ``io.WriteError`` if unusable), its
        manifest read, the leftovers of a killed run removed."""
        out_dir = io.check_folder(out_dir)
        truths = datasets.load_masks(ground_truth) if rule.foreground == "oracle" else {}
        manifest = read_manifest(out_dir / "results.csv")
        clear_leftovers(out_dir)
        return cls(out_dir, settings, rule, seed, axis, resume, ground_truth, truths, manifest, on_result)

    def fail(self, path: Path, reason: str) -> None:
        """Report a failed input (``record_failure``)."""
        record_failure(self.report, self.out_dir, path, reason)

    def plan(self, path: Path) -> Task | None:
        """The task of one input; None if it failed or is skipped (both recorded). With resume, the row its files
        carry is taken where the manifest lacks it (``Manifest.adopt``; ``save_adopted`` writes them)."""
        stem, volume = input_stem(path), volumes.is_volume(path)
        outputs = output_paths(self.out_dir, stem, volume)
        try:
            for output in outputs:
                io.check_name(output)
            digest, fitted_seed = fingerprint(path, self.seed)
            if self.rule.foreground == "oracle" and stem not in self.truths:
                raise ValueError(f"no ground-truth mask in {self.ground_truth}")
        except (ValueError, io.WriteError) as err:  # a name too long for its outputs
            self.fail(path, err.reason if isinstance(err, io.ImageReadError) else str(err))
            return None
        wanted = {name: cell(value) for name, value in self.row_values[volume].items()} | {"input_sha256": digest}
        if self.resume and self.manifest.adopt(stem, overlay_row(outputs, volume, path, stem)):
            self.adopted = True
        previous = self.manifest.current.get(stem) if self.resume else None
        action = decide(previous, wanted, outputs)
        if action == "skip":
            self.report.skipped.append(stem)
            return None
        kept = typed(previous) if previous is not None and action == "rechoose" else {}
        row = {**kept, **self.row_values[volume], "image": stem, "input": str(path), "input_sha256": digest,
               "axis": wanted["axis"]}
        return Task(path, outputs, volume, action, fitted_seed, self.settings, self.rule, self.truths.get(stem),
                    self.axis if volume else None, row)

    def save_adopted(self) -> None:
        """Write the manifest once if ``plan`` took rows from the files of their inputs."""
        if self.adopted:
            self.manifest.save()
            self.adopted = False

    def image_rows(self, paths: list[Path]) -> list[dict[str, str]]:
        """The manifest rows of the 2-D images among ``paths`` whose files are complete (for the study stage), each
        named by its input's stem and path, whatever its cells say (the study stage names its files after them)."""
        rows = []
        for path in paths:
            stem = input_stem(path)
            row = self.manifest.rows.get(stem)
            complete = all(output.exists() for output in output_paths(self.out_dir, stem, False))
            if row is not None and row["kind"] == "image" and complete:
                rows.append({**row, "image": stem, "input": str(path)})
        return rows

    def record(self, task: Task, outcome: Outcome) -> None:
        """Record one finished task: its row in the report and the manifest, or its failure; raise the
        ``io.WriteError`` of a disk that refused its files."""
        row, reason = outcome
        if isinstance(reason, io.WriteError):
            raise reason
        if reason is not None:
            self.fail(task.path, reason)
            return
        self.report.results.append(row)
        self.manifest.write(row["image"], row)
        if self.on_result is not None:
            self.on_result(row)

    def flush(self) -> None:
        """Write results.csv if rows came since its last write (``Manifest.write`` paces its writes); ``io.WriteError``
        if the disk refuses."""
        self.manifest.flush()

    def end(self) -> None:
        """At the end of the run, whatever ended it: the rows not yet written go into results.csv, and the temporary
        files that workers which died in a write left are removed (a task run again writes its own); a disk that
        refuses leaves both to the next run (which takes the rows from the inputs' files, ``Manifest.adopt``)."""
        with contextlib.suppress(OSError):
            self.manifest.flush()
        with contextlib.suppress(OSError):
            _remove_temporaries(self.out_dir)
