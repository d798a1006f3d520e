"""The run-directory layout, in one place. Stages read and write only through these paths."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> "RunPaths":
        return cls(Path(run_dir).resolve())

    # --- bookkeeping -------------------------------------------------------------------
    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    def stage_done(self, stage: str) -> Path:
        """Marker written last by a stage: its outputs are complete for the recorded config."""
        return self.stages_dir / f"{stage}.done.json"

    def stage_outputs(self, stage: str) -> list[Path]:
        """The files a finished stage leaves for later stages and the user; its marker records
        their sizes and hashes, and the stage is skipped only while they are intact. Resume state
        is not among them (teacher cache and ledger, eval progress, checkpoints, locks): it is
        meant to change, and a damaged line there is repaired or redone by the stage itself.
        Nor is the Trainer's pickled `training_args.bin` beside the weights: nothing reads it,
        and it differs from one save to the next."""
        where = {"data": [self.records.parent],
                 "critique": [self.critiques, self.rejects, self.critique_summary],
                 "train": [self.final_model, self.train_examples],
                 "eval": [self.eval_dir],
                 "report": [self.results, self.results_md, self.dynamics_plot]}[stage]
        files = []
        for place in where:
            if place.is_dir():
                files += sorted(p for p in place.rglob("*") if p.is_file() and not _resume_state(p)
                                and p.name != "training_args.bin")
            elif place.is_file():
                files.append(place)
        return files

    @property
    def run_lock(self) -> Path:
        """Held (flock) by the process running the pipeline here, whose pid it holds: one writer
        per run directory."""
        return self.root / "run.lock"

    @property
    def resolved_config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_info(self) -> Path:
        return self.root / "run_info.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def provenance(self) -> Path:
        """What makes the run's numbers comparable (cft.provenance): versions, hardware, engine,
        sampling, hashes of prompts, benchmarks, weights and grader."""
        return self.root / "provenance.json"

    # --- data ------------------------------------------------------------------------------
    @property
    def records(self) -> Path:
        return self.root / "data" / "records.jsonl"

    @property
    def data_summary(self) -> Path:
        return self.root / "data" / "summary.json"

    @property
    def decontam_report(self) -> Path:
        return self.root / "data" / "decontamination.json"

    # --- critique --------------------------------------------------------------------------
    @property
    def critique_dir(self) -> Path:
        return self.root / "critique"

    @property
    def critique_cache(self) -> Path:
        """Append-only shard of raw teacher outputs, keyed by request hash (resumable)."""
        return self.critique_dir / "cache.jsonl"

    @property
    def critique_ledger(self) -> Path:
        return self.critique_dir / "ledger.jsonl"

    @property
    def critique_batches(self) -> Path:
        """Batch API log (teacher.mode=batch): uploaded files, created and collected batches."""
        return self.critique_dir / "batches.jsonl"

    @property
    def critiques(self) -> Path:
        return self.critique_dir / "critiques.jsonl"

    @property
    def rejects(self) -> Path:
        return self.critique_dir / "rejects.jsonl"

    @property
    def critique_summary(self) -> Path:
        return self.critique_dir / "summary.json"

    # --- train -----------------------------------------------------------------------------
    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def train_examples(self) -> Path:
        return self.train_dir / "examples.jsonl"

    @property
    def tokenized_dir(self) -> Path:
        return self.train_dir / "tokenized"

    def tokenized(self, key: str) -> Path:
        """The train stage's examples tokenized once (cft/train/dataset.py): examples.jsonl, the
        memory-mapped Arrow dataset every rank reads (data/), and meta.json, written last. `key`
        is what the token ids depend on; a run with another key builds its own and drops this."""
        return self.tokenized_dir / key

    @property
    def checkpoints(self) -> Path:
        return self.train_dir / "checkpoints"

    @property
    def snapshots(self) -> Path:
        """Weights-only snapshots (method.snapshot_steps): step-N/ holds the weights generation
        loads (or the adapter), config and tokenizer, and a COMPLETE marker written last; a
        step-N.tmp/ is a snapshot being written. The eval stage scores them and keeps the selected one."""
        return self.train_dir / "snapshots"

    def snapshot(self, step: int) -> Path:
        return self.snapshots / f"step-{step}"

    @property
    def deepspeed_json(self) -> Path:
        """The DeepSpeed config the Trainer ran with (derived values filled in)."""
        return self.train_dir / "deepspeed.json"

    @property
    def final_model(self) -> Path:
        """HF-format weights (safetensors) + tokenizer, loadable by from_pretrained and vLLM."""
        return self.root / "model"

    # --- eval / report ---------------------------------------------------------------------
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_samples(self, benchmark: str) -> Path:
        return self.eval_dir / f"{benchmark}.jsonl"

    @property
    def eval_results(self) -> Path:
        return self.eval_dir / "results.json"

    @property
    def selection(self) -> Path:
        """Checkpoint selection: {benchmark, curve: [{step, kind, path, accuracy, kept}], best}."""
        return self.eval_dir / "selection.json"

    @property
    def snapshot_scores(self) -> Path:
        """Every score of a snapshot or checkpoint (selection and dynamics), keyed by the weights'
        COMPLETE marker and the scoring settings: a re-run reads the scores of snapshots deleted
        after selection from here."""
        return self.eval_dir / "snapshot_scores.jsonl"

    @property
    def dynamics(self) -> Path:
        """Training dynamics (eval.dynamics): {benchmarks, limit, steps: {step: {benchmark: {accuracy, n}}}}."""
        return self.eval_dir / "dynamics.json"

    @property
    def dynamics_plot(self) -> Path:
        """The run's accuracy-over-steps plot (the report stage draws it from dynamics.json)."""
        return self.root / "training_dynamics.png"

    @property
    def critic_metrics(self) -> Path:
        return self.eval_dir / "critic.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def results_md(self) -> Path:
        return self.root / "results.md"


def _resume_state(path: Path) -> bool:
    """Inside a stage's folder: a file the stage appends to or rewrites when it resumes (eval
    progress stores, their locks and torn-tail side files), or a temp file being written."""
    return path.name.endswith((".progress.jsonl", ".lock", ".torn", ".tmp"))
