"""The resource plan before launch: `python -m cft.plan [overrides] [--gpus N] [--gpu-memory-gb M] [--json [PATH]]`.

The overrides are those of `python -m cft.main`, composed and validated the same way; the plan
comes from cft.resources, the functions the stages take their layout from. Without --gpus it
plans for the GPUs visible here (none on a CPU box). Exit status 1 when a selected stage does
not fit, so a launch script can stop on it. `check_fits` is the same plan as a gate, for the
pipeline to call before its first stage.
"""
from __future__ import annotations

import argparse
import json
import sys

from cft.resources import FRAGMENTATION, describe_snapshots, detect_gpus, plan
from cft.validation import ConfigError


class PlanError(ConfigError):
    """A run that the resource plan says cannot fit the GPUs it was given."""


def check_fits(cfg, gpus: int | None = None, gpu_memory_gb: float | None = None,
               world_size: int | None = None) -> dict | None:
    """Before the first stage: the plan for this process's GPUs and training world size (default:
    those visible here, and cft.distributed.world_size()), None without GPUs. Raises PlanError,
    whose message is the plan with the overrides that would fit, when a selected stage cannot."""
    if gpus is None:
        gpus, detected = detect_gpus()
        gpu_memory_gb = gpu_memory_gb or detected
    if not gpus:
        return None
    if world_size is None:
        from cft import distributed

        world_size = distributed.world_size()
    p = plan(cfg, gpus, gpu_memory_gb, world_size)
    bad = [s for s in ("train", "eval") if p[s]["selected"] and p[s]["fits"] is False]
    if bad:
        raise PlanError(f"the resource plan says {' and '.join(bad)} will not fit; nothing was run "
                        f"(python -m cft.plan with the same overrides prints this plan).\n" + format_plan(p))
    return p


def format_plan(p: dict) -> str:
    """The plan as a user reads it (python -m cft.plan, and the message of PlanError)."""
    m, t, e = p["model"], p["train"], p["eval"]
    gpus = f"{p['gpus']} x {p['gpu_memory_gb']:g} GB" if p["gpus"] else "none (CPU)"
    lines = [f"model   {m['name']} ({m['source']}): {m['params_b']:.2f}B parameters, {m['layers']} layers, "
             f"{m['attention_heads']} attention / {m['kv_heads']} KV heads, context {m['context']}",
             f"GPUs    {gpus} per node", ""]
    sel = lambda s: "" if s["selected"] else "   (stage not selected)"  # noqa: E731
    mem = t["memory_gb"]
    lines += [f"train   world size {t['world_size']} ({t['nodes']} node(s)), deepspeed={t['deepspeed']} "
              f"(ZeRO stage {t['zero_stage']}), offload optimizer={t['offload_optimizer']} params={t['offload_param']}"
              + sel(t),
              f"        micro-batch {t['micro_batch']} x {t['cutoff_len']} tokens, gradient accumulation "
              f"{t['grad_accum']}, global batch {t['global_batch']}; precision {_precision(t)}, "
              f"packing {t['packing']}"]
    if t.get("peft"):
        lines.append(f"        {_describe_peft(t['peft'])}")
    if t.get("error"):
        lines.append(f"        ERROR: {t['error']}")
    lines.append("        estimated memory per GPU (GB):")
    rows = [("weights" + (" (frozen base + adapters)" if t.get("peft") else ""), mem["weights"]), ("gradients", mem["gradients"]), ("optimizer states", mem["optimizer"]),
            ("communication buffers", mem["buffers"]),
            (f"activations ({'with' if t['gradient_checkpointing'] else 'without'} checkpointing)", mem["activations"]),
            ("logits (bf16 + fp32 loss)", mem["logits"]),
            (f"CUDA/NCCL + {FRAGMENTATION:.0%} fragmentation", round(t["peak_memory_gb"] - mem["model_states"]
                                                                   - mem["buffers"] - mem["activations"]
                                                                   - mem["logits"], 2))]
    lines += [f"          {name:<40}{value:>8.1f}" for name, value in rows]
    fits = {True: "fits", False: "DOES NOT FIT", None: "no GPU memory to check"}[t["fits"]]
    lines.append(f"          {'peak':<40}{t['peak_memory_gb']:>8.1f}   {fits}")
    lines.append(f"          peak with / without gradient checkpointing: {mem['peak_with_checkpointing']:.1f} / "
                 f"{mem['peak_without_checkpointing']:.1f}")
    if mem.get("cpu_memory_gb"):
        lines.append(f"          host RAM for offloaded states, per node: ~{mem['cpu_memory_gb']:.0f} GB")
    if t["fitting_overrides"]:
        lines.append("        would fit:")
        for o in t["fitting_overrides"]:
            nnodes = f" --nnodes {o['nodes']}" if o["nodes"] > 1 else ""
            launch = (f"torchrun{nnodes} --nproc_per_node {o['gpus']} -m cft.main" if o["world_size"] > 1
                      else "python -m cft.main")
            host = f", host RAM ~{o['cpu_memory_gb']:.0f} GB" if o["cpu_memory_gb"] else ""
            adapters = (f"; {'QLoRA' if o['peft']['name'] == 'qlora' else 'LoRA'} r={o['peft']['r']}: "
                        f"{o['peft']['trainable_params'] / 1e6:.1f}M trainable parameters" if o.get("peft") else "")
            lines.append(f"          {launch} ... {' '.join(o['overrides'])}   "
                         f"(peak {o['peak_memory_gb']:.1f} GB{host}{adapters})")
        if any(o.get("peft") for o in t["fitting_overrides"]) and not t.get("peft"):
            lines.append("          (peft=lora|qlora train adapters over a frozen base: another model than a full "
                         "fine-tune, see the README's One GPU)")
    elif t["fits"] is False:
        lines.append("        nothing tried fits (ZeRO-2/3, CPU offload, micro-batch 1, up to 8 nodes of GPUs)")
    if t.get("snapshots"):
        lines.append(f"        {describe_snapshots(t['snapshots'])}")
    lines += ["", _layout_line("eval", e, sel(e))]
    for name, g in p["generation"].items():
        lines.append(_layout_line(name, g))
    return "\n".join(lines)


def _precision(t: dict) -> str:
    if t.get("peft") and t["precision"] == "fp32-master":  # the base stays bf16; only adapters are fp32
        return "bf16 autocast (fp32 adapters)"
    return t["precision"]


def _describe_peft(p: dict) -> str:
    base = {"nf4": "4-bit NF4 (embeddings and norms fp32)", "bf16": "bf16", "fp32": "fp32"}[p["base_weights"]]
    return (f"peft {p['name']}: r={p['r']}, alpha={p['alpha']:g}, dropout {p['dropout']:g} on "
            f"{', '.join(p['target_modules'])}: {p['trainable_params'] / 1e6:.1f}M trainable parameters "
            f"({p['trainable_share']:.2%}); frozen base in {base}")


def _layout_line(name: str, g: dict, note: str = "") -> str:
    head = f"{name:<7} backend {g['backend']}{note}"
    if "error" in g:
        return f"{head}: {g['error']}"
    s = (f"{head}: {g['engines']} engine(s) x tensor parallel {g['tensor_parallel_size']}, max_model_len "
         f"{g['max_model_len']}")
    if g["kv_cache_gb"] is not None:
        s += (f", weights {g['weights_gb']:.1f} GB/GPU, KV cache {g['kv_cache_gb']:.1f} GB/GPU "
              f"= {g['kv_cache_tokens']} tokens per engine")
    if g["idle_gpus"]:
        s += f", {g['idle_gpus']} GPU(s) idle"
    return s + ("" if g["fits"] else "  DOES NOT FIT") + f"\n        ({g['reason']})"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m cft.plan", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m cft.main")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs per node (default: those visible here)")
    parser.add_argument("--gpu-memory-gb", type=float, default=None,
                        help="memory of one GPU in GB (default: the first visible GPU's)")
    parser.add_argument("--world-size", type=int, default=None,
                        help="training processes (default: --gpus x cluster.nodes)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="write the plan as JSON to PATH (or stdout) instead of the text")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from cft.config import compose_config
    from cft.validation import validate

    gpus, memory = args.gpus, args.gpu_memory_gb
    if gpus is None or (gpus and memory is None):
        seen, seen_memory = detect_gpus()
        gpus = seen if gpus is None else gpus
        memory = memory or seen_memory
    if gpus and not memory:
        print("cft.plan: --gpu-memory-gb is needed (no GPU here to read it from)", file=sys.stderr)
        return 2
    try:
        cfg = compose_config(args.overrides)
        world = args.world_size or max(1, gpus * int(cfg.cluster.get("nodes") or 1))
        validate(cfg, world_size=world)
        result = plan(cfg, gpus, memory, world)
    except ConfigError as e:
        print(f"cft.plan: {e}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        print(format_plan(result))
    selected = [result[s] for s in ("train", "eval") if result[s]["selected"]]
    return 1 if any(s["fits"] is False for s in selected) else 0


if __name__ == "__main__":
    sys.exit(main())
