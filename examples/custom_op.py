"""Define your own op and check its backward in a few lines.

    python examples/custom_op.py

Softplus, z = log(1 + exp(x)), has dz/dx = sigmoid(x). We write it as a Function (forward and
backward side by side), check it on random shapes with gradcheck and the hypothesis strategies,
then show what gradcheck says about a backward with a mistake in it.
"""
import numpy as np
from hypothesis import given, settings

from minillm.tensor import Function
from minillm.testing import GradcheckError, gradcheck, strategies as st


class Softplus(Function):
    """z = log(1 + exp(x)).   dL/dx = g * sigmoid(x)."""

    def forward(self, x):
        self.save(x)
        return np.logaddexp(0, x)

    def backward(self, g):
        return g / (1 + np.exp(-self.saved[0]))


class BrokenSoftplus(Softplus):
    def backward(self, g):
        return g / (1 + np.exp(self.saved[0]))  # sign slip: sigmoid(-x) instead of sigmoid(x)


@settings(max_examples=30)
@given(st.arrays(st.shapes(min_side=0)))
def check_softplus(x):
    gradcheck(Softplus.apply, [x])


if __name__ == "__main__":
    check_softplus()
    print("Softplus: gradcheck passed on 30 random shapes")
    try:
        gradcheck(BrokenSoftplus.apply, [np.linspace(-2, 2, 5)])
    except GradcheckError as err:
        print("BrokenSoftplus:", err)
