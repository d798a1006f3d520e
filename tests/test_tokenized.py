"""The train stage's tokenize-once dataset (cft/train/dataset.py): the same token ids, labels and
order as the per-example `tokenize()` it replaced, the same batches through the Trainer, and a
re-run that reuses what an earlier run tokenized. (Both processes of a torchrun reading one
rank's tokenization: tests/test_distributed.py::test_two_processes_match_one.)"""
from __future__ import annotations

import importlib.util
import random

import pytest

from cft.io import read_json, read_jsonl, write_jsonl
from cft.paths import RunPaths
from cft.train import dataset as tokenized
from cft.train.format import example, prepare_tokenizer, tokenize
from cft.train.stage import mix_sft, training_inputs, training_rows
from helpers import ROOT
from test_format import released_row
from test_train import _champ_cft_rows, train_cfg


def _released_rows(n: int) -> list[dict]:
    """n released-layout rows (bench/data_scale.py's generator) as the data stage stores them."""
    spec = importlib.util.spec_from_file_location("data_scale", ROOT / "bench" / "data_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = []
    for i, row in enumerate(bench.released_rows(n, seed=1)):
        rows.append({"id": f"webinstruct-{i}", "question": "q", "noisy_response": "r", "critique": row["output"],
                     "extra": {"instruction": row["instruction"], "input": row["input"]}})
    return rows


def _odd_rows() -> list[dict]:
    """Rows a batch encoder could get wrong: an empty target, non-ASCII text (accents, CJK,
    emoji, a combining mark, a right-to-left script), whitespace runs and special-token text."""
    odd = ["", "é 中文 🤔 e\u0301 مرحبا", "  \n\n\t tabs   and  spaces  ", "<|im_end|> inside <|im_start|>text"]
    return [{"id": f"odd-{i}", "question": q or "?", "noisy_response": q, "critique": c, "extra": {}}
            for i, (q, c) in enumerate((q, c) for q in odd for c in odd)]


def _build(cfg, tokenizer, rows, tmp_path):
    examples = [example(r, "critique") for r in rows]
    folder = tmp_path / "tokenized"
    meta = tokenized.build(cfg, folder, tokenizer, iter(examples), "k")
    return examples, tokenized.load(folder), meta


@pytest.mark.parametrize("rows,cutoff", [
    ("champ", 1024),      # the default run's rows: CHAMP records + reference-teacher critiques
    ("released", 512),    # WebInstruct-CFT's layout, both infer_seqlen branches
])
def test_tokenized_dataset_is_the_per_example_tokenization(compose, tiny_tokenizer, tmp_path, rows, cutoff):
    rows = [dict(r) for r in _champ_cft_rows()] if rows == "champ" else [released_row(), *_odd_rows(), *_released_rows(300)]
    cfg = compose(["model=tiny", f"method.cutoff_len={cutoff}"])
    examples, data, meta = _build(cfg, tiny_tokenizer, rows, tmp_path)
    want = [tokenize(ex, tiny_tokenizer, "qwen", cutoff) for ex in examples]
    assert len(data) == len(want) == meta["n_examples"]
    assert [data[i] for i in range(len(data))] == [{"input_ids": w["input_ids"], "labels": w["labels"]} for w in want]
    assert meta["n_truncated"] == sum(w["truncated"] for w in want)
    assert meta["n_tokens"] == sum(len(w["input_ids"]) for w in want)
    if cutoff == 512:  # long rows: both branches of the proportional cut are exercised
        assert 0 < meta["n_truncated"] < len(want)
    assert read_jsonl(tmp_path / "tokenized" / "examples.jsonl") == examples


def test_the_batch_encoder_gives_the_tokenizer_calls_ids(tiny_tokenizer):
    """tokenize_batch's encoder (the Rust backend's encode_batch_fast, called directly) gives
    what `tokenizer(texts, add_special_tokens=False)` gives, whatever an earlier call left set on
    the shared backend; a tokenizer class with its own call path keeps it."""
    from cft.train.format import batch_encoder

    texts = [t for row in _odd_rows() for t in (row["critique"], row["noisy_response"])] + [
        row["extra"]["input"] for row in _released_rows(20)]

    def want():
        return tiny_tokenizer(texts, add_special_tokens=False)["input_ids"]

    assert batch_encoder(tiny_tokenizer)(texts) == want()
    tiny_tokenizer(texts[-1], truncation=True, max_length=5, padding="max_length")  # leaves the backend truncating
    assert tiny_tokenizer.backend_tokenizer.truncation is not None
    assert batch_encoder(tiny_tokenizer)(texts) == want()
    tiny_tokenizer.split_special_tokens = True  # "<|im_end|>" in text is then plain text
    try:
        assert batch_encoder(tiny_tokenizer)(texts) == want() != tiny_tokenizer(
            texts, add_special_tokens=False, split_special_tokens=False)["input_ids"]
    finally:
        tiny_tokenizer.split_special_tokens = False
        tiny_tokenizer.backend_tokenizer.encode_special_tokens = False

    class OwnCall(tiny_tokenizer.__class__):
        def _encode_plus(self, *args, **kwargs):
            out = super()._encode_plus(*args, **kwargs)
            out["input_ids"] = [[7, *ids] for ids in out["input_ids"]]
            return out

    own = OwnCall(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token=tiny_tokenizer.eos_token)
    assert batch_encoder(own)(texts[:3]) == [[7, *ids] for ids in want()[:3]]


def test_bos_template_tokenizes_as_per_example(compose, tiny_tokenizer, tmp_path):
    """The deepseek template: BOS first, no system segment."""
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, bos_token="<|im_start|>",
                                   eos_token=tiny_tokenizer.eos_token, pad_token=tiny_tokenizer.pad_token)
    cfg = compose(["model=tiny", "model.train_template=deepseek", "method.cutoff_len=256"])
    examples, data, _ = _build(cfg, tok, _released_rows(40), tmp_path)
    for i, ex in enumerate(examples):
        want = tokenize(ex, tok, "deepseek", 256)
        assert data[i] == {"input_ids": want["input_ids"], "labels": want["labels"]}
        assert want["input_ids"][0] == tok.bos_token_id


def test_the_trainer_reads_the_same_batches(compose, tiny_tokenizer, tiny_source, tmp_path):
    """Same sampler, same collator: the Trainer's batches from the mapped dataset are those of
    the list of per-example features it was given before."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, set_seed

    from cft.train.packing import make_collator
    from cft.train.stage import training_args

    cfg = train_cfg(compose, tmp_path / "run")
    examples, data, _ = _build(cfg, tiny_tokenizer, [dict(r) for r in _champ_cft_rows()[:40]], tmp_path)
    features = [{k: v for k, v in tokenize(ex, tiny_tokenizer, "qwen", 512).items() if k != "truncated"}
                for ex in examples]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_source))
    args = training_args(cfg, RunPaths.of(tmp_path / "run"), 1, use_cpu=True)

    def batches(train_dataset) -> list[dict]:
        set_seed(cfg.seed)
        trainer = Trainer(model=model, args=args, train_dataset=train_dataset,
                          data_collator=make_collator(True, tiny_tokenizer.pad_token_id, "sdpa"))
        return list(trainer.get_train_dataloader())

    old, new = batches(features), batches(data)
    assert len(old) == len(new) == 10
    for a, b in zip(old, new):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _prepare(cfg, tokenizer):
    paths = RunPaths.of(cfg.run_dir)
    prepare_tokenizer(tokenizer, cfg.model.train_template)
    return tokenized.prepare(cfg, paths, tokenizer, lambda: training_rows(cfg, paths), training_inputs(cfg, paths))


def test_a_rerun_that_changes_only_max_steps_reuses_the_tokenized_data(compose, tiny_tokenizer, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    paths = RunPaths.of(run)
    write_jsonl(paths.critiques, [dict(r) for r in _champ_cft_rows()[:30]])
    data, meta = _prepare(train_cfg(compose, run, "method.max_steps=1"), tiny_tokenizer)
    assert "tokenized 30 examples" in capsys.readouterr().out
    # train/examples.jsonl: what the train stage always wrote, now a link to the tokenized folder's
    assert read_jsonl(paths.train_examples) == [example(r, "critique") for r in _champ_cft_rows()[:30]]
    first = next(paths.tokenized_dir.iterdir())

    def no_build(*args, **kwargs):
        raise AssertionError("tokenized again")

    with monkeypatch.context() as m:
        m.setattr(tokenized, "build", no_build)
        again, meta2 = _prepare(train_cfg(compose, run, "method.max_steps=2", "method.lr=1e-4"), tiny_tokenizer)
    assert meta2 == meta and "reusing 30 tokenized examples" in capsys.readouterr().out
    assert [again[i] for i in range(30)] == [data[i] for i in range(30)]
    # what the ids depend on: the cutoff, the critiques' content
    _prepare(train_cfg(compose, run, "method.cutoff_len=256"), tiny_tokenizer)
    (second,) = paths.tokenized_dir.iterdir()
    assert second != first and read_json(second / "meta.json")["n_truncated"] > meta["n_truncated"]
    write_jsonl(paths.critiques, [dict(r) for r in _champ_cft_rows()[:31]])
    _, meta3 = _prepare(train_cfg(compose, run, "method.cutoff_len=256"), tiny_tokenizer)
    assert meta3["n_examples"] == 31 and [p.name for p in paths.tokenized_dir.iterdir()] != [second.name]


def test_sft_mix_streams_the_draw_it_made_from_a_list(tmp_path):
    """mix_sft reads the records it draws by byte offset; the draw is random.sample's over the
    records list, as before."""
    records = [{"id": f"r{i}", "question": f"q{i} é", "noisy_response": "" if i % 5 == 0 else f"a{i}",
                "response_correct": "unknown", "extra": {}} for i in range(60)]
    write_jsonl(tmp_path / "records.jsonl", records)
    kept = [r for r in records if r["noisy_response"]]
    picked = random.Random(7).sample(kept, 30)
    want = [dict(example(r, "response"), id=f"sft:{r['id']}") for r in picked]
    assert list(mix_sft(30, tmp_path / "records.jsonl", False, 0.5, 7)) == want
    with pytest.raises(ValueError, match="the most these data allow"):
        list(mix_sft(60, tmp_path / "records.jsonl", False, 0.5, 7))


def test_the_tokenizer_is_part_of_the_key(tiny_tokenizer):
    other = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, bos_token="<|im_start|>",
                                     eos_token=tiny_tokenizer.eos_token, pad_token=tiny_tokenizer.pad_token)
    assert tokenized.tokenizer_digest(tiny_tokenizer) == tokenized.tokenizer_digest(tiny_tokenizer)
    assert tokenized.tokenizer_digest(tiny_tokenizer) != tokenized.tokenizer_digest(other)
    assert "max_steps" in tokenized.TRAINING_ONLY and "cutoff_len" not in tokenized.TRAINING_ONLY


def test_without_datasets_training_tokenizes_in_memory_the_same_examples(compose, tmp_path, monkeypatch):
    """An air-gapped node given only the offline bundle (no `datasets`): the train stage still
    trains, on the same token ids and labels, tokenizing in memory."""
    from cft.models import load_tokenizer, model_source
    from test_train import train_cfg, write_rows

    cfg = train_cfg(compose, tmp_path / "r")
    write_rows(tmp_path / "r", 12)
    paths = RunPaths.of(tmp_path / "r")
    tokenizer = load_tokenizer(model_source(cfg.model, cfg.paths.cache))
    prepare_tokenizer(tokenizer, cfg.model.train_template)
    mapped, meta = tokenized.prepare(cfg, paths, tokenizer, lambda: training_rows(cfg, paths), training_inputs(cfg, paths))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    listed, meta2 = tokenized.prepare(cfg, paths, tokenizer, lambda: training_rows(cfg, paths), training_inputs(cfg, paths))
    assert isinstance(listed, list) and len(listed) == len(mapped) == 12
    assert [dict(f) for f in listed] == [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in mapped]
    assert {k: meta2[k] for k in ("n_examples", "n_truncated", "examples_sha256")} == \
        {k: meta[k] for k in ("n_examples", "n_truncated", "examples_sha256")}
