"""Checkpoint selection and critic evaluation on tiny models."""
from __future__ import annotations

import shutil

import pytest

from cft.benchmarks import get_benchmark
from cft.distributed import single_process_env as child_env
from cft.eval.critic import critic_metrics, heldout_pairs
from cft.eval.stage import run as evaluate
from cft.io import read_json
from cft.paths import RunPaths
from cft.pipeline import IN_CHILD
from cft.templates import eval_prompt
from helpers import cli, free_port, torchrun_env


def overfit(source, out_dir, pairs, steps=80):
    """Train the tiny model to answer `pairs` (prompt -> target) exactly: the 'better' checkpoint."""
    import torch

    from cft.models import load_tokenizer
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(source))
    model = AutoModelForCausalLM.from_pretrained(source)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = []
    for prompt, target in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        batch.append((torch.tensor([p + t]), torch.tensor([[-100] * len(p) + t])))
    torch.manual_seed(0)
    for _ in range(steps):
        for ids, labels in batch:
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(out_dir)
    return loss.item()


def test_checkpoint_selection_picks_the_better_checkpoint(compose, tiny_source, tmp_path):
    cfg = compose(["stages=[eval]", "eval.select_checkpoint=true", "eval.select_benchmark=gsm8k",
                   "eval.select_limit=2", "eval.benchmarks=[gsm8k]", "eval.limit=2",
                   "eval.critic=false", "eval.max_new_tokens=24"])
    paths = RunPaths.of(cfg.run_dir)
    items = get_benchmark("gsm8k").load(cfg.paths.benchmarks, 2)
    pairs = [(eval_prompt("qwen25-math-cot", it["question"]), f"The answer is $\\boxed{{{it['reference']}}}$.")
             for it in items]
    for step in (10, 30, 40):
        (paths.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        shutil.copy(tiny_source / "config.json", paths.checkpoints / f"checkpoint-{step}")
        shutil.copy(tiny_source / "model.safetensors", paths.checkpoints / f"checkpoint-{step}")
    assert overfit(tiny_source, paths.checkpoints / "checkpoint-20", pairs) < 0.05
    for step in (10, 20, 30):  # checkpoint-40 was killed before the trainer marked it COMPLETE
        (paths.checkpoints / f"checkpoint-{step}" / "COMPLETE").write_text("{}")

    summary = evaluate(cfg, paths)

    assert summary["selected_step"] == 20
    selection = read_json(paths.selection)
    assert [c["step"] for c in selection["curve"]] == [10, 20, 30]
    assert [c["accuracy"] for c in selection["curve"]] == [0.0, 100.0, 0.0]
    assert summary["gsm8k"] == 100.0  # the final eval used the selected checkpoint


def test_critic_metrics_precision_recall():
    rows = [{"verdict": "wrong", "truth": "wrong"}, {"verdict": "wrong", "truth": "right"},
            {"verdict": "right", "truth": "right"}, {"verdict": None, "truth": "wrong"}]
    m = critic_metrics(rows)
    assert (m["accuracy"], m["precision_wrong"], m["recall_wrong"], m["no_verdict"]) == (50.0, 0.5, 0.5, 1)


def test_critic_heldout_pairs_exclude_training_ids_and_are_balanced(compose):
    cfg = compose([])
    first = heldout_pairs(cfg, set(), 20)
    again = heldout_pairs(cfg, {first[0]["id"]}, 20)
    assert first[0]["id"] not in {p["id"] for p in again}
    truths = [p["response_correct"] for p in again]
    assert truths.count("right") == 10 and truths.count("wrong") == 10


@pytest.mark.parametrize("spelling,name", [("math500", "math-500"), ("MATH-500", "math-500"),
                                           ("Minerva-Math", "minerva_math"), ("aime2024", "aime24"),
                                           ("OlympiadBench", "olympiadbench")])
def test_benchmark_names_accept_their_usual_spellings(spelling, name):
    assert get_benchmark(spelling).name == name


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(KeyError, match="eval.benchmarks: unknown benchmark 'math5000'.*gsm8k"):
        get_benchmark("math5000")


@pytest.mark.slow
def test_zero3_torchrun_then_eval_in_its_own_process(tmp_path, cache_dir):
    """One torchrun command: 2-rank DeepSpeed ZeRO-3 training, then evaluation (critic included)
    in a fresh child of rank 0 while rank 1 leaves. In-process, rank 0's from_pretrained entered
    ZeRO-3's zero.Init and waited for rank 1 (gloo: "Connection closed by peer")."""
    run_dir = tmp_path / "run"
    cli("--nproc_per_node=2", f"--master_port={free_port()}", "-m", "cft.main", "deepspeed=zero3",
        "eval.limit=2", "eval.critic_limit=4", "eval.max_new_tokens=16", "method.max_steps=2",
        "dataset.limit=32", f"hydra.run.dir={run_dir}", module="torch.distributed.run",
        env=torchrun_env(cache_dir, CFT_CACHE=str(cache_dir)), timeout=900, check=True)
    paths = RunPaths.of(run_dir)
    assert read_json(paths.stage_done("train"))["summary"]["world_size"] == 2
    assert read_json(paths.eval_results)["benchmarks"]["math-500"]["n"] == 2
    assert read_json(paths.critic_metrics)["n"] == 4
    assert (paths.stages_dir / "eval.result.json").is_file()
    assert paths.results.is_file()  # the report stage ran after it


def test_eval_child_sees_no_distributed_environment():
    env = child_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1",
                     "TORCHELASTIC_RUN_ID": "x", "ACCELERATE_USE_DEEPSPEED": "true", "CUDA_VISIBLE_DEVICES": "0,1",
                     "CFT_CACHE": "/c"})
    assert "eval" in IN_CHILD
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1", "CFT_CACHE": "/c"}  # every GPU stays visible to vLLM
