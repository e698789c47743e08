"""One training step: forward, loss, backward, gradient clipping, optimizer update.

    loss, grad_norm = train_step(model, batch, optimizer, max_grad_norm=1.0)
    optimizer.zero_grad()

It is the only place a step is written. The Trainer runs it eagerly with a check between the
clipping and the update (minillm/training/loop.py); CapturedStep records one call as a CUDA graph
and replays it (minillm/training/cuda_graph.py). It knows nothing of BERT: any model whose output
has a ``.loss`` when called with the batch's keyword arguments trains through it.
"""
from ..nn.utils import clip_grad_norm_


def train_step(model, batch, optimizer, max_grad_norm=1.0, params=None, check=None):
    """One optimizer step of ``model`` on ``batch``.

    batch: the model's keyword arguments, the targets included (pad_batch's input_ids,
    token_type_ids, attention_mask and labels); ``model(**batch).loss`` is what is minimized.
    params: the parameters whose gradients are clipped to a global 2-norm of ``max_grad_norm``
    (default every parameter of the model; max_grad_norm 0: no clipping).

    Returns (loss, grad_norm): 0-d arrays on the model's device, grad_norm None without clipping
    (the norm before clipping). Nothing waits for a GPU.

    check(loss, grad_norm), if given, runs with those arrays before the update, and train_step
    returns what it returns: the Trainer's reads both to the host (one wait) and raises unless both
    are finite, so a diverged step updates nothing. A step captured as a CUDA graph may not wait:
    CapturedStep passes no check, and its caller reads the two once the step has run.

    A DistributedOptimizer (minillm.distributed, under mpirun) is synchronized after the backward:
    the gradients are the mean over the ranks before they are clipped, so the norm is the global one.

    The gradients stay where backward and the clipping left them: call optimizer.zero_grad()
    before the next step.
    """
    loss = model(**batch).loss
    loss.backward()
    if hasattr(optimizer, "synchronize"):  # minillm.distributed.DistributedOptimizer: the mean over ranks
        optimizer.synchronize()
    grad_norm = None
    if max_grad_norm:
        grad_norm = clip_grad_norm_(model.parameters() if params is None else params, max_grad_norm).data
    result = (loss.data, grad_norm) if check is None else check(loss.data, grad_norm)
    optimizer.step()
    return result
