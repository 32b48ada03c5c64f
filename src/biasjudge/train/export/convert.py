"""A merged folder or an adapter folder -> GGUF, with llama.cpp's own maintained converters.

`convert_hf_to_gguf.py` and `convert_lora_to_gguf.py` run with their own gguf-py, taken from the
llama-cpp-python source distribution (`vendor/llama.cpp`) of the installed version, so converter
and runtime agree, and cached under `~/.cache/biasjudge`; the PyPI `gguf` package lags the
converters. `Q5_K_M` is quantised from the f16 file by llama.cpp's quantizer through
llama-cpp-python (`llama_model_quantize`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from biasjudge.backends.llamacpp_build import LLAMA_CPP_PYTHON_VERSION
from biasjudge.config import cache_dir
from biasjudge.errors import BiasJudgeError, ConfigError, MissingDependency
from biasjudge.train.common import split_gguf
from biasjudge.train.config import resolve_model
from biasjudge.train.export.merge import adapter_base

GGUF_QUANTS: tuple[str, ...] = ("f16", "Q8_0", "Q5_K_M")
LLAMA_CPP_DIR_ENV = "BIASJUDGE_LLAMA_CPP_DIR"
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
"""What is extracted from the sdist's `vendor/llama.cpp/` (a folder ends with /)."""


def _installed_llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return LLAMA_CPP_PYTHON_VERSION


def locate_llama_cpp(llama_cpp_dir: str | Path | None = None, *, version: str | None = None) -> Path:
    """A llama.cpp source folder holding the converters and gguf-py.

    Order: the argument, $BIASJUDGE_LLAMA_CPP_DIR, the cache (`~/.cache/biasjudge/llama.cpp-VERSION`),
    else the llama-cpp-python source distribution is fetched with pip (`pip download --no-binary
    :all: --no-deps llama-cpp-python==VERSION`) and its `vendor/llama.cpp` converters extracted into
    the cache. VERSION is the installed llama-cpp-python's (so converter and runtime agree).
    """
    explicit = llama_cpp_dir or os.environ.get(LLAMA_CPP_DIR_ENV)
    if explicit:
        folder = Path(explicit)
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise ConfigError(f"{folder}: not a llama.cpp source folder (no convert_hf_to_gguf.py)")
        return folder
    version = version or _installed_llama_cpp_version()
    folder = cache_dir() / f"llama.cpp-{version}"
    if (folder / "convert_hf_to_gguf.py").is_file() and (folder / "gguf-py" / "gguf").is_dir():
        return folder
    sdist_dir = cache_dir() / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    sdist = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            f"llama-cpp-python=={version}",
            "-d",
            str(sdist_dir),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not sdist.is_file():
            raise BiasJudgeError(
                f"could not fetch the llama.cpp converters (llama-cpp-python {version} source): "
                f"{done.stderr.strip()[-400:]}; pass llama_cpp_dir= (a llama.cpp checkout) or set {LLAMA_CPP_DIR_ENV}"
            )
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    # Extract into a staging folder and rename it into place, so an interrupted run leaves no half cache.
    staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".llama.cpp-"))
    try:
        with tarfile.open(sdist) as archive:
            members = []
            for member in archive.getmembers():
                if not member.name.startswith(prefix):
                    continue
                rel = member.name[len(prefix) :]
                if any(rel == m or (m.endswith("/") and rel.startswith(m)) for m in CONVERTER_MEMBERS):
                    member.name = rel
                    members.append(member)
            archive.extractall(staging, members=members, filter="data")
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise BiasJudgeError(f"{sdist}: has no vendor/llama.cpp/convert_hf_to_gguf.py")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _run_converter(llama_cpp: Path, script: str, args: Sequence[str]) -> None:
    env = dict(os.environ)
    # The converter's own gguf-py first: the installed `gguf` package may lag it.
    env["PYTHONPATH"] = os.pathsep.join([str(llama_cpp / "gguf-py"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("NO_LOCAL_GGUF", "")
    command = [sys.executable, str(llama_cpp / script), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BiasJudgeError(f"{script} failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")


def _base_config_folder(base: str, where: Path) -> Path:
    """A folder with the base model's config.json (what convert_lora_to_gguf.py's --base needs)."""
    from transformers import AutoConfig

    source, gguf_file = split_gguf(resolve_model(base))
    if gguf_file is None and (Path(source) / "config.json").is_file():
        return Path(source)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(source, **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if not getattr(config, "architectures", None):  # GGUF configs lack it; the converter keys on it
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    config.save_pretrained(str(where))
    return where


def quantize_gguf(source: str | Path, out: str | Path, quant: str) -> Path:
    """Re-quantise a GGUF with llama.cpp's quantizer (through llama-cpp-python)."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency("llama-cpp-python", "llamacpp", f"quantising to {quant}") from None
    ftype_name = f"LLAMA_FTYPE_MOSTLY_{quant.upper()}"
    if not hasattr(llama_cpp, ftype_name):
        raise ConfigError(f"llama.cpp has no quantisation type {quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if status != 0:
        raise BiasJudgeError(f"llama_model_quantize({quant}) failed with status {status}")
    return Path(out)


def export_gguf(
    source: str | Path,
    out: str | Path,
    quant: str = "Q8_0",
    *,
    llama_cpp_dir: str | Path | None = None,
    base: str | None = None,
) -> Path:
    """Convert a merged model folder (full GGUF) or a LoRA adapter folder (GGUF adapter).

    Args:
        source: a folder written by :func:`~biasjudge.train.export.merge.merge_adapter` (or any HF
            model folder), or a PEFT adapter folder (then a GGUF LoRA adapter is written, to apply on
            the base GGUF: `llamacpp:BASE.gguf` with `lora_path=`).
        out: the .gguf file to write.
        quant: f16, Q8_0 or Q5_K_M (adapters: f16 or Q8_0).
        llama_cpp_dir: a llama.cpp source folder; default: see :func:`locate_llama_cpp`.
        base: for an adapter, the base model it was trained on (default: recorded by training).
    """
    if quant not in GGUF_QUANTS:
        raise ConfigError(f"quant must be one of {', '.join(GGUF_QUANTS)}, got {quant!r}")
    source = Path(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    llama_cpp = locate_llama_cpp(llama_cpp_dir)
    is_adapter = (source / "adapter_config.json").is_file()
    if is_adapter:
        if quant == "Q5_K_M":
            raise ConfigError("a LoRA adapter GGUF is f16 or Q8_0; merge first for Q5_K_M")
        with tempfile.TemporaryDirectory() as tmp:
            base_folder = _base_config_folder(adapter_base(source, base), Path(tmp))
            _run_converter(
                llama_cpp,
                "convert_lora_to_gguf.py",
                ["--base", str(base_folder), "--outtype", quant.lower(), "--outfile", str(out), str(source)],
            )
        return out
    if not (source / "config.json").is_file():
        raise ConfigError(f"{source}: neither a model folder (config.json) nor an adapter (adapter_config.json)")
    if quant == "Q5_K_M":
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            f16 = Path(tmp) / "model-f16.gguf"
            _run_converter(llama_cpp, "convert_hf_to_gguf.py", [str(source), "--outtype", "f16", "--outfile", str(f16)])
            quantize_gguf(f16, out, quant)
        return out
    _run_converter(llama_cpp, "convert_hf_to_gguf.py", [str(source), "--outtype", quant.lower(), "--outfile", str(out)])
    return out
