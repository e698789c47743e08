"""The safetensors reader and writer, and loading checkpoints into BERT: every broken file or
mismatched checkpoint is a clear error that names the file and the key."""
import json
import os
import re

import numpy as np
import pytest
import safetensors.numpy

from minillm import safetensors_io
from minillm.safetensors_io import CheckpointError, read_safetensors, write_safetensors
from minillm.models.bert import BertConfig, BertForSequenceClassification, BertModel

TINY = dict(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12,
            max_position_embeddings=16, type_vocab_size=2)


def _raw_file(path, header, data):
    """A safetensors file from a header dict and data bytes, exactly as given (lies included)."""
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def test_round_trip_keeps_dtypes_and_values(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"f32": rng.standard_normal((3, 4)).astype(np.float32), "f64": rng.standard_normal(5),
               "f16": rng.standard_normal((2, 2)).astype(np.float16), "i64": np.arange(6).reshape(2, 3),
               "u8": np.arange(4, dtype=np.uint8), "bool": np.array([True, False]), "scalar": np.float32(2.5),
               "empty": np.zeros((0, 3), np.float32)}
    path = tmp_path / "t.safetensors"
    write_safetensors(tensors, path, metadata={"format": "pt"})
    back, metadata = read_safetensors(path)
    assert metadata == {"format": "pt"} and sorted(back) == sorted(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == np.asarray(array).dtype and np.array_equal(back[name], array), name


def test_bfloat16_is_widened_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3, 65280.0], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # truncation: values chosen to need no rounding
    path = _raw_file(tmp_path / "bf16.safetensors",
                     {"w": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}}, bf16.tobytes())
    w = read_safetensors(path)[0]["w"]
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, (bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(w, values, rtol=1e-2)


def test_the_safetensors_library_reads_what_minillm_writes(tmp_path):
    from safetensors.numpy import load_file

    path = tmp_path / "w.safetensors"
    write_safetensors({"a.weight": np.ones((2, 3), np.float32)}, path)
    assert np.array_equal(load_file(path)["a.weight"], np.ones((2, 3)))


def test_writes_are_atomic(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors({"a": np.ones(3, np.float32)}, path)
    with pytest.raises(CheckpointError, match="'b'.*object"):
        write_safetensors({"b": np.array([object()])}, path)
    assert np.array_equal(read_safetensors(path)[0]["a"], np.ones(3))  # the old file is intact
    assert os.listdir(tmp_path) == ["w.safetensors"]  # and no temporary file is left


@pytest.mark.parametrize("cut", [4, 20, 100])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "w.safetensors"
    write_safetensors({"encoder.weight": np.ones((8, 8), np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-cut] if cut != 4 else path.read_bytes()[:4])
    with pytest.raises(CheckpointError) as err:
        read_safetensors(path)
    assert str(path) in str(err.value)
    assert "truncated" in str(err.value)
    if cut == 100:  # the header survived: the message names the tensor whose bytes are gone
        assert "'encoder.weight'" in str(err.value)


def test_header_that_lies_about_sizes(tmp_path):
    path = _raw_file(tmp_path / "w.safetensors",
                     {"layer.weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 32]}}, bytes(64))
    with pytest.raises(CheckpointError, match=r"w\.safetensors: tensor 'layer\.weight': the header lies.*64 bytes"):
        read_safetensors(path)
    path.write_bytes((10 ** 6).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match=r"w\.safetensors: the header length says 1000000 bytes"):
        read_safetensors(path)


def test_header_that_is_not_json(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes((5).to_bytes(8, "little") + b"{oops")
    with pytest.raises(CheckpointError, match=r"w\.safetensors: the header is not valid JSON"):
        read_safetensors(path)


def test_unknown_dtype(tmp_path):
    path = _raw_file(tmp_path / "w.safetensors",
                     {"pooler.dense.weight": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, bytes(2))
    with pytest.raises(CheckpointError, match=r"w\.safetensors: tensor 'pooler\.dense\.weight' has dtype 'F8_E4M3'"):
        read_safetensors(path)


F32 = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


@pytest.mark.parametrize("header, data, message", [  # what the fuzzing found (bench/fuzz.py, docs/reliability.md)
    # a byte size past int64: 2**64 elements wrap to 0 in numpy.prod, and NumPy failed to allocate them
    ({"w": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32], "data_offsets": [0, 0]}}, b"", "larger than any NumPy"),
    ({"w": {"dtype": "F32", "shape": [2 ** 70], "data_offsets": [0, 0]}}, b"", "larger than any NumPy"),
    ({"w": {"dtype": "F32", "shape": [2 ** 20, 2 ** 20], "data_offsets": [0, 4]}}, bytes(4), "needs 4398046511104"),
    ({"w": {"dtype": "F32", "shape": [2 ** 64, 0], "data_offsets": [0, 0]}}, b"", "larger than any NumPy array"),
    ({"w": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}, b"x", "65 dimensions"),
    ({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, bytes(4), "tensor 'w' has dtype \\['F32'\\]"),
    ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, bytes(4), "must be lists of non-negative"),
    ({"w": F32, "v": F32}, bytes(4), "tensor '.' at data bytes \\[0, 4\\) overlaps tensor '.'"),
    ({"w": {**F32, "data_offsets": [4, 8]}}, bytes(8), "'w' at data bytes \\[4, 8\\) leaves bytes \\[0, 4\\)"),
    ({"w": F32}, bytes(6), "the tensors cover 4 bytes of data but 6 follow"),
    ({"__metadata__": {"format": 1}, "w": F32}, bytes(4), "__metadata__ must be an object of strings"),
    (b"[" * 100_000 + b"]" * 100_000, b"", "the header is not valid JSON \\(maximum recursion depth"),
    (b'{"w": 1' + b"0" * 5000 + b"}", b"", "the header is not valid JSON \\(Exceeds the limit"),
    (b'{"w": {"dtype": "F32"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', bytes(4),
     "the header has the key 'w' twice"),
    (json.dumps({"w": F32}).encode("utf-16"), bytes(4), "the header is not UTF-8"),
    # json.loads takes JavaScript's NaN and Infinity, which JSON (and the safetensors library) does not
    (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "shape_x": NaN}}', bytes(4),
     "the header is not valid JSON \\(NaN is not a JSON value"),
    (b'{"__metadata__": {"n": -Infinity}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', bytes(4),
     "the header is not valid JSON \\(-Infinity is not a JSON value"),
    # and -0 as the integer 0, which the library reads as the float -0.0 and refuses
    (b'{"w": {"dtype": "F32", "shape": [-0, 1], "data_offsets": [0, 0]}}', b"", "the number -0 where only unsigned"),
])
def test_headers_the_fuzzing_found(tmp_path, header, data, message):
    """Each was a crash (a ValueError, TypeError or RecursionError of NumPy or json, not naming the
    file) or a file read silently though the safetensors library refuses it."""
    path = tmp_path / "w.safetensors"
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + message):
        read_safetensors(path)
    with pytest.raises(Exception):  # the oracle: the safetensors library refuses each file too
        safetensors.numpy.load_file(str(path))


# ---- checkpoints against the model ---------------------------------------------------------------------
def _save_state(folder, state, config=TINY):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    write_safetensors(state, folder / "model.safetensors")
    return folder


@pytest.fixture
def state():
    """A BertModel's weights, as a checkpoint of the bare model would hold them."""
    return {k: v.copy() for k, v in BertModel(BertConfig(**TINY)).state_dict().items()}


def test_integer_tensor_for_a_weight(tmp_path, state):
    state["encoder.layer.0.output.dense.weight"] = state["encoder.layer.0.output.dense.weight"].astype(np.int32)
    folder = _save_state(tmp_path / "m", state)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'encoder\.layer\.0\.output\.dense\.weight' "
                                              r"has dtype int32"):
        BertModel.from_pretrained(folder)


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path, state):
    state["encoder.layer.0.attention.self.query.weight"] = np.zeros((8, 4), np.float32)
    folder = _save_state(tmp_path / "m", state)
    with pytest.raises(CheckpointError) as err:
        BertForSequenceClassification.from_pretrained(folder)
    message = str(err.value)
    assert "model.safetensors" in message and "'bert.encoder.layer.0.attention.self.query.weight'" in message
    assert "(8, 4) in the checkpoint, (8, 8) in the model" in message


def test_missing_and_unexpected_keys_are_errors(tmp_path, state):
    del state["embeddings.LayerNorm.weight"]
    state["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(2, np.float32)
    folder = _save_state(tmp_path / "m", state)
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(folder)
    message = str(err.value)
    assert re.search(r"missing key 'embeddings\.LayerNorm\.weight' \(shape \(8,\)\)", message)
    assert "unexpected key 'encoder.layer.0.attention.self.rotary.weight'" in message


def test_missing_config_field(tmp_path, state):
    config = {k: v for k, v in TINY.items() if k != "intermediate_size"}
    folder = _save_state(tmp_path / "m", state, config)
    with pytest.raises(CheckpointError, match=r"config\.json: missing field 'intermediate_size'"):
        BertModel.from_pretrained(folder)


@pytest.mark.parametrize("fields, message", [  # what the fuzzing found in config.json
    (dict(num_labels=10 ** 9), "num_labels=1000000000 is not supported"),          # was: a hang, 10**9 labels
    (dict(id2label=["neg", "pos"]), "id2label must be an object"),                  # was: an AttributeError
    (dict(initializer_range="x"), "initializer_range='x' is not supported"),        # was: a TypeError naming none
    (dict(hidden_act=["gelu"]), r"hidden_act=\['gelu'\] is not supported"),        # was: unhashable type
    (dict(initializer_range=float("nan")), "initializer_range=nan is not supported"),
    (dict(vocab_size=10 ** 9), r"config.json does not fit the weights:\n  the sizes make "  # was: 64 GB allocated
                               r"'embeddings.word_embeddings.weight' \(1000000000, 8\), but .* has \(30, 8\)"),
    (dict(num_hidden_layers=40), r"config.json does not fit the weights:\n  the sizes ask for a tensor "
                                 r"'encoder.layer.39.intermediate.dense.weight' of shape \(12, 8\)"),
    (dict(intermediate_size=10 ** 8, max_position_embeddings=17), r"'embeddings.position_embeddings.weight' "
                                                                  r"\(17, 8\).*\n.*\(100000000, 8\)"),
])
def test_configs_the_fuzzing_found(tmp_path, state, fields, message):
    folder = _save_state(tmp_path / "m", state, {**TINY, **fields})
    read = []
    original, safetensors_io.read_into = safetensors_io.read_into, lambda *args: read.append(1)
    try:
        with pytest.raises(CheckpointError, match=message):
            BertForSequenceClassification.from_pretrained(folder)
    finally:
        safetensors_io.read_into = original
    assert not read  # before any weight is read


def test_a_config_nested_too_deep(tmp_path, state):
    folder = _save_state(tmp_path / "m", state)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=r"config\.json: maximum recursion depth"):
        BertModel.from_pretrained(folder)


def test_legacy_gamma_beta_and_pretraining_heads(tmp_path, state, caplog):
    renamed = {safetensors_io.rename_legacy(k): v for k, v in state.items()}
    assert renamed.keys() == state.keys()
    legacy = {("bert." + k).replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"):
              v for k, v in state.items()}
    legacy["cls.predictions.bias"] = np.zeros(30, np.float32)
    legacy["bert.embeddings.position_ids"] = np.arange(16)[None]  # a buffer: dropped without a word
    folder = _save_state(tmp_path / "m", legacy)
    model, info = BertForSequenceClassification.from_pretrained(folder, num_labels=3, output_loading_info=True)
    assert info == {"missing_keys": ["classifier.weight", "classifier.bias"],
                    "unexpected_keys": ["cls.predictions.bias"]}
    assert "newly initialized" in caplog.text and "cls.predictions.bias" in caplog.text
    assert np.array_equal(model.bert.encoder.layer[0].output.LayerNorm.weight.numpy(),
                          state["encoder.layer.0.output.LayerNorm.weight"])
    assert model.classifier.weight.shape == (3, 8) and not model.training


def test_a_key_given_twice(tmp_path, state):
    state["bert.pooler.dense.bias"] = state["pooler.dense.bias"]
    folder = _save_state(tmp_path / "m", state)
    with pytest.raises(CheckpointError, match="gives 'pooler.dense.bias' a second time"):
        BertModel.from_pretrained(folder)


def test_sharded_checkpoint(tmp_path, state):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for shard, keys in shards.items():
        write_safetensors({k: state[k] for k in keys}, folder / shard)
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / safetensors_io.WEIGHTS_INDEX_NAME).write_text(json.dumps(index))
    model = BertModel.from_pretrained(folder)
    for name, p in model.named_parameters():
        assert np.array_equal(p.numpy(), state[name])


def test_a_pytorch_bin_folder_says_how_to_convert(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*safe_serialization=True"):
        safetensors_io.read_weights(tmp_path)


def test_save_and_load_round_trip_is_exact(tmp_path):
    model = BertForSequenceClassification(BertConfig(num_labels=4, **TINY))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 4
    keys = read_safetensors(tmp_path / "model.safetensors")[0].keys()
    assert "bert.encoder.layer.0.attention.self.query.weight" in keys and "classifier.weight" in keys
    loaded = BertForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.num_labels == 4
    for (name, p), (name2, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == name2 and np.array_equal(p.numpy(), q.numpy())


# ---- loading streams: the weights are read into the parameters, never held twice -----------------------
def test_loading_holds_no_second_copy_of_the_weights(tmp_path):
    import tracemalloc

    # layers much larger than the embeddings, so the model's size is its layers' (see the bound below)
    config = BertConfig(vocab_size=50, hidden_size=128, num_hidden_layers=6, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=16, type_vocab_size=2)
    saved = BertModel(config)
    saved.save_pretrained(tmp_path)
    size = sum(p.data.nbytes for p in saved.parameters())
    del saved
    tracemalloc.start()
    try:
        model = BertModel.from_pretrained(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # building the model takes its size (BertEncoder's layers are copies of its first);
    # reading the checkpoint into new arrays, then copying them in, would take twice its size
    assert peak < 1.5 * size, f"loading peaked at {peak / size:.2f} x the model's {size} bytes"
    assert np.array_equal(model.encoder.layer[5].output.dense.weight.numpy(),
                          read_safetensors(tmp_path / "model.safetensors")[0]["encoder.layer.5.output.dense.weight"])


def test_read_into_fills_the_arrays_in_place(tmp_path, state):
    folder = _save_state(tmp_path / "m", state)
    model = BertModel(BertConfig(**TINY))
    arrays = model.state_dict()
    before = {name: id(array) for name, array in arrays.items()}
    infos = safetensors_io.index_weights(folder)
    safetensors_io.read_into(arrays, {name: infos[name] for name in arrays})
    for name, p in model.named_parameters():
        assert id(p.data) == before[name] and np.array_equal(p.data, state[name]), name


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_are_converted_on_load(tmp_path, state, dtype):
    folder = _save_state(tmp_path / "m", {k: v.astype(dtype) for k, v in state.items()})
    model = BertModel.from_pretrained(folder)
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and np.array_equal(p.numpy(), state[name].astype(dtype).astype(np.float32))


def test_a_truncated_model_file_names_the_file_and_the_tensor(tmp_path, state):
    folder = _save_state(tmp_path / "m", state)
    path = folder / "model.safetensors"
    last = max(read_safetensors(path)[0], key=lambda k: safetensors_io.read_header(path)[0][k].offset)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(folder)
    assert str(path) in str(err.value) and repr(last) in str(err.value) and "truncated" in str(err.value)


def test_a_file_cut_short_after_its_header_was_read(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors({"a.weight": np.ones((4, 4), np.float32), "b.weight": np.ones((8, 8), np.float32)}, path)
    infos = safetensors_io.read_header(path)[0]
    last = max(infos, key=lambda k: infos[k].offset)
    path.write_bytes(path.read_bytes()[:-8])  # as if another process rewrote it meanwhile
    arrays = {name: np.zeros(info.shape, np.float32) for name, info in infos.items()}
    with pytest.raises(CheckpointError, match=rf"w\.safetensors: tensor '{last}': the file ended"):
        safetensors_io.read_into(arrays, infos)
