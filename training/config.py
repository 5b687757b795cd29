"""Typed training configuration, loaded from one YAML file per experiment.

Every knob lives in a typed section passed into the code that uses it (no module globals, no
subclassing to change a hyper-parameter). Loading, unknown-key hints and error messages come
from :mod:`service.core.settings_base`, shared with the service settings. The resolved config
is saved with every checkpoint and exported model so a result can always be traced back to
its settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, StrictBool, ValidationInfo, field_validator, model_validator

from service.core.classes import (
    DEFAULT_CLASS_NAMES,
    LESION_CLASS_NAMES,
    LESION_MASK_CLASS_NAMES,
)
from service.core.options import Option
from service.core.settings_base import (
    Layer,
    SettingsModel,
    did_you_mean,
    read_yaml_mapping,
)

# --- options: the config's choices, one enum each (the code that uses them imports them) ------


class DataKind(Option):
    """The on-disk layouts a run can train from (``data.kind``; ``training.data.sources``)."""

    VOLUMES = "volumes"
    SLICES2D = "slices2d"


class SupervisedLoss(Option):
    """The supervised losses (``optim.loss``, ``tcsm.loss``, ``unimatch.loss``;
    ``training.nn.losses.build_supervised_loss``)."""

    DICE = "dice"
    DICE_CE = "dice_ce"
    CDICE = "cdice"
    CDICE_CE = "cdice_ce"


class DecoderStage(Option):
    """Decoder outputs usable for the local contrastive loss, deepest (coarsest) first
    (``pretrain_local.decoder_stage``)."""

    UPCAT_4 = "upcat_4"
    UPCAT_3 = "upcat_3"
    UPCAT_2 = "upcat_2"
    UPCAT_1 = "upcat_1"


class ConsistencyTarget(Option):
    """What the TCSM consistency term compares (``tcsm.consistency_target``)."""

    #: ``T(softmax(student))`` vs ``softmax(teacher)``: the TCSM paper; bounded, and nearly
    #: flat on pixels both networks are confident about.
    PROBABILITIES = "probabilities"
    #: ``T(student logits)`` vs teacher logits: unbounded, keeps pulling on confident pixels.
    LOGITS = "logits"


class PaddingMode(Option):
    """How a transformed image is padded outside its source (``tcsm.image_padding``; the
    ``padding_mode`` of ``torch.nn.functional.grid_sample``)."""

    ZEROS = "zeros"
    BORDER = "border"
    REFLECTION = "reflection"


class FinalModel(Option):
    """Which stage's ``best.pt`` becomes ``final.pt`` (``runtime.final_model``)."""

    BEST_VALIDATED = "best_validated"
    LAST_STAGE = "last_stage"


class CheckpointSelection(Option):
    """Which weights of a validated stage go to ``best.pt`` (``runtime.checkpoint_selection``)."""

    BEST_VALIDATION = "best_validation"
    LAST_EPOCH = "last_epoch"


class DistributedBackend(Option):
    """``torch.distributed`` backend under torchrun (``runtime.backend``); AUTO: nccl on a GPU,
    gloo on the CPU."""

    AUTO = "auto"
    GLOO = "gloo"
    NCCL = "nccl"


class TrainingDevice(Option):
    """Where a run trains (``runtime.device``); AUTO: this rank's GPU when CUDA works, else
    the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class StageName(Option):
    """The stages a training run can chain, in the order the method uses them.

    The one list of stage names: ``stages`` is checked against it here and
    ``training.stages.registry`` maps each member to its builder.
    """

    PRETRAIN_GLOBAL = "pretrain_global"
    PRETRAIN_LOCAL = "pretrain_local"
    SUPERVISED = "supervised"
    TCSM = "tcsm"
    UNIMATCH = "unimatch"


class ConfigSection(SettingsModel):
    """A section of the experiment file; messages say "Config key 'data.kind' ...".

    A field typed with an :class:`~service.core.options.Option` takes the enum or its value
    (any case) and holds the enum from then on; a typo fails with :meth:`Option.parse`'s
    message, naming the key, the value, the choices and the nearest one.
    """

    noun: ClassVar[str] = "Config key"

    @field_validator("*", mode="before")
    @classmethod
    def _parse_options(cls, value: Any, info: ValidationInfo) -> Any:
        option = cls.model_fields[info.field_name or ""].annotation
        if isinstance(option, type) and issubclass(option, Option) and isinstance(value, str):
            return option.parse(value, f"{cls.noun} '{cls.key_prefix}{info.field_name}'")
        return value


class DataConfig(ConfigSection):
    """Where the data is and how it is split (by study or slice group, never by slice of a
    volume).

    ``kind: volumes`` (default) reads ``root/manifest.json`` of NIfTI volumes in HU.
    ``kind: slices2d`` reads folders of 8-bit slices already in a display window (e.g.
    COVID-SemiSeg): ``images``/``masks``/``unlabeled`` are relative to ``root`` (or absolute);
    the model then takes the 0..255 pixel values as its input ("HU window" (0, 255), slice
    context 1).
    """

    key_prefix: ClassVar[str] = "data."

    #: A phantom/dataset folder holding ``manifest.json`` (see ``training.data.volumes``), or the
    #: base folder of the slice folders.
    root: str = "runs/demo/data"
    #: Fraction of labeled studies (slice groups for 2D) held out for validation (at least one).
    val_fraction: float = 0.2
    #: Cross-validation: with ``cv_folds >= 2`` the validation side is fold ``cv_fold`` of
    #: ``cv_folds`` (seeded by ``seed``) and ``val_fraction`` is ignored; 0 = off.
    cv_folds: int = 0
    cv_fold: int = 0
    #: Slices with lesions are drawn this many times more often than others.
    lesion_oversampling: float = 3.0
    #: Data layout: "volumes" (3D studies) or "slices2d" (2D slice folders).
    kind: DataKind = DataKind.VOLUMES
    #: slices2d: folder of labeled slice images (PNG/JPEG) and of their class-index PNG masks.
    images: str = "images"
    masks: str = "masks"
    #: slices2d: folder of unlabeled slices for the semi-supervised stages (None: none).
    unlabeled: str | None = None
    #: slices2d: class names by raw mask value; mapped to ``model.class_names`` by name.
    mask_classes: tuple[str, ...] = LESION_MASK_CLASS_NAMES
    #: slices2d: flips, small rotation/zoom and intensity jitter on labeled batches.
    augment: StrictBool = True
    #: Label-fraction runs: label only this many of the run's training slices (a seeded
    #: subset stratified by lesion / consolidation presence,
    #: ``training.data.splits.stratified_subset``); the other training slices join the unlabeled
    #: pool as images. 0 = every training slice keeps its label. The validation side is not
    #: touched: with few labels and cross-validation it is the fold's test side, so such runs
    #: should not select by it (``runtime.checkpoint_selection: last_epoch``, fixed schedule).
    labeled_count: int = 0
    #: slices2d: the HU window (lo, hi) the 8-bit slices were displayed in (pixel 0 = lo,
    #: 255 = hi). When set, batches and validation images are mapped back to HU, so the model
    #: takes HU like a DICOM study and ``model.hu_window`` (which must equal it) undoes the
    #: mapping in-graph: one intensity contract from HU to the network. None: pixel values.
    pixel_window: tuple[float, float] | None = None
    #: slices2d: quarter turns (numpy ``rot90`` k) applied to every slice and mask on load, to
    #: bring a release's orientation to radiological convention (COVID-SemiSeg: -1).
    rotate90: int = 0
    #: slices2d: pad each slice to a square with air (pixel 0) before resizing, so a
    #: body-cropped slice keeps its aspect ratio as a DICOM field of view does.
    pad_square: StrictBool = False
    #: slices2d: add the lung class from the classical lung-field extraction
    #: (``service.core.lung_field``) on the slice in HU; needs ``pixel_window`` and a "lung" class.
    lung_labels: StrictBool = False
    #: slices2d: per-slice intensity harmonisation. The release's slices come in several
    #: windows (normal lung from pixel 21 to 112), so one fixed window puts normal lung of some
    #: slices at GGO densities. With (lung HU, soft-tissue HU) given, each labeled slice's
    #: normal-lung peak (pixels outside the lesion masks) and soft-tissue peak are moved to
    #: those HU (``training.data.slice_preparation``). None: the fixed ``pixel_window`` only.
    harmonize_tissue_hu: tuple[float, float] | None = None
    #: slices2d: zoom range of the labeled-batch augmentation (below 1 shrinks the body, as
    #: in a DICOM field of view wider than the body).
    zoom_range: tuple[float, float] = (0.9, 1.1)
    #: slices2d: a folder of lesion-free slices from DICOM studies (``images/`` and ``masks/``,
    #: as ``bench/real_ct_negatives.py`` writes them): 8-bit in ``pixel_window``, radiological
    #: orientation, whole field of view, masks already in ``model.class_names`` indices (lung
    #: from the 3D classical extraction). Lesion slices alone never show normal lung, the
    #: mediastinum, the abdomen or the table; these do. Absolute or relative to the working
    #: directory (like ``output_dir``: it is made by a script, not shipped with the data); used
    #: for training only (validation stays on the annotated slices). None: none.
    negatives: str | None = None
    #: slices2d: share of each labeled batch drawn from ``negatives`` (the rest from the
    #: annotated slices, as without negatives).
    negatives_share: float = 0.4

    @property
    def fold(self) -> tuple[int, int] | None:
        """``(cv_fold, cv_folds)`` when cross-validating, else None."""
        return (self.cv_fold, self.cv_folds) if self.cv_folds else None

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.cv_folds != 0 and self.cv_folds < 2:
            raise ValueError(
                f"Config key 'data.cv_folds' must be 0 (off) or >= 2, got {self.cv_folds}."
            )
        if self.cv_folds and not 0 <= self.cv_fold < self.cv_folds:
            raise ValueError(
                f"Config key 'data.cv_fold' must be in [0, {self.cv_folds - 1}] for "
                f"{self.cv_folds} folds, got {self.cv_fold}."
            )
        if self.pixel_window is not None and not self.pixel_window[0] < self.pixel_window[1]:
            raise ValueError(
                "Config key 'data.pixel_window' must be (lo, hi) with lo < hi, "
                f"got {list(self.pixel_window)}."
            )
        if self.lung_labels and self.pixel_window is None:
            raise ValueError(
                "Config key 'data.lung_labels' needs 'data.pixel_window': the lung field is "
                "found by HU thresholds."
            )
        if not 0.0 < self.negatives_share < 1.0:
            raise ValueError(
                f"Config key 'data.negatives_share' must be in (0, 1), got {self.negatives_share}."
            )
        if self.negatives is not None and self.pixel_window is None:
            raise ValueError(
                "Config key 'data.negatives' needs 'data.pixel_window': negative slices are "
                "stored in that window."
            )
        if self.labeled_count < 0:
            raise ValueError(
                f"Config key 'data.labeled_count' must be >= 0 (0: all), got {self.labeled_count}."
            )
        if len(self.mask_classes) < 2 or len(set(self.mask_classes)) != len(self.mask_classes):
            raise ValueError(
                "Config key 'data.mask_classes' must list at least two distinct class names "
                f"(raw value 0 first), got {list(self.mask_classes)}."
            )
        return self


class ModelConfig(ConfigSection):
    """The 2.5D network: a MONAI BasicUNet with adjacent slices as input channels."""

    key_prefix: ClassVar[str] = "model."

    slice_context: int = 3
    features: tuple[int, int, int, int, int, int] = (16, 16, 32, 64, 128, 16)
    num_classes: int = 4
    class_names: tuple[str, ...] = DEFAULT_CLASS_NAMES
    #: HU window baked into the exported graph: clip to [lo, hi], scale to [0, 1].
    hu_window: tuple[float, float] = (-1024.0, 400.0)
    #: In-plane size the network trains on (slices are resampled to it).
    input_size: tuple[int, int] = (128, 128)
    dropout: float = 0.0
    #: Standardise each input image after the window (zero mean, unit variance); for sources
    #: whose display windows differ (8-bit slices). Part of the exported graph.
    standardize_input: StrictBool = False


class OptimConfig(ConfigSection):
    """Optimisation settings of the supervised stage."""

    key_prefix: ClassVar[str] = "optim."

    loss: SupervisedLoss = SupervisedLoss.DICE_CE
    lr: float = 3e-3
    weight_decay: float = 1e-5
    epochs: int = 6
    steps_per_epoch: int = 40
    batch_size: int = 8
    #: CPU/GPU bfloat16 autocast: about 2x faster on CPUs with AVX-512 BF16.
    bf16: StrictBool = True
    num_threads: int = 0


def _require_positive(section: ConfigSection, names: tuple[str, ...]) -> None:
    """Counts and rates that must be > 0; fails naming the key and the value."""
    for name in names:
        value = getattr(section, name)
        if not value > 0:
            raise ValueError(f"Config key '{section.key_prefix}{name}' must be > 0, got {value!r}.")


_LOOP_KEYS = ("epochs", "steps_per_epoch", "batch_size", "lr", "temperature")


class GlobalPretrainConfig(ConfigSection):
    """Global contrastive pre-training of the encoder (NT-Xent on pooled features, G^D)."""

    key_prefix: ClassVar[str] = "pretrain_global."

    epochs: int = 4
    steps_per_epoch: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-5
    temperature: float = 0.1
    #: Output size of the projection head (discarded after pre-training).
    proj_dim: int = 128
    #: G^D: slices in the same relative partition of their volume are positives too.
    partition_positives: StrictBool = True
    partitions: int = 4
    #: Geometric augmentation of each view: rot90/flip plus scale in [1 - d, 1 + d].
    max_scale_delta: float = 0.1
    #: Intensity augmentation of each view, in Hounsfield units (the input is raw HU).
    contrast_jitter: float = 0.1
    brightness_jitter_hu: float = 40.0
    noise_std_hu: float = 20.0

    @model_validator(mode="after")
    def _check(self) -> GlobalPretrainConfig:
        _require_positive(self, (*_LOOP_KEYS, "proj_dim", "partitions"))
        return self


class LocalPretrainConfig(ConfigSection):
    """Local contrastive pre-training of the decoder on feature maps (encoder frozen)."""

    key_prefix: ClassVar[str] = "pretrain_local."

    epochs: int = 4
    steps_per_epoch: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    temperature: float = 0.1
    num_regions: int = 13
    region_size: int = 3
    #: Decoder output the loss looks at: upcat_4 (coarsest) … upcat_1 (full resolution).
    decoder_stage: DecoderStage = DecoderStage.UPCAT_2
    proj_channels: int = 64
    #: False: the views differ in intensity only. True: the second view is also rotated /
    #: flipped and its feature map mapped back (exactly invertible, so regions still align).
    geometric: StrictBool = False
    contrast_jitter: float = 0.1
    brightness_jitter_hu: float = 40.0
    noise_std_hu: float = 20.0

    @model_validator(mode="after")
    def _check(self) -> LocalPretrainConfig:
        _require_positive(self, (*_LOOP_KEYS, "num_regions", "region_size", "proj_channels"))
        return self


class TCSMStageConfig(ConfigSection):
    """Mean-teacher training with transformation consistency on labeled + unlabeled slices.

    ``training.methods.tcsm`` takes this section as it is (validated once, here).
    """

    key_prefix: ClassVar[str] = "tcsm."

    epochs: int = 6
    steps_per_epoch: int = 40
    #: Labeled slices per step (they get the supervised loss and, optionally, consistency).
    batch_size: int = 4
    #: Slices of unlabeled studies per step (consistency only).
    unlabeled_batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-5
    loss: SupervisedLoss = SupervisedLoss.DICE_CE
    #: Teacher EMA decay, in [0, 1) (typically 0.99-0.999).
    ema_decay: float = 0.99
    #: ``w_max`` of the sigmoid ramp-up of the consistency weight, reached after
    #: ``rampup_steps`` steps.
    consistency_weight: float = 1.0
    rampup_steps: int = 200
    #: Noise added to the teacher's input, in the network's input units (HU, or 0..255 pixels
    #: for 8-bit slices without ``data.pixel_window``).
    noise_std_hu: float = 20.0
    #: The teacher's scale is drawn from ``[1 - d, 1 + d]``, d in [0, 1).
    max_scale_delta: float = 0.1
    #: How the teacher's zoomed-out input is padded ("border" keeps CT edges).
    image_padding: PaddingMode = PaddingMode.BORDER
    #: Also use labeled slices in the consistency term (TCSM does); False: unlabeled only.
    consistency_on_labeled: StrictBool = True
    #: What the consistency term compares: "probabilities" (softmax, the TCSM paper) or
    #: "logits" (mean squared logit difference; stronger gradients on confident pixels).
    consistency_target: ConsistencyTarget = ConsistencyTarget.PROBABILITIES

    @model_validator(mode="after")
    def _check(self) -> TCSMStageConfig:
        _require_positive(self, _LOOP_KEYS[:4])
        for name in ("unlabeled_batch_size", "consistency_weight", "rampup_steps", "noise_std_hu"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Config key 'tcsm.{name}' must be >= 0, got {getattr(self, name)!r}."
                )
        for name in ("ema_decay", "max_scale_delta"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"Config key 'tcsm.{name}' must be in [0, 1), got {getattr(self, name)!r}."
                )
        return self


class UniMatchStageConfig(ConfigSection):
    """UniMatch (Yang et al., CVPR 2023): weak-to-strong consistency with confidence-thresholded
    pseudo-labels, two strong image views (intensity perturbations + CutMix) and a feature-
    perturbation stream (dropout on the encoder features). ``training.methods.unimatch`` takes
    this section as it is (validated once, here)."""

    key_prefix: ClassVar[str] = "unimatch."

    epochs: int = 6
    steps_per_epoch: int = 40
    #: Labeled slices per step (supervised loss, ``loss``).
    batch_size: int = 8
    #: Unlabeled slices per step (each gives a weak view, two strong views and a feature-
    #: perturbed prediction).
    unlabeled_batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    loss: SupervisedLoss = SupervisedLoss.DICE_CE
    #: Pixels whose weak-view confidence (max softmax) is below this get no unlabeled loss.
    confidence_threshold: float = 0.95
    #: Weight of the unlabeled term: ``loss = sup + unlabeled_weight · L_u`` with
    #: ``L_u = (1 − fp_weight)/2 · (L_s1 + L_s2) + fp_weight · L_fp`` (UniMatch: 0.25/0.25/0.5).
    unlabeled_weight: float = 1.0
    fp_weight: float = 0.5
    #: Sigmoid ramp-up of ``unlabeled_weight`` over this many steps (0: none, as UniMatch).
    rampup_steps: int = 0
    #: Feature perturbation: channel dropout (Dropout2d) on every encoder feature map.
    feature_dropout: float = 0.5
    #: Weak view of the unlabeled slices: random flips, rotation (degrees) and zoom.
    weak_rotation_deg: float = 10.0
    weak_scale_delta: float = 0.1
    #: Strong views: CutMix with another unlabeled slice of the batch (box area fraction drawn
    #: in ``cutmix_area``; the pasted box takes that slice's pseudo-labels) ...
    cutmix_prob: float = 0.5
    cutmix_area: tuple[float, float] = (0.02, 0.4)
    #: ... and intensity perturbations, each with its probability: brightness/contrast
    #: (fractions), gamma (a range; nonlinear, so it survives ``model.standardize_input``),
    #: Gaussian blur (sigma range in pixels) and Gaussian noise (pixel units of the 0..255
    #: input; HU for volumes).
    intensity_prob: float = 0.8
    brightness: float = 0.25
    contrast: float = 0.25
    gamma_range: tuple[float, float] = (0.6, 1.6)
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_prob: float = 0.5
    noise_std_hu: float = 8.0

    @model_validator(mode="after")
    def _check(self) -> UniMatchStageConfig:
        _require_positive(self, _LOOP_KEYS[:4])
        if self.unlabeled_batch_size < 0:
            raise ValueError(
                f"Config key 'unimatch.unlabeled_batch_size' must be >= 0, "
                f"got {self.unlabeled_batch_size!r}."
            )
        for name in ("confidence_threshold", "fp_weight", "cutmix_prob", "intensity_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Config key 'unimatch.{name}' must be in [0, 1], got {value!r}.")
        for name in ("blur_prob", "noise_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Config key 'unimatch.{name}' must be in [0, 1], got {value!r}.")
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ValueError(
                f"Config key 'unimatch.feature_dropout' must be in [0, 1), "
                f"got {self.feature_dropout!r}."
            )
        for name in ("unlabeled_weight", "rampup_steps", "noise_std_hu", "weak_rotation_deg"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Config key 'unimatch.{name}' must be >= 0, got {getattr(self, name)!r}."
                )
        if not 0.0 <= self.weak_scale_delta < 1.0 or not 0.0 <= self.contrast < 1.0:
            raise ValueError(
                "Config keys 'unimatch.weak_scale_delta' and 'unimatch.contrast' must be in "
                f"[0, 1), got {self.weak_scale_delta!r} and {self.contrast!r}."
            )
        for name in ("cutmix_area", "gamma_range", "blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ValueError(
                    f"Config key 'unimatch.{name}' must be (lo, hi) with 0 < lo <= hi, "
                    f"got {getattr(self, name)!r}."
                )
        if self.cutmix_area[1] > 1.0:
            raise ValueError(
                f"Config key 'unimatch.cutmix_area' must lie in (0, 1], got {self.cutmix_area!r}."
            )
        return self


class RuntimeConfig(ConfigSection):
    """How training runs, not what it learns: logging, checkpoint cadence, devices."""

    key_prefix: ClassVar[str] = "runtime."

    #: TensorBoard scalars under ``<output_dir>/tensorboard`` (needs the tensorboard package).
    tensorboard: StrictBool = True
    #: Also write ``last.pt`` every this many steps inside an epoch (0: at epoch ends only).
    checkpoint_every: int = 0
    #: torch.distributed backend under torchrun: auto (nccl on GPU, gloo on CPU), gloo, nccl.
    backend: DistributedBackend = DistributedBackend.AUTO
    #: auto (the local GPU under torchrun when there is one, else CPU), cpu or cuda.
    device: TrainingDevice = TrainingDevice.AUTO
    #: Which stage's ``best.pt`` becomes ``final.pt``: "best_validated" (the validated stage
    #: with the best validation score; later stages win ties) or "last_stage".
    final_model: FinalModel = FinalModel.BEST_VALIDATED
    #: Which weights of a validated stage go to ``best.pt``: "best_validation" (the epoch and
    #: candidate, e.g. TCSM teacher/student, that validated best) or "last_epoch" (a fixed
    #: schedule: the last epoch's first candidate, the teacher for TCSM; validation is still
    #: computed and logged, never used). Use "last_epoch" with ``final_model: last_stage``
    #: when the validation side is a test set (cross-validation benchmarks).
    checkpoint_selection: CheckpointSelection = CheckpointSelection.BEST_VALIDATION
    #: Every this many steps, one log line and one ``steps.jsonl`` line with the step's loss
    #: parts and diagnostics (0: off; TensorBoard gets every step regardless).
    log_every_steps: int = 0


class ExportConfig(ConfigSection):
    """Identity of the exported model (goes into the ONNX manifest)."""

    key_prefix: ClassVar[str] = "export."

    name: str = "pulmoseg-lung-lesions"
    version: str = "0.1.0"
    #: Written into the manifest's training summary, so the model file itself says what it
    #: may be used for and under which licence its training data came (empty: not stated).
    intended_use: str = ""
    data_licence: str = ""
    #: Written into the manifest: the service confines lung and lesion labels to this distance
    #: (mm) of the aerated lungs. Set it for models trained on lung slices only (they never saw
    #: the abdomen or the CT table); None: the network's labels stand as they are.
    lung_field_margin_mm: float | None = None
    #: The geometry the model is declared for (manifest; [min, max] mm): the service flags a
    #: study outside it (``spacing_out_of_range``, ``slice_thickness_out_of_range``). None: the
    #: service's clinical defaults (0.4-1 mm pixels, 0.5-5 mm slices), which coarse phantom
    #: models must override or every study of their own kind is flagged.
    slice_thickness_mm_range: tuple[float, float] | None = None
    pixel_spacing_mm_range: tuple[float, float] | None = None
    opset: int = 18
    parity_tolerance: float = 1e-4

    @field_validator("slice_thickness_mm_range", "pixel_spacing_mm_range")
    @classmethod
    def _mm_range(
        cls, value: tuple[float, float] | None, info: ValidationInfo
    ) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1]:
            raise ValueError(
                f"Config key 'export.{info.field_name}' must be [min, max] mm with "
                f"0 < min <= max, got {list(value)}."
            )
        return value


class WeakConfig(ConfigSection):
    """Whole DICOM slices in HU with slice-level labels (``bench/real_ct_weak_slices.py``).

    Three uses of one folder of studies, each switchable: (1) lesion-free slices with synthetic
    lesions inserted (``training.data.synthetic_lesions``) join every labeled batch as dense
    labels in true HU with real anatomy; (2) slices with a slice-level label feed the weak
    (multiple-instance) loss of ``training.nn.weak_losses``: a negative slice's strongest
    lesion evidence is pushed to 0, a positive slice's to 1; (3) every slice joins the
    unlabeled pool of the semi-supervised stages. Used by ``data.kind: slices2d`` runs.
    """

    key_prefix: ClassVar[str] = "weak."

    #: Folder of ``<study>.npz`` files (None: off). Relative to the working directory.
    studies: str | None = None
    #: Study names kept out of training (leave-study-out folds).
    exclude: tuple[str, ...] = ()
    #: Share of each labeled batch drawn from the studies' lesion-free slices.
    synthetic_share: float = 0.5
    #: Chance that such a slice gets synthetic lesions (else it stays a lesion-free example).
    lesion_prob: float = 0.6
    #: Slices this close (in slices) to a positive one never count as lesion-free.
    guard: int = 1
    #: Slices per step for the weak loss (half positive, half negative); 0 = no weak loss.
    batch_size: int = 4
    #: Weight of the weak loss against the supervised one.
    weight: float = 0.5
    #: The weak loss scores a slice by the mean of its ``top_k`` strongest lesion pixels
    #: (16 pixels at 160² ≈ 60 mm², about the 50 mm² slice rule of the real-CT bench).
    top_k: int = 16
    #: Pixels of the dilated lung field outside which a weak slice is background for sure.
    field_margin_px: int = 5
    #: Add every slice of the studies to the unlabeled pool of tcsm/unimatch.
    unlabeled: StrictBool = True

    @model_validator(mode="after")
    def _check(self) -> WeakConfig:
        for name in ("synthetic_share", "lesion_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0 + (name == "lesion_prob"):
                raise ValueError(f"Config key 'weak.{name}' must be in [0, 1), got {value}.")
        for name in ("guard", "batch_size", "field_margin_px"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"Config key 'weak.{name}' must be >= 0, got {getattr(self, name)}."
                )
        if self.top_k < 1:
            raise ValueError(f"Config key 'weak.top_k' must be >= 1, got {self.top_k}.")
        if self.weight < 0:
            raise ValueError(f"Config key 'weak.weight' must be >= 0, got {self.weight}.")
        return self


class TrainConfig(ConfigSection):
    """One experiment: data, model, optimisation, export and where outputs go."""

    output_dir: str = "runs/demo/train"
    seed: int = 0
    #: Ordered stages of ``training.experiment.run_experiment``; each starts from the weights the
    #: previous one ended with. ``train_supervised`` ignores this list.
    stages: tuple[StageName, ...] = (StageName.SUPERVISED,)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    #: Settings of the supervised stage; ``bf16`` and ``num_threads`` apply to every stage.
    optim: OptimConfig = Field(default_factory=OptimConfig)
    pretrain_global: GlobalPretrainConfig = Field(default_factory=GlobalPretrainConfig)
    pretrain_local: LocalPretrainConfig = Field(default_factory=LocalPretrainConfig)
    tcsm: TCSMStageConfig = Field(default_factory=TCSMStageConfig)
    unimatch: UniMatchStageConfig = Field(default_factory=UniMatchStageConfig)
    weak: WeakConfig = Field(default_factory=WeakConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @field_validator("stages", mode="before")
    @classmethod
    def _known_stages(cls, value: Any) -> Any:
        # A list of names is checked here, with the stage list's own messages; anything else
        # is left to the type check ("must be a list").
        if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
            return check_stages(value)
        return value

    @model_validator(mode="after")
    def _one_intensity_contract(self) -> TrainConfig:
        window = self.data.pixel_window
        if window is not None and tuple(self.model.hu_window) != tuple(window):
            raise ValueError(
                f"Config key 'model.hu_window' ({list(self.model.hu_window)}) must equal "
                f"'data.pixel_window' ({list(window)}): the exported graph must map HU to the "
                "intensities the network was trained on."
            )
        if self.weak.studies is not None and (
            self.data.kind is not DataKind.SLICES2D or self.data.pixel_window is None
        ):
            raise ValueError(
                "Config key 'weak.studies' needs data.kind 'slices2d' with a 'data.pixel_window'"
                " (the studies' HU slices go through the same intensity contract)."
            )
        if self.weak.studies is not None and not set(LESION_CLASS_NAMES) <= set(
            self.model.class_names
        ):
            raise ValueError(
                f"Config key 'weak.studies' needs the classes {list(LESION_CLASS_NAMES)} and "
                f"'lung' in 'model.class_names', got {list(self.model.class_names)}."
            )
        if self.data.lung_labels and "lung" not in self.model.class_names:
            raise ValueError(
                "Config key 'data.lung_labels' needs a 'lung' class in 'model.class_names', "
                f"got {list(self.model.class_names)}."
            )
        return self


def check_stages(stages: Sequence[StageName | str]) -> tuple[StageName, ...]:
    """``stages`` as :class:`StageName` members; they must be known (any case) and unique
    (each stage owns ``<output_dir>/<stage>/``)."""
    known = [str(n) for n in StageName]
    if not stages:
        raise ValueError(f"Config key 'stages' must list at least one of {known}.")
    parsed: list[StageName] = []
    for name in stages:
        try:
            parsed.append(StageName.parse(name))
        except ValueError:
            raise ValueError(
                f"Config key 'stages' holds unknown stage '{name}'; expected one of "
                f"{known}.{did_you_mean(str(name).strip(), known, ignore_case=True)}"
            ) from None
    repeated = sorted({str(n) for n in parsed if parsed.count(n) > 1})
    if repeated:
        raise ValueError(
            f"Config key 'stages' lists {repeated} more than once; got {[str(n) for n in parsed]}."
        )
    return tuple(parsed)


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a plain mapping (missing keys take defaults), e.g.
    the ``config`` dict a checkpoint holds."""
    return TrainConfig.from_layers(Layer("", raw or {}))


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML experiment file; unknown keys fail with a 'did you mean' hint."""
    raw = read_yaml_mapping(path, "Config file")
    return TrainConfig.from_layers(Layer(f"config file '{path}'", raw))


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config (all defaults filled in) next to checkpoints and models."""
    plain = config.model_dump(mode="json")  # tuples as lists: YAML any tool can read
    Path(path).write_text(yaml.safe_dump(plain, sort_keys=False))
