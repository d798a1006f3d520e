"""A sweep's report without a second command: a Hydra callback (conf/config.yaml hydra.callbacks)
that writes <sweep dir>/report/ (cft.report.__main__.build_report) as the jobs finish.

Hydra calls `on_multirun_end` only when every job succeeded: its sweepers re-raise the first
failed job (BasicSweeper reads each JobReturn.return_value; submitit's launcher raises from
job.results()). So the report is also rebuilt at the end of each job, failed ones included
(`on_job_end` runs after the task function, whatever it raised), by the job's rank 0: the last
job to end leaves the table of the whole sweep, failed rows and all. Hydra turns an exception
in a callback into a warning, so `on_multirun_start` can only warn of bad report settings before
any job is submitted; the pipeline refuses them at each job's start (cft.pipeline.run calls
`check_settings` beside validate), before any stage.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def check_settings(report: DictConfig) -> None:
    """report.paper names a table of the paper; report.columns are benchmark names."""
    from cft.report import paper
    from cft.report.tables import DISPLAY

    if report.get("paper"):
        paper.load(report.paper)
    columns = report.get("columns")
    if columns is not None and not all(isinstance(c, str) and c for c in columns):
        raise ValueError(f"report.columns={OmegaConf.to_container(columns)}: expected benchmark names")
    unknown = [c for c in columns or [] if c not in DISPLAY]
    if unknown:
        log.warning("report.columns names %s, which no paper table reports: the column stays empty unless "
                    "a run evaluates it", unknown)


class SweepReportCallback(Callback):
    """Writes the sweep's table and report after each job and after the sweep (--multirun only)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_settings(config.report)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        from cft import distributed

        if config.hydra.mode != RunMode.MULTIRUN or not distributed.is_main():
            return
        self._build(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._build(Path(config.hydra.sweep.dir))

    @staticmethod
    def _build(sweep_dir: Path) -> None:
        """A report that cannot be built is logged with the command that retries it; it never
        turns the sweep's (or a job's) outcome into a failure."""
        from cft.report.__main__ import build_report

        try:
            written = build_report(sweep_dir)["written"]
        except Exception as e:  # noqa: BLE001 - the runs are done; the report must not undo them
            log.error("sweep report not written (%s: %s); retry with: python -m cft.report %s",
                      type(e).__name__, e, sweep_dir)
            return
        log.info("sweep report: %s", written.get("md", sweep_dir / "report"))
