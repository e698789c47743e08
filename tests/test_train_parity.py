"""Parity of the whole fine-tuning recipe with torch + transformers (the `parity` extra).

A tiny BERT saved by transformers, dropout off, the same batches: 30 steps of AdamW with linear
warmup and decay, weight decay on weights only and gradient clipping, in minillm's Trainer and in
a plain torch loop. Losses must agree within 1e-3 relative at every step, and so must the final
parameters (per tensor, in norm).
"""
import numpy as np
import pytest

from finetune_helpers import tiny_tokenizer, toy_texts
from minillm import safetensors_io
from minillm.data import TextClassificationDataset, pad_batch
from minillm.models.bert import BertForSequenceClassification
from minillm.training import Trainer, TrainingArguments

RECIPE = dict(epochs=2, batch_size=4, lr=1e-2, weight_decay=0.1, warmup_ratio=0.1, max_grad_norm=1.0, seed=3)


@pytest.fixture(scope="module")
def saved(torch, transformers, tmp_path_factory):
    """(folder, tokenizer): a tiny dropout-free BERT saved by transformers, and its vocabulary."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=37, max_position_embeddings=24,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder, tokenizer


def torch_run(torch, transformers, folder, data, batches):
    """The same recipe, written the way a torch user writes it."""
    model = transformers.BertForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    model.train()
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
               "weight_decay": RECIPE["weight_decay"]},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=RECIPE["lr"])
    total = len(batches)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, int(np.ceil(0.1 * total)), total)
    losses = []
    for indices in batches:
        batch = {k: torch.tensor(v) for k, v in pad_batch([data[int(i)] for i in indices]).items()}
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), RECIPE["max_grad_norm"])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    return losses, {n: p.detach().numpy() for n, p in model.named_parameters()}


def test_thirty_steps_match_torch(torch, transformers, saved, tmp_path):
    folder, tokenizer = saved
    data = TextClassificationDataset(tokenizer, *toy_texts(60, seed=5), max_length=24)
    model = BertForSequenceClassification.from_pretrained(folder)
    trainer = Trainer(model, TrainingArguments(output_dir=str(tmp_path), progress=False, **RECIPE), data,
                      tokenizer=tokenizer)
    history = trainer.train()
    ours = [h["loss"] for h in history]

    batches = [b for epoch in range(RECIPE["epochs"]) for b in trainer.loader.batches(epoch)]
    theirs, torch_params = torch_run(torch, transformers, folder, data, batches)
    assert len(ours) == len(theirs) == 30
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)
    assert theirs[-1] < 0.8 * theirs[0]  # the steps did train, so agreeing is not trivial

    initial = safetensors_io.read_weights(folder)[0]
    for name, p in model.named_parameters():
        if name.endswith("attention.self.key.bias"):
            # Its true gradient is exactly 0: q.b_k adds the same number to every score of a query,
            # and softmax ignores that. So both runs update it by AdamW's m / sqrt(v) of rounding
            # noise (about +-lr per step whatever the noise's size): two noises, not a comparison.
            continue
        expected = torch_params[name]
        moved = np.linalg.norm(expected - initial[name]) / np.linalg.norm(expected)
        error = np.linalg.norm(p.data - expected) / np.linalg.norm(expected)
        assert error < 1e-3 and error < moved / 10, f"{name}: relative difference {error:.2e}, moved {moved:.2e}"
