"""From a trained adapter to files other runtimes load: merged safetensors, GGUF, and a check.

One module per job, in the order they run:

* :mod:`.tokenizer`: the SentencePiece `tokenizer.model` rebuilt from a base GGUF's vocabulary and
  the added-token table (llama.cpp's converter otherwise writes a BPE vocabulary with different
  token ids, and types the control tokens NORMAL).
* :mod:`.merge`: :func:`merge_adapter`, base + LoRA -> one safetensors model folder with its tokenizer.
* :mod:`.convert`: :func:`export_gguf`, a merged folder -> a full GGUF (`f16`, `Q8_0`, `Q5_K_M`), or
  an adapter folder -> a GGUF LoRA adapter (`f16`, `Q8_0`) to apply on the unchanged base GGUF
  (`llamacpp:BASE.gguf` with `lora_path=`), with llama.cpp's own converters.
* :mod:`.verify`: :func:`verify_gguf`, the GGUF in llama.cpp against the transformers model through
  both backends' score mode: 3-way verdict probabilities within a stated tolerance, and the same
  token ids on both sides.
* :mod:`.push`: :func:`plan_push` checks an exported folder (a model and its card) without the
  network, :func:`push_judge` uploads it to a Hugging Face Hub model repo in one commit.

The names are re-exported here, so `from biasjudge.train.export import export_gguf` is the way in.
This package never imports the eval stage or the judge.
"""

from biasjudge.train.export.convert import (
    GGUF_QUANTS,
    LLAMA_CPP_DIR_ENV,
    export_gguf,
    locate_llama_cpp,
    quantize_gguf,
)
from biasjudge.train.export.merge import adapter_base, adapter_meta, merge_adapter
from biasjudge.train.export.push import PushError, PushPlan, plan_push, push_judge
from biasjudge.train.export.tokenizer import (
    GGUF_VOCAB_KEYS,
    base_added_tokens,
    gguf_added_tokens,
    gguf_metadata,
    gguf_vocab,
    record_added_tokens,
    sentencepiece_model_proto,
    tokenizer_model_for,
    write_sentencepiece_model,
)
from biasjudge.train.export.verify import CHECK_TOLERANCE, GgufCheck, check_export, three_way, verify_gguf

__all__ = [
    "CHECK_TOLERANCE",
    "GGUF_QUANTS",
    "GGUF_VOCAB_KEYS",
    "LLAMA_CPP_DIR_ENV",
    "GgufCheck",
    "PushError",
    "PushPlan",
    "adapter_base",
    "adapter_meta",
    "base_added_tokens",
    "check_export",
    "export_gguf",
    "gguf_added_tokens",
    "gguf_metadata",
    "gguf_vocab",
    "locate_llama_cpp",
    "merge_adapter",
    "plan_push",
    "push_judge",
    "quantize_gguf",
    "record_added_tokens",
    "sentencepiece_model_proto",
    "three_way",
    "tokenizer_model_for",
    "verify_gguf",
    "write_sentencepiece_model",
]
