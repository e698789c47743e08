"""Time one AdamW step over BERT-shaped parameters: minillm's fused kernel, its NumPy twin, torch.

    python bench/adamw_step.py                 # all-MiniLM-L6-v2 shapes (22.7M parameters)
    python bench/adamw_step.py --size base     # bert-base-uncased shapes (109M parameters)

torch (if installed) runs its default CPU AdamW (one tensor at a time), foreach=True and fused=True,
on the same shapes and the same number of threads. Each figure is the median of --repeat steps.
Both run in this process; the machine and what each side runs there come first (bench/machine.py,
its probes launched with this process's threads at the native level).
"""
import argparse

import numpy

import machine
from compiled_kernels import timed  # median ms of repeat calls, after one to warm up
from minillm import kernels
from minillm.nn import Parameter
from minillm.optim import AdamW
from minillm.tensor import Tensor

SIZES = {"minilm": dict(hidden=384, layers=6, intermediate=1536),
         "base": dict(hidden=768, layers=12, intermediate=3072)}


def bert_shapes(hidden, layers, intermediate, vocab=30522, positions=512, labels=2):
    """The parameter shapes of BertForSequenceClassification, in Hugging Face's order."""
    shapes = [(vocab, hidden), (positions, hidden), (2, hidden), (hidden,), (hidden,)]
    for _ in range(layers):
        shapes += [(hidden, hidden), (hidden,)] * 4 + [(hidden,), (hidden,)]        # q k v o, LayerNorm
        shapes += [(intermediate, hidden), (intermediate,), (hidden, intermediate), (hidden,), (hidden,), (hidden,)]
    return shapes + [(hidden, hidden), (hidden,), (labels, hidden), (labels,)]    # pooler, classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="minilm")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    rng = numpy.random.default_rng(0)
    shapes = bert_shapes(**SIZES[args.size])
    arrays = [rng.standard_normal(s, dtype=numpy.float32) * 0.02 for s in shapes]
    grads = [rng.standard_normal(s, dtype=numpy.float32) * 1e-3 for s in shapes]
    threads = kernels.info()["threads"]
    print(machine.describe("native", threads))
    print(f"AdamW step over {sum(a.size for a in arrays) / 1e6:.1f}M parameters in {len(shapes)} tensors "
          f"({args.size}), {threads} threads, median of {args.repeat}")

    params = [Parameter(a.copy()) for a in arrays]
    for p, g in zip(params, grads):
        p.grad = Tensor(g)
    optimizer = AdamW(params, lr=1e-4, weight_decay=0.01)
    for mode in ("compiled", "numpy"):
        with kernels.use(mode):
            print(f"  minillm {'fused kernel' if mode == 'compiled' else 'NumPy twin'}: "
                  f"{timed(optimizer.step, args.repeat):8.1f} ms")
    try:
        import torch
    except ImportError:
        print("  torch: not installed")
        return
    torch.set_num_threads(threads)
    for name, options in (("default (single tensor)", dict(foreach=False)), ("foreach=True", dict(foreach=True)),
                          ("fused=True", dict(fused=True))):
        tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
        for p, g in zip(tparams, grads):
            p.grad = torch.from_numpy(g)
        toptimizer = torch.optim.AdamW(tparams, lr=1e-4, weight_decay=0.01, **options)
        print(f"  torch {name}: {timed(toptimizer.step, args.repeat):8.1f} ms")


if __name__ == "__main__":
    main()
