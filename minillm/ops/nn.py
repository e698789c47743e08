"""The neural-network ops: softmax, log_softmax, cross-entropy, layer norm, dropout, embedding
and attention. The heavy ones call minillm/kernels, which holds their NumPy and compiled twins."""
from .. import backend, kernels, random
from ..tensor import Function


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


class LogSoftmax(Function):
    """z = x - logsumexp(x) along ``dim``.   dL/dx = g - softmax(x) * sum(g, dim).

    A row that is all -inf gives -inf (log of probability 0) and a zero gradient, not NaN.
    """
    float_only = True

    def forward(self, x, dim=-1):
        z = x - _logsumexp(x, dim)
        self.save(z, dim)
        return z

    def backward(self, g):
        z, dim = self.saved
        xp = backend.array_module(g)
        return g - xp.exp(z) * g.sum(axis=dim, keepdims=True)


def _logsumexp(x, dim):
    """log(sum(exp(x), dim)) with keepdims, stable for large x, 0 for an all -inf row."""
    xp = backend.array_module(x)
    row_max = x.max(axis=dim, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0)
    total = xp.exp(x - row_max).sum(axis=dim, keepdims=True)
    return xp.log(xp.where(total > 0, total, 1)) + row_max


class CrossEntropy(Function):
    """loss = mean over kept rows i of -log softmax(x_i)[t_i];  x: (N, C) logits, t: (N,) classes.

    Rows whose target equals ``ignore_index`` are left out of the sum and of the count n.
    dL/dx_i = g * (softmax(x_i) - onehot(t_i)) / n for kept rows, 0 for ignored ones.
    """
    float_only = True

    def forward(self, logits, target, ignore_index=-100):
        xp = backend.array_module(logits)
        logp = logits - _logsumexp(logits, -1)
        kept = target != ignore_index
        safe_target = xp.where(kept, target, 0)
        picked = xp.take_along_axis(logp, safe_target[:, None], axis=1)[:, 0]
        count = kept.sum().astype(logits.dtype)  # on a GPU it stays there: reading it would wait
        self.save(logp, safe_target, kept, count)
        return -(picked * kept).sum() / count

    def backward(self, g):
        logp, target, kept, count = self.saved
        xp = backend.array_module(logp)
        gx = xp.exp(logp)
        gx[xp.arange(len(target)), target] -= 1
        gx *= (kept * (g / count))[:, None]
        return gx, None


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


class Dropout(Function):
    """y = x * m / (1 - p), with m_i ~ Bernoulli(1 - p) drawn from minillm's seeded generator.
    dL/dx = g * m / (1 - p): the same mask scales the gradient.
    On a GPU the mask is made there, from a seed drawn on the host (kernels/dropout.py), so no
    random array crosses from the host at each call."""
    float_only = True

    def forward(self, x, p):
        xp = backend.array_module(x)
        if p >= 1:
            mask = xp.zeros_like(x)
        else:
            if backend.on_device(x):
                keep = kernels.keep_mask(random.draw_seed(), x.shape, p, xp)
            else:
                keep = random.uniform(x.shape, x.dtype) >= p
            mask = keep * x.dtype.type(1 / (1 - p))
        self.save(mask)
        return x * mask

    def backward(self, g):
        return g * self.saved[0], None


class Embedding(Function):
    """z = weight[ids]: row lookup.   ids: integers (...), weight: (V, E) -> z: (..., E).
    dL/dweight = zeros (V, E) with each g row added at its id (repeated ids add up); the row of
    ``padding_idx``, if given, gets no gradient (as torch), so a padding vector stays put."""

    def forward(self, ids, weight, padding_idx=None):
        self.save(ids, weight.shape, padding_idx)
        return weight[ids]

    def backward(self, g):
        ids, shape, padding_idx = self.saved
        xp = backend.array_module(g)
        gw = xp.zeros(shape, dtype=g.dtype)
        xp.add.at(gw, ids.reshape(-1), g.reshape(-1, shape[1]))
        if padding_idx is not None:
            gw[padding_idx] = 0
        return None, gw


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
