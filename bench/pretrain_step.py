"""One masked-LM pretraining step, minillm's BertForMaskedLM against transformers'.

    python bench/pretrain_step.py                            # both sizes, 2 threads, 3 alternating rounds
    python bench/pretrain_step.py --level avx2               # both sides held to AVX2 (bench/machine.py)
    python bench/pretrain_step.py --shapes minilm-32x128 --profile   # minillm's per-op table, one step

The step is forward, the masked-LM loss, backward, clip_grad_norm_(1.0), AdamW step and zero_grad,
as bench/bert_step.py times the classifier's (its workers, alternation and medians are reused:
each measurement a fresh process, sides alternating A B A B). Both sides load the same random
BertForMaskedLM (tied decoder), written once by minillm, and train on the same batch: random ids,
15% of the positions chosen (a seeded draw), as DataCollatorForLanguageModeling would: their labels
are the original ids, -100 elsewhere, and 80% of them read [MASK]. No dropout. minillm scores the
vocabulary at the chosen positions only (bert.py, BertForMaskedLM); transformers at every position.
Sizes: "tiny" is minillm pretrain's tiny (2 layers, hidden 128) with an 8000-token vocabulary of
one's own; "minilm" is all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, vocabulary 30522).
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402
from bert_step import NO_DROPOUT, alternate, arguments, inputs, minillm_train_step, report, torch_train_step  # noqa: E402

CONFIGS = {
    "tiny": dict(vocab_size=8000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536),
}
SHAPES = {"tiny-32x128": ("tiny", 32, 128), "minilm-32x128": ("minilm", 32, 128)}  # name: (size, batch, length)
MLM_PROBABILITY, MASK_TOKEN_ID = 0.15, 103


def model_dir(size):
    """A random BertForMaskedLM of ``size``, written once by minillm; both sides read it."""
    folder = os.path.join(tempfile.gettempdir(), f"minillm-bench-mlm-{size}")
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        import minillm
        from minillm.models.bert import BertConfig, BertForMaskedLM
        minillm.manual_seed(0)
        BertForMaskedLM(BertConfig(max_position_embeddings=512, type_vocab_size=2, **CONFIGS[size])).save_pretrained(folder)
    return folder


def masked_batch(batch, length, vocab):
    """(ids, mask, types, labels): bert_step's random inputs with 15% of the positions chosen."""
    import numpy
    ids, mask, types, _ = inputs(batch, length, vocab)
    rng = numpy.random.default_rng(1)
    chosen = rng.random(ids.shape) < MLM_PROBABILITY
    labels = numpy.where(chosen, ids, -100)
    ids = numpy.where(chosen & (rng.random(ids.shape) < 0.8), MASK_TOKEN_ID, ids)
    return ids, mask, types, labels


def minillm_step(folder, batch, length, threads):
    import minillm
    from minillm.models.bert import BertConfig, BertForMaskedLM
    minillm.kernels.set_threads(threads)
    config = BertConfig.from_pretrained(folder, **NO_DROPOUT)
    model = BertForMaskedLM.from_pretrained(folder, config=config).train()
    return minillm_train_step(model, masked_batch(batch, length, config.vocab_size))


def torch_step(folder, batch, length, threads):
    import torch
    import transformers
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    model = transformers.BertForMaskedLM.from_pretrained(folder, attn_implementation="sdpa", **NO_DROPOUT).train()
    data = masked_batch(batch, length, model.config.vocab_size)
    return torch_train_step(torch, model, tuple(torch.as_tensor(a) for a in data))


def profile_step(shape, threads):
    """minillm's per-op table (minillm.profile) of one step after a warm-up, and its wall time."""
    import time

    import minillm.profile
    size, batch, length = SHAPES[shape]
    step = minillm_step(model_dir(size), batch, length, threads)
    step()
    start = time.perf_counter()
    with minillm.profile.profile() as prof:
        step()
    print(f"{shape}: one step {time.perf_counter() - start:.3f} s (profiled)\n{prof}")


def main():
    args = arguments(__doc__, SHAPES, modes=("train",))
    args.add_argument("--profile", action="store_true", help="print minillm's per-op table instead")
    args = args.parse_args()
    if args.worker:
        size, batch, length = SHAPES[args.shapes]
        make = minillm_step if args.worker == "minillm" else torch_step
        return report(make(model_dir(size), batch, length, args.threads), args.repeat, args.worker)
    if args.profile:
        if args.level != "native":
            raise SystemExit("--profile runs in this process, at the native level: --level is for the timed workers")
        return [profile_step(shape, args.threads) for shape in args.shapes.split(",")]
    for shape in args.shapes.split(","):  # before any worker: one that wrote the model would count it in its RSS
        model_dir(SHAPES[shape][0])
    print(machine.describe(args.level, args.threads))
    print(f"{args.rounds} alternating rounds x {args.repeat} repeats (medians), {MLM_PROBABILITY:.0%} of the tokens masked")
    print(f"{'shape':<15}{'minillm s':>11}{'torch s':>10}{'ratio':>8}{'minillm MB':>12}{'torch MB':>10}{'MB ratio':>10}")
    for shape in args.shapes.split(","):
        t, mb = alternate(shape, "train", args, __file__)
        print(f"{shape:<15}{t['minillm']:>11.3f}{t['torch']:>10.3f}{t['minillm'] / t['torch']:>8.2f}"
              f"{mb['minillm']:>12.0f}{mb['torch']:>10.0f}{mb['minillm'] / mb['torch']:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
