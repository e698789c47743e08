"""Models built from minillm.nn, with Hugging Face's names so their checkpoints load 1:1:

    bert.py                BERT, as transformers' modeling_bert.py: BertEmbeddings ... BertModel,
                           BertForSequenceClassification, BertForMaskedLM, BertForPreTraining; check_inputs
    configuration_bert.py  BertConfig, config.json's fields
    modeling_utils.py      PreTrainedModel: initialization, tied weights, from_pretrained, save_pretrained
    modeling_outputs.py    what forward returns (BaseModelOutputWithPooling, SequenceClassifierOutput,
                           MaskedLMOutput, BertForPreTrainingOutput)

    from minillm.models.bert import BertConfig, BertModel, BertForSequenceClassification, BertForMaskedLM
"""
from .bert import BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertModel  # noqa: F401
from .configuration_bert import BertConfig  # noqa: F401
