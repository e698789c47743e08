"""The training loop: batches -> train_step (loss, gradients, clipped AdamW update) -> schedule, with
per-epoch evaluation, atomic checkpoints, exact resume and a stop on a NaN or infinite loss. A batch
whose every label is cross-entropy's ignore_index carries no loss (its NaN is the mean of nothing):
it is skipped, not stopped on.

One number locates a run: ``step``, the optimizer steps done. Every epoch has the same
len(loader) batches, so step // len(loader) is the epoch and step % len(loader) the next batch
in it; the batches of epoch e are a function of (seed, e). Resuming restores the weights, the
optimizer, the schedule and the dropout generator from the checkpoint, rebuilds epoch e's batches
and skips the ones done, so the resumed run computes the same losses as an uninterrupted one.

Under mpirun (minillm.distributed) every rank runs this loop on its shard of each epoch with
batches of batch_size (the global batch is ranks x batch_size), the gradients averaged over the
ranks before the clipping (so the norm clipped is the global one), the loss logged and checked as
the mean over the ranks (a NaN on one rank stops them all), the evaluation sharded and reduced;
rank 0 alone writes the checkpoint (with every rank's dropout generator), the model and the bar.

With evaluation data, the best model so far (by ``metric_for_best_model``) is saved in output_dir
whenever an evaluation improves on it, and training stops early after ``early_stopping_patience``
evaluations without improvement: at the end output_dir holds the best model, while the checkpoint
keeps the last state (with the best metric and the count of evaluations without improvement, so a
resumed run selects and stops as an uninterrupted one). Without evaluation data the final model is
saved. Every record of ``history`` (each step, each evaluation) is also appended, as one JSON line,
to output_dir/log.jsonl, which ``minillm plot`` draws.
"""
import functools
import hashlib
import json
import logging
import math
import os
import time

import numpy
from tqdm.auto import tqdm

from .. import backend
from .. import distributed
from .. import random
from .. import safetensors_io
from ..data import DataLoader, pad_batch
from ..ops import IGNORE_INDEX
from ..optim import AdamW, get_linear_schedule_with_warmup
from ..tensor import Tensor
from .training_checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .cuda_graph import CapturedStep, check_capturable, full_batch
from .evaluate import evaluate
from .interrupt import TrainingInterrupted, at_step_boundary
from .metrics import format_report
from .step import train_step

logger = logging.getLogger("minillm")
NO_DECAY = ("bias", "LayerNorm.weight")  # the BERT recipe decays neither
LOG_NAME = "log.jsonl"


class TrainingError(RuntimeError):
    """A run that cannot go on (a NaN loss, a checkpoint from another run); says why and what is kept."""


def decay_groups(model, weight_decay):
    """AdamW parameter groups: ``weight_decay`` on weights, none on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith(NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fingerprint(dataset):
    """A short hash of the tokenized training data, so a resume with other data is refused."""
    digest = hashlib.sha256(numpy.asarray(dataset.labels).tobytes())
    for ids in dataset.input_ids:
        digest.update(ids.tobytes())
    return digest.hexdigest()[:16]


def carries_targets(batch):
    """False where the batch's labels are integer class ids, every one IGNORE_INDEX: cross-entropy
    keeps none of them, so the loss is NaN (the mean of nothing, as torch's) and the gradient 0.
    Counted on the host, where the Trainer's batches are (no GPU wait); True where there is nothing
    to count there (no labels, float labels, labels already on a GPU): the loss decides."""
    labels = batch.get("labels") if hasattr(batch, "get") else None
    labels = labels.data if isinstance(labels, Tensor) else labels
    if labels is None or backend.on_device(labels):
        return True
    labels = numpy.asarray(labels)
    return labels.dtype.kind not in "iu" or bool((labels != IGNORE_INDEX).any())


class Trainer:
    """Fine-tune ``model`` on ``train_data`` with the recipe in ``args``: any model called with a
    batch's keyword arguments (pad_batch's input_ids, token_type_ids, attention_mask, labels) whose
    output has a ``.loss``, such as a sequence classifier.

    eval_data: evaluated after each epoch, if given: by default with minillm.training.evaluate (the
    metrics of the model's task, computed on the whole set, under mpirun too), or by
    ``evaluate_fn(model, loader)``, which returns a dict of floats with "loss" and "examples" (under
    mpirun each of its metrics is averaged over the ranks, weighted by "examples"). tokenizer: saved
    beside the model so the output folder is a complete Hugging Face model. After ``train()``:
    ``history`` holds one record per step ({"step", "epoch", "loss", "lr"}) and per evaluation
    ({"step", "epoch", "eval_<metric>"...}); ``best_metric`` and ``best_step`` say which evaluation
    was the best, and ``stopped_early`` whether early stopping ended the run.
    With ``args.cuda_graph`` each train() call captures the step anew (minillm.training.cuda_graph):
    a resumed run's optimizer state is new arrays, which a graph captured before would not update.
    """

    def __init__(self, model, args, train_data, eval_data=None, tokenizer=None, data_collator=None,
                 evaluate_fn=None):
        self.model, self.args, self.tokenizer = model, args, tokenizer
        self.evaluate_fn = evaluate_fn  # None, or (model, loader) -> {"loss", "examples", other metrics}
        if args.class_weights is not None:
            if len(args.class_weights) != model.config.num_labels:
                raise ValueError(f"class_weights has {len(args.class_weights)} weights, the model "
                                 f"{model.config.num_labels} classes")
            model.class_weights = args.class_weights  # the loss's cross_entropy(weight=)
        self.train_data = train_data
        self.pad_token_id = pad = getattr(tokenizer, "pad_token_id", 0) or 0
        # data_collator: list of examples -> the model's keyword arguments, as in transformers' Trainer
        # (default pad_batch; minillm.embeddings.PairDataset.collate batches (anchor, positive) pairs)
        collate = data_collator or (lambda examples: pad_batch(examples, pad))  # noqa: E731
        self.world = world = distributed.world()
        self.loader = DataLoader(train_data, args.batch_size, shuffle=True, seed=args.seed, collate_fn=collate,
                                 bucket=args.bucket, num_replicas=world.size, rank=world.rank)
        self.eval_loader = (DataLoader(eval_data if world.size == 1 else distributed.Shard(eval_data, world),
                                       args.eval_batch_size, collate_fn=collate)
                            if eval_data is not None else None)
        self.total_steps = len(self.loader) * args.epochs
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = AdamW(decay_groups(model, args.weight_decay), lr=args.lr, capturable=args.cuda_graph)
        if world.size > 1:  # one replica per rank: same start, gradients averaged (minillm.distributed)
            if args.cuda_graph:
                raise ValueError("cuda_graph=True is not supported under mpirun (minillm.distributed)")
            self.optimizer = distributed.replicate(model, self.optimizer, world, args.seed)
            logger.info("data parallel over %d ranks: batches of %d per rank, a global batch of %d", world.size,
                        args.batch_size, world.size * args.batch_size)
        self.width = self._graph_width() if args.cuda_graph else None  # every batch's length with a graph
        self.graph = None  # the CapturedStep of this train() call
        self.schedule = get_linear_schedule_with_warmup(self.optimizer, math.ceil(args.warmup_ratio * self.total_steps),
                                                        self.total_steps)
        self.step = 0
        self.saved_step = None  # the step of the last checkpoint written or loaded
        self.history = []
        self.best_metric, self.best_step = None, None  # the best evaluation so far, by metric_for_best_model
        self.evaluations_without_improvement, self.stopped_early = 0, False
        self.checkpoint_path = os.path.join(args.output_dir, CHECKPOINT_NAME)
        self.log_path = os.path.join(args.output_dir, LOG_NAME)

    # ---- the loop -----------------------------------------------------------------------------------
    def train(self, resume=False, stop_after=None):
        """Run to the end of the last epoch (or, with ``stop_after``, for that many steps, then save
        and return: a time-boxed session to be resumed). Returns ``history``."""
        os.makedirs(self.args.output_dir, exist_ok=True)
        if self.world.rank == 0:
            safetensors_io.remove_temporaries(self.args.output_dir)  # of a run killed while it wrote
        if resume:
            self._resume()
        if self.world.rank == 0:  # the log starts as the history (a resumed run's: up to its checkpoint)
            safetensors_io.atomic_write(self.log_path, "".join(json.dumps(r) + "\n" for r in self.history))
        self.graph = None
        self.model.train()
        steps_per_epoch = len(self.loader)
        stop_at = self.total_steps if stop_after is None else min(self.total_steps, self.step + stop_after)
        with at_step_boundary(enabled=self.world.size == 1) as self._interrupted:  # Ctrl-C: interrupt.py
            while self.step < stop_at and not self.stopped_early:
                epoch, start = divmod(self.step, steps_per_epoch)
                self._run_epoch(epoch, start, stop_at)
                if self.step % steps_per_epoch == 0:
                    self._end_epoch(epoch)
                else:  # stopped inside the epoch
                    self.save()
        if self.finished:
            if self.eval_loader is None:
                self.save_model()  # else output_dir holds the best model already
            self.save_state()
        return self.history

    @property
    def finished(self):
        """Whether the run is over: every epoch done, or stopped early."""
        return self.step == self.total_steps or self.stopped_early

    def _log(self, record):
        """Keep ``record`` in the history and append it to log.jsonl (rank 0)."""
        self.history.append(record)
        if self.world.rank == 0:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _run_epoch(self, epoch, start, stop_at):
        """Epoch ``epoch``'s batches from number ``start`` on, until it ends or the run reaches ``stop_at``."""
        with tqdm(total=len(self.loader), initial=start, desc=f"epoch {epoch + 1}/{self.args.epochs}",
                  disable=not self.args.progress or self.world.rank != 0, unit="batch") as bar:
            began, seen = time.perf_counter(), 0
            for indices in self.loader.batches(epoch)[start:]:
                loss = self._train_step(self.loader.collate_fn([self.train_data[int(i)] for i in indices]))
                seen += len(indices)
                bar.update(1)
                bar.set_postfix({"loss": "none" if loss is None else f"{loss:.4f}",
                                 "ex/s": f"{seen / (time.perf_counter() - began):.1f}"})
                if self.args.save_steps and self.step % self.args.save_steps == 0:
                    self.save()
                if self._interrupted():
                    self.save()
                    raise TrainingInterrupted(self.step, self.checkpoint_path)
                if self.step >= stop_at:
                    return

    def _train_step(self, batch):
        """One step (train_step, minillm/training/step.py) and its record. Eagerly the loss and the
        gradient norm are read once, after the backward is queued (on a GPU, one wait), and the
        update runs only when both are finite; a captured step is read, and so checked, once it has run.
        A batch that carries no targets (carries_targets: every label ignored, counted on the host)
        has nothing to learn: no step runs on it (no forward, no update), it is logged, its record has
        no loss, and it returns None; the step count and the schedule move on, so a resume lines up."""
        record = {"step": self.step + 1, "epoch": self.step // len(self.loader) + 1}
        local = carries_targets(batch)
        # the ranks must agree, or one would skip the step's collectives and leave the others waiting
        carries = local if self.world.size == 1 else any(self.world.allgather(local))
        if not carries:
            loss = None
            record["skipped"] = f"every label is {IGNORE_INDEX} (ignored): no loss, no update"
            logger.info("step %d: every label of the batch is %d (ignored), so it carries no loss: skipped, "
                        "the weights are not updated", self.step + 1, IGNORE_INDEX)
        elif self.args.cuda_graph:
            loss = self._finite(*self._replay(batch), updated=True)
        else:
            # a rank whose batch carries no targets while another's does: its loss is NaN (the mean of
            # nothing) and its gradient 0, so it counts no loss in the ranks' mean
            check = self._finite if local else functools.partial(self._finite, has_loss=False)
            loss = train_step(self.model, batch, self.optimizer, self.args.max_grad_norm, self.params, check=check)
            self.optimizer.zero_grad()
        if loss is not None:
            record["loss"] = loss
        self.step += 1
        self._log({**record, "lr": self.schedule.get_last_lr()[0]})
        self.schedule.step()
        return loss

    def _replay(self, batch):
        """The step as a replay of the captured one, on the batch padded to (batch_size, width)."""
        batch = full_batch(batch, self.args.batch_size, self.width, self.pad_token_id)
        if self.graph is None:
            self.graph = CapturedStep(self.model, self.optimizer, batch, self.args.max_grad_norm, self.params)
        return self.graph(batch)

    def _finite(self, loss, grad_norm, updated=False, has_loss=True):
        """The loss as a float, read with the gradient norm (None: no clipping) in one copy to the
        host; a TrainingError if either is not finite. updated: the step has already updated the
        weights (a captured step, checked once it has run). Over several ranks the loss is the mean
        over the ranks whose batch carries targets (has_loss), the norm already the global one."""
        values = [loss] if grad_norm is None else [loss, grad_norm]
        read = backend.to_host(backend.array_module(loss).stack(values)).tolist()
        if self.world.size > 1:
            total = self.world.average([read[0] if has_loss else 0.0, float(has_loss)] + read[1:])
            read = [total[0] / total[1]] + total[2:]
        for what, value in zip(("the loss", "the gradient norm"), read):
            if not math.isfinite(value):
                self.optimizer.zero_grad()
                kept = (f"the last good checkpoint is {self.checkpoint_path} (step {self.saved_step})"
                        if self.saved_step is not None else "no checkpoint had been written yet")
                when = ("after this step updated the weights (a captured CUDA-graph step is checked once it has run)"
                        if updated else "before updating the weights")
                raise TrainingError(f"step {self.step + 1}: {what} is {value}; training stopped {when}, "
                                    f"and {kept}. Try a lower learning rate, or resume from the checkpoint.")
        return read[0]

    def _graph_width(self):
        """The length every batch is padded to with a CUDA graph: the longest training text's."""
        check_capturable(self.model)  # before any work: no dropout, float32, on a GPU
        lengths = getattr(self.train_data, "lengths", None)
        if lengths is None:
            lengths = [len(self.train_data[i]["input_ids"]) for i in range(len(self.train_data))]
        return int(max(lengths))

    def _end_epoch(self, epoch):
        if self.eval_loader is not None:
            metrics = self._evaluate()
            self._log({"step": self.step, "epoch": epoch + 1, **{f"eval_{k}": v for k, v in metrics.items()}})
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                              if k != "examples" and isinstance(v, (int, float)))
            logger.info("epoch %d: eval %s on %d examples", epoch + 1, shown, metrics["examples"])
            for line in format_report(metrics):
                logger.info("  %s", line)
            self._select(metrics)
        self.save()

    def _evaluate(self):
        if self.evaluate_fn is None:  # gathers the ranks' predictions: the metrics are the whole set's
            return evaluate(self.model, self.eval_loader, self.world)
        return distributed.average_metrics(self.evaluate_fn(self.model, self.eval_loader), self.world)

    def _select(self, metrics):
        """Keep the model if this evaluation is the best so far; count the ones that are not, and stop
        after early_stopping_patience of them in a row (Hugging Face's EarlyStoppingCallback)."""
        name = self.args.metric_for_best_model
        if name not in metrics or not isinstance(metrics[name], (int, float)):
            known = [k for k, v in metrics.items() if isinstance(v, (int, float)) and k != "examples"]
            raise TrainingError(f"metric_for_best_model={name!r} is not a metric of this evaluation; "
                                f"it has {', '.join(known)}")
        value, sign = metrics[name], 1 if self.args.greater_is_better else -1
        if self.best_metric is None or sign * (value - self.best_metric) > 0:
            self.best_metric, self.best_step, self.evaluations_without_improvement = value, self.step, 0
            self.save_model()
            logger.info("epoch %d: the best %s so far (%.4f): saved the model to %s", self.step // len(self.loader),
                        name, value, self.args.output_dir)
            return
        self.evaluations_without_improvement += 1
        patience = self.args.early_stopping_patience
        if patience and self.evaluations_without_improvement >= patience:
            self.stopped_early = True
            logger.info("early stopping: %d evaluations without a better %s than %.4f (step %d)", patience, name,
                        self.best_metric, self.best_step)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def _info(self):
        return {"step": self.step, "recipe": self.args.recipe(), "data": fingerprint(self.train_data),
                "history": self.history, "best_metric": self.best_metric, "best_step": self.best_step,
                "evaluations_without_improvement": self.evaluations_without_improvement,
                "stopped_early": self.stopped_early}

    def save(self):
        """Write the training checkpoint (atomically: the previous one survives a crash mid-write)."""
        info = self._info()
        if self.world.size > 1:  # every rank's dropout generator, so a resume restores each (rank 0 writes)
            info["rng_ranks"] = self.world.gather(random.get_state())
        if self.world.rank == 0:
            save_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.schedule, info)
        self.saved_step = self.step

    def _resume(self):
        if not os.path.isfile(self.checkpoint_path):
            raise TrainingError(f"cannot resume: {self.checkpoint_path} does not exist (start without --resume)")
        try:
            info = load_checkpoint(self.checkpoint_path, self.model, self.optimizer, self.schedule)
        except (safetensors_io.CheckpointError, KeyError, ValueError) as err:
            raise TrainingError(f"cannot resume from {self.checkpoint_path}: {err}") from None
        expected = {"recipe": self.args.recipe(), "data": fingerprint(self.train_data)}
        for key, value in expected.items():
            if json.loads(json.dumps(value)) != info[key]:
                raise TrainingError(f"cannot resume from {self.checkpoint_path}: it was written with {key} "
                                    f"{info[key]}, this run has {value}")
        ranks = len(info.get("rng_ranks", [None]))
        if ranks != self.world.size:
            raise TrainingError(f"cannot resume from {self.checkpoint_path}: it was written by a run of {ranks} "
                                f"rank(s), this run has {self.world.size}")
        if self.world.size > 1:
            random.set_state(info["rng_ranks"][self.world.rank])
        self.step, self.saved_step, self.history = info["step"], info["step"], info["history"]
        self.best_metric, self.best_step = info["best_metric"], info["best_step"]
        self.evaluations_without_improvement, self.stopped_early = (info["evaluations_without_improvement"],
                                                                    info["stopped_early"])
        logger.info("resuming from %s at step %d of %d", self.checkpoint_path, self.step, self.total_steps)

    def save_model(self):
        """The model as a Hugging Face folder: config.json, model.safetensors, tokenizer files (a model
        without save_pretrained: its state_dict in model.safetensors). Under mpirun rank 0 alone writes them."""
        if self.world.rank != 0:
            return
        if hasattr(self.model, "save_pretrained"):
            self.model.save_pretrained(self.args.output_dir)
        else:
            safetensors_io.write_safetensors(self.model.state_dict(),
                                             os.path.join(self.args.output_dir, safetensors_io.WEIGHTS_NAME))
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(self.args.output_dir)

    def save_state(self):
        """trainer_state.json, as Hugging Face's: the history, and which evaluation was the best."""
        if self.world.rank == 0:
            state = {"global_step": self.step, "log_history": self.history, "best_metric": self.best_metric,
                     "best_global_step": self.best_step, "metric_for_best_model": self.args.metric_for_best_model,
                     "stopped_early": self.stopped_early}
            safetensors_io.atomic_write(os.path.join(self.args.output_dir, "trainer_state.json"),
                                        json.dumps(state, indent=1))
