"""Check an analytic backward against central finite differences.

    numeric dL/dx_i = (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),   L = sum(fn(*inputs) * u)

u is a fixed random upstream gradient, not all ones: ones hide bugs that cancel out (a layer
norm backward missing its mean term still passes with ones). Everything runs in float64, on the
inputs' device or the one asked for: the perturbed copies live on the host and are sent to it.
"""
import numpy

from .. import backend
from ..tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; the message names the worst element."""


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, device=None):
    """Compare fn's backward with finite differences for every float input; return True or raise.

    fn: takes Tensors, returns a Tensor (or a tuple of Tensors).
    inputs: arrays or Tensors; floating ones are converted to float64 and checked, others
    (integer ids, boolean masks) are passed as they are.
    device: where fn runs ('cpu', 'cuda'); by default, where the first Tensor input is (else the host).
    On failure raises GradcheckError naming the input, the element index and both values.
    """
    rng = numpy.random.default_rng(seed)
    if device is None:
        device = next((x.device for x in inputs if isinstance(x, Tensor)), backend.CPU)
    # order="K" keeps a transposed (non-contiguous) input's memory layout
    arrays = [numpy.array(backend.to_host(x.data if isinstance(x, Tensor) else x), order="K") for x in inputs]
    checked = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    for i in checked:
        arrays[i] = arrays[i].astype(numpy.float64)

    def tensors(requires_grad):
        return [Tensor(backend.to_device(a, device), requires_grad=requires_grad and i in checked)
                for i, a in enumerate(arrays)]

    with no_grad():
        upstream = [backend.to_device(rng.standard_normal(o.shape), device) for o in _as_list(fn(*tensors(False)))]

    def loss():
        with no_grad():
            return sum(float((o.data * u).sum()) for o, u in zip(_as_list(fn(*tensors(False))), upstream))

    leaves = tensors(True)
    outputs = _as_list(fn(*leaves))
    if not any(o.requires_grad for o in outputs):
        raise GradcheckError("gradcheck: no output depends on a floating-point input")
    for o, u in zip(outputs, upstream):
        if o.requires_grad:
            o.backward(u, retain_graph=True)

    for i in checked:
        analytic = backend.to_host(leaves[i].grad.data) if leaves[i].grad is not None else numpy.zeros_like(arrays[i])
        x, numeric = arrays[i], numpy.zeros(arrays[i].shape)
        for j in numpy.ndindex(x.shape):
            original = x[j]
            x[j] = original + eps
            plus = loss()
            x[j] = original - eps
            minus = loss()
            x[j] = original
            numeric[j] = (plus - minus) / (2 * eps)
        error = numpy.abs(analytic - numeric) - (atol + rtol * numpy.abs(numeric))
        if error.size and error.max() > 0:
            worst = numpy.unravel_index(numpy.argmax(error), error.shape)
            raise GradcheckError(
                f"gradcheck: input {i} (shape {arrays[i].shape}), element {tuple(int(k) for k in worst)}: "
                f"analytic {analytic[worst]:.8g} vs numeric {numeric[worst]:.8g} "
                f"(|diff| {abs(analytic[worst] - numeric[worst]):.3g} > atol {atol} + rtol {rtol} * |numeric|)")
    return True
