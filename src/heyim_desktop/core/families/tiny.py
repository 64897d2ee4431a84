"""Tiny random diffusion-transformer models, built on the spot (tests, benchmarks, the demo).

The shapes follow diffusers' own fast-test configurations; the tokenizers are written here,
as :mod:`heyim_desktop.core.demo_model` does for CLIP, since nothing can be downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from heyim_desktop.core.demo_model import _bytes_to_unicode
from heyim_desktop.core.storage import storage_error

_QWEN_WORDS = ("user", "assistant", "system", "Ġa", "Ġcat", "Ġdog", "Ġthe", "Ġphoto", "Ġof", "Ġred", "Ġfox",
               "Ġblurry", "Ġugly", "Ġforest", "Ġcity")
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
# Qwen3's chat layout (user turn, then the assistant's turn opened); thinking off adds an empty block.
_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def write_qwen_tokenizer(folder: Path) -> int:
    """A small byte-level BPE tokenizer in Qwen2Tokenizer's format; returns its vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    merges: list[str] = []
    for word in _QWEN_WORDS:
        pieces = list(word)
        while len(pieces) > 1:
            pair = f"{pieces[0]} {pieces[1]}"
            if pair not in merges:
                merges.append(pair)
            merged = pieces[0] + pieces[1]
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    base = len(vocab)
    added = {
        str(base + i): {"content": s, "special": True, "lstrip": False, "rstrip": False,
                        "normalized": False, "single_word": False}
        for i, s in enumerate(_QWEN_SPECIALS)
    }
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 512,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "bos_token": None,
        "errors": "replace",
        "added_tokens_decoder": added,
        "chat_template": _QWEN_CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return base + len(_QWEN_SPECIALS)


def _zimage_modules(tmp: Path, seed: int, text_width: int = 16) -> dict[str, Any]:
    import diffusers
    import torch
    from transformers import Qwen3Config, Qwen3Model

    lib: Any = diffusers  # diffusers' constructors are untyped

    vocab_size = write_qwen_tokenizer(tmp / "tokenizer")
    torch.manual_seed(seed)
    transformer = lib.ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=text_width, rope_theta=256.0,
        t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # created with torch.empty: pin them so the model is reproducible
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token.data))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token.data))
    torch.manual_seed(seed)
    vae = lib.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
        latent_channels=16, norm_num_groups=32, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
    )
    torch.manual_seed(seed)
    text_encoder = Qwen3Model(Qwen3Config(
        hidden_size=text_width, intermediate_size=text_width, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
    ))
    return {
        "transformer": transformer, "vae": vae, "text_encoder": text_encoder,
        "scheduler": lib.FlowMatchEulerDiscreteScheduler(),
    }


def _flux2_klein_modules(tmp: Path, seed: int, text_width: int = 16) -> dict[str, Any]:
    import diffusers
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    lib: Any = diffusers
    vocab_size = write_qwen_tokenizer(tmp / "tokenizer")
    torch.manual_seed(seed)
    transformer = lib.Flux2Transformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        # one text layer is read from the tiny (2-layer) encoder: flux2_text_layers
        num_attention_heads=2, joint_attention_dim=text_width, timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4], guidance_embeds=False,
    )
    torch.manual_seed(seed)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        intermediate_size=text_width, hidden_size=text_width, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
    ))
    torch.manual_seed(seed)
    vae = lib.AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1, latent_channels=1,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
    )
    return {"transformer": transformer, "vae": vae, "text_encoder": text_encoder,
            "scheduler": lib.FlowMatchEulerDiscreteScheduler()}


def write_t5_tokenizer(folder: Path) -> int:
    """A small Unigram tokenizer in T5's format (transformers builds it from a vocabulary); its size."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "▁", *(f"▁{w[1:]}" for w in _QWEN_WORDS if w.startswith("Ġ")),
              *"abcdefghijklmnopqrstuvwxyz"]
    vocab = [(piece, 0.0 if i < 3 else -1.0 - i) for i, piece in enumerate(pieces)]
    T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512).save_pretrained(folder)
    return len(vocab)


def _sd3_modules(tmp: Path, seed: int, text_width: int = 16, t5: bool = False) -> dict[str, Any]:
    """SD 3.5, by default without its T5 encoder (diffusers runs SD 3 with ``text_encoder_3=None``: zero
    T5 features, as SD 3.5 users do to save memory); ``t5``: with a tiny T5 encoder and its tokenizer."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from heyim_desktop.core.demo_model import write_tokenizer

    lib: Any = diffusers
    vocab_size = write_tokenizer(tmp / "tokenizer")
    write_tokenizer(tmp / "tokenizer_2")
    ids = json.loads((tmp / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    torch.manual_seed(seed)
    transformer = lib.SD3Transformer2DModel(
        # 16 latent channels as in SD 3.5 (diffusers' SD3 inpainting pipeline takes 16 or 33 only)
        sample_size=32, patch_size=1, in_channels=16, num_layers=1, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=16,
    )
    clip = CLIPTextConfig(
        bos_token_id=ids["<|startoftext|>"], eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=vocab_size, hidden_act="gelu", projection_dim=32,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(clip)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(clip)
    torch.manual_seed(seed)
    vae = lib.AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 4),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, latent_channels=16, norm_num_groups=1, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    modules = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
               "scheduler": lib.FlowMatchEulerDiscreteScheduler()}
    if t5:
        from transformers import T5Config, T5EncoderModel

        t5_vocab = write_t5_tokenizer(tmp / "tokenizer_3")
        torch.manual_seed(seed + 2)
        # d_model is the transformer's joint_attention_dim; gated GELU as T5 v1.1 (SD 3.5's T5-XXL)
        modules["text_encoder_3"] = T5EncoderModel(T5Config(
            d_model=32, d_ff=32, d_kv=16, num_layers=2, num_heads=2, vocab_size=t5_vocab,
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
        ))
    return modules


_INDEX: dict[str, dict[str, Any]] = {
    "zimage": {
        "_class_name": "ZImagePipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "flux2": {
        "_class_name": "Flux2KleinPipeline",
        # The released 4B [klein] is step-distilled (guidance unused); the tiny one runs true CFG
        # so that path is tested too.
        "is_distilled": False,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    },
    "sd3": {
        "_class_name": "StableDiffusion3Pipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_3": [None, None],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "tokenizer_3": [None, None],
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
}
_BUILDERS = {"zimage": _zimage_modules, "flux2": _flux2_klein_modules, "sd3": _sd3_modules}
TINY_FAMILIES = tuple(_BUILDERS)


def build_tiny_model(family: str, destination: str | os.PathLike[str], *, seed: int = 0,
                     text_width: int = 16, t5: bool = False) -> Path:
    """Write a tiny random model of ``family`` in diffusers format (safetensors), all or nothing.

    ``text_width`` is the Qwen3 text encoder's hidden size (Z-Image, FLUX.2 [klein]): 32 makes its
    weight rows whole ggml blocks, so :func:`write_tiny_text_encoder_gguf` can quantize them. ``t5``
    (SD 3.5 only) adds the T5 encoder and its tokenizer as ``text_encoder_3``/``tokenizer_3``.
    """
    if family not in _BUILDERS:
        raise ValueError(f"no tiny model for {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    dest = Path(destination)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tiny-{family}-", dir=dest.parent))
    except OSError as exc:
        raise storage_error(exc, dest.parent, "the tiny model") from exc
    try:
        modules = (_sd3_modules(tmp, seed, text_width, t5=True) if t5 and family == "sd3"
                   else _BUILDERS[family](tmp, seed, text_width))
        for part, module in modules.items():
            if part == "scheduler":
                module.save_pretrained(tmp / part)
            else:
                module.save_pretrained(tmp / part, safe_serialization=True)
        index = {**_INDEX[family], "_diffusers_version": "0.42.1", "_heyim_tiny": True}
        if "text_encoder_3" in modules:
            index.update(text_encoder_3=["transformers", "T5EncoderModel"], tokenizer_3=["transformers", "T5Tokenizer"])
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise storage_error(exc, dest.parent, "the tiny model") from exc
        raise
    return dest


#: The attention projections a tiny LoRA adapts, per family (diffusers' module names).
_LORA_TARGETS = {
    "zimage": ["to_q", "to_k", "to_v", "to_out.0"],
    "flux2": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "to_qkv_mlp_proj"],
    "sd3": ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj"],
}


def write_tiny_lora(model: str | os.PathLike[str], destination: str | os.PathLike[str], *, rank: int = 4,
                    seed: int = 0) -> Path:
    """A random diffusers-format LoRA (peft) for a tiny family model's transformer, as one .safetensors file."""
    import diffusers
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from heyim_desktop.core.families import family_for_pipeline

    folder = Path(model)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    family = family_for_pipeline(str(index.get("_class_name", "")))
    if family is None:
        raise ValueError(f"{folder} is not a family model")
    lib: Any = diffusers
    transformer_cls = getattr(lib, index["transformer"][1])
    transformer = transformer_cls.from_pretrained(folder / "transformer", local_files_only=True)
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=_LORA_TARGETS[family.key],
                                       init_lora_weights=False))
    with torch.no_grad():  # peft's random init is small: make the LoRA visibly change the image
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    layers = get_peft_model_state_dict(transformer)
    dest = Path(destination)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-lora-", dir=dest.parent))
    try:
        getattr(lib, family.pipeline).save_lora_weights(tmp, transformer_lora_layers=layers, safe_serialization=True)
        os.replace(tmp / "pytorch_lora_weights.safetensors", dest)
    except OSError as exc:
        raise storage_error(exc, dest.parent, "the tiny LoRA") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def write_tiny_gguf(model: str | os.PathLike[str], destination: str | os.PathLike[str], *,
                    quantization: str = "Q8_0") -> Path:
    """A family model's transformer as a GGUF file, written with the ``gguf`` package's own writer.

    Linear weights whose rows split into whole ggml blocks are quantized (``Q8_0``, ``Q4_0``...: what
    the package can quantize; it has no K-quant encoder); everything else stays F32. Tensor names are
    diffusers' (``from_single_file`` takes them as they are).
    """
    import gguf
    import numpy as np
    from gguf import quants
    from safetensors.numpy import load_file

    qtype = gguf.GGMLQuantizationType[quantization]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    weights: dict[str, Any] = {}
    for file in sorted((Path(model) / "transformer").glob("*.safetensors")):
        weights.update(load_file(str(file)))

    def tensors(writer: Any) -> None:
        for name, array in weights.items():
            values = np.asarray(array, dtype=np.float32)
            if name.endswith(".weight") and values.ndim == 2 and values.shape[-1] % block == 0:
                packed = quants.quantize(values, qtype)
                writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)
            else:
                writer.add_tensor(name, values)

    dest = Path(destination)
    _write_gguf(dest, "heyim-tiny", tensors)
    return dest


def _write_gguf(dest: Path, arch: str, fill: Any) -> None:
    """A GGUF file at ``dest`` (never replacing one): ``fill(writer)`` adds its metadata and tensors."""
    import gguf

    if dest.exists():  # never replaces a file (HeyIm's or anyone's)
        raise FileExistsError(f"{dest} exists; choose a new file name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)  # ours alone: the writer reopens it
    try:
        writer = gguf.GGUFWriter(str(tmp), arch)
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.link(tmp, dest)  # takes the name only if it is still free
    except FileExistsError:
        raise
    except OSError as exc:
        raise storage_error(exc, dest.parent, "the tiny GGUF file") from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_tiny_text_encoder_gguf(model: str | os.PathLike[str], destination: str | os.PathLike[str], *,
                                 quantization: str = "Q8_0", part: str = "text_encoder") -> Path:
    """A tiny family model's text encoder (Qwen3, or T5's encoder) as a llama.cpp-style GGUF file.

    The metadata and tensor names are llama.cpp's (``general.architecture`` ``qwen3`` or ``t5encoder``,
    ``blk.N.attn_q.weight``...), the ``gguf`` package's own name map, so transformers' GGUF loader reads
    it as it reads a downloaded one. ``F32``/``F16`` store every tensor in that float type; a block
    quantization (``Q8_0``, ``Q4_0``...) packs the 2-D weights whose rows split into whole blocks.
    """
    import gguf
    import numpy as np
    from gguf import quants
    from safetensors.numpy import load_file

    folder = Path(model) / part
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_type = str(config.get("model_type", ""))
    if model_type not in ("qwen3", "t5"):
        raise ValueError(f"{folder} holds a {model_type or 'unknown'} text encoder; Qwen3 or T5 only")
    weights: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    qtype = gguf.GGMLQuantizationType[quantization]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if model_type == "qwen3":
        arch, layers = "qwen3", int(config["num_hidden_layers"])
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, layers)
    else:
        arch, layers = "t5encoder", int(config["num_layers"])
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, layers)

    def metadata(writer: Any) -> None:
        writer.add_name(f"heyim tiny {arch}")
        writer.add_file_type(int(qtype))
        writer.add_vocab_size(int(config["vocab_size"]))
        if arch == "qwen3":
            head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
            rope = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta", 1e6)
            writer.add_context_length(int(config["max_position_embeddings"]))
            writer.add_embedding_length(int(config["hidden_size"]))
            writer.add_block_count(layers)
            writer.add_feed_forward_length(int(config["intermediate_size"]))
            writer.add_head_count(int(config["num_attention_heads"]))
            writer.add_head_count_kv(int(config["num_key_value_heads"]))
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
            writer.add_rope_freq_base(float(rope))
            writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
        else:
            writer.add_context_length(int(config.get("n_positions", 512)))
            writer.add_embedding_length(int(config["d_model"]))
            writer.add_block_count(layers)
            writer.add_feed_forward_length(int(config["d_ff"]))
            writer.add_head_count(int(config["num_heads"]))
            writer.add_key_length(int(config["d_kv"]))
            writer.add_value_length(int(config["d_kv"]))
            writer.add_layer_norm_eps(float(config["layer_norm_epsilon"]))
            writer.add_relative_attn_buckets_count(int(config["relative_attention_num_buckets"]))

    def tensors(writer: Any) -> None:
        metadata(writer)
        for name, array in weights.items():
            base, _, suffix = name.rpartition(".")
            mapped = names.get_name(base)
            if mapped is None:  # T5's encoder.embed_tokens: the shared embedding again
                continue
            values = np.asarray(array, dtype=np.float32)
            if quantization == "F16":
                writer.add_tensor(f"{mapped}.{suffix}", values.astype(np.float16))
            elif qtype is gguf.GGMLQuantizationType.F32 or not (
                    suffix == "weight" and values.ndim == 2 and values.shape[-1] % block == 0):
                writer.add_tensor(f"{mapped}.{suffix}", values)
            else:
                packed = quants.quantize(values, qtype)
                writer.add_tensor(f"{mapped}.{suffix}", packed, raw_shape=packed.shape, raw_dtype=qtype)

    dest = Path(destination)
    _write_gguf(dest, arch, tensors)
    return dest
