"""The hyper-parameters of a fine-tuning run, with the BERT recipe's defaults."""
import dataclasses


@dataclasses.dataclass
class TrainingArguments:
    """output_dir: where checkpoints and the final model go.

    The recipe (Devlin et al.; Hugging Face's Trainer): AdamW at ``lr`` with ``weight_decay`` on
    every weight but biases and LayerNorm weights, the learning rate rising linearly over the first
    ``warmup_ratio`` of the steps and then falling linearly to 0, the global gradient norm clipped at
    ``max_grad_norm`` (0 turns clipping off), batches of ``batch_size`` shuffled by ``seed``.
    ``bucket`` groups texts of similar length into batches (faster, different batches).
    ``save_steps``: also checkpoint every that many steps (0: only at the end of each epoch).
    ``cuda_graph``: capture the training step as a CUDA graph and replay it (minillm.training.cuda_graph;
    a GPU model without dropout): every batch is padded to the longest training text, the last one
    filled with rows the loss ignores, so the batches, the steps and the losses stay those of an
    eager run (to float rounding); the NaN check then comes after a step's update.

    With evaluation data (Hugging Face's names): ``metric_for_best_model`` is the evaluation metric
    that picks the best epoch, whose model is the one saved in output_dir ("loss" by default, lower
    is better; any other, e.g. "accuracy" or "f1", higher is better unless ``greater_is_better`` says);
    ``early_stopping_patience``: stop after that many evaluations in a row without improvement (0: never).
    ``class_weights``: one weight per class for the single-label loss (torch's cross_entropy weight=).
    """
    output_dir: str
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    bucket: bool = False
    eval_batch_size: int = 64
    save_steps: int = 0
    progress: bool = True
    cuda_graph: bool = False
    metric_for_best_model: str = "loss"
    greater_is_better: bool = None
    early_stopping_patience: int = 0
    class_weights: list = None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "weight_decay", "max_grad_norm", "save_steps", "early_stopping_patience"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio!r}")
        if self.greater_is_better is None:  # as Hugging Face's: a loss is better lower, a score higher
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
            if not all(w >= 0 for w in self.class_weights) or not any(self.class_weights):
                raise ValueError(f"class_weights must be >= 0 and not all 0, got {self.class_weights}")
        if self.cuda_graph and self.bucket:
            raise ValueError("cuda_graph=True pads every batch to one shape, so bucket=True (batches of similar "
                             "lengths, to pad less) would only change the batches: choose one of them")

    def recipe(self):
        """The fields that decide the losses: a resumed run must use the same ones (cuda_graph changes
        how a step runs, not the batches or the steps: a run may resume with or without it)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("output_dir", "eval_batch_size", "save_steps", "progress", "cuda_graph")}
