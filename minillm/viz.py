"""The autograd graph as Graphviz dot text: ``print(minillm.viz.graph(loss))``.

Boxes are tensors (shape, dtype; leaves say "leaf"), ellipses are ops; edges run from inputs to
outputs, the way forward ran. ``render(loss, "graph.svg")`` calls the ``dot`` program if present.
"""
import shutil
import subprocess

from .tensor import Tensor


def graph(root, names=None):
    """Dot text of the graph that produced ``root``. ``names``: {tensor or id: label}, e.g. from
    model.named_parameters(), to label parameters by name."""
    labels = {}
    for key, value in (names or {}).items():
        labels[id(value) if isinstance(value, Tensor) else key] = key if isinstance(value, Tensor) else value
    lines = ["digraph autograd {", '  node [fontname="Helvetica", fontsize=10];']
    seen, stack = set(), [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        title = labels.get(id(t), "leaf" if t._ctx is None else "")
        text = f"{title}\\n{t.shape} {t.dtype}".lstrip("\\n")
        lines.append(f'  t{id(t)} [shape=box, label="{text}"];')
        if t._ctx is not None:
            fn = t._ctx
            lines.append(f'  f{id(fn)} [shape=ellipse, style=filled, fillcolor=lightgrey, label="{fn.name}"];')
            lines.append(f"  f{id(fn)} -> t{id(t)};")
            for x in fn.inputs:
                if isinstance(x, Tensor):
                    lines.append(f"  t{id(x)} -> f{id(fn)};")
                    stack.append(x)
    lines.append("}")
    return "\n".join(lines)


def render(root, path, names=None):
    """Write the graph to ``path`` (svg, png or pdf by its suffix) with Graphviz's dot; returns the
    dot text. Raises RuntimeError if the ``dot`` program is not installed."""
    text = graph(root, names)
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError("render: the Graphviz 'dot' program is not installed (apt-get install graphviz); "
                           "graph() gives the dot text without it")
    fmt = str(path).rsplit(".", 1)[-1]
    subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=text.encode(), check=True)
    return text
