"""Learning-rate schedules: LambdaLR and the BERT recipe's linear warmup then linear decay.

A scheduler sets each group's ``lr`` to ``base_lr * factor(step)``. As in torch, building it
applies step 0 at once, and each ``scheduler.step()`` after ``optimizer.step()`` moves one step on.
"""


class LambdaLR:
    """torch.optim.lr_scheduler.LambdaLR: lr of group i = base_lr_i * lr_lambda(step).

    ``lr_lambda`` is one function or one per group. ``state_dict()`` holds the step count and
    base rates (not the functions, which are code), so a resumed run rebuilds the scheduler the
    same way and loads the state.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        groups = optimizer.param_groups
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * len(groups)
        if len(self.lr_lambdas) != len(groups):
            raise ValueError(f"LambdaLR: {len(self.lr_lambdas)} lr_lambdas for {len(groups)} parameter groups")
        if last_epoch == -1:
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in g for g in groups):
            raise KeyError("LambdaLR: resuming with last_epoch != -1 needs 'initial_lr' in every parameter group")
        self.base_lrs = [g["initial_lr"] for g in groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]

    def step(self):
        self.last_epoch += 1
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._last_lr = [float(x) for x in state["_last_lr"]]


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    """transformers' schedule: the factor rises 0 -> 1 over the warmup, then falls linearly to 0.

        factor(s) = s / warmup                              for s < warmup
                  = max(0, (total - s) / (total - warmup))  after
    """
    if num_warmup_steps < 0 or num_training_steps < 0:
        raise ValueError(f"get_linear_schedule_with_warmup: steps must be >= 0, got warmup {num_warmup_steps}, "
                         f"total {num_training_steps}")

    def factor(step):
        if step < num_warmup_steps:
            return float(step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))

    return LambdaLR(optimizer, factor, last_epoch)
