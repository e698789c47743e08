"""Elementwise ops: forward and backward side by side.

Binary ops follow NumPy broadcasting; their backward returns gradients in the broadcast shape
and the engine (tensor.sum_to) sums them back to each input's shape. ``g`` is dL/d(output).
Each Function is followed by its function on Tensors (``abs`` and ``pow`` are torch's names here,
not Python's builtins).
"""
from .. import backend, kernels
from ..tensor import Function, Tensor, as_tensor


def _binary(fn, x, y):
    """Apply a binary Function; a Python scalar stays a scalar (NumPy keeps the tensor's dtype)."""
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        raise TypeError(f"{fn.__name__.lower()} needs at least one Tensor operand")
    if not isinstance(x, (Tensor, int, float)):
        x = as_tensor(x)
    if not isinstance(y, (Tensor, int, float)):
        y = as_tensor(y)
    return fn.apply(x, y)


class Add(Function):
    """z = x + y.   dL/dx = g,  dL/dy = g."""

    def forward(self, x, y):
        return x + y

    def backward(self, g):
        return g, g


def add(x, y): return _binary(Add, x, y)


class Sub(Function):
    """z = x - y.   dL/dx = g,  dL/dy = -g."""

    def forward(self, x, y):
        return x - y

    def backward(self, g):
        return g, (-g if self.needs_grad[1] else None)


def sub(x, y): return _binary(Sub, x, y)


class Mul(Function):
    """z = x * y.   dL/dx = g * y,  dL/dy = g * x."""

    def forward(self, x, y):
        self.save(x, y)
        return x * y

    def backward(self, g):
        x, y = self.saved
        return (g * y if self.needs_grad[0] else None), (g * x if self.needs_grad[1] else None)


def mul(x, y): return _binary(Mul, x, y)


class Div(Function):
    """z = x / y.   dL/dx = g / y,  dL/dy = -g * x / y**2 = -g * z / y."""

    def forward(self, x, y):
        z = x / y
        self.save(y, z)
        return z

    def backward(self, g):
        y, z = self.saved
        gx = g / y if self.needs_grad[0] else None
        gy = -g * z / y if self.needs_grad[1] else None
        return gx, gy


def div(x, y): return _binary(Div, x, y)


class Neg(Function):
    """z = -x.   dL/dx = -g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


def neg(x): return Neg.apply(x)


class Pow(Function):
    """z = x ** p for a constant scalar p.   dL/dx = g * p * x**(p - 1)."""
    float_only = True

    def forward(self, x, exponent):
        self.save(x, exponent)
        return x ** exponent

    def backward(self, g):
        x, p = self.saved
        return g * p * x ** (p - 1), None


def pow(x, exponent):
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number (tensor exponents are not supported)")
    return Pow.apply(x, exponent)


class Exp(Function):
    """z = exp(x).   dL/dx = g * z."""
    float_only = True

    def forward(self, x):
        z = backend.array_module(x).exp(x)
        self.save(z)
        return z

    def backward(self, g):
        return g * self.saved[0]


def exp(x): return Exp.apply(x)


class Log(Function):
    """z = log(x).   dL/dx = g / x."""
    float_only = True

    def forward(self, x):
        self.save(x)
        return backend.array_module(x).log(x)

    def backward(self, g):
        return g / self.saved[0]


def log(x): return Log.apply(x)


class Sqrt(Function):
    """z = sqrt(x).   dL/dx = g / (2 z)."""
    float_only = True

    def forward(self, x):
        z = backend.array_module(x).sqrt(x)
        self.save(z)
        return z

    def backward(self, g):
        return g / (2 * self.saved[0])


def sqrt(x): return Sqrt.apply(x)


class Tanh(Function):
    """z = tanh(x).   dL/dx = g * (1 - z**2)."""
    float_only = True

    def forward(self, x):
        z = backend.array_module(x).tanh(x)
        self.save(z)
        return z

    def backward(self, g):
        z = self.saved[0]
        return g * (1 - z * z)


def tanh(x): return Tanh.apply(x)


class Abs(Function):
    """z = |x|.   dL/dx = g * sign(x)  (0 at x = 0, as torch)."""
    float_only = True

    def forward(self, x):
        self.save(x)
        return backend.array_module(x).abs(x)

    def backward(self, g):
        return g * backend.array_module(g).sign(self.saved[0])


def abs(x): return Abs.apply(x)


class Relu(Function):
    """z = max(x, 0).   dL/dx = g where x > 0, else 0."""
    float_only = True

    def forward(self, x):
        z = backend.array_module(x).maximum(x, 0)
        self.save(z)
        return z

    def backward(self, g):
        return g * (self.saved[0] > 0)


def relu(x): return Relu.apply(x)


class Gelu(Function):
    """z = x * Phi(x), the Gaussian error linear unit; the kernel is minillm/kernels/gelu.py.

    exact ("none"):  Phi(x) = (1 + erf(x / sqrt 2)) / 2,      dz/dx = Phi(x) + x * phi(x)
    tanh:            Phi(x) ~ (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3)
                     dz/dx = (1 + t)/2 + x (1 - t^2)/2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u)
    with phi(x) = exp(-x^2 / 2) / sqrt(2 pi).  dL/dx = g * dz/dx.
    """
    float_only = True

    def forward(self, x, approximate="none"):
        self.save(x, approximate)
        return kernels.gelu_forward(x, approximate)

    def backward(self, g):
        x, approximate = self.saved
        return kernels.gelu_backward(x, g, approximate)


def gelu(x, approximate="none"):
    return Gelu.apply(x, approximate=approximate)


class Where(Function):
    """z = cond ? x : y (cond is a constant boolean array).
    dL/dx = g where cond, else 0;  dL/dy = g where not cond, else 0."""

    def forward(self, cond, x, y):
        self.save(cond)
        return backend.array_module(x).where(cond, x, y)

    def backward(self, g):
        cond = self.saved[0]
        xp = backend.array_module(g)
        gx = xp.where(cond, g, 0) if self.needs_grad[1] else None
        gy = xp.where(cond, 0, g) if self.needs_grad[2] else None
        return None, gx, gy


def where(condition, x, y):
    """Elementwise ``x`` where ``condition`` else ``y``; ``condition`` is boolean and gets no gradient."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    if cond.dtype != bool:
        raise TypeError(f"where: condition must be boolean, got dtype {cond.dtype}")
    like = x if isinstance(x, Tensor) else y
    return Where.apply(cond, as_tensor(x, like), as_tensor(y, like))


def masked_fill(x, mask, value):
    """x with ``value`` wherever the boolean ``mask`` (broadcast to x) is True."""
    return where(mask, value, x)


class Cast(Function):
    """z = x converted to another dtype.   dL/dx = g converted back to x's dtype."""

    def forward(self, x, dtype):
        self.save(x.dtype)
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.saved[0]), None


def cast(x, dtype): return Cast.apply(x, dtype)


class ToDevice(Function):
    """z = x copied to another device (host <-> GPU).   dL/dx = g copied back to x's device."""

    def forward(self, x, device):
        self.save(backend.device_of(x))
        return backend.to_device(x, device)

    def backward(self, g):
        return backend.to_device(g, self.saved[0]), None


def to_device(x, device): return ToDevice.apply(x, device)
