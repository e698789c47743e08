"""A tour of minillm's autograd: build a small graph, run backward, and check it against
finite differences with minillm.testing.gradcheck.

    python examples/autograd_tour.py
"""
import numpy as np

import minillm as mm
import minillm.nn.functional as F
from minillm.testing import gradcheck

mm.manual_seed(0)
print("kernels:", mm.kernels.info())

# A two-layer classifier on random data: logits = relu(x W1^T + b1) W2^T + b2.
x = mm.randn(8, 5)
labels = np.array([0, 1, 2, 1, 0, 2, 2, 1])
w1, b1 = mm.randn(16, 5, requires_grad=True), mm.zeros(16, requires_grad=True)
w2, b2 = mm.randn(3, 16, requires_grad=True), mm.zeros(3, requires_grad=True)

for step in range(5):
    logits = F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)
    loss = F.cross_entropy(logits, labels)
    for p in (w1, b1, w2, b2):
        p.grad = None
    loss.backward()
    for p in (w1, b1, w2, b2):
        p.data -= 0.1 * p.grad.data
    print(f"step {step}: loss {loss.item():.4f}")

# The analytic gradients agree with central finite differences (float64).
gradcheck(lambda a, b: F.layer_norm(a, (5,), b, None).tanh(), [np.random.randn(3, 5), np.random.randn(5)])
print("gradcheck of layer_norm -> tanh: ok")
