"""Integrated gradients on a fine-tuned SST-2 classifier: the completeness gap at 50 steps, and the
attributions against Captum's LayerIntegratedGradients on the same folder loaded in transformers.

    minillm finetune --model all-MiniLM-L6-v2 --data ../shared/data/sst2 --out /tmp/sst2-minilm \\
        --limit 4000 --epochs 1 --batch-size 32 --lr 5e-5 --max-length 64 --seed 42 --bucket
    python bench/explain_sst2.py --model /tmp/sst2-minilm --rows 20
    python bench/explain_sst2.py --model /tmp/sst2-minilm --rows 20 --float64   # both sides in float64

For each of the first ``--rows`` dev sentences: minillm's integrated gradients of the predicted
class's logit from the [PAD] baseline (50 Gauss-Legendre steps, 2 passes of 25 rows), its gap
|sum - (f(x) - f(baseline))| / |f(x) - f(baseline)|, and Captum's on the word-embedding layer with the
same baseline ids, steps and chunks; float32 on both sides (float64 with --float64). The per-token difference is reported
relative to each token's own value and to the sentence's largest |value|; times are medians.
"""
import argparse
import os
import statistics
import time

import numpy

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sst2")


def captum_attributions(torch, lig, tokenizer, text, target, steps):
    encoded = {k: torch.tensor(v) for k, v in tokenizer(text).items()}
    ids = encoded["input_ids"]
    keep = torch.tensor([[t in ("[CLS]", "[SEP]") for t in tokenizer.convert_ids_to_tokens(ids[0])]])
    attributions = lig.attribute(ids, torch.where(keep, ids, tokenizer.pad_token_id), target=target, n_steps=steps,
                                 additional_forward_args=(encoded["attention_mask"], encoded["token_type_ids"]),
                                 internal_batch_size=25)
    return attributions.sum(-1)[0].detach().double().numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a fine-tuned classifier folder")
    parser.add_argument("--data", default=DEFAULT_DATA, help="the SST-2 folder (dev.tsv)")
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--float64", action="store_true", help="both models in float64")
    args = parser.parse_args()

    import torch
    import transformers
    from captum.attr import LayerIntegratedGradients

    from minillm import explain
    from minillm.data import read_examples
    from minillm.inspect import load

    torch.set_num_threads(1)
    model, tokenizer = load(args.model)
    hf = transformers.BertForSequenceClassification.from_pretrained(args.model, attn_implementation="eager").eval()
    if args.float64:
        model, hf = model.to(dtype=numpy.float64), hf.double()
    lig = LayerIntegratedGradients(lambda i, m, t: hf(input_ids=i, attention_mask=m, token_type_ids=t).logits,
                                   hf.bert.embeddings.word_embeddings)
    texts = read_examples(os.path.join(args.data, "dev.tsv"), limit=args.rows).texts
    gaps, own, of_max, ours_s, theirs_s = [], [], [], [], []
    for text in texts:
        start = time.perf_counter()
        e = explain.integrated_gradients(model, tokenizer, text, steps=args.steps)
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = captum_attributions(torch, lig, tokenizer, text, e.target, args.steps)
        theirs_s.append(time.perf_counter() - start)
        words = numpy.array([t not in ("[CLS]", "[SEP]") for t in e.tokens])
        diff = numpy.abs(e.attributions - theirs)[words]
        gaps.append(e.relative_gap)
        own.append((diff / numpy.abs(theirs[words])).max())
        of_max.append(diff.max() / numpy.abs(theirs).max())
    print(f"{len(texts)} SST-2 dev sentences, {args.steps} steps (gausslegendre), [PAD] baseline, f = the predicted "
          f"class's logit, {'float64' if args.float64 else 'float32'}")
    print(f"completeness gap / |f(x) - f(baseline)|: max {max(gaps):.3%}, median {statistics.median(gaps):.4%}")
    print(f"minillm vs Captum per token: max |diff| / |captum| {max(own):.2e} (median over sentences "
          f"{statistics.median(own):.2e}); max |diff| / max|captum| {max(of_max):.2e}")
    print(f"seconds per sentence (median): minillm {statistics.median(ours_s):.3f}, "
          f"Captum + transformers {statistics.median(theirs_s):.3f}")


if __name__ == "__main__":
    main()
