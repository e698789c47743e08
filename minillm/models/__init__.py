"""Models built from minillm.nn, with Hugging Face's names so their checkpoints load 1:1.

    from minillm.models.bert import BertConfig, BertModel, BertForSequenceClassification
"""
from .bert import BertConfig, BertForSequenceClassification, BertModel  # noqa: F401
