"""Optimizers and learning-rate schedules, with torch.optim's names, defaults and state dicts.

    optimizer = minillm.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    schedule = minillm.optim.get_linear_schedule_with_warmup(optimizer, 100, 1000)
    loss.backward(); optimizer.step(); schedule.step(); optimizer.zero_grad()
"""
from . import lr_scheduler  # noqa: F401
from .adamw import AdamW  # noqa: F401
from .lr_scheduler import LambdaLR, get_linear_schedule_with_warmup  # noqa: F401
from .optimizer import Optimizer  # noqa: F401
from .sgd import SGD  # noqa: F401
