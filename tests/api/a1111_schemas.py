"""AUTOMATIC1111's response shapes as strict pydantic models, written from its API source.

From modules/api/models.py (the response models), modules/api/api.py (what each route
returns), modules/processing.py (``Processed.js()``, the ``info`` JSON) and modules/shared_state
(``State.dict()``, the progress state). Strict: an ``int`` field refuses ``"3"`` and a ``str``
field refuses ``None``, as a typed client would. Extra keys are allowed (AUTOMATIC1111 clients
ignore them, and HeyIm adds a few).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", protected_namespaces=())


class Info(Strict):
    """``Processed.js()``."""

    prompt: str
    all_prompts: list[str]
    negative_prompt: str
    all_negative_prompts: list[str]
    seed: int
    all_seeds: list[int]
    subseed: int
    all_subseeds: list[int]
    subseed_strength: float
    width: int
    height: int
    sampler_name: str
    cfg_scale: float
    steps: int
    batch_size: int
    restore_faces: bool
    face_restoration_model: Optional[str]
    sd_model_name: str
    sd_model_hash: str
    sd_vae_name: Optional[str]
    sd_vae_hash: Optional[str]
    seed_resize_from_w: int
    seed_resize_from_h: int
    denoising_strength: Optional[float]
    extra_generation_params: dict[str, Any]
    index_of_first_image: int
    infotexts: list[str]
    styles: list[str]
    job_timestamp: str
    clip_skip: int
    is_using_inpainting_conditioning: bool
    version: Optional[str]


class ImagesResponse(Strict):
    """TextToImageResponse / ImageToImageResponse."""

    images: Optional[list[str]]
    parameters: dict[str, Any]
    info: str


class ProgressState(Strict):
    """``State.dict()``."""

    skipped: bool
    interrupted: bool
    stopping_generation: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(Strict):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: Optional[str]
    textinfo: Optional[str]


class SDModelItem(Strict):
    title: str
    model_name: str
    hash: Optional[str]
    sha256: Optional[str]
    filename: str
    config: Optional[str]


class SamplerItem(Strict):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(Strict):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class UpscalerItem(Strict):
    name: str
    model_name: Optional[str]
    model_path: Optional[str]
    model_url: Optional[str]
    scale: Optional[float]


class LatentUpscalerModeItem(Strict):
    name: str


class SDVaeItem(Strict):
    model_name: str
    filename: str


class SDModuleItem(Strict):  # Forge's /sd-modules
    model_name: str
    filename: str


class HypernetworkItem(Strict):
    name: str
    path: Optional[str]


class FaceRestorerItem(Strict):
    name: str
    cmd_dir: Optional[str]


class RealesrganItem(Strict):
    name: str
    path: Optional[str]
    scale: Optional[int]


class PromptStyleItem(Strict):
    name: str
    prompt: Optional[str]
    negative_prompt: Optional[str]


class LoraItem(Strict):  # extensions-builtin/Lora's create_lora_json
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class EmbeddingItem(Strict):
    step: Optional[int]
    sd_checkpoint: Optional[str]
    sd_checkpoint_name: Optional[str]
    shape: int
    vectors: int


class EmbeddingsResponse(Strict):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class MemoryResponse(Strict):
    ram: dict[str, Any]
    cuda: dict[str, Any]


class ScriptsList(Strict):
    txt2img: Optional[list[Any]] = None
    img2img: Optional[list[Any]] = None


class ScriptArg(Strict):
    label: Optional[str] = None
    value: Optional[Any] = None
    minimum: Optional[Any] = None
    maximum: Optional[Any] = None
    step: Optional[Any] = None
    choices: Optional[list[str]] = None


class ScriptInfo(Strict):
    name: Optional[str] = None
    is_alwayson: Optional[bool] = None
    is_img2img: Optional[bool] = None
    args: list[ScriptArg]


class ExtensionItem(Strict):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str
    enabled: bool


class PNGInfoResponse(Strict):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class Options(Strict):
    """The options clients read (OptionsModel has every setting, all Optional, typed by default)."""

    sd_model_checkpoint: Optional[str]
    sd_checkpoint_hash: Optional[str]
    sd_vae: Optional[str]
    CLIP_stop_at_last_layers: Optional[int]
    samples_format: Optional[str]
    jpeg_quality: Optional[int]
    live_previews_enable: Optional[bool]
    show_progress_every_n_steps: Optional[int]
    eta_noise_seed_delta: Optional[int]


class Error(Strict):
    """``api_middleware``'s handle_exception: error, detail, body, errors."""

    error: str
    detail: Any
    body: Any
    errors: str
