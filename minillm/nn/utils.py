"""Gradient utilities, as torch.nn.utils: clip_grad_norm_.

BERT's recipe clips the *global* gradient norm at 1.0: all gradients are seen as one long vector
g, and if ||g|| exceeds max_norm every gradient is scaled by max_norm / (||g|| + 1e-6), so the
direction of the update is kept and only its length is capped.
"""
import math

import numpy

from .. import backend
from ..tensor import Tensor


def _norm(g, norm_type):
    """||g||_p of one array, as a 0-d array on g's device (no wait for a GPU). The 2-norm is one
    BLAS dot in g's dtype (as torch computes it): a float64 copy of every gradient first cost 12%
    of a MiniLM training step."""
    xp = backend.array_module(g)
    flat = g.reshape(-1)
    if norm_type == math.inf:
        return xp.abs(flat).max().astype(numpy.float64) if flat.size else xp.zeros((), numpy.float64)
    if norm_type == 2:
        return xp.sqrt(xp.dot(flat, flat).astype(numpy.float64))
    return (xp.abs(flat.astype(numpy.float64)) ** norm_type).sum() ** (1 / norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of ``parameters`` in place so their global p-norm is at most ``max_norm``.

    Returns the norm before clipping (a 0-d float32 Tensor on the gradients' device, as torch). With
    ``error_if_nonfinite`` a NaN or infinite norm raises instead of turning every gradient into NaN
    (on a GPU that check waits for the gradients; without it nothing waits).
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    if norm_type <= 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 (or inf), got {norm_type}")
    if not grads:
        return Tensor(numpy.array(0.0, numpy.float32))
    xp = backend.array_module(grads[0].data)
    norms = xp.stack([_norm(g.data, norm_type) for g in grads])
    total = norms.max() if norm_type == math.inf else (norms ** norm_type).sum() ** (1 / norm_type)
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                           f"{float(total)}; pass error_if_nonfinite=False to clip anyway")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    # The host reads coef for free and skips the multiply when nothing is clipped; a GPU would
    # have to be waited for, so there every gradient is multiplied, by 1 when unclipped (as torch).
    if backend.on_device(coef) or coef < 1:
        with numpy.errstate(invalid="ignore"):  # an infinite norm gives NaN gradients, as in torch
            for g in grads:
                # a new array, not g *= coef: backward gives each .grad an array of its own, but
                # gradients set by hand may share one, which in place would be scaled twice
                g.data = g.data * coef.astype(g.data.dtype)
    return Tensor(xp.asarray(total, dtype=numpy.float32))
