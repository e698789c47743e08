"""Training checkpoints: everything a run needs to continue exactly, in one file written atomically.

checkpoint.safetensors holds
    model.<name>                     every parameter (float32, Hugging Face's names)
    optimizer.<index>.<name>         the optimizer's per-parameter arrays (AdamW's exp_avg, exp_avg_sq)
and, in the header's metadata as JSON, the rest: the step, the optimizer's groups and step counts,
the schedule, minillm's random-generator state (dropout), the recipe and a fingerprint of the data.
The data order needs no state: the batches of epoch e are a function of (seed, e), and the step
says how far into the epoch the run was.

The file is written to a temporary name and renamed over the old one (minillm.safetensors_io), so a
crash while saving leaves the previous checkpoint whole.
"""
import json

from .. import safetensors_io
from .. import random

CHECKPOINT_NAME = "checkpoint.safetensors"
META_KEY = "minillm_training_state"


def save_checkpoint(path, model, optimizer, schedule, info):
    """Write the model, optimizer, schedule and RNG state, plus ``info`` (JSON-able: step, recipe...)."""
    tensors = {f"model.{name}": array for name, array in model.state_dict().items()}
    saved = optimizer.state_dict()
    scalars = {}
    for index, state in saved["state"].items():
        for name, value in state.items():
            if getattr(value, "ndim", 0):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    meta = {**info, "optimizer": {"param_groups": saved["param_groups"], "scalars": scalars},
            "schedule": schedule.state_dict(), "rng": random.get_state()}
    safetensors_io.write_safetensors(tensors, path, metadata={META_KEY: json.dumps(meta)})


def load_checkpoint(path, model, optimizer, schedule):
    """Restore what save_checkpoint wrote into live objects; returns the ``info`` dict."""
    tensors, metadata = safetensors_io.read_safetensors(path)
    if META_KEY not in (metadata or {}):
        raise safetensors_io.CheckpointError(f"{path}: not a minillm training checkpoint (no {META_KEY} metadata)")
    meta = json.loads(metadata[META_KEY])
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state = {int(i): dict(values) for i, values in meta["optimizer"]["scalars"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["optimizer"]["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    schedule.load_state_dict(meta["schedule"])
    random.set_state(meta["rng"])
    return {k: v for k, v in meta.items() if k not in ("optimizer", "schedule", "rng")}
