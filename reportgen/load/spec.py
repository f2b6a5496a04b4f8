"""The report spec: schema, loading and validation.

``load_spec(path)`` reads a YAML spec, validates it against the pydantic schema
below, resolves every path relative to the spec file and expands each model's
locations into runs. Every problem found is reported at once, each as one line
``file:line: key.path: what is wrong; how to fix it``. Downstream code only ever
sees the frozen objects defined here, never raw dicts.
"""

from __future__ import annotations

import difflib
import glob
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from reportgen.core.errors import SpecError
from reportgen.load.yamlsrc import KeyPath, Located, format_key_path, load_yaml

# Names become file names (docs/<report>/, .<report>.staging-*): 64 characters keep every
# path component well under the 255 bytes file systems allow. Match with re.fullmatch,
# never re.match: '$' also matches before a final newline ("a\n").
SLUG_MAX = 64
SLUG_RE = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{SLUG_MAX - 1}}}$"
_SLUG_HELP = f"use letters, digits, '-', '_' and '.', starting with a letter or digit, at most {SLUG_MAX} in all"
# Bounds that keep one image's activations within memory: 4096 px per input side
# (a 64-channel float32 map of 4096^2 is 4 GiB), 1024 px for unit maximisation images.
MAX_INPUT_SIDE = 4096
MAX_UNITS_SIDE = 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Activation kinds reportgen understands, by the lower-case name the spec uses. The value
# is the torch.nn class name; 'auto' and 'none' are the other allowed values.
ACTIVATION_KINDS = {
    "relu": "ReLU", "relu6": "ReLU6", "leaky_relu": "LeakyReLU", "prelu": "PReLU", "elu": "ELU",
    "selu": "SELU", "silu": "SiLU", "gelu": "GELU", "hardswish": "Hardswish", "mish": "Mish",
    "sigmoid": "Sigmoid", "tanh": "Tanh", "hardsigmoid": "Hardsigmoid",
}
_KIND_ALIASES = {cls.lower(): kind for kind, cls in ACTIVATION_KINDS.items()} | {"swish": "silu"}
_RELU_ALIAS = {"auto": "auto", "yes": "relu", "no": "none"}


def activation_kind(name: str) -> str | None:
    """The kind ('prelu', 'silu', ...) a spec value or class name stands for, or None."""
    key = name.lower()
    return key if key in ACTIVATION_KINDS else _KIND_ALIASES.get(key)


# Layer names may hold anything a ModuleDict key may ('/', ':', spaces, '<b>', accents):
# files use names.slug of them and pages show them escaped. Only control characters
# (which no display survives) and names too long to read are refused.
LAYER_RE = r"[^\x00-\x1f\x7f]{1,200}"


def _layer_name(v: str) -> str:
    if not re.fullmatch(LAYER_RE, v):
        raise ValueError(f"layer name {_short(v)} is not supported; reportgen handles module names of "
                         "at most 200 characters without control characters (newlines, tabs); "
                         "rename the module")
    return v


class LayerSpec(_Strict):
    """One layer to inspect, by its ``named_modules()`` name."""

    name: str = Field(min_length=1, description="Dotted module name, as in model.named_modules().")

    _check_name = field_validator("name")(classmethod(lambda cls, v: _layer_name(v)))
    activation: str = Field(
        "auto", min_length=1,
        description="Activation the statistics and maps are taken after. 'auto' finds the one applied "
        "to the layer's output (a module such as nn.PReLU, or a functional call such as F.silu in "
        "forward), following it through a bias added apart, identities, dropouts, a BatchNorm and "
        "element-wise operations with a constant; 'none' takes the raw output; a kind (relu, relu6, "
        "leaky_relu, prelu, elu, selu, silu, gelu, hardswish, mish, sigmoid, tanh, hardsigmoid) applies "
        "that function; a module name of the "
        "model (e.g. 'features.1') applies that module, learned parameters included.",
    )
    relu: Optional[Literal["auto", "yes", "no"]] = Field(
        None, description="Older alias of 'activation': yes = relu, no = none, auto = auto.",
    )

    @field_validator("relu", mode="before")
    @classmethod
    def _bool_relu(cls, v: Any) -> Any:
        if v is True:
            return "yes"
        if v is False:
            return "no"
        return v

    @field_validator("activation", mode="before")
    @classmethod
    def _none_activation(cls, v: Any) -> Any:
        # YAML reads `activation: none` as a string but `activation: null` / `no` otherwise.
        if v is None or v is False:
            return "none"
        return v

    @model_validator(mode="after")
    def _relu_alias(self) -> "LayerSpec":
        if self.relu is not None:
            if "activation" in self.model_fields_set:
                raise ValueError("give 'activation' or its older alias 'relu', not both")
            object.__setattr__(self, "activation", _RELU_ALIAS[self.relu])
        elif activation_kind(self.activation) is not None:
            object.__setattr__(self, "activation", activation_kind(self.activation))
        return self


# A training step of a checkpoint saved over training (the model's ``steps``).
StepNumber = typing.Annotated[int, Field(ge=0, strict=True)]


def _layer_list(v: Any) -> Any:
    # "conv1" is shorthand for {name: conv1}.
    if isinstance(v, list):
        return [{"name": item} if isinstance(item, str) else item for item in v]
    return v


class InputSpec(_Strict):
    """How an image file becomes the network's input tensor."""

    size: Optional[tuple[int, int]] = Field(
        None, description="Resize to [height, width] (or one number for a square), each 1 to 4096; "
        "omit to keep."
    )
    channels: Literal["rgb", "grey"] = "rgb"
    mean: tuple[float, ...] = Field((0.0, 0.0, 0.0), description="Per-channel mean, on [0, 1] pixels.")
    std: tuple[float, ...] = Field((1.0, 1.0, 1.0), description="Per-channel std, on [0, 1] pixels.")

    @model_validator(mode="before")
    @classmethod
    def _grey_defaults(cls, data: Any) -> Any:
        # The defaults are written for RGB; a grey model takes one value each.
        if isinstance(data, dict) and data.get("channels") == "grey":
            data = {"mean": [0.0], "std": [1.0], **data}
        return data

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return [v, v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("size")
    @classmethod
    def _positive(cls, v: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
        if v is not None and min(v) < 1:
            raise ValueError("sizes must be positive")
        if v is not None and max(v) > MAX_INPUT_SIDE:
            raise ValueError(f"{max(v)} pixels is too large: sides are at most {MAX_INPUT_SIDE}; "
                             "use the size the model was trained at")
        return v

    @model_validator(mode="after")
    def _stats_match(self) -> "InputSpec":
        n = 3 if self.channels == "rgb" else 1
        for key in ("mean", "std"):
            vals = getattr(self, key)
            if len(vals) not in (1, n):
                raise ValueError(f"'{key}' needs 1 or {n} values for channels '{self.channels}'")
        if not all(math.isfinite(x) for x in self.mean + self.std):
            raise ValueError("'mean' and 'std' must be finite numbers (not .nan or .inf)")
        if any(s <= 0 for s in self.std):
            raise ValueError("'std' values must be positive")
        return self


class ModelSpec(_Strict):
    """One architecture with one checkpoint per location."""

    name: str = Field(pattern=SLUG_RE, description="Short name used in headings and paths.")
    arch: Optional[str] = Field(
        None,
        description="'path/to/file.py:ClassName' (relative to the spec) or 'package.module:factory'.",
    )
    arch_args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for arch.")
    torchscript: Optional[str] = Field(
        None, description="TorchScript file (template with {location}) instead of a checkpoint. Alone it "
        "gives weight views only (TorchScript runs no Python hooks); with 'arch' its weights are loaded "
        "into that class and every view works."
    )
    onnx: Optional[str] = Field(
        None, description="ONNX file (template with {location}) instead of arch + checkpoint; needs "
        "pip install \"reportgen[onnx]\", then reportgen install-onnx (the converter). Layer names are the converted graph's module names "
        "(run 'reportgen layers')."
    )
    exported: Optional[str] = Field(
        None, description="torch.export program (a .pt2 file from torch.export.save; template with {location}) "
        "instead of arch + checkpoint: the format to prefer for a network without its Python class. Every view "
        "works; layer names are the exported model's own module names (run 'reportgen layers'). Read like a "
        "checkpoint: tensors only unless 'trusted: true'."
    )
    checkpoint: Optional[str] = Field(
        None, description="Checkpoint path template, e.g. 'ckpt/{location}.pt'. Omit to use the "
        "architecture's own initial weights."
    )
    checkpoint_prefix: Optional[str] = Field(
        None, description="Prefix of the weight names in the checkpoint to strip, e.g. 'model.' for a "
        "Lightning checkpoint (default: found automatically when the names do not match the arch)."
    )
    checkpoint_key: Optional[str] = Field(
        None, description="Key inside the checkpoint dict that holds the state_dict "
        "(default: the file itself, or its 'state_dict' / 'model' entry)."
    )
    trusted: bool = Field(
        False, description="Allow full pickle loading (can run code). Only for files you trust."
    )
    steps: Optional[list[StepNumber] | dict[str, list[StepNumber]]] = Field(
        None, description="Training steps of checkpoints saved over training, ascending: a list for every "
        "location or a mapping location -> list. The path template holding '{step}' ('checkpoint', or "
        "'step_checkpoint') gives each step's file; the last step is the run's checkpoint. Feeds the "
        "training page (how filters, norms and dead counts evolved)."
    )
    step_checkpoint: Optional[str] = Field(
        None, description="Path template with '{step}' (and '{location}') of the earlier checkpoints when "
        "they are stored apart from 'checkpoint' (which stays the final one, the last listed step). "
        "Step files may hold only the inspected layers' weights."
    )
    locations: Optional[list[str]] = Field(
        None, min_length=1, description="One run per location; omit for a single run named after the model."
    )
    layers: Optional[list[LayerSpec]] = Field(None, description="Overrides the top-level layers.")
    images: Optional[list[str]] = Field(None, description="Overrides the top-level images.")
    annotations: Optional[str] = Field(None, description="Overrides the top-level annotations.")
    extra_frames: Optional[list[str]] = Field(None, description="Overrides the top-level extra_frames.")
    input: Optional[InputSpec] = Field(
        None, description="Overrides the top-level input (size, channels, mean/std) for this model."
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_shorthand(cls, v: Any) -> Any:
        return _layer_list(v)

    @field_validator("locations")
    @classmethod
    def _check_locations(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is None:
            return v
        bad = [loc for loc in v if not re.fullmatch(SLUG_RE, str(loc))]
        if bad:
            raise ValueError(f"location name {_short(bad[0])} is not allowed; {_SLUG_HELP}")
        dup = sorted({loc for loc in v if v.count(loc) > 1})
        if dup:
            raise ValueError(f"location {dup[0]!r} is listed twice; list each location once")
        return v

    @field_validator("locations", mode="before")
    @classmethod
    def _str_locations(cls, v: Any) -> Any:
        # YAML reads `locations: [1, 2]` as ints; location names are strings.
        if isinstance(v, list):
            return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in v]
        return v

    @field_validator("steps", mode="before")
    @classmethod
    def _str_step_locations(cls, v: Any) -> Any:
        # One clear message instead of pydantic's two (one per branch of the union).
        def check(steps: Any, where: str) -> None:
            if not isinstance(steps, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                       for x in steps):
                raise ValueError(f"steps{where} must be a list of whole numbers >= 0 (training steps), "
                                 f"got {_short(steps)}")
        if isinstance(v, dict):
            # YAML reads `steps: {1: [...]}` with int keys; location names are strings.
            v = {str(k) if isinstance(k, (int, float)) and not isinstance(k, bool) else k: x for k, x in v.items()}
            for k, x in v.items():
                check(x, f" of '{k}'")
        elif v is not None:
            if not isinstance(v, list):
                raise ValueError(f"give a list of training steps ([0, 200, 400]) or a mapping of location to "
                                 f"such a list, got {_short(v)}")
            check(v, "")
        return v

    @field_validator("steps")
    @classmethod
    def _ascending_steps(cls, v: Any) -> Any:
        for where, steps in ([("", v)] if isinstance(v, list) else [(f" of '{k}'", x) for k, x in (v or {}).items()]):
            if not steps:
                raise ValueError(f"the step list{where} is empty; list the steps of the saved checkpoints")
            if any(b <= a for a, b in zip(steps, steps[1:])):
                raise ValueError(f"the steps{where} must be ascending with no repeats, got {_short(list(steps))}")
        return v

    @model_validator(mode="after")
    def _step_templates(self) -> "ModelSpec":
        in_ckpt = "{step}" in (self.checkpoint or "")
        if self.step_checkpoint is not None:
            if "{step}" not in self.step_checkpoint:
                raise ValueError("'step_checkpoint' needs '{step}' in its path, e.g. runs/{location}/step_{step}.pt")
            if in_ckpt:
                raise ValueError("'{step}' is in both 'checkpoint' and 'step_checkpoint'; keep one template "
                                 "with '{step}' (the checkpoint then is its last step)")
            if self.checkpoint is None:
                raise ValueError("'step_checkpoint' follows a 'checkpoint' over training; add 'checkpoint' "
                                 "(the final weights)")
        if self.steps is None and (in_ckpt or self.step_checkpoint is not None):
            raise ValueError("the path uses '{step}' but the model lists no 'steps'; add steps: [0, 200, ...] "
                             "(the steps of the saved checkpoints)")
        if self.steps is not None and not in_ckpt and self.step_checkpoint is None:
            raise ValueError("'steps' needs '{step}' in the checkpoint path (e.g. runs/{location}/step_{step}.pt) "
                             "or a 'step_checkpoint' template with '{step}'")
        if (self.step_checkpoint is not None and self.locations and len(self.locations) > 1
                and "{location}" not in self.step_checkpoint):
            raise ValueError("several locations share one 'step_checkpoint' path; put '{location}' in it")
        if "{step}" in (self.torchscript or "") + (self.onnx or "") + (self.exported or ""):
            raise ValueError("'{step}' works in 'checkpoint' and 'step_checkpoint' only")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if self.onnx is not None and (self.arch or self.torchscript or self.checkpoint):
            raise ValueError("an ONNX model carries its architecture and weights; remove 'arch', "
                             "'torchscript' and 'checkpoint'")
        if self.onnx is not None and self.exported is not None:
            raise ValueError("give one of 'onnx' and 'exported': each file is the whole model")
        if self.exported is not None and (self.arch or self.torchscript or self.checkpoint):
            raise ValueError("an exported program carries its architecture and weights; remove 'arch', "
                             "'torchscript' and 'checkpoint'")
        if self.arch is None and self.torchscript is None and self.onnx is None and self.exported is None:
            raise ValueError("give 'arch' (with an optional 'checkpoint'), 'exported', 'torchscript' or 'onnx'")
        if self.torchscript is not None and self.checkpoint is not None:
            raise ValueError("a TorchScript model carries its weights; remove 'checkpoint'")
        template = self.checkpoint or self.torchscript or self.onnx or self.exported or ""
        if self.locations and len(self.locations) > 1 and template and "{location}" not in template:
            raise ValueError(
                "several locations share one file; put '{location}' in the checkpoint path"
            )
        if not self.locations and "{location}" in template:
            raise ValueError("the path uses '{location}' but the model lists no 'locations'")
        return self


class FilterOptions(_Strict):
    enabled: bool = True
    tile_px: int = Field(0, ge=0, description="Smallest size of a filter tile on the page, in CSS pixels; 0 means 48.")


class ActivationOptions(_Strict):
    enabled: bool = True
    max_images: int = Field(4, ge=1, description="Images shown per layer on each location page.")
    batch_size: int = Field(8, ge=1)


class HealthOptions(_Strict):
    """Thresholds of the filter-health rules (see docs/reference/health.md)."""

    dead_norm_ratio: float = Field(
        0.1, gt=0, description="A filter is dead when its L2 norm is below this fraction of the "
        "layer's median filter norm over all runs of the model."
    )
    near_zero_ratio: float = Field(
        0.1, gt=0, description="A weight is near zero when |w| is below this fraction of the "
        "layer's RMS weight over all runs of the model."
    )
    dead_share_warn: float = Field(
        0.25, ge=0, le=1, description="Findings flag a layer when at least this share of its filters is dead."
    )
    never_active_share_warn: float = Field(
        0.25, ge=0, le=1, description="Findings flag a layer when at least this share of channels never fires."
    )
    saturated_fraction: float = Field(
        0.99, gt=0, le=1, description="A channel is saturated when it is positive at this share of positions."
    )
    duplicate_cosine: float = Field(
        0.95, gt=0, le=1, description="Two filters of a layer are near-duplicates when their cosine "
        "reaches this, and an on/off (sign-flipped) pair when it is at most minus this."
    )


class CompareOptions(_Strict):
    """Cross-location comparison (docs/reference/methods.md#comparison-across-locations)."""

    enabled: bool = True
    base: Optional[str] = Field(
        None, description="Location whose filters head the 'filter k across locations' view "
        "(default: the first location)."
    )
    max_samples: int = Field(
        4096, ge=16, description="Positions sampled from the shared images per layer for CKA and "
        "activation matching."
    )
    similar: float = Field(
        0.5, ge=0, le=1, description="Findings call two locations' layers similar at or above this "
        "matched similarity."
    )
    model_locations: dict[str, str] = Field(
        default_factory=dict, description="Reports with several models: per model name, the location "
        "its layers are compared with the other models' on the cross-model page (default: its first)."
    )


class GaborOptions(_Strict):
    enabled: bool = True
    min_score: float = Field(
        0.7, ge=0, le=1, description="A filter is Gabor-like when its fit's adjusted R^2 reaches this."
    )


class UnitsOptions(_Strict):
    """What deeper units respond to (docs/reference/methods.md#units)."""

    layers: list[str] = Field(default_factory=list, description="Layers whose units get unit pages.")
    locations: Optional[list[str]] = Field(
        None, description="Runs that get unit views (default: analyses.compare.base or the first run)."
    )
    maximise: Literal["plain", "fourier", "both", "none"] = Field(
        "fourier", description="Activation maximisation: 'fourier' (regularised, the default), 'plain' "
        "(gradient ascent, the Keras recipe), 'both' or 'none'."
    )
    objective: Literal["mean", "centre"] = "mean"
    steps: int = Field(20, ge=1, description="Plain gradient-ascent steps.")
    fourier_steps: int = Field(48, ge=1, description="Adam steps of the regularised (Fourier) optimisation.")
    fourier_lr: float = Field(0.15, gt=0, description="Adam learning rate of the regularised optimisation.")
    size: Optional[int] = Field(None, ge=8, le=MAX_UNITS_SIDE, description="Image side for maximisation "
                                "(8 to 1024); default from the unit's receptive field.")
    top_n: int = Field(9, ge=1, description="Top-activating crops per unit, from all positions of all "
                       "images, no two overlapping by more than half.")
    max_units: int = Field(64, ge=1, description="Units shown per layer (the first ones).")
    pooling: Literal["subsample", "average"] = Field(
        "average", description="How filter decoding treats max pooling: 'average' (box filter over the "
        "window, the default) or 'subsample' (the window's top-left input)."
    )
    baselines: bool = Field(True, description="Deconvnet and guided backprop of each unit's top activation.")
    seed: int = 0


class ConceptOptions(_Strict):
    """Concept labels of units from the spec's annotations (docs/reference/methods.md#concept-labels)."""

    layers: list[str] = Field(default_factory=list, description="Layers whose units are dissected (default: none, "
                              "the analysis is off). Needs 'annotations'.")
    locations: Optional[list[str]] = Field(None, description="Runs to dissect (default: every run).")
    quantile: float = Field(0.005, gt=0, lt=1, description="Top quantile of each unit's activations, over all "
                            "positions of all annotated images, that counts as the unit firing.")
    threshold: Literal["raw", "upsampled"] = Field(
        "raw", description="Where the quantile is taken: 'raw', the unit's maps as the network computes them "
        "(network dissection's rule), or 'upsampled', its maps upsampled to the input size.")
    iou: float = Field(0.04, gt=0, le=1, description="IoU from which a unit detects its best concept.")


class ImportanceOptions(_Strict):
    """Causal importance of units by ablation (docs/reference/methods.md#unit-importance)."""

    layers: list[str] = Field(default_factory=list, description="Layers whose units are ablated one at a time "
                              "(default: none, the analysis is off).")
    locations: Optional[list[str]] = Field(None, description="Runs to ablate (default: every run).")
    max_units: int = Field(64, ge=1, description="Units ablated per layer (the first ones): one forward pass "
                           "over the run's images per unit.")


class TraceOptions(_Strict):
    """Numeric trace of a small dense network on one batch."""

    batch: Optional[str] = Field(None, description="JSON file with 'inputs', 'labels' and 'loss' "
                                 "(mse or bce), relative to the spec.")


class AnalysesSpec(_Strict):
    filters: FilterOptions = FilterOptions()
    activations: ActivationOptions = ActivationOptions()
    health: HealthOptions = HealthOptions()
    compare: CompareOptions = CompareOptions()
    gabor: GaborOptions = GaborOptions()
    units: UnitsOptions = UnitsOptions()
    trace: TraceOptions = TraceOptions()
    concepts: ConceptOptions = ConceptOptions()
    importance: ImportanceOptions = ImportanceOptions()


class ReferenceSpec(ModelSpec):
    """A well-trained model whose first layer the locations are compared with."""

    name: str = Field("reference", pattern=SLUG_RE)
    layer: str = Field(min_length=1, description="The reference's layer to compare, e.g. 'conv1' or 'features.0'.")
    against: Optional[str] = Field(
        None, description="The locations' layer it is compared with (default: the first listed layer "
        "whose weights have 3 input channels)."
    )

    @model_validator(mode="after")
    def _single(self) -> "ReferenceSpec":
        if self.locations:
            raise ValueError("a reference is one model: remove 'locations'")
        return self

    @model_validator(mode="after")
    def _step_templates(self) -> "ReferenceSpec":  # replaces ModelSpec's: a reference has no history
        if self.steps is not None or self.step_checkpoint is not None or "{step}" in (self.checkpoint or ""):
            raise ValueError("a reference is compared by its final weights: remove 'steps' and '{step}'")
        return self


class ReportSchema(_Strict):
    """The top level of a report spec file."""

    report: str = Field(pattern=SLUG_RE, description="Slug: the report is written to docs/<report>/.")
    title: str = Field(min_length=1)
    description: str = Field("", description="Markdown shown on the report's home page.")
    models: list[ModelSpec] = Field(min_length=1)
    input: InputSpec = InputSpec()
    images: list[str] = Field(default_factory=list, description="Globs relative to the spec; may use {location}.")
    annotations: Optional[str] = Field(
        None, description="COCO-style JSON of boxes, keypoints and polygons of the images (relative to the "
        "spec; may use {location}); its file_names are relative to its own folder."
    )
    extra_frames: list[str] = Field(
        default_factory=list, description="Globs (relative to the spec; may use {location}) of more frames per "
        "location, read only for the data statistics (background, colour, spectrum), not run through the models."
    )
    layers: list[LayerSpec] = Field(min_length=1)
    analyses: AnalysesSpec = AnalysesSpec()
    reference: Optional[ReferenceSpec] = None

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_shorthand(cls, v: Any) -> Any:
        return _layer_list(v)

    @field_validator("title")
    @classmethod
    def _one_line_title(cls, v: str) -> str:
        # The title is a page heading, a nav label and a link text in the docs index: one line.
        if re.search(r"[\x00-\x1f\x7f]", v):
            raise ValueError("the title must be one line without control characters (newlines, tabs); "
                             "put longer text in 'description' (in YAML, a '|' block keeps newlines, "
                             "a plain string on one line has none)")
        if not v.strip():
            raise ValueError("the title is blank; give the report a title")
        return v

    @model_validator(mode="after")
    def _unique_models(self) -> "ReportSchema":
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model name {dup[0]!r} is used twice; give each model its own name")
        return self


@dataclass(frozen=True)
class Run:
    """One model at one location: the unit that is loaded and analysed."""

    model: ModelSpec
    location: str
    key: str  # the location when the spec has one model, else "model-location"
    checkpoint: Optional[Path]
    torchscript: Optional[Path]
    images: tuple[Path, ...]
    layers: tuple[LayerSpec, ...]
    input: InputSpec = InputSpec()  # the model's own input, else the top-level one
    onnx: Optional[Path] = None
    exported: Optional[Path] = None  # a torch.export program (.pt2)
    # Checkpoints saved over training (the model's ``steps``), ascending; the last is ``checkpoint``.
    steps: tuple[int, ...] = ()
    step_checkpoints: tuple[Path, ...] = ()
    annotations: Optional[Path] = None  # COCO-style file (reportgen.load.annotations), checked to exist
    extra_frames: tuple[Path, ...] = ()  # frames for the data statistics only (reportgen.extensions.data)


@dataclass(frozen=True)
class ReportSpec:
    """A validated spec: the schema values plus resolved paths and runs."""

    schema: ReportSchema
    path: Path
    base_dir: Path
    runs: tuple[Run, ...]
    source: Located
    reference_run: Optional[Run] = None

    def __getattr__(self, name: str) -> Any:
        # Convenience: spec.report, spec.title, spec.analyses, ...
        if name.startswith("__"):  # pickle asks for __setstate__ and others before the fields exist
            raise AttributeError(name)
        return getattr(self.schema, name)

    def where(self, key_path: KeyPath) -> str:
        """``file:line`` of a key path, for error messages raised after loading."""
        return self.source.where(key_path)


def load_spec(path: str | Path) -> ReportSpec:
    """Read, validate and resolve a spec file; raise SpecError listing every problem."""
    path = Path(path)
    return spec_from_source(load_yaml(path), path)


def spec_from_source(src: Located, path: Path, collect: list[str] | None = None) -> ReportSpec:
    """Validate and resolve already-parsed YAML (``load_spec`` without the reading).
    With ``collect``, problems found after schema validation (missing files, unknown
    runs) are appended to it and the spec is returned anyway."""
    if not isinstance(src.data, dict):
        raise SpecError(
            f"{path}:1: the spec must be a YAML mapping with keys like 'report', 'title', "
            "'models' and 'layers'; see docs/reference/spec.md"
        )
    try:
        schema = ReportSchema.model_validate(src.data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: src.line(tuple(e["loc"])))
        raise SpecError([_format_error(err, src) for err in errors]) from None
    base = path.resolve().parent
    problems: list[str] = []
    runs = _expand_runs(schema, base, src, problems)
    reference = _reference_run(schema, base, src, problems, runs)
    layer_names = {ls.name for m in schema.models for ls in (m.layers or schema.layers)}
    for section in ("units", "concepts", "importance"):
        opts = getattr(schema.analyses, section)
        for i, name in enumerate(opts.layers):
            if name not in layer_names:
                problems.append(f"{src.where(('analyses', section, 'layers', i))}: analyses.{section}.layers[{i}]: "
                                f"'{name}' is not among the inspected layers; add it to 'layers' first")
        for i, name in enumerate(opts.locations or []):
            if name not in {r.key for r in runs}:
                close = difflib.get_close_matches(name, [r.key for r in runs], n=1)
                hint = f"did you mean '{close[0]}'?" if close else "use one of the run names"
                problems.append(f"{src.where(('analyses', section, 'locations', i))}: "
                                f"analyses.{section}.locations[{i}]: no run '{name}'; {hint}")
    if schema.analyses.concepts.layers and not any(r.annotations for r in runs):
        problems.append(f"{src.where(('analyses', 'concepts', 'layers'))}: analyses.concepts.layers: concept labels "
                        "need annotations of the images; add 'annotations: <COCO-style JSON>' to the spec")
    if schema.analyses.trace.batch and not (base / schema.analyses.trace.batch).is_file():
        problems.append(f"{src.where(('analyses', 'trace', 'batch'))}: analyses.trace.batch: file not found: "
                        f"{shown_path(base / schema.analyses.trace.batch)}")
    compare_base = schema.analyses.compare.base
    if compare_base is not None and compare_base not in {r.key for r in runs}:
        close = difflib.get_close_matches(compare_base, [r.key for r in runs], n=1)
        hint = f"did you mean '{close[0]}'?" if close else "use one of the run names"
        problems.append(f"{src.where(('analyses', 'compare', 'base'))}: analyses.compare.base: "
                        f"no location '{compare_base}'; {hint}")
    problems += _check_model_locations(schema, src, runs)
    if problems and collect is not None:  # the caller goes on checking what it can
        collect.extend(dict.fromkeys(problems))
    elif problems:
        # A shared image glob fails once per location; say it once.
        raise SpecError(list(dict.fromkeys(problems)))
    return ReportSpec(schema=schema, path=path, base_dir=base, runs=tuple(runs), source=src,
                      reference_run=reference)


def _check_model_locations(schema: ReportSchema, src: Located, runs: list[Run]) -> list[str]:
    """analyses.compare.model_locations names a model and one of its locations."""
    problems = []
    models = [m.name for m in schema.models]
    for name, location in schema.analyses.compare.model_locations.items():
        kp: KeyPath = ("analyses", "compare", "model_locations", name)
        where = f"{src.where(kp)}: {format_key_path(kp)}"
        if name not in models:
            close = difflib.get_close_matches(name, models, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"models are: {', '.join(models)}"
            problems.append(f"{where}: no model '{name}'; {hint}")
            continue
        locations = [r.location for r in runs if r.model.name == name]
        if location not in locations:
            problems.append(f"{where}: model '{name}' has no location '{location}'; "
                            f"use one of: {', '.join(locations)}")
    return problems


def _reference_run(schema: ReportSchema, base: Path, src: Located, problems: list[str],
                   runs: list[Run]) -> Optional[Run]:
    ref = schema.reference
    if ref is None:
        return None
    kp: KeyPath = ("reference",)
    if ref.arch is not None and _is_file_arch(ref.arch) and not (base / ref.arch.rsplit(":", 1)[0]).is_file():
        problems.append(f"{src.where(kp + ('arch',))}: reference.arch: architecture file "
                        f"'{ref.arch.rsplit(':', 1)[0]}' not found (paths are relative to the spec file)")
    for key in ("checkpoint", "torchscript", "onnx", "exported"):
        value = getattr(ref, key)
        if value and not (base / value).is_file():
            problems.append(f"{src.where(kp + (key,))}: reference.{key}: file not found: {shown_path(base / value)}")
    if ref.name in {r.key for r in runs}:
        problems.append(f"{src.where(kp)}: reference: its name '{ref.name}' is also a location; rename it")
    return Run(
        model=ref, location=ref.name, key=ref.name,
        checkpoint=base / ref.checkpoint if ref.checkpoint else None,
        torchscript=base / ref.torchscript if ref.torchscript else None,
        images=(), layers=(LayerSpec(name=ref.layer),), input=ref.input or schema.input,
        onnx=base / ref.onnx if ref.onnx else None,
        exported=base / ref.exported if ref.exported else None,
    )


def _expand_runs(schema: ReportSchema, base: Path, src: Located, problems: list[str]) -> list[Run]:
    runs = []
    for mi, model in enumerate(schema.models):
        mkp: KeyPath = ("models", mi)
        if model.arch is not None and _is_file_arch(model.arch):
            file_part = model.arch.rsplit(":", 1)[0]
            if not (base / file_part).is_file():
                problems.append(
                    f"{src.where(mkp + ('arch',))}: {format_key_path(mkp + ('arch',))}: "
                    f"architecture file '{file_part}' not found (paths are relative to the spec file)"
                )
        locations = model.locations or [model.name]
        image_globs = model.images if model.images is not None else schema.images
        images_kp = mkp + ("images",) if model.images is not None else ("images",)
        extra_globs = model.extra_frames if model.extra_frames is not None else schema.extra_frames
        extra_kp = mkp + ("extra_frames",) if model.extra_frames is not None else ("extra_frames",)
        for li, location in enumerate(locations):
            lkp = mkp + ("locations", li) if model.locations else mkp
            def located(template: Optional[str], what: str, hint: str = "") -> Optional[Path]:
                if not template:
                    return None
                path = base / template.replace("{location}", location)
                if not path.is_file():
                    problems.append(f"{src.where(lkp)}: {format_key_path(lkp)}: {what} for location "
                                    f"'{location}' not found: {shown_path(path)}{hint}")
                return path

            steps, step_files = _steps_of(model, location, base, src, mkp, problems)
            template = model.checkpoint
            if template and "{step}" in template:
                template = template.replace("{step}", str(steps[-1])) if steps else None
            ckpt = located(template, "checkpoint",
                           "; check the 'checkpoint' template and the location name")
            ts = located(model.torchscript, "TorchScript file")
            onnx = located(model.onnx, "ONNX file")
            exported = located(model.exported, "exported program")
            images = _resolve_images(image_globs, location, base, src, images_kp, problems)
            ann_kp = mkp + ("annotations",) if model.annotations is not None else ("annotations",)
            ann_template = model.annotations if model.annotations is not None else schema.annotations
            annotations = None
            if ann_template:
                annotations = base / ann_template.replace("{location}", location)
                if not annotations.is_file():
                    problems.append(f"{src.where(ann_kp)}: {format_key_path(ann_kp)}: annotation file for "
                                    f"location '{location}' not found: {shown_path(annotations)}; paths are "
                                    "relative to the spec file")
            runs.append(
                Run(
                    model=model,
                    location=location,
                    key=location if len(schema.models) == 1 or location == model.name
                    else f"{model.name}-{location}",
                    checkpoint=ckpt,
                    torchscript=ts,
                    images=tuple(images),
                    layers=tuple(model.layers or schema.layers),
                    input=model.input or schema.input,
                    onnx=onnx,
                    exported=exported,
                    steps=steps,
                    step_checkpoints=step_files + ((ckpt,) if steps and ckpt else ()),
                    annotations=annotations,
                    extra_frames=tuple(_resolve_images(extra_globs, location, base, src, extra_kp, problems)),
                )
            )
        problems += _unknown_step_locations(model, locations, src, mkp)
    keys = [r.key for r in runs]
    for k in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(
            f"{src.where(('models',))}: models: two runs are both named '{k}'; "
            "rename a model or a location"
        )
    return runs


def _steps_of(model: ModelSpec, location: str, base: Path, src: Located, mkp: KeyPath,
              problems: list[str]) -> tuple[tuple[int, ...], tuple[Path, ...]]:
    """A location's training steps and the files of all but the last (the run's checkpoint,
    resolved with the other checkpoints); a missing file or step list is a problem."""
    if model.steps is None:
        return (), ()
    kp = mkp + ("steps",)
    if isinstance(model.steps, dict):
        if location not in model.steps:
            if model.step_checkpoint is not None:
                return (), ()  # a location without a history: its checkpoint alone
            problems.append(f"{src.where(kp)}: {format_key_path(kp)}: location '{location}' has no steps, but "
                            "its checkpoint path needs '{step}'; list its steps")
            return (), ()
        kp, steps = kp + (location,), tuple(model.steps[location])
    else:
        steps = tuple(model.steps)
    template = model.step_checkpoint or model.checkpoint or ""
    files = []
    for step in steps[:-1]:
        path = base / template.replace("{location}", location).replace("{step}", str(step))
        if not path.is_file():
            problems.append(f"{src.where(kp)}: {format_key_path(kp)}: checkpoint of step {step} for location "
                            f"'{location}' not found: {shown_path(path)}; check the steps and the '{{step}}' template")
        files.append(path)
    return steps, tuple(files)


def _unknown_step_locations(model: ModelSpec, locations: list[str], src: Located, mkp: KeyPath) -> list[str]:
    if not isinstance(model.steps, dict):
        return []
    out = []
    for name in model.steps:
        if name not in locations:
            close = difflib.get_close_matches(name, locations, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"locations are: {', '.join(locations)}"
            kp = mkp + ("steps", name)
            out.append(f"{src.where(kp)}: {format_key_path(kp)}: no location '{name}'; {hint}")
    return out


def _resolve_images(globs: list[str], location: str, base: Path, src: Located,
                    kp: KeyPath, problems: list[str]) -> list[Path]:
    found: list[Path] = []
    for gi, pattern in enumerate(globs):
        concrete = pattern.replace("{location}", location)
        matches = sorted(
            Path(p) for p in glob.glob(str(base / concrete), recursive=True)
            if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file()
        )
        if not matches:
            problems.append(
                f"{src.where(kp + (gi,))}: {format_key_path(kp + (gi,))}: no image files match "
                f"'{concrete}' (relative to the spec file); fix the pattern or add images"
            )
        found.extend(m for m in matches if m not in found)
    return found


def _is_file_arch(arch: str) -> bool:
    return ":" in arch and (arch.rsplit(":", 1)[0].endswith(".py") or "/" in arch)


def shown_path(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# -- turning pydantic errors into one line each ------------------------------------


def _format_error(err: dict, src: Located) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        allowed = _allowed_keys(parent)
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{src.where(loc)}: {format_key_path(loc)}: unknown key; {hint}"
    if kind == "missing":
        return f"{src.where(loc[:-1])}: {format_key_path(loc)}: missing required key; add it"
    # model_validator errors carry the model's own loc; plain messages from ValueError.
    msg = err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "string_pattern_mismatch":
        msg = f"{_short(err['input'])} is not allowed; {_SLUG_HELP}"
    elif kind == "literal_error":
        msg = f"{err['input']!r} is not one of {err['ctx']['expected']}"
    else:
        msg = f"{msg[0].lower()}{msg[1:]}, got {_short(err.get('input'))}"
    return f"{src.where(loc)}: {format_key_path(loc)}: {msg}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _allowed_keys(loc: KeyPath) -> list[str]:
    """Field names of the schema class found at ``loc`` (walking lists and Optionals)."""
    tp: Any = ReportSchema
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            args = typing.get_args(tp)
            tp = args[0] if args else Any
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in typing.get_args(tp) if a is not type(None)]
        return non_none[0] if non_none else tp
    return tp


def json_schema() -> str:
    """The spec's JSON Schema as text (docs/reference/spec.schema.json is this output)."""
    import json

    schema = ReportSchema.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reportgen report spec"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
