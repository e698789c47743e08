"""The neural-network ops: softmax, log_softmax, cross-entropy, layer norm (and Add & Norm), dropout, embedding
and attention (and its form for a batch whose padding is skipped). The heavy ones call minillm/kernels, which
holds their NumPy and compiled twins. Each Function is followed by its function on Tensors, which checks the
arguments."""
import numpy
import scipy.sparse

from .. import backend, kernels, random
from ..cuda import is_capturing
from ..tensor import Function, Tensor, as_array

IGNORE_INDEX = -100  # cross-entropy's default ignore_index, as torch's: labels the loss leaves out


class Softmax(Function):
    """z = softmax(x) along ``dim``.   dL/dx = z * (g - sum(g * z, dim))."""
    float_only = True

    def forward(self, x, dim=-1):
        last = dim in (-1, x.ndim - 1)
        z = kernels.softmax_forward(x if last else x.swapaxes(dim, -1))
        self.save(z, dim, last)
        return z if last else z.swapaxes(dim, -1)

    def backward(self, g):
        z, dim, last = self.saved
        gx = kernels.softmax_backward(z, g if last else g.swapaxes(dim, -1))
        return gx if last else gx.swapaxes(dim, -1)


def softmax(x, dim): return Softmax.apply(x, dim=dim)


class LogSoftmax(Function):
    """z = x - logsumexp(x) along ``dim``.   dL/dx = g - softmax(x) * sum(g, dim).

    A row that is all -inf gives -inf (log of probability 0) and a zero gradient, not NaN.
    """
    float_only = True

    def forward(self, x, dim=-1):
        z = x - kernels.logsumexp(x, dim)
        self.save(z, dim)
        return z

    def backward(self, g):
        z, dim = self.saved
        xp = backend.array_module(g)
        return g - xp.exp(z) * g.sum(axis=dim, keepdims=True)


def log_softmax(x, dim): return LogSoftmax.apply(x, dim=dim)


class CrossEntropy(Function):
    """loss = sum_i r_i * -log softmax(x_i)[t_i] / sum_i r_i;  x: (N, C) logits, t: (N,) classes.

    r_i, the weight of row i, is ``weight[t_i]`` (torch's ``weight=``, one per class; 1 without it),
    and 0 for rows whose target equals ``ignore_index``: the loss is the weighted mean over the kept
    rows, as torch's (without weights, the plain mean over the n kept rows).
    dL/dx_i = g * r_i * (softmax(x_i) - onehot(t_i)) / sum_j r_j (0 for ignored rows).
    With no weight kept (every target ignored, a batch where masked-LM chose no token) the loss is
    NaN, the mean of nothing, as in torch, and the gradient is 0, as in torch: nothing to learn.
    The sum stays an array (on a GPU, reading it would wait), so neither is a branch on it.
    """
    float_only = True

    def forward(self, logits, target, ignore_index=IGNORE_INDEX, weight=None):
        xp = backend.array_module(logits)
        logp = logits - kernels.logsumexp(logits, -1)
        kept = target != ignore_index
        safe_target = xp.where(kept, target, 0)
        picked = xp.take_along_axis(logp, safe_target[:, None], axis=1)[:, 0]
        rows = kept.astype(logits.dtype) if weight is None else xp.where(kept, weight[safe_target], 0)
        total = rows.sum()                            # n, or the kept rows' weights: stays where it is
        divisor = xp.where(total != 0, total, 1)      # 1 where nothing is kept (the sum is 0 then): no 0 / 0
        self.save(logp, safe_target, rows, divisor)
        loss = -(rows * picked).sum() / divisor
        return xp.where(total != 0, loss, logits.dtype.type(xp.nan))

    def backward(self, g):
        logp, target, rows, divisor = self.saved
        xp = backend.array_module(logp)
        gx = xp.exp(logp)
        gx[xp.arange(len(target)), target] -= 1
        gx *= (rows * (g / divisor))[:, None]   # ignored rows times 0; with nothing kept, every row
        return gx, None


def cross_entropy(logits, target, ignore_index=IGNORE_INDEX, weight=None):
    """Mean negative log-likelihood of integer ``target`` (N,) under softmax(``logits``) (N, C);
    ``weight`` (C,): a weight per class, the mean then weighted by the targets' weights (torch's)."""
    t = as_array(target)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be (N, C), got shape {logits.shape}")
    if t.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: target must be ({logits.shape[0]},) to match logits "
                         f"{logits.shape}, got shape {tuple(t.shape)}")
    check_class_ids(t, logits.shape[1], ignore_index)
    if weight is not None:
        weight = backend.to_device(as_array(weight), logits.device, logits.dtype)
        if weight.shape != (logits.shape[1],):
            raise ValueError(f"cross_entropy: weight must be ({logits.shape[1]},), one per class of logits "
                             f"{logits.shape}, got shape {tuple(weight.shape)}")
    return CrossEntropy.apply(logits, t, ignore_index=ignore_index, weight=weight)


def check_class_ids(target, classes, ignore_index=IGNORE_INDEX):
    """cross_entropy's check of integer class ids ``target``: each in [0, classes) or ignore_index.
    Host targets cost nothing to check, targets on a GPU one wait, and none inside a CUDA-graph
    capture, where nothing may wait (there the batch was checked on the host, with this function)."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {target.dtype}")
    if backend.on_device(target) and is_capturing():
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bad.any():
        raise IndexError(f"cross_entropy: target {int(target[bad][0])} is out of bounds for {classes} classes")


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last axis; see kernels/layer_norm.py
    for the backward, term by term. weight and bias may be None (no affine part)."""
    float_only = True

    def forward(self, x, weight=None, bias=None, eps=1e-5):
        rows = x.reshape(-1, x.shape[-1])
        y, mean, rstd = kernels.layer_norm_forward(rows, weight, bias, eps)
        self.save(rows, weight, mean, rstd, x.shape)
        return y.reshape(x.shape)

    def backward(self, g):
        rows, weight, mean, rstd, shape = self.saved
        dx, dw, db = kernels.layer_norm_backward(g.reshape(rows.shape), rows, weight, mean, rstd)
        return dx.reshape(shape), dw, db


class AddLayerNorm(LayerNorm):
    """y = LayerNorm(x + residual), a post-LN transformer's Add & Norm, the sum and the norm in one
    pass (kernels.add_layer_norm_forward). The backward is LayerNorm's at the sum s = x + residual,
    and since ds/dx = ds/dresidual = 1:   dL/dx = dL/dresidual = dL/ds."""

    def forward(self, x, residual, weight=None, bias=None, eps=1e-5):
        rows = x.reshape(-1, x.shape[-1])
        y, mean, rstd, total = kernels.add_layer_norm_forward(rows, residual.reshape(rows.shape), weight, bias, eps)
        self.save(total, weight, mean, rstd, x.shape)  # LayerNorm's layout, the sum for its input
        return y.reshape(x.shape)

    def backward(self, g):
        dx, dw, db = super().backward(g)
        return dx, dx, dw, db


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the trailing ``normalized_shape`` axes (torch.nn.functional.layer_norm)."""
    shape = _check_layer_norm(x, normalized_shape, weight, bias)
    if len(shape) != 1:  # several trailing axes: normalize them as one flat axis
        flat = x.shape[:x.ndim - len(shape)] + (-1,)
        w = weight.reshape(-1) if weight is not None else None
        b = bias.reshape(-1) if bias is not None else None
        return layer_norm(x.reshape(flat), flat[-1:], w, b, eps).reshape(x.shape)
    return LayerNorm.apply(x, weight, bias, eps=eps)


def add_layer_norm(x, residual, normalized_shape, weight=None, bias=None, eps=1e-5):
    """layer_norm(x + residual, ...), in one pass where x and residual have one shape and dtype and
    the norm is over the last axis (else the add, then the norm)."""
    shape = _check_layer_norm(x, normalized_shape, weight, bias)
    if len(shape) != 1 or residual.shape != x.shape or residual.dtype != x.dtype:
        return layer_norm(x + residual, shape, weight, bias, eps)
    return AddLayerNorm.apply(x, residual, weight, bias, eps=eps)


def _check_layer_norm(x, normalized_shape, weight, bias):
    """normalized_shape as a tuple, or a ValueError naming what does not match it."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the trailing dims of input {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != shape:
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected {shape}")
    return shape


class Dropout(Function):
    """y = x * m / (1 - p), with m_i in {0, 1}: kept with probability 1 - p.
    dL/dx = g * m / (1 - p): the same mask scales the gradient.
    m is the counter-based mask of kernels/dropout.py, a hash of (seed, element index) with a seed
    drawn from minillm's seeded generator: the backward regenerates it from the seed, so nothing the
    size of x is kept between the two, and on a GPU no random array crosses from the host. float32 and
    float64, as the kernels."""
    float_only = True

    def forward(self, x, p):
        seed = random.draw_seed()
        self.save(p, seed)
        return kernels.apply_dropout(x, p, seed)

    def backward(self, g):
        p, seed = self.saved
        return kernels.apply_dropout(g, p, seed), None


def dropout(x, p=0.5, training=True):
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p)


class Embedding(Function):
    """z = weight[ids]: row lookup.   ids: integers (...), weight: (V, E) -> z: (..., E).
    dL/dweight = zeros (V, E) with each g row added at its id (repeated ids add up); the row of
    ``padding_idx``, if given, gets no gradient (as torch), so a padding vector stays put."""

    def forward(self, ids, weight, padding_idx=None):
        self.save(ids, weight.shape, padding_idx)
        return weight[ids]

    def backward(self, g):
        ids, shape, padding_idx = self.saved
        gw = _add_rows_at(ids.reshape(-1), g.reshape(-1, shape[1]), shape[0])
        if padding_idx is not None:
            gw[padding_idx] = 0
        return None, gw


def _add_rows_at(ids, g, rows):
    """(rows, E) zeros with each row of g (T, E) added at its id in ids (T,). On the CPU a product:
    the (rows, T) one-hot matrix of the ids, sparse (scipy), times g, the same sums in the same order
    as numpy.add.at and 3x faster (MiniLM's 30522 x 384 table, 4096 tokens: 22.5 -> 7.3 ms, most of
    it the zeroed table faulting in). On a GPU, CuPy's add.at (atomic adds)."""
    if backend.on_device(g):
        xp = backend.array_module(g)
        gw = xp.zeros((rows, g.shape[1]), dtype=g.dtype)
        xp.add.at(gw, ids, g)
        return gw
    one_hot = scipy.sparse.csr_matrix((numpy.ones(len(ids), g.dtype), (ids, numpy.arange(len(ids)))),
                                      shape=(rows, len(ids)))
    return numpy.asarray(one_hot @ g)


def embedding(ids, weight, padding_idx=None):
    """weight[ids]: ids is an integer array or Tensor (...), weight (V, E) -> (..., E).
    The row ``padding_idx`` (if given) receives no gradient, as in torch."""
    i = as_array(ids)
    if i.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {i.dtype}")
    # One look at the ids: on a GPU one wait (host ids cost none), and none inside a CUDA-graph
    # capture, where nothing may wait (there the batch was checked on the host).
    if i.size and not (backend.on_device(i) and is_capturing()):
        low, high = (int(n) for n in backend.to_host(backend.array_module(i).stack([i.min(), i.max()])))
        if low < 0 or high >= weight.shape[0]:
            raise IndexError(f"embedding: id {high if high >= weight.shape[0] else low} is out of range "
                             f"for a table of {weight.shape[0]} rows")
    return Embedding.apply(i, weight, padding_idx=padding_idx)


class Attention(Function):
    """out = dropout(softmax(q k^T * scale + bias + key mask)) v, fused: see kernels/attention.py
    for the shapes and the backward, in short (p the probabilities, m = keep / (1 - dropout_p),
    m = 1 without dropout):
        dv = (p m)^T g,   ds = p * (g v^T * m - rowsum(g * out)),   dq = ds k * scale,   dk = ds^T q * scale
    Saves q, k, v, out, the row log-sum-exp and the dropout seed, never an (L, S) matrix: the
    backward recomputes p and regenerates the mask from the seed (kernels/dropout.py)."""
    float_only = True

    def forward(self, q, k, v, key_mask=None, bias=None, scale=None, dropout_p=0.0, seed=0):
        out, lse = kernels.attention_forward(q, k, v, key_mask, bias, scale, dropout_p, seed)
        self.save(q, k, v, out, lse, key_mask, bias, scale, dropout_p, seed)
        return out

    def backward(self, g):
        q, k, v, out, lse, key_mask, bias, scale, dropout_p, seed = self.saved
        dq, dk, dv = kernels.attention_backward(q, k, v, out, lse, g, key_mask, bias, scale, dropout_p, seed)
        return dq, dk, dv, None, None


def attention(q, k, v, key_mask=None, bias=None, scale=None, dropout_p=0.0, seed=None):
    """Fused dropout(softmax(q k^T * scale + bias + key mask)) v; see Attention above.
    ``key_mask`` and ``bias`` are constants (no gradient): a bias Tensor that requires grad is refused.
    dropout_p drops probabilities (pass 0 outside training); the mask comes from ``seed``, and
    seed=None draws one from minillm's seeded generator, so mm.manual_seed repeats a run."""
    if isinstance(bias, Tensor) and bias.requires_grad:
        raise ValueError("attention: bias is an additive mask, a constant that gets no gradient, but this "
                         "one requires grad; pass bias.detach()")
    if seed is None:
        seed = random.draw_seed() if dropout_p else 0
    return Attention.apply(q, k, v, key_mask, bias, scale=scale, dropout_p=dropout_p, seed=seed)


class UnpaddedAttention(Function):
    """The fused attention (Attention above) over the N computed rows of a batch whose padding is
    skipped (minillm/nn/padding.py): q, k, v and out are (N, E), E = H * D, each sequence's rows one
    after another (``padding.cu_seqlens``), and each attends to its own real tokens
    (``padding.key_rows``): kernels/attention_varlen.py, forward and backward. Sequence b draws its
    dropout mask from seeds[b]. A short sequence costs its own n^2, not the batch's L^2."""
    float_only = True

    def forward(self, q, k, v, padding=None, heads=1, scale=None, dropout_p=0.0, seeds=None):
        out, lse = kernels.attention_varlen_forward(q, k, v, padding.cu_seqlens, heads, padding.key_rows, scale,
                                                    dropout_p, seeds)
        self.save(q, k, v, out, lse, padding, heads, scale, dropout_p, seeds)
        return out

    def backward(self, g):
        q, k, v, out, lse, padding, heads, scale, dropout_p, seeds = self.saved
        return kernels.attention_varlen_backward(q, k, v, out, lse, g, padding.cu_seqlens, heads, padding.key_rows,
                                                 scale, dropout_p, seeds)


def unpadded_attention(q, k, v, padding, heads, scale=None, dropout_p=0.0):
    """Fused dropout(softmax(q k^T * scale + key mask)) v for q, k, v (N, E), the computed rows of
    ``padding`` (minillm/nn/padding.py), in ``heads`` heads; see UnpaddedAttention."""
    if q.ndim != 2 or q.shape != k.shape or q.shape != v.shape or q.shape[0] != len(padding.indices) \
            or q.shape[1] % heads:
        raise ValueError(f"unpadded_attention: q, k, v must be (N, H * D) with N = {len(padding.indices)}, the "
                         f"rows the padding keeps, and H = {heads}; got {q.shape}, {k.shape}, {v.shape}")
    seeds = random.draw_seeds(padding.batch) if dropout_p else None
    return UnpaddedAttention.apply(q, k, v, padding=padding, heads=heads, scale=scale, dropout_p=dropout_p,
                                   seeds=seeds)
