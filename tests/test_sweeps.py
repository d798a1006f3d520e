"""The paper's grids (conf/experiment/*.yaml) and the SLURM cluster configs compose, cell by cell.

No cluster needed: every cell of every grid is composed with Hydra's compose API exactly as the
sweeper would (its `hydra.sweeper.params`, parsed by Hydra's own override parser), validated
with the world size the cluster config gives it, and checked to land in a distinct run dir.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from cft.benchmarks import get_benchmark
from cft.config import compose_config
from cft.report.paper import load as paper_table
from cft.validation import validate
from helpers import ROOT, bind_user_benchmarks, cli, user_benchmarks

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# Jobs per grid: the paper's tables (v4 numbering; v2-* are tables of earlier versions) and the CPU grid.
PAPER_GRIDS = {"table2": 36, "table2-sft-gpt4o": 3, "table3": 5, "table4": 1, "table5": 4, "table6": 1,
               "table7": 1, "v2-table4": 2, "v2-figure2": 2, "champ-noisy-models": 8}
# Groups whose files write elsewhere (`# @package _global_`): no `<group>.name` to compare.
GLOBAL_GROUPS = ("weights", "+experiment/")


def grid_cells(experiment: str) -> list[list[str]]:
    """The overrides of each job `--multirun +experiment=<experiment>` launches."""
    raw = yaml.safe_load((ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text())
    params = (((raw.get("hydra") or {}).get("sweeper") or {}).get("params")) or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            if o.is_sweep_override() else [f"{o.get_key_element()}={o.get_value_element_as_str()}"]
            for o in parsed]
    return [list(cell) for cell in itertools.product(*axes)]


def test_every_paper_grid_has_a_recipe():
    assert set(PAPER_GRIDS) <= set(EXPERIMENTS)
    for name, n in PAPER_GRIDS.items():
        assert len(grid_cells(name)) == n, name


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_cell_composes_and_validates(compose, experiment, tmp_path):
    # CPU-sized grids go to CPU nodes; the GPU check is one command on one node, not a sweep.
    cluster = {"champ-noisy-models": "slurm-cpu", "one-shot-cft-cpu": "slurm-cpu",
               "gpu-check": "local"}.get(experiment, "slurm")
    parser = OverridesParser.create()
    run_names = set()
    files = user_benchmarks(tmp_path / "user-benchmarks")  # GPQA, MMLU-Pro: a user's copies
    for cell in grid_cells(experiment):
        cfg = compose([f"+experiment={experiment}", f"cluster={cluster}", *cell])
        if {"gpqa", "mmlu_pro"} & {get_benchmark(b).name for b in cfg.eval.benchmarks}:
            cfg = compose([f"+experiment={experiment}", f"cluster={cluster}", *cell,
                           bind_user_benchmarks(cfg.eval.benchmarks, files)])
        for override in parser.parse_overrides(cell):  # the swept value really reached the config
            key = override.get_key_element()
            if key.startswith(GLOBAL_GROUPS):
                continue
            group = "." not in key and OmegaConf.is_dict(cfg.get(key))  # `model=...`, not `seed=...`
            got = OmegaConf.select(cfg, f"{key}.name" if group else key)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert got == override.value(), (key, got)
        world = max(1, cfg.cluster.gpus_per_node) * cfg.cluster.nodes
        if cfg.method.sft_records:  # table9's mix reads the records of its data run (table9-acemath-data)
            Path(cfg.method.sft_records).parent.mkdir(parents=True, exist_ok=True)
            Path(cfg.method.sft_records).touch()
        validate(cfg, world_size=world)  # the global batch splits over the cluster's GPUs
        if "eval" in cfg.stages and experiment.startswith(("table", "v2-")):
            # the paper's protocol: vLLM, best weights on held-out MATH, saved every 2 (or 10) steps
            assert (cfg.eval.backend, cfg.eval.select_benchmark) == ("vllm", "math-validation")
            assert (cfg.eval.select_checkpoint or cfg.method.name == "base") and cfg.method.snapshot_steps in (2, 10), experiment
        if cfg.report.paper:  # the paper's columns are the ones evaluated: MATH where it reports MATH
            columns = [get_benchmark(b).name for b in cfg.eval.benchmarks]
            paper = [get_benchmark(c).name for c in paper_table(cfg.report.paper).columns]
            assert [c for c in paper if c not in columns] == [], experiment
        run_names.add((cfg.run_name, tuple(cell)))
    assert len(run_names) == len(grid_cells(experiment))


def test_cluster_configs_switch_the_launcher():
    local, slurm, cpu = (compose_config(o, return_hydra_config=True)
                         for o in ([], ["cluster=slurm"], ["cluster=slurm-cpu"]))
    assert local.hydra.launcher._target_.endswith("BasicLauncher")
    for cfg in (slurm, cpu):
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
        # site value: no silent default partition
        assert OmegaConf.is_missing(cfg.cluster, "partition")
        assert cfg.hydra.launcher._get_node("partition")._value() == "${cluster.partition}"
        # requeue on time-out as well as preemption (Hydra's default is 0 time-out requeues)
        assert cfg.hydra.launcher.max_num_timeout > 0
        assert cfg.hydra.launcher.additional_parameters.requeue is True
        assert cfg.hydra.launcher.signal_delay_s > 0
    # one task per GPU
    assert slurm.hydra.launcher.tasks_per_node == slurm.cluster.gpus_per_node == 8
    assert cpu.hydra.launcher.gpus_per_node is None and cpu.hydra.launcher.tasks_per_node == 1


def test_missing_partition_fails_before_submitting(tmp_path):
    proc = cli("--multirun", "cluster=slurm-cpu", "method=sft,cft", outputs=tmp_path, cache=tmp_path)
    assert proc.returncode != 0
    # Hydra names the launcher key the value is interpolated into: hydra.launcher.partition
    assert "Missing mandatory value: hydra.launcher.partition" in proc.stderr
    assert not list(tmp_path.rglob("*_submission.sh"))


def test_job_dirs_are_stable_and_collision_free(tmp_path):
    """`--multirun` job dirs carry the job number and the overrides, never a timestamp: the same
    command (e.g. submitit's requeue) finds the same dir; different cells never share one."""
    for _ in range(2):
        cli("--multirun", "stages=[]", "method=sft,cft", "dataset.limit=8,16", outputs=tmp_path,
            cache=tmp_path, check=True)
    dirs = sorted(p.parent.parent for p in tmp_path.rglob(".hydra/overrides.yaml"))
    assert len(dirs) == 4 and len({d.name for d in dirs}) == 4
    for d in dirs:
        overrides = yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
        assert "stages=[]" in overrides and any(o.startswith("method=") for o in overrides)
        assert d.name == ",".join(sorted(o for o in overrides if not o.startswith("stages=")))
    # The sweep's table, written by the --multirun itself (cft.report.callback): no stage ran, so
    # every job is a failed row that says why, not a missing one.
    for sweep_dir in {d.parent for d in dirs}:
        table = (sweep_dir / "report" / "results_table.md").read_text()
        jobs = [d for d in dirs if d.parent == sweep_dir]
        assert all(f"{d.name}/results.json: missing" in table for d in jobs), table


_COMPOSED: dict = {}


def _cells(compose, experiment: str) -> list[tuple[list[str], dict]]:
    """(cell overrides, flattened resolved config) of every job of a grid, composed once."""
    from cft.config import flatten as _flatten

    if experiment not in _COMPOSED:
        _COMPOSED[experiment] = [(cell, _flatten(OmegaConf.to_container(
            compose([f"+experiment={experiment}", *cell]), resolve=True))) for cell in grid_cells(experiment)]
    return _COMPOSED[experiment]


TABLES = [e for e in EXPERIMENTS if e.startswith(("table", "v2-")) and
          (yaml.safe_load((ROOT / "conf" / "experiment" / f"{e}.yaml").read_text()).get("report") or {}).get("paper")]


@pytest.mark.parametrize("experiment", TABLES)
def test_every_cell_of_a_table_sits_beside_its_own_paper_row(compose, experiment):
    """Each cell a table runs, and each cell it reuses from another table, lands on the paper row
    it reproduces (the report prints that row under it), one row per cell apart from seeds: the
    composed config of the real models, not the tiny stand-in the CPU runs use."""
    from cft.config import matches

    raw = yaml.safe_load((ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text())
    table = paper_table(raw["report"]["paper"])
    cells = [(f"{experiment}: {c}", flat) for c, flat in _cells(compose, experiment)]
    for entry in raw["report"].get("reuse") or []:
        own_model = cells[0][1]["model.name"]
        where = {k: own_model if v == "${model.name}" else v for k, v in entry["where"].items()}
        reused = [(f"{entry['sweep']}: {c}", flat) for c, flat in _cells(compose, entry["sweep"])
                  if matches(flat, where)]
        assert reused, (experiment, entry)
        cells += reused
    rows = {}
    for name, flat in cells:
        row = table.row_for(flat)
        assert row is not None, f"{name} matches no row of the paper's {table.id}"
        rows.setdefault(row.label, set()).add(str({k: v for k, v in flat.items() if k not in ("seed", "run_name")
                                                   and not k.startswith(("hydra", "run_dir"))}))
    assert all(len(configs) == 1 for configs in rows.values()), {k: len(v) for k, v in rows.items()}
