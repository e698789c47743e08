"""Matrix products: matmul (batched, broadcast) and linear (x W^T + b, as torch's F.linear)."""
from .. import kernels
from ..tensor import Function, as_tensor


class MatMul(Function):
    """z = x @ y over the last two axes, broadcasting leading (batch) axes.
    x: (..., M, K), y: (..., K, N) -> z: (..., M, N);  1-D operands are promoted as in NumPy.

    dL/dx = g @ y^T,  dL/dy = x^T @ g   (summed over broadcast batch axes by the engine).
    """
    float_only = True

    def forward(self, x, y):
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError("both operands need at least one dimension")
        if x.shape[-1] != y.shape[-2 if y.ndim > 1 else 0]:
            raise ValueError(f"inner dimensions differ: {x.shape[-1]} and {y.shape[-2 if y.ndim > 1 else 0]}")
        self.save(x, y)
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        y2 = y.reshape(-1, 1) if y.ndim == 1 else y
        z = kernels.matmul(x2, y2)
        if x.ndim == 1:
            z = z[..., 0, :]
        if y.ndim == 1:
            z = z[..., 0]
        return z

    def backward(self, g):
        x, y = self.saved
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        y2 = y.reshape(-1, 1) if y.ndim == 1 else y
        if x.ndim == 1:
            g = g[..., None, :] if y.ndim > 1 else g[..., None]
        if y.ndim == 1:
            g = g[..., None]
        gx = kernels.matmul(g, y2, transpose_b=True) if self.needs_grad[0] else None
        gy = kernels.matmul(x2, g, transpose_a=True) if self.needs_grad[1] else None
        if gx is not None and x.ndim == 1:
            gx = gx[..., 0, :]
        if gy is not None and y.ndim == 1:
            gy = gy[..., 0]
        return gx, gy


def matmul(x, y): return MatMul.apply(as_tensor(x), as_tensor(y))


class Linear(Function):
    """z = x @ W^T + b.   x: (..., in), W: (out, in) as in torch and Hugging Face, b: (out,) or None.

    The leading axes are flattened into rows, so all three products are single 2-D GEMMs:
        dL/dx = g @ W,   dL/dW = g^T @ x (summed over rows),   dL/db = sum of g over rows.
    """
    float_only = True

    def forward(self, x, weight, bias):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"input features {x.shape[-1]} != weight in_features {weight.shape[1]} "
                             f"(weight shape {weight.shape} is (out, in))")
        rows = x.reshape(-1, x.shape[-1])
        self.save(rows, weight, x.shape)
        z = kernels.matmul(rows, weight, transpose_b=True, bias=bias)  # the bias added inside the GEMM
        return z.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, g):
        rows, weight, x_shape = self.saved
        g = g.reshape(-1, weight.shape[0])
        gx = kernels.matmul(g, weight).reshape(x_shape) if self.needs_grad[0] else None
        gw = kernels.matmul(g, rows, transpose_a=True) if self.needs_grad[1] else None
        gb = g.sum(axis=0) if self.needs_grad[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None): return Linear.apply(x, weight, bias)
