"""Pydantic models that *describe* the API in /openapi.json.

Bodies are not validated by these models: the routes map them onto GenerationRequest, whose
rules (and messages naming the field) are the only ones. The ranges here mirror those rules
so that clients and generated tests see the same limits.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from heyim_desktop.core.request import (
    CLIP_SKIP_RANGE,
    COUNT_RANGE,
    GUIDANCE_RANGE,
    MAX_SEED,
    MAX_STYLES,
    SIZE_RANGE,
    STEPS_RANGE,
)

_Steps = Field(default=None, ge=STEPS_RANGE[0], le=STEPS_RANGE[1])
_Size = Field(default=None, ge=SIZE_RANGE[0], le=SIZE_RANGE[1], multiple_of=8)
_Guidance = Field(default=None, ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1])


class ErrorResponse(BaseModel):
    success: bool = False
    error: str = Field(description="One line a person can act on.")
    detail: str = Field(description="The same message (the key FastAPI-style clients read).")
    field: Optional[str] = Field(description="The request field (or header) at fault, when there is one.")
    body: str = Field(default="", description="AUTOMATIC1111's error key: the offending body part (empty).")
    errors: str = Field(default="", description="AUTOMATIC1111's error key: the same message.")


# -- HeyIm's original routes ---------------------------------------------------------------
class GenerateRequest(BaseModel):
    """HeyIm's original `POST /api/generate` body (camelCase), plus `model`, `count`, `guidanceBoost`."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=10_000)
    negativePrompt: Optional[str] = Field(default=None, max_length=10_000)
    steps: Optional[int] = _Steps
    cfgScale: Optional[float] = _Guidance
    cfg: Optional[float] = Field(default=None, ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1], description="Alias of cfgScale.")
    seed: Optional[int] = Field(default=None, ge=-1, le=MAX_SEED, description="-1 or absent: random.")
    width: Optional[int] = _Size
    height: Optional[int] = _Size
    scheduler: Optional[str] = Field(default=None, description="A name from GET /sdapi/v1/samplers.")
    strength: Optional[float] = Field(default=None, gt=0, le=1, description="Image-to-image strength.")
    inputImage: Optional[str] = Field(default=None, description="Base64 (or data URL) input image for image-to-image.")
    guidanceBoost: Optional[float] = Field(default=None, ge=0, le=10, description="Added to cfg for image-to-image (default 1.5).")
    count: Optional[int] = Field(default=None, ge=COUNT_RANGE[0], le=COUNT_RANGE[1])
    model: Optional[str] = Field(default=None, description="A model name from GET /api/models; default: the current model.")
    refiner: Optional[str] = Field(default=None, description="An SDXL refiner's name from GET /api/models (base SDXL-refiner): it finishes the image.")
    refinerSwitch: Optional[float] = Field(default=None, gt=0, lt=1, description="Fraction of the steps after which the refiner takes over (default 0.8).")
    clipSkip: Optional[int] = Field(default=None, ge=CLIP_SKIP_RANGE[0], le=CLIP_SKIP_RANGE[1],
                                    description="AUTOMATIC1111's count: 1 = none, 2 = skip the last CLIP layer (PyTorch engine).")
    styles: Optional[list[str]] = Field(default=None, max_length=MAX_STYLES, description="Prompt style names, applied in order.")
    modelType: Optional[str] = Field(default=None, description="Accepted for old clients and ignored.")


class GenerationMetadata(BaseModel):
    prompt: str
    negativePrompt: str
    steps: int
    cfgScale: float
    seed: int
    seeds: list[int]
    width: int
    height: int
    scheduler: str
    model: str
    generationTime: float = Field(description="Seconds from the job's start to its end (model loading included).")
    hasInputImage: bool
    strength: Optional[float]
    historyIds: list[Any] = Field(description="Where the images were saved (history entry ids).")
    warnings: list[str]


class GenerateResponse(BaseModel):
    success: bool
    imageBase64: str = Field(description="The first image, PNG, base64.")
    images: list[str] = Field(description="Every image, PNG, base64.")
    metadata: GenerationMetadata


class StatusResponse(BaseModel):
    modelStatus: str = Field(description="not_loaded, loading or loaded")
    currentModel: Optional[str]
    defaultModel: Optional[str]
    isGenerating: bool
    queueSize: int = Field(description="Jobs waiting (not counting the running one).")
    lastGenerationTime: Optional[float] = Field(description="Seconds the last finished job took.")
    version: str


class ModelEntry(BaseModel):
    name: str
    ref: str
    loaded: bool
    default: bool
    base: Optional[str] = Field(default=None, description="SD1, SD2, SDXL, SDXL-refiner, ... when known.")


class ModelsResponse(BaseModel):
    models: list[ModelEntry]
    current: Optional[str]


# -- AUTOMATIC1111-compatible routes ----------------------------------------------------------
class Txt2ImgRequest(BaseModel):
    """AUTOMATIC1111's txt2img body. Fields not listed are ignored (as AUTOMATIC1111 does), with a note in `info`."""

    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1, max_length=10_000)
    negative_prompt: Optional[str] = Field(default="", max_length=10_000)
    steps: Optional[int] = _Steps
    cfg_scale: Optional[float] = _Guidance
    seed: Optional[int] = Field(default=-1, ge=-1, le=MAX_SEED, description="-1: random.")
    width: Optional[int] = _Size
    height: Optional[int] = _Size
    sampler_name: Optional[str] = None
    sampler_index: Optional[str] = None
    scheduler: Optional[str] = Field(default=None, description="Automatic or Karras.")
    batch_size: Optional[int] = Field(default=1, ge=1, le=COUNT_RANGE[1])
    n_iter: Optional[int] = Field(default=1, ge=1, le=COUNT_RANGE[1])
    send_images: Optional[bool] = True
    save_images: Optional[bool] = Field(default=False, description="Ignored: HeyIm always keeps images in its history.")
    override_settings: Optional[dict[str, Any]] = Field(
        default=None, description="sd_model_checkpoint and CLIP_stop_at_last_layers are used (for this request); "
                                  "other keys are ignored with a note.")
    styles: Optional[list[str]] = Field(default=None, max_length=MAX_STYLES,
                                        description="Names from GET /sdapi/v1/prompt-styles, applied in order.")
    clip_skip: Optional[int] = Field(default=None, ge=CLIP_SKIP_RANGE[0], le=CLIP_SKIP_RANGE[1],
                                     description="As CLIP_stop_at_last_layers: 1 = none (PyTorch engine only).")
    # Hires fix (txt2img): generate at width x height, upscale, refine with image-to-image.
    enable_hr: Optional[bool] = False
    hr_scale: Optional[float] = Field(default=2.0, ge=1, le=8)
    hr_upscaler: Optional[str] = Field(default=None, description="Latent (default), a name from GET /sdapi/v1/latent-upscale-modes or /sdapi/v1/upscalers.")
    hr_second_pass_steps: Optional[int] = Field(default=0, ge=0, le=STEPS_RANGE[1], description="0: as many as steps.")
    hr_resize_x: Optional[int] = Field(default=0, ge=0, le=SIZE_RANGE[1], description="Overrides hr_scale (with hr_resize_y).")
    hr_resize_y: Optional[int] = Field(default=0, ge=0, le=SIZE_RANGE[1])
    denoising_strength: Optional[float] = Field(default=0.75, ge=0, le=1, description="Of the hires second pass.")
    refiner_checkpoint: Optional[str] = Field(default=None, description="An SDXL refiner's name (GET /sdapi/v1/sd-models).")
    refiner_switch_at: Optional[float] = Field(default=None, gt=0, lt=1, description="Fraction of the steps before the refiner takes over (default 0.8).")


class Img2ImgRequest(Txt2ImgRequest):
    enable_hr: Optional[bool] = Field(default=False, description="Not used by img2img.")
    init_images: list[str] = Field(min_length=1, description="Base64 images; the first is used.")
    denoising_strength: Optional[float] = Field(default=0.75, gt=0, le=1)
    include_init_images: Optional[bool] = False


class ImagesResponse(BaseModel):
    images: list[str] = Field(description="PNG images, base64, each with its parameters text chunk.")
    parameters: dict[str, Any] = Field(description="The request as received.")
    info: str = Field(description="A JSON string: seeds, sizes, infotexts, ... as AUTOMATIC1111 writes it.")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: Optional[list[str]] = None
    default_rho: Optional[float] = None
    need_inner_model: Optional[bool] = None


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    title: str
    model_name: str
    hash: Optional[str] = None
    sha256: Optional[str] = None
    filename: str
    config: Optional[str] = None


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    stopping_generation: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: float = Field(ge=0, le=1)
    eta_relative: float
    state: ProgressState
    current_image: Optional[str] = Field(default=None, description="A preview of the running job, PNG, base64.")
    textinfo: Optional[str] = None


class OptionsBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    sd_model_checkpoint: Optional[str] = Field(default=None, description="Switches the model used by later jobs.")
    CLIP_stop_at_last_layers: Optional[int] = Field(default=None, ge=CLIP_SKIP_RANGE[0], le=CLIP_SKIP_RANGE[1],
                                                    description="The clip skip of later jobs (PyTorch engine).")


class OptionsResponse(BaseModel):
    """The options AUTOMATIC1111 clients read; HeyIm's values for them."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    sd_model_checkpoint: str
    sd_checkpoint_hash: str
    sd_vae: str
    CLIP_stop_at_last_layers: int
    samples_format: str


# -- AUTOMATIC1111's list routes (empty where HeyIm has none of a thing) --------------------------
class UpscalerItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    model_name: Optional[str] = None
    model_path: Optional[str] = None
    model_url: Optional[str] = None
    scale: Optional[float] = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class SDVaeItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    filename: str


class SDModuleItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    model_name: str
    filename: str


class HypernetworkItem(BaseModel):
    name: str
    path: Optional[str] = None


class FaceRestorerItem(BaseModel):
    name: str
    cmd_dir: Optional[str] = None


class RealesrganItem(BaseModel):
    name: str
    path: Optional[str] = None
    scale: Optional[int] = None


class PromptStyleItem(BaseModel):
    name: str
    prompt: Optional[str] = None
    negative_prompt: Optional[str] = None


class LoraItem(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class EmbeddingItem(BaseModel):
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    shape: int
    vectors: int


class EmbeddingsResponse(BaseModel):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem]


class MemoryResponse(BaseModel):
    ram: dict[str, Any]
    cuda: dict[str, Any]


class ScriptsList(BaseModel):
    txt2img: Optional[list[Any]] = None
    img2img: Optional[list[Any]] = None


class ScriptArg(BaseModel):
    label: Optional[str] = None
    value: Optional[Any] = None
    minimum: Optional[Any] = None
    maximum: Optional[Any] = None
    step: Optional[Any] = None
    choices: Optional[list[str]] = None


class ScriptInfo(BaseModel):
    name: Optional[str] = None
    is_alwayson: Optional[bool] = None
    is_img2img: Optional[bool] = None
    args: list[ScriptArg]


class ExtensionItem(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str
    enabled: bool


class PNGInfoRequest(BaseModel):
    image: str = Field(min_length=1, description="A base64 (or data URL) image: PNG, JPEG or WebP.")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="The parameters text, as AUTOMATIC1111 writes it ('' when the image has none).")
    items: dict[str, Any] = Field(description="The image's other text chunks.")
    parameters: dict[str, Any] = Field(description="The parameters, parsed (Prompt, Negative prompt, Steps, ...).")
