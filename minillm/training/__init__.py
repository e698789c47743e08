"""Fine-tuning: the training step, the training loop, its checkpoints, evaluation, metrics and prediction.

    loss, grad_norm = train_step(model, batch, optimizer)   # forward, backward, clip, update (step.py)
    args = TrainingArguments(output_dir="out", epochs=1, batch_size=32, lr=5e-5)
    trainer = Trainer(model, args, train_data, eval_data, tokenizer)
    trainer.train()                  # or trainer.train(resume=True) after an interruption
                                     # (Ctrl-C checkpoints the last whole step: TrainingInterrupted)
    evaluate(model, loader)          # {"loss": ..., "accuracy": ..., "examples": ...}
    TrainingArguments(..., metric_for_best_model="f1", early_stopping_patience=2, class_weights=[1, 3])
    evaluate(model, loader)          # {"loss", "accuracy", "macro_f1", "f1", ..., "confusion_matrix", "examples"}
    TrainingArguments(..., cuda_graph=True)   # on a GPU: each step a replay of a captured CUDA graph
"""
from .arguments import TrainingArguments  # noqa: F401
from .step import train_step  # noqa: F401
from .training_checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint  # noqa: F401
from .cuda_graph import CapturedStep  # noqa: F401
from .evaluate import evaluate, predict_proba  # noqa: F401
from .interrupt import TrainingInterrupted  # noqa: F401
from .loop import Trainer, TrainingError, decay_groups  # noqa: F401
