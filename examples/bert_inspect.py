"""One sentence through BERT, step by step: the shapes and values at each stage.

    python examples/bert_inspect.py                                  # all-MiniLM-L6-v2, fetched once
    python examples/bert_inspect.py "Your sentence." --model path/to/a/bert/folder

Layer 0 is computed by hand from its weights, op by op, and checked against the module; the other
layers are summarized; each step names the class of minillm/models/bert.py that computes it (Hugging
Face's name). Everything runs on minillm alone (no PyTorch).
"""
import argparse
import math

import numpy as np

import minillm as mm
from minillm.models.bert import BertModel
from minillm.nn.functional import ACTIVATIONS
from minillm.tokenizer import BertTokenizer


def show(name, t, note=""):
    """One line: the name, its shape, and its first values."""
    values = np.asarray(t.numpy() if isinstance(t, mm.Tensor) else t)
    head = np.array2string(values.reshape(-1)[:4], precision=4, suppress_small=True, separator=", ")
    print(f"  {name:<36} {str(values.shape):<16} {head[:-1]}, ...]  {note}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sentence", nargs="?", default="The cat sat on the mat.")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="a model name or a Hugging Face BERT folder")
    args = parser.parse_args()

    tokenizer = BertTokenizer.from_pretrained(args.model)
    model = BertModel.from_pretrained(args.model)
    config = model.config
    E, H = config.hidden_size, config.num_attention_heads
    D = E // H
    print(f"model: {args.model}: {config.num_hidden_layers} layers, hidden size E={E}, {H} heads of D={D}, "
          f"{model.num_parameters():,} parameters\n")

    print("1. Tokens: WordPiece splits the text, [CLS] and [SEP] frame it")
    batch = tokenizer([args.sentence])
    ids, types = batch["input_ids"], batch["token_type_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    L = len(tokens)
    print("  " + " ".join(f"{t}({i})" for t, i in zip(tokens, ids[0])))
    show("input_ids", ids, "(B=1, L)")

    with mm.no_grad():
        print("\n2. Embeddings (BertEmbeddings): one vector per token = word + position + token type, then LayerNorm")
        emb = model.embeddings
        word = emb.word_embeddings(ids)
        position = emb.position_embeddings(np.arange(L))
        token_type = emb.token_type_embeddings(types)
        show("word_embeddings[input_ids]", word, "(B, L, E)")
        show("position_embeddings[0..L-1]", position, "(L, E), broadcast over the batch")
        show("token_type_embeddings[types]", token_type, "(B, L, E)")
        x = emb.LayerNorm(word + token_type + position)
        show("LayerNorm(sum)", x, f"mean {x.numpy().mean():+.3f}, std {x.numpy().std():.3f} per token")

        print("\n3. Layer 0 (BertLayer) by hand: self-attention (BertSelfAttention, BertSelfOutput)")
        layer = model.encoder.layer[0]
        attn = layer.attention.self

        def heads(t):  # (B, L, E) -> (B, H, L, D)
            return t.reshape(1, L, H, D).transpose(1, 2)

        q, k, v = heads(attn.query(x)), heads(attn.key(x)), heads(attn.value(x))
        show("q = x Wq^T + bq, split in heads", q, "(B, H, L, D)")
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        show("scores = q k^T / sqrt(D)", scores, "(B, H, L, L)")
        probs = scores.softmax(-1)
        show("p = softmax(scores)", probs, "each row sums to 1")
        print("  head 0: where each token looks most: "
              + ", ".join(f"{tokens[i]}->{tokens[j]}" for i, j in enumerate(probs.numpy()[0, 0].argmax(-1))))
        context = (probs @ v).transpose(1, 2).reshape(1, L, E)
        show("context = p v, heads joined", context, "(B, L, E)")
        a = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + x)
        show("a = LayerNorm(x + dense(context))", a, "Add & Norm (post-LN)")

        print("\n4. Layer 0 by hand: feed-forward (BertIntermediate, BertOutput)")
        inner = ACTIVATIONS[config.hidden_act](layer.intermediate.dense(a))
        show(f"{config.hidden_act}(dense(a))", inner, f"(B, L, {config.intermediate_size})")
        y = layer.output.LayerNorm(layer.output.dense(inner) + a)
        show("y = LayerNorm(a + dense(.))", y, "(B, L, E)")
        module_y, _ = layer(x)
        print(f"  the module gives the same: max |difference| = {np.abs(module_y.numpy() - y.numpy()).max():.2e}")

        print("\n5. All layers (BertEncoder), the pooler (BertPooler): BertModel.forward, with study outputs")
        out = model(ids, batch["attention_mask"], types, output_hidden_states=True, output_attentions=True)
        for i, (h, p) in enumerate(zip(out.hidden_states[1:], out.attentions)):
            entropy = -(p.numpy() * np.log(p.numpy() + 1e-12)).sum(-1).mean()
            print(f"  layer {i}: hidden std {h.numpy().std():.3f}, "
                  f"|h[CLS]| {np.linalg.norm(h.numpy()[0, 0]):6.2f}, mean attention entropy {entropy:.2f} nats")
        show("last_hidden_state", out.last_hidden_state, "(B, L, E)")
        show("pooler_output = tanh(dense(h[CLS]))", out.pooler_output, "(B, E)")

        print("\n6. A sentence embedding (mean of the token vectors, as sentence-transformers uses MiniLM)")
        others = ["A cat is sitting on a rug.", "Stock markets fell sharply today."]
        batch = tokenizer([args.sentence] + others)
        h = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state.numpy()
        mask = batch["attention_mask"][..., None]
        vectors = (h * mask).sum(1) / mask.sum(1)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for text, similarity in zip(others, vectors[1:] @ vectors[0]):
            print(f"  cosine({args.sentence!r}, {text!r}) = {similarity:.3f}")


if __name__ == "__main__":
    main()
