"""Read an offline W&B run (`run-<id>.wandb`) back into its records, for tests.

wandb 0.31 has no Python reader (its datastore moved into wandb-core), so this walks the
file's LevelDB-log framing (7-byte ":W&B" header, 32 KiB blocks, 7-byte chunk headers) and
parses each record with wandb's own protobuf, `wandb.proto.wandb_internal_pb2.Record`.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024


def records(path: str | Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a .wandb file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        # kind 1: a full record; 2, 3, 4: its first, middle and last chunks
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pb.Record.FromString(pending)


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def read_run(run_dir: str | Path) -> dict:
    """{run: {id, group, name}, config, history: [rows], summary} of the offline run(s) in a dir."""
    out = {"runs": [], "config": {}, "history": [], "summary": {}}
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        for rec in records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["runs"].append({"id": rec.run.run_id, "group": rec.run.run_group,
                                    "name": rec.run.display_name})
                out["config"].update(_items(rec.run.config.update))
            elif kind == "config":
                out["config"].update(_items(rec.config.update))
            elif kind == "history":
                out["history"].append(_items(rec.history.item))
            elif kind == "summary":
                out["summary"].update(_items(rec.summary.update))
    return out
