"""Tools for checking gradients of your own ops: ``gradcheck`` and hypothesis ``strategies``."""
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from . import strategies  # noqa: F401
