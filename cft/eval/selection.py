"""Scoring the weights saved during training: checkpoint selection (eval.select_checkpoint) over
complete checkpoints and weights-only snapshots (method.snapshot_steps), training dynamics
(eval.dynamics) over the snapshots, then deleting the snapshots nothing needs any more.

The official run saved weights every 2 steps and kept the best on MATH-500; 49 snapshots of a
7B model are ~750 GB, so once every snapshot is scored only the selected one stays. Its scores
outlive it: each is appended to eval/snapshot_scores.jsonl under a key of the weights' COMPLETE
marker (step, resume key, time written) and everything that decides the score (benchmark, limit,
generation settings, prompt protocol, checker). A re-run (a crash after the pruning, a changed
final-eval setting) reads a deleted snapshot's score from there; one whose scoring settings
changed cannot be re-scored and says so.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cft.benchmarks import get_benchmark
from cft.io import read_json, write_json
from cft.paths import RunPaths
from cft.store import ResultStore


@dataclass
class Saved:
    """One set of weights training left: a snapshot (step-N) or a checkpoint (checkpoint-N);
    `present` False for a snapshot deleted after an earlier run scored it."""
    step: int
    kind: str
    path: Path
    marker: dict
    present: bool = True
    scores: dict = field(default_factory=dict)  # (purpose, benchmark) -> {"accuracy", "n"}

    @property
    def name(self) -> str:
        return f"{'step' if self.kind == 'snapshot' else 'checkpoint'}-{self.step}"


def saved_weights(paths: RunPaths, store: ResultStore) -> list[Saved]:
    """Every complete snapshot and checkpoint by step (a snapshot wins a step both have: the
    same weights, already in the dtype generation loads), plus the snapshots of this training
    run that an earlier eval scored and deleted (read from the scores store)."""
    from cft.checkpoints import MARKER, checkpoints, is_complete, snapshots

    present = [Saved(step, "snapshot", p, read_json(p / MARKER)) for step, p in snapshots(paths.snapshots)]
    present += [Saved(int(c.name.split("-")[1]), "checkpoint", c, read_json(c / MARKER))
                for c in checkpoints(paths.checkpoints) if is_complete(c)]
    rows = [r for r in store.rows() if r["kind"] == "snapshot"]
    # this training run's: the resume key of the weights on disk (else of the last scored)
    keys = {s.marker.get("resume_key") for s in present} or {r["weights"].get("resume_key") for r in rows[-1:]}
    gone: dict[int, Saved] = {}
    for row in rows:
        if row["weights"].get("resume_key") in keys and not paths.snapshot(row["step"]).exists():
            gone[row["step"]] = Saved(row["step"], "snapshot", paths.snapshot(row["step"]), row["weights"],
                                      present=False)
    by_step: dict[int, Saved] = {}
    for s in sorted([*present, *gone.values()], key=lambda s: s.kind != "snapshot"):
        by_step.setdefault(s.step, s)
    return [by_step[k] for k in sorted(by_step)]


def scoring_settings(cfg, benchmarks: list[str], limit) -> dict:
    """What decides a score besides the weights: as a stored generation's key without the model
    identity (cft.eval.sampling), plus the benchmarks, how many items, the protocol, the checker."""
    from cft.eval.sampling import Sampling, generation_settings
    from cft.templates import eval_protocol

    settings = generation_settings(cfg, None, None, Sampling.of(cfg.eval))
    for k in ("model", "tokenizer"):
        settings.pop(k)
    return {**settings, "benchmarks": list(benchmarks), "limit": limit, "checker": cfg.eval.checker,
            "protocol": eval_protocol(cfg.eval, cfg.model).to_dict()}


def _key(weights: Saved, purpose: str, settings: dict) -> str:
    blob = json.dumps({"weights": weights.marker, "purpose": purpose, "settings": settings}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def score(cfg, paths: RunPaths, weights: Saved, purpose: str, benchmarks: list[str], limit, store: ResultStore,
          evaluate, tokenizer_path: str) -> dict:
    """{benchmark: {accuracy, n}} of `weights` (evaluated now, resuming stored generations, or
    read back for a deleted snapshot), recorded in the scores store."""
    from cft.models import generation_weights

    settings = scoring_settings(cfg, benchmarks, limit)
    key = _key(weights, purpose, settings)
    if not weights.present:
        row = store.get(key)
        if row is None:
            raise FileNotFoundError(
                f"snapshot {weights.name} was deleted after an earlier eval scored it, under other settings than "
                f"these ({purpose}: {settings}); {paths.snapshot_scores} has no score for these. Restore the "
                f"eval settings of that run, or train again (delete {paths.snapshots} and the train stage's marker)")
        return row["scores"]
    path = generation_weights(weights.path, cfg)  # an adapter snapshot/checkpoint: merged into the base
    results = evaluate(cfg, str(path), paths.eval_dir / purpose / weights.name, benchmarks=benchmarks,
                       limit=limit, tokenizer_path=tokenizer_path)
    scores = {get_benchmark(b).name: {"accuracy": results[get_benchmark(b).name]["accuracy"],
                                      "n": results[get_benchmark(b).name]["n"]} for b in benchmarks}
    store.append({"key": key, "kind": weights.kind, "step": weights.step, "weights": weights.marker,
                  "purpose": purpose, "settings": settings, "scores": scores})
    return scores


def score_saved_weights(cfg, paths: RunPaths, tokenizer_path: str, evaluate, close_generator) -> dict:
    """Checkpoint selection and training dynamics as the config asks; then the snapshots are
    deleted but for the selected one. Returns {"selection": eval/selection.json's content or
    None, "model_path": the selected weights as generation loads them, or None}."""
    from cft.checkpoints import snapshots
    from cft.models import MERGED, generation_weights, is_adapter

    select, dynamics = bool(cfg.eval.select_checkpoint), list(cfg.eval.get("dynamics") or [])
    with ResultStore(paths.snapshot_scores) as store:
        found = saved_weights(paths, store)
        if select and not found:
            raise FileNotFoundError(f"eval.select_checkpoint=true but no complete checkpoints in {paths.checkpoints} "
                                    f"nor snapshots in {paths.snapshots}")
        if dynamics and not any(w.kind == "snapshot" for w in found):
            raise FileNotFoundError(f"eval.dynamics={dynamics} scores weights-only snapshots, and {paths.snapshots} "
                                    "has none: train with method.snapshot_steps set (e.g. 10)")
        bench = get_benchmark(cfg.eval.select_benchmark).name
        for w in found:
            if select:
                w.scores["selection"] = score(cfg, paths, w, "selection", [bench], cfg.eval.select_limit, store,
                                              evaluate, tokenizer_path)
            if dynamics and w.kind == "snapshot":
                w.scores["dynamics"] = score(cfg, paths, w, "dynamics", dynamics, cfg.eval.limit, store,
                                             evaluate, tokenizer_path)
            if w.present and w.kind == "snapshot" and is_adapter(w.path):  # one merged copy on disk at a time
                close_generator()
                shutil.rmtree(w.path / MERGED, ignore_errors=True)
    close_generator()
    best = max((w for w in found if select), key=lambda w: (w.scores["selection"][bench]["accuracy"], w.step),
               default=None)
    if dynamics:
        snaps = [w for w in found if w.kind == "snapshot"]
        write_json(paths.dynamics, {"benchmarks": [get_benchmark(b).name for b in dynamics], "limit": cfg.eval.limit,
                                    "steps": {str(w.step): w.scores["dynamics"] for w in snaps}})
    for step, path in snapshots(paths.snapshots):  # scored: only the selected one stays
        if best is None or (best.kind, best.step) != ("snapshot", step):
            shutil.rmtree(path)
    if not select:
        return {"selection": None, "model_path": None}
    model_path = generation_weights(best.path, cfg)
    curve = [{"step": w.step, "kind": w.kind, "path": str(w.path), "accuracy": w.scores["selection"][bench]["accuracy"],
              "n": w.scores["selection"][bench]["n"], "kept": w.path.exists()} for w in found]
    selection = {"benchmark": bench, "limit": cfg.eval.select_limit,
                 "n_checkpoints": len(curve), "n_snapshots": sum(w.kind == "snapshot" for w in found),
                 "curve": curve, "best": {**next(c for c in curve if c["step"] == best.step), "path": model_path}}
    write_json(paths.selection, selection)
    return {"selection": selection, "model_path": model_path}
