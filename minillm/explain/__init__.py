"""Token attributions for a classifier's prediction (``minillm explain``): integrated gradients,
gradient times input and attention rollout (attributions.py), shown as text, a page or an image
(render.py)."""
from .attributions import (Explanation, attention_rollout, gradient_x_input, group_words,  # noqa: F401
                           integrated_gradients, path_weights, rollout)
