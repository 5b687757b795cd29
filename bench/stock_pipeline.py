"""The stock MONAI Deploy pipeline of ``bench/vs_stock.py``, built as the SDK's example apps do.

Stock operators only, wired like the SDK's spleen segmentation example; the inference step is
that example's pattern (a small operator that builds the transforms and a
``MonaiSegInferenceOperator`` in ``compute`` and calls its ``compute_impl``). The model is a
TorchScript of the same checkpoint pulmoseg exports to ONNX: the 2.5D network wrapped so that
it takes the SDK's (1, 1, W, H, D) image and returns (1, K, W, H, D) logits, slice by slice
with the same neighbour context (edge slices repeated) as pulmoseg's predictor.

Each operator's ``compute`` is timed by a subclass that only adds a clock around the stock
method, so the stage times are comparable to pulmoseg's progress-event timings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from holoscan.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Operator, OperatorSpec
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import (
    DICOMSegmentationWriterOperator,
    SegmentDescription,
)
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.monai_seg_inference_operator import (
    InfererType,
    InMemImageReader,
    MonaiSegInferenceOperator,
)
from monai.transforms import Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, LoadImaged
from pydicom.sr.coding import Code

#: Series selection rule of the stock selector: the CT series of the study.
CT_RULES = '{"selections": [{"name": "CT Series", "conditions": {"Modality": "(?i)CT"}}]}'


class SliceContextNet(torch.nn.Module):
    """(1, 1, W, H, D) HU → (1, K, W, H, D) logits of a 2.5D net, ``batch_size`` slices a call."""

    def __init__(self, net: torch.nn.Module, slice_context: int, batch_size: int) -> None:
        super().__init__()
        self.net = net
        self.half = slice_context // 2
        self.batch_size = batch_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        volume = image[0, 0].permute(2, 1, 0)  # (D, H, W)
        depth = volume.shape[0]
        offsets = torch.arange(-self.half, self.half + 1)
        index = (torch.arange(depth).unsqueeze(1) + offsets.unsqueeze(0)).clamp(0, depth - 1)
        outputs: list[torch.Tensor] = []
        for start in range(0, depth, self.batch_size):
            outputs.append(self.net(volume[index[start : start + self.batch_size]]))
        return torch.cat(outputs).permute(1, 3, 2, 0).unsqueeze(0)


def export_torchscript(checkpoint: Path, output: Path, *, batch_size: int) -> Path:
    """TorchScript of ``checkpoint`` for ``MonaiSegInferenceOperator`` (the ONNX's weights)."""
    from training.export.onnx_export import load_checkpoint

    net, config, _ = load_checkpoint(checkpoint)
    c, (h, w) = config.model.slice_context, config.model.input_size
    traced = torch.jit.trace(net.eval(), torch.zeros(1, c, h, w))
    scripted = torch.jit.script(SliceContextNet(traced, c, batch_size))
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(output))
    return output


def _timed(cls: type, stage: str) -> type:
    class Timed(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, stages: dict[str, float], **kwargs: Any) -> None:
            self._stages = stages
            super().__init__(*args, **kwargs)

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            started = time.perf_counter()
            super().compute(op_input, op_output, context)
            self._stages[stage] = time.perf_counter() - started

    Timed.__name__ = f"Timed{cls.__name__}"
    return Timed


class StockSegOperator(Operator):
    """The SDK example's segmentation operator: MONAI transforms + ``MonaiSegInferenceOperator``."""

    def __init__(self, fragment: Any, *args: Any, app_context: AppContext, **kwargs: Any) -> None:
        self.app_context = app_context
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.output("seg_image")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image = op_input.receive("image")
        pre = Compose(
            [
                LoadImaged(keys="image", reader=InMemImageReader(image)),
                EnsureChannelFirstd(keys="image"),
            ]
        )
        post = Compose(
            [Activationsd(keys="pred", softmax=True), AsDiscreted(keys="pred", argmax=True)]
        )
        infer = MonaiSegInferenceOperator(
            self.fragment,
            roi_size=None,
            pre_transforms=pre,
            post_transforms=post,
            app_context=self.app_context,
            inferer=InfererType.SIMPLE,
            model_path=Path(self.app_context.model_path),
            name="monai_seg_inference_op",
        )
        op_output.emit(infer.compute_impl(image, context), "seg_image")


def segment_descriptions(manifest: dict[str, Any]) -> list[SegmentDescription]:
    """The stock writer's segment descriptions, from the pulmoseg manifest's classes."""

    def code(concept: dict[str, str]) -> Code:
        return Code(concept["value"], concept["scheme"], concept["meaning"])

    return [
        SegmentDescription(
            segment_label=c["name"],
            segmented_property_category=code(c["category"]),
            segmented_property_type=code(c["property_type"]),
            algorithm_name=manifest["name"],
            algorithm_version=manifest["version"],
        )
        for c in sorted(manifest["classes"], key=lambda c: c["index"])
        if c["index"] != 0
    ]


class StockSegApp(Application):
    """DICOM folder → stock operators → SEG in ``output``; ``stages`` gets each compute's time."""

    def __init__(
        self,
        study: Path,
        output: Path,
        model: Path,
        manifest: dict[str, Any],
        stages: dict[str, float],
    ) -> None:
        self.study, self.output, self.model = study, output, model
        self.manifest, self.stages = manifest, stages
        super().__init__(argv=["stock"])

    def compose(self) -> None:
        started = time.perf_counter()
        context = AppContext(
            {"input": str(self.study), "output": str(self.output), "model": str(self.model)}
        )
        self.stages["model load"] = time.perf_counter() - started
        s = self.stages
        loader = _timed(DICOMDataLoaderOperator, "parsing")(
            self, CountCondition(self, 1), input_folder=self.study, name="loader", stages=s
        )
        selector = _timed(DICOMSeriesSelectorOperator, "selecting")(
            self, rules=CT_RULES, name="selector", stages=s
        )
        to_volume = _timed(DICOMSeriesToVolumeOperator, "volume")(self, name="volume", stages=s)
        infer = _timed(StockSegOperator, "inference")(
            self, app_context=context, name="inference", stages=s
        )
        writer = _timed(DICOMSegmentationWriterOperator, "writing")(
            self,
            segment_descriptions=segment_descriptions(self.manifest),
            output_folder=self.output,
            name="writer",
            stages=s,
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(
            selector, to_volume, {("study_selected_series_list", "study_selected_series_list")}
        )
        self.add_flow(to_volume, infer, {("image", "image")})
        self.add_flow(
            selector, writer, {("study_selected_series_list", "study_selected_series_list")}
        )
        self.add_flow(infer, writer, {("seg_image", "seg_image")})
