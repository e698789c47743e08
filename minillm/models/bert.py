"""BERT (Devlin et al., 2018), class for class and weight for weight as Hugging Face's
modeling_bert.py, so its checkpoints load 1:1 and the two files read side by side.

    input_ids (B, L)
      -> BertEmbeddings: word[ids] + token_type[type ids] + position[0..L-1], LayerNorm, dropout    (B, L, E)
      -> BertEncoder: N BertLayers, each post-LN:                                                   (B, L, E)
           BertAttention:  a = LayerNorm(x + Dense(BertSelfAttention(x)))       BertSelfOutput
           feed-forward:   y = LayerNorm(a + Dense(act(Dense(a))))              BertIntermediate, BertOutput
         = last_hidden_state
      -> BertPooler: tanh(Dense(h[:, 0])), the hidden state of the [CLS] token                      (B, E)
         = pooler_output
    BertForSequenceClassification adds dropout and a Dense layer: logits (B, C), and the loss
    when labels are given.
    BertForMaskedLM adds the masked-LM head (``cls.predictions``): scores over the vocabulary,
    decoder(LayerNorm(act(Dense(h))))                                                               (B, L, V)
    with the decoder's weight the word embeddings' own (tied); BertForPreTraining adds the
    next-sentence head too (``cls.seq_relationship``: Dense(pooler_output), (B, 2)).

BertForSequenceClassification, and the masked-LM models given labels (not full_logits), skip the
padding (BertModel's skip_padding, minillm/nn/padding.py): every layer but the attention runs on
the batch's N real tokens, (N, E), since their heads never read a padded position. The bare
BertModel computes every position, as Hugging Face's, and so does every model asked for
output_attentions or output_hidden_states.

B sequences of L tokens, E = H * D hidden features in H heads of D, C = num_labels, V = vocab_size. Every module
and weight has Hugging Face's name (``bert.encoder.layer.3.attention.self.query.weight``), so
``model.named_parameters()`` lines up with the checkpoint's keys. The attention equation is in
minillm/nn/attention.py (MultiHeadAttention, which BertSelfAttention extends); the config is in
configuration_bert.py, loading and saving in modeling_utils.py.
"""
import copy

import numpy

from .. import backend, cuda, ops
from ..nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, MultiHeadAttention, Parameter
from ..nn import functional as F
from ..nn.functional import ACTIVATIONS
from ..nn.padding import Padding
from ..ops.nn import IGNORE_INDEX
from ..tensor import Tensor, as_array
from .configuration_bert import BertConfig
from .modeling_outputs import (BaseModelOutputWithPooling, BertForPreTrainingOutput, MaskedLMOutput,
                               SequenceClassifierOutput)
from .modeling_utils import PreTrainedModel

__all__ = ["BertConfig", "BertEmbeddings", "BertSelfAttention", "BertSelfOutput", "BertAttention",
           "BertIntermediate", "BertOutput", "BertLayer", "BertEncoder", "BertPooler", "BertPreTrainedModel",
           "BertModel", "BertForSequenceClassification", "BertPredictionHeadTransform", "BertLMPredictionHead",
           "BertOnlyMLMHead", "BertPreTrainingHeads", "BertForMaskedLM", "BertForPreTraining", "check_inputs"]


class BertEmbeddings(Module):
    """e = LayerNorm(word[input_ids] + token_type[token_type_ids] + position[0..L-1]), then dropout.
    input_ids, token_type_ids: (B, L) integers -> (B, L, E)."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, inputs_embeds=None, position_ids=None):
        """The ids were range-checked by check_inputs (BertModel.forward), so the tables are read
        with checked=True: no second look at the ids, which on a GPU would wait once per table.
        inputs_embeds (B, L, E), as Hugging Face's: used in place of word_embeddings(input_ids), e.g.
        points between two sentences' word embeddings (minillm/explain/attributions.py); input_ids is then unread.
        position_ids: each token's position, default 0..L-1 in every sequence; with them, the ids may
        be (N,), the real tokens of a batch whose padding is skipped (BertModel), and the output (N, E)."""
        if position_ids is None:
            position_ids = backend.array_module(input_ids).arange(input_ids.shape[1])  # (L,): every sequence's
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids, checked=True)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids, checked=True)
        embeddings = embeddings + self.position_embeddings(position_ids, checked=True)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(MultiHeadAttention):
    """softmax(q k^T / sqrt(D) + mask) v over H heads: the projections ``query``, ``key``, ``value``
    (each (E, E)) and dropout on the probabilities, as MultiHeadAttention (minillm/nn/attention.py)
    computes them: there, ``attention`` runs the fused op, or with output_attentions the equation in
    plain ops (``reference_attention``)."""

    def __init__(self, config):
        super().__init__(config.hidden_size, config.num_attention_heads, dropout=config.attention_probs_dropout_prob)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        """hidden_states (B, L, E); attention_mask (B, L), 1/True for tokens, 0/False for padding.
        Returns (context (B, L, E), probabilities (B, H, L, L) or None). Or hidden_states (N, E), the
        tokens of a batch whose padding is skipped, and attention_mask its Padding: context (N, E)."""
        if isinstance(attention_mask, Padding):  # the attention on each sequence's rows (nn/padding.py)
            return self.unpadded(hidden_states, attention_mask, output_attentions)
        attention_mask = self.check_inputs(hidden_states, attention_mask)    # (B, L) bool, or None
        query_layer = self.split_heads(self.query(hidden_states))            # (B, H, L, D), HF's transpose_for_scores
        key_layer = self.split_heads(self.key(hidden_states))
        value_layer = self.split_heads(self.value(hidden_states))
        context_layer, attention_probs = self.attention(query_layer, key_layer, value_layer, attention_mask,
                                                        output_attentions)   # (B, H, L, D)
        return self.merge_heads(context_layer), attention_probs              # (B, L, E)


class BertSelfOutput(Module):
    """Add & Norm after attention: LayerNorm(input_tensor + Dropout(Dense(hidden_states))), (B, L, E)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)), residual=input_tensor)  # the + in the norm


class BertAttention(Module):
    """Self-attention (``self``) and its Add & Norm (``output``): (B, L, E) -> (B, L, E)."""

    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        """Returns (attention output (B, L, E), probabilities (B, H, L, L) or None)."""
        self_output, attention_probs = self.self(hidden_states, attention_mask, output_attentions)
        return self.output(self_output, hidden_states), attention_probs


class BertIntermediate(Module):
    """The feed-forward network's first half: act(Dense(x)), (B, L, E) -> (B, L, F); act is
    config.hidden_act (nn.functional.ACTIVATIONS: gelu, gelu_new, relu)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(Module):
    """The feed-forward network's second half and its Add & Norm:
    LayerNorm(input_tensor + Dropout(Dense(hidden_states))), (B, L, F) and (B, L, E) -> (B, L, E)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)), residual=input_tensor)  # the + in the norm


class BertLayer(Module):
    """One post-LN Transformer layer: attention, then the feed-forward network. (B, L, E) -> (B, L, E)."""

    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        """attention_mask (B, L): 1/True for tokens. Returns (layer output (B, L, E), probabilities or None)."""
        attention_output, attention_probs = self.attention(hidden_states, attention_mask, output_attentions)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, attention_probs


class BertEncoder(Module):
    """``layer``: config.num_hidden_layers BertLayers, applied in turn (``encoder.layer.3``).

    Built as copies of one BertLayer (Hugging Face builds each afresh): a BertModel overwrites every
    weight (with its initialization, or a checkpoint's), and copying skips N - 1 rounds of
    initialization that would be thrown away."""

    def __init__(self, config):
        super().__init__()
        first = BertLayer(config)
        self.layer = ModuleList([first] + [copy.deepcopy(first) for _ in range(config.num_hidden_layers - 1)])

    def forward(self, hidden_states, attention_mask=None, output_hidden_states=False, output_attentions=False):
        """hidden_states (B, L, E), or (N, E) with attention_mask a Padding (BertModel's skip_padding:
        the layers' outputs are then (N, E) too, and only the attention sees the batch's layout).
        Returns (last hidden state (B, L, E), all_hidden_states, all_attentions):
        when asked, the N + 1 hidden states (the input, then each layer's output) and the N attention
        probabilities (B, H, L, L); otherwise None."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer_module in self.layer:
            hidden_states, attention_probs = layer_module(hidden_states, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attention_probs,)
        return hidden_states, all_hidden_states, all_attentions


class BertPooler(Module):
    """pooled = tanh(Dense(h[:, 0])): the [CLS] token's final hidden state, (B, L, E) -> (B, E)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        first_token_tensor = hidden_states[:, 0]
        return self.dense(first_token_tensor).tanh()


class BertPredictionHeadTransform(Module):
    """The masked-LM head's first half: LayerNorm(act(Dense(h))), (..., E) -> (..., E), per token."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BertLMPredictionHead(Module):
    """Scores over the vocabulary: decoder(transform(h)) = transform(h) W^T + b, (..., E) -> (..., V).

    ``decoder`` is a Linear (V, E). Tied (config.tie_word_embeddings, the default), its weight W is
    the word embeddings' weight, the same Parameter (modeling_utils.tie_weights), and its bias the
    head's ``bias``, as transformers ties them: a token's input vector and its output vector are one
    row of W, so dL/dW = (the embedding lookup's scatter of its gradient) + g^T transform(h), summed
    by the autograd engine because one Parameter has two uses. Untied, the decoder has a weight and
    a bias of its own and ``bias`` is read by nothing, as in transformers 5 (it is kept so that
    checkpoints line up key for key)."""

    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        self.bias = Parameter(numpy.zeros(config.vocab_size, numpy.float32))

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states))


class BertOnlyMLMHead(Module):
    """BertForMaskedLM's ``cls``: the prediction head alone, (..., E) -> (..., V)."""

    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output):
        return self.predictions(sequence_output)


class BertPreTrainingHeads(Module):
    """BertForPreTraining's ``cls``: the prediction head on the tokens, (..., E) -> (..., V), and the
    next-sentence classifier on the pooled [CLS] state, ``seq_relationship``: (B, E) -> (B, 2)."""

    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = Linear(config.hidden_size, 2)

    def forward(self, sequence_output, pooled_output):
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


class BertPreTrainedModel(PreTrainedModel):
    """What every BERT model shares: its config class, the checkpoint names it answers to
    (modeling_utils.PreTrainedModel loads and saves), and the check of its inputs."""
    config_class = BertConfig
    base_model_prefix = "bert"
    # Checkpoint tensors that are no weights of ours: pre-training heads (ignored, and listed) and
    # buffers (ignored); and the task head a checkpoint of the bare model lacks (initialized, and listed).
    ignored_heads = (r"^cls\.", r"^classifier\.", r"^(bert\.)?pooler\.")
    ignored_buffers = (r"embeddings\.position_ids$", r"embeddings\.token_type_ids$")
    new_heads = (r"^classifier\.", r"^(bert\.)?pooler\.")  # a masked-LM checkpoint has no pooler

    @classmethod
    def config_shapes(cls, config):
        """The weights whose shapes fix config.json's sizes (vocabulary, width, positions, token
        types, depth, feed-forward width), by their names in the bare model."""
        last = config.num_hidden_layers - 1
        return {"embeddings.word_embeddings.weight": (config.vocab_size, config.hidden_size),
                "embeddings.position_embeddings.weight": (config.max_position_embeddings, config.hidden_size),
                "embeddings.token_type_embeddings.weight": (config.type_vocab_size, config.hidden_size),
                f"encoder.layer.{last}.intermediate.dense.weight": (config.intermediate_size, config.hidden_size)}

    def check_batch(self, batch):
        """The inputs of ``batch`` (input_ids, and attention_mask and token_type_ids if given) checked
        by check_inputs, as forward checks them."""
        check_inputs(self.config, batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))


class BertModel(BertPreTrainedModel):
    """The bare encoder: embeddings, N Transformer layers, pooler."""

    def __init__(self, config, add_pooling_layer=True, initialize=True):
        """initialize=False skips BERT's initialization (the layers keep torch's defaults) for a model
        whose weights a checkpoint is about to overwrite (from_pretrained: 110M fewer random draws for BERT-base)."""
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        if initialize:
            self.apply(self._init_weights)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, output_attentions=False,
                output_hidden_states=False, inputs_embeds=None, skip_padding=False):
        """input_ids (B, L) integers; attention_mask (B, L): 1 for tokens, 0 for padding (default all 1);
        token_type_ids (B, L): 0 for the first segment, 1 for the second (default all 0).
        Padded keys get no attention (Hugging Face adds a large negative number to their scores; the
        fused kernel skips them). A row whose mask is all 0 attends to nothing and its attention output
        is 0, where Hugging Face's would average all positions: every sequence should keep its [CLS].
        inputs_embeds (B, L, E), a Tensor, instead of input_ids: the word embeddings themselves (Hugging
        Face's argument); positions and token types are added to them as to word_embeddings(input_ids).
        skip_padding: compute only the real tokens and each sequence's first position (minillm/nn/padding.py):
        the same numbers there, and last_hidden_state 0 at the other positions, where Hugging Face's
        holds values that nothing should read. True, or a (B, L) bool array of positions to compute
        too (the masked-LM head's labelled ones). output_attentions and output_hidden_states turn it
        off: for study, every position is computed, as Hugging Face's."""
        if inputs_embeds is not None:
            input_ids = _embeds_shape(self.config, input_ids, inputs_embeds)
        input_ids, attention_mask, token_type_ids = check_inputs(self.config, input_ids, attention_mask,
                                                                 token_type_ids)
        device = self.embeddings.word_embeddings.weight.device  # inputs go there once, not once per use
        input_ids, token_type_ids = backend.to_device(input_ids, device), backend.to_device(token_type_ids, device)
        if attention_mask is not None:
            attention_mask = backend.to_device(attention_mask, device)
        skip, keep = _skip_padding(skip_padding, input_ids.shape, device)
        padding = None
        if skip and not (output_attentions or output_hidden_states):
            padding = Padding.of(attention_mask, keep)
        if padding is None:
            embedding_output = self.embeddings(input_ids, token_type_ids, inputs_embeds)
            sequence_output, hidden_states, attentions = self.encoder(embedding_output, attention_mask,
                                                                      output_hidden_states, output_attentions)
        else:  # (N, E) from the embeddings to the last layer, padded back once at the end
            embedding_output = self.embeddings(padding.unpad(input_ids), padding.unpad(token_type_ids),
                                               None if inputs_embeds is None else padding.unpad(inputs_embeds),
                                               position_ids=padding.positions)
            tokens, hidden_states, attentions = self.encoder(embedding_output, padding)
            sequence_output = padding.pad(tokens)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return BaseModelOutputWithPooling(sequence_output, pooled_output, hidden_states, attentions)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the masked-LM head on every token (``cls.predictions``), and no pooler, as
    transformers' BertForMaskedLM: logits (B, L, V), and the loss given labels.

    With labels the vocabulary is scored only where it is learnt from. The decoder's (N, E) x (E, V)
    product is the largest of a pretraining step (V = 30522 against E = 384), and with 15% of the
    tokens labelled, 85% of its rows would feed nothing but a zero gradient. So the M labelled rows
    (label != -100) of the last hidden state are gathered first, and the head (transform and decoder,
    both per token) runs on those alone: an (M, E) x (E, V) product, (M, V) logits, the same loss
    and gradients as transformers'. ``logits`` is then those M rows, (M, V), in the row-major order
    of the labelled positions, so that ``labels[labels != -100]`` lines up with it; ``full_logits=True``
    asks for transformers' (B, L, V) instead, at transformers' cost. Why not (B, L, V) always: the
    full logits are the very product we skip (and 0.5 GB at 32 x 128 tokens). Why not None: accuracy
    on the masked tokens needs exactly these rows. A shape other than transformers' fails loudly in
    code written for (B, L, V) (``logits[mask]`` raises), rather than silently; transformers' causal
    LMs do the same with ``logits_to_keep``. Without labels, logits is transformers' (B, L, V).
    With labels the encoder also skips the padding (BertModel's skip_padding), the labelled positions
    computed even where they are padding."""
    _tied_weights_keys = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                          "cls.predictions.decoder.bias": "cls.predictions.bias"}
    new_heads = BertPreTrainedModel.new_heads + (r"^cls\.",)  # a bare model's checkpoint has no head

    def __init__(self, config, initialize=True):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False, initialize=False)
        self.cls = BertOnlyMLMHead(config)
        if initialize:
            self.apply(self._init_weights)
        self.tie_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                output_attentions=False, output_hidden_states=False, inputs_embeds=None, full_logits=False):
        """As BertModel; labels (B, L): the token id to predict at each position, -100 where nothing
        is predicted (transformers' DataCollatorForLanguageModeling's labels) -> .loss, the mean
        cross-entropy over the labelled positions (NaN if there are none, as torch's). ``.logits``
        is (B, L, V) without labels, (M, V) with them unless full_logits=True (see the class)."""
        labelled = _labelled(self.config, labels, full_logits, input_ids, inputs_embeds)
        outputs = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, inputs_embeds=inputs_embeds,
                            skip_padding=False if labelled is None else labelled)
        hidden, targets = _scored_rows(outputs.last_hidden_state, labels, full_logits)
        prediction_scores = self.cls(hidden)
        loss = None if targets is None else F.cross_entropy(prediction_scores.reshape(-1, self.config.vocab_size),
                                                            targets)
        return MaskedLMOutput(loss, prediction_scores, outputs.hidden_states, outputs.attentions)

    def check_batch(self, batch):
        """As BertPreTrainedModel.check_batch, and the labels (token ids or -100), as the loss checks them."""
        super().check_batch(batch)
        _check_labels(batch.get("labels"), self.config.vocab_size)


class BertForPreTraining(BertPreTrainedModel):
    """BERT with both pretraining heads, as transformers' BertForPreTraining: the masked-LM head on
    the tokens (``cls.predictions``, tied as in BertForMaskedLM) and next-sentence prediction on the
    pooled [CLS] state (``cls.seq_relationship``): prediction_logits as BertForMaskedLM's logits
    ((M, V) given labels, unless full_logits=True), seq_relationship_logits (B, 2)."""
    _tied_weights_keys = BertForMaskedLM._tied_weights_keys
    new_heads = BertForMaskedLM.new_heads

    def __init__(self, config, initialize=True):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, initialize=False)
        self.cls = BertPreTrainingHeads(config)
        if initialize:
            self.apply(self._init_weights)
        self.tie_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None, output_attentions=False, output_hidden_states=False,
                inputs_embeds=None, full_logits=False):
        """As BertForMaskedLM; next_sentence_label (B,): 0 where the second segment follows the
        first, 1 where it is a random one. .loss = masked-LM loss + next-sentence loss when both
        labels are given, as transformers'; given one of them, that one's loss (transformers gives none)."""
        labelled = _labelled(self.config, labels, full_logits, input_ids, inputs_embeds)
        outputs = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, inputs_embeds=inputs_embeds,
                            skip_padding=False if labelled is None else labelled)
        hidden, targets = _scored_rows(outputs.last_hidden_state, labels, full_logits)
        prediction_scores, seq_relationship_score = self.cls(hidden, outputs.pooler_output)
        mlm_loss = None if targets is None else F.cross_entropy(
            prediction_scores.reshape(-1, self.config.vocab_size), targets)
        nsp_loss = None if next_sentence_label is None else F.cross_entropy(
            seq_relationship_score, as_array(next_sentence_label).reshape(-1))
        loss = nsp_loss if mlm_loss is None else mlm_loss if nsp_loss is None else mlm_loss + nsp_loss
        return BertForPreTrainingOutput(loss, prediction_scores, seq_relationship_score, outputs.hidden_states,
                                        outputs.attentions)

    def check_batch(self, batch):
        """As BertForMaskedLM.check_batch, and next_sentence_label (0 or 1 per sequence)."""
        super().check_batch(batch)
        _check_labels(batch.get("labels"), self.config.vocab_size)
        _check_labels(batch.get("next_sentence_label"), 2)


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT with a classifier on the pooled [CLS] state: logits = Dense(Dropout(pooler_output)).

    ``class_weights`` (num_labels,) or None: the single-label loss's per-class weights, torch's
    cross_entropy(weight=) (for imbalanced classes; the Trainer sets it from TrainingArguments). A
    choice of the training, like the learning rate, it is not saved with the model.
    """

    def __init__(self, config, initialize=True):
        super().__init__()
        self.config, self.num_labels = config, config.num_labels
        self.bert = BertModel(config, initialize=initialize)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        if initialize:  # from_pretrained initializes it (a new head) when the checkpoint has none
            self._init_weights(self.classifier)
        self.class_weights = None

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                output_attentions=False, output_hidden_states=False, inputs_embeds=None):
        """As BertModel; labels (B,): class ids (or floats for regression / multi-label) -> .loss.
        ``model(**batch)`` takes a batch dict with these keys. Only the real tokens and [CLS] are
        computed (BertModel's skip_padding): the logits read nothing else."""
        outputs = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, inputs_embeds=inputs_embeds,
                            skip_padding=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None if labels is None else self._loss(logits, labels)
        return SequenceClassifierOutput(loss, logits, outputs.hidden_states, outputs.attentions)

    def check_batch(self, batch):
        """As BertPreTrainedModel.check_batch, and integer class ids in ``batch["labels"]`` (if given)
        checked as cross-entropy checks them (minillm.ops.check_class_ids)."""
        super().check_batch(batch)
        if batch.get("labels") is not None:
            labels = as_array(batch["labels"])
            if self.problem_type(labels) == "single_label_classification":
                ops.check_class_ids(labels.reshape(-1), self.num_labels)

    def problem_type(self, labels):
        """The loss's problem type for ``labels`` (infer_problem_type, unless config.problem_type says)."""
        return infer_problem_type(self.num_labels, labels, self.config.problem_type)

    def _loss(self, logits, labels):
        """Mean squared error (regression), cross-entropy of integer class ids (single-label, weighted
        by ``class_weights`` if set), or binary cross-entropy with logits of float targets (multi-label)."""
        y = as_array(labels)
        kind = self.problem_type(y)
        if kind == "single_label_classification":
            return F.cross_entropy(logits, y.reshape(-1), weight=self.class_weights)
        y = Tensor(backend.to_device(y, logits.device, logits.dtype).reshape(logits.shape))
        if kind == "regression":
            return ((logits - y) ** 2).mean()
        # log(1 + exp(-|x|)) + max(x, 0) - x y: binary cross-entropy of sigmoid(x), without overflow
        return ((-logits.abs()).exp() + 1).log().mean() + (logits.relu() - logits * y).mean()


def _scored_rows(sequence_output, labels, full_logits=False):
    """What the masked-LM head scores, and the targets of its loss: (rows, targets).

    sequence_output (B, L, E); labels (B, L) integers, -100 where nothing is predicted, or None.
    Without labels, or with full_logits: (sequence_output, the labels flattened (B * L,) or None).
    Otherwise only the M labelled positions: rows (M, E), gathered in row-major order (sequence b,
    then position l), and their labels (M,). The gather's backward puts the rows' gradient back
    into a (B, L, E) zero array, so the encoder's gradient is the same as through the full logits.
    M changes from batch to batch: on a GPU, finding the rows waits for it once, and a CUDA graph
    (fixed shapes, no waiting) cannot hold the gather; full_logits=True keeps every shape fixed."""
    if labels is None:
        return sequence_output, None
    batch, length, hidden = sequence_output.shape
    flat = backend.to_device(_integers(labels, "labels", (batch, length)), sequence_output.device).reshape(-1)
    if full_logits:
        return sequence_output, flat
    kept = backend.array_module(flat).flatnonzero(flat != IGNORE_INDEX)  # (M,)
    return ops.gather_rows(sequence_output.reshape(batch * length, hidden), kept), flat[kept]


def _skip_padding(skip_padding, shape, device):
    """BertModel's skip_padding checked, as (skip, keep): whether to skip, and the (B, L) bool array on
    ``device`` of positions to compute besides the real tokens, or None."""
    if skip_padding is None or isinstance(skip_padding, (bool, numpy.bool_)):
        return bool(skip_padding), None
    keep = as_array(skip_padding)
    if keep.dtype != bool or keep.shape != shape:
        raise ValueError(f"skip_padding must be True, False or a {shape} bool array (the shape of input_ids) of "
                         f"positions to compute, got {keep.dtype} of shape {keep.shape}")
    return True, backend.to_device(keep, device)


def _labelled(config, labels, full_logits, input_ids, inputs_embeds):
    """Where the masked-LM head reads the encoder, (B, L) bool: the labelled positions (label != -100),
    computed even if padding (BertModel's skip_padding); None without labels or with full_logits.
    The inputs are checked first, as BertModel checks them, so that their errors name them."""
    if labels is None or full_logits or (input_ids is None and inputs_embeds is None):
        return None  # without inputs, BertModel says what is missing
    ids = _embeds_shape(config, input_ids, inputs_embeds) if inputs_embeds is not None else \
        _integers(input_ids, "input_ids")
    return _integers(labels, "labels", ids.shape) != IGNORE_INDEX


def _check_labels(labels, classes):
    """Class ids in [0, classes) or -100, checked on the host as cross-entropy would check them."""
    if labels is not None:
        ops.check_class_ids(as_array(labels).reshape(-1), classes)


def infer_problem_type(num_labels, labels, configured=None):
    """Hugging Face's choice of loss, unless ``configured`` (config.problem_type) says: regression for
    one output, single-label classification for integer labels, multi-label for float ones."""
    return configured or ("regression" if num_labels == 1 else
                          "single_label_classification" if labels.dtype.kind in "iu" else
                          "multi_label_classification")


def check_inputs(config, input_ids, attention_mask=None, token_type_ids=None):
    """BERT's inputs as (ids, mask, types): (B, L) int64 ids and types (types default all 0) and a
    (B, L) boolean mask or None, on the device they came on; errors name the argument at fault.
    Device inputs are range-checked with one wait for the GPU, not four, and not at all inside a
    CUDA-graph capture, where nothing may wait (there the batch was checked on the host, with this
    function: model.check_batch)."""
    ids = _integers(input_ids, "input_ids")
    if ids.shape[0] and not ids.shape[1]:  # the pooler, the classifier and every head read position 0
        raise ValueError(f"input_ids has shape {ids.shape}: no token per sequence, where each needs at least "
                         "its [CLS] (a tokenizer without a post-processor, or texts that encode to nothing)")
    if ids.shape[1] > config.max_position_embeddings:
        raise ValueError(f"input_ids has {ids.shape[1]} tokens per sequence, more than max_position_embeddings="
                         f"{config.max_position_embeddings}: truncate the input (tokenizer max_length)")
    xp = backend.array_module(ids)
    types = xp.zeros_like(ids) if token_type_ids is None else _integers(token_type_ids, "token_type_ids", ids.shape)
    if ids.size and not (backend.on_device(ids) and cuda.is_capturing()):
        low, high, types_low, types_high = (int(n) for n in backend.to_host(
            xp.stack([ids.min(), ids.max(), types.min(), types.max()])))
        if low < 0 or high >= config.vocab_size:
            raise ValueError(f"input_ids holds ids from {low} to {high}; they must be in "
                             f"[0, vocab_size={config.vocab_size})")
        if types_low < 0 or types_high >= config.type_vocab_size:
            raise ValueError(f"token_type_ids holds {types_low} to {types_high}; this model has "
                             f"type_vocab_size={config.type_vocab_size} (ids 0..{config.type_vocab_size - 1})")
    mask = None if attention_mask is None else _integers(attention_mask, "attention_mask", ids.shape) != 0
    return ids, mask, types


def _embeds_shape(config, input_ids, inputs_embeds):
    """Zeros (B, L) in place of the ids, after checking that ``inputs_embeds`` is a (B, L, E) Tensor and
    comes alone: check_inputs then checks the mask and token types against (B, L), as it would the ids'."""
    if input_ids is not None:
        raise ValueError("pass input_ids or inputs_embeds, not both")
    if not isinstance(inputs_embeds, Tensor) or inputs_embeds.ndim != 3 or inputs_embeds.shape[2] != config.hidden_size:
        shape = getattr(inputs_embeds, "shape", None)
        raise ValueError(f"inputs_embeds must be a Tensor (batch, sequence length, hidden_size={config.hidden_size}), "
                         f"got {type(inputs_embeds).__name__} of shape {shape}")
    return backend.array_module(inputs_embeds.data).zeros(inputs_embeds.shape[:2], numpy.int64)


def _integers(values, name, shape=None):
    array = as_array(values)
    if array.dtype.kind not in "biu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        expected = "(batch, sequence length)" if shape is None else f"{shape}, the shape of input_ids"
        raise ValueError(f"{name} must be {expected}, got shape {array.shape}")
    return array.astype(numpy.int64, copy=False)
