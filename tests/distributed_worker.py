"""Run by tests/test_distributed_mpi.py under ``mpiexec -n N`` (or alone): fine-tunes the tiny BERT
of finetune_helpers with the Trainer and writes rank<r>.json (the logged losses, the final
parameters, a dropout mask drawn after training).

    python tests/distributed_worker.py OUT --batch-size 4 [--dropout 0.1] [--resume]
                                           [--fail-rank R | --differ-rank R]
                                           [--kill-rank R | --hang-rank R] [--at-step S]

--resume: stop after 2 steps, then train on from the checkpoint with a new model and Trainer.
--fail-rank: that rank raises after the start; --differ-rank: that rank builds a 3-label model;
--ignore-rank: every label of that rank's data is -100 (its batches carry no targets, the others' do).
--kill-rank / --hang-rank: that rank SIGKILLs itself / sleeps for an hour when it reaches step
--at-step (the run checkpoints every 2 steps; rank 0 writes, so rank 1 may reach step 3 while the
step-2 checkpoint is still being written, but not step 4).
"""
import argparse
import json
import os
import pathlib
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import minillm as mm  # noqa: E402
from minillm import distributed, kernels  # noqa: E402
from minillm.data import TextClassificationDataset  # noqa: E402
from minillm.nn import functional as F  # noqa: E402
from minillm.training import Trainer, TrainingArguments  # noqa: E402
from finetune_helpers import tiny_model, tiny_tokenizer, toy_texts  # noqa: E402


def trainer(args, data, rank):
    model = tiny_model(seed=rank, dropout=args.dropout,  # other inits per rank: the broadcast makes them one
                       num_labels=3 if rank == args.differ_rank else 2)
    options = TrainingArguments(output_dir=str(args.out / "run"), epochs=1, batch_size=args.batch_size, lr=1e-3,
                                warmup_ratio=0.0, seed=0, progress=False, save_steps=2)
    return Trainer(model, options, data)


def fault(run, at_step, kill):
    """Make ``run`` die (SIGKILL) or stop answering (sleep) as it begins step ``at_step``."""
    step = run._train_step

    def faulty(batch):
        if run.step + 1 == at_step:
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)
        return step(batch)

    run._train_step = faulty


def main(args):
    kernels.set_threads(1)
    rank = distributed.world().rank
    folder = args.out / f"vocab{rank}"  # one per rank: no two processes write one file
    folder.mkdir(parents=True, exist_ok=True)
    texts, labels = toy_texts(32, seed=1)
    if rank == args.ignore_rank:
        labels = [-100] * len(labels)
    data = TextClassificationDataset(tiny_tokenizer(folder), texts, labels, max_length=24)
    run = trainer(args, data, rank)
    if rank == args.fail_rank:
        raise RuntimeError("worker failure injected for the test")
    if rank in (args.kill_rank, args.hang_rank):
        fault(run, args.at_step, kill=rank == args.kill_rank)
    if args.resume:
        run.train(stop_after=2)
        run = trainer(args, data, rank)
        run.train(resume=True)
    else:
        run.train()
    mask = F.dropout(mm.ones(64), 0.5, training=True).numpy()
    (args.out / f"rank{rank}.json").write_text(json.dumps({
        "losses": [record["loss"] for record in run.history if "loss" in record],
        "params": {name: p.data.tolist() for name, p in run.model.named_parameters()},
        "mask": mask.tolist()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--differ-rank", type=int, default=None)
    parser.add_argument("--ignore-rank", type=int, default=None)
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--hang-rank", type=int, default=None)
    parser.add_argument("--at-step", type=int, default=3)
    main(parser.parse_args())
