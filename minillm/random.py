"""minillm's random generator: one seeded NumPy Generator behind dropout and initialization.
``manual_seed(n)`` makes a run repeatable, as torch.manual_seed does."""
import numpy

_generator = numpy.random.default_rng()


def manual_seed(seed):
    global _generator
    _generator = numpy.random.default_rng(seed)
    return _generator


def generator():
    return _generator


def draw_seed():
    """A fresh seed in [0, 2^63) for a counter-based mask (kernels/dropout.py), from the generator."""
    return int(_generator.integers(0, 2**63))


def draw_seeds(n):
    """n fresh seeds in [0, 2^63) (a uint64 array), one draw from the generator."""
    return _generator.integers(0, 2**63, size=n).astype(numpy.uint64)


def uniform(shape, dtype, xp=numpy):
    """Uniform [0, 1) samples of ``shape`` on xp's device, drawn from the seeded generator."""
    sample = _generator.random(shape, dtype=numpy.float32 if dtype == numpy.float32 else numpy.float64)
    return sample if xp is numpy else xp.asarray(sample)


def normal(shape, std=1.0, dtype=numpy.float32):
    return (_generator.standard_normal(shape, dtype=numpy.float64) * std).astype(dtype)


def get_state():
    """The generator's state (a dict), for checkpoints that resume a run exactly."""
    return _generator.bit_generator.state


def set_state(state):
    _generator.bit_generator.state = state
