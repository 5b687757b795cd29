"""Which builder makes which stage: one mapping from :class:`~training.config.StageName` to the
function that builds the stage's :class:`~training.stages.task.StageTask`.

The names come from ``training.config`` (which checks ``stages`` against them); a new stage is
a new :class:`~training.config.StageName` member and one entry here, and a test keeps the two
complete. Every builder takes the run's whole data and picks the items its stage trains on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from training.config import StageName, TrainConfig
from training.data.sources import ExperimentData
from training.distributed import DistContext
from training.nn.networks import SegmentationNet
from training.stages.pretrain import build_global_task, build_local_task
from training.stages.supervised import build_supervised_task
from training.stages.task import StageTask
from training.stages.tcsm import build_tcsm_task
from training.stages.unimatch import build_unimatch_task

__all__ = ["STAGE_BUILDERS", "StageBuilder", "stage_builder"]

#: ``(config, model, data, ctx) -> task``: builds one stage around ``model`` for this rank.
StageBuilder = Callable[[TrainConfig, SegmentationNet, ExperimentData, DistContext], StageTask]


def _pretrain_global(
    config: TrainConfig, model: SegmentationNet, data: ExperimentData, ctx: DistContext
) -> StageTask:
    return build_global_task(config, model, data.train_all, ctx)


def _pretrain_local(
    config: TrainConfig, model: SegmentationNet, data: ExperimentData, ctx: DistContext
) -> StageTask:
    return build_local_task(config, model, data.train_all, ctx)


def _supervised(
    config: TrainConfig, model: SegmentationNet, data: ExperimentData, ctx: DistContext
) -> StageTask:
    return build_supervised_task(config, model, data.train_labeled, ctx)


def _tcsm(
    config: TrainConfig, model: SegmentationNet, data: ExperimentData, ctx: DistContext
) -> StageTask:
    return build_tcsm_task(config, model, data.train_labeled, data.train_unlabeled, ctx)


def _unimatch(
    config: TrainConfig, model: SegmentationNet, data: ExperimentData, ctx: DistContext
) -> StageTask:
    return build_unimatch_task(config, model, data.train_labeled, data.train_unlabeled, ctx)


#: Pre-training sees every training image (labels unused); supervised only the labeled ones;
#: the semi-supervised stages both sides.
STAGE_BUILDERS: Mapping[StageName, StageBuilder] = MappingProxyType(
    {
        StageName.PRETRAIN_GLOBAL: _pretrain_global,
        StageName.PRETRAIN_LOCAL: _pretrain_local,
        StageName.SUPERVISED: _supervised,
        StageName.TCSM: _tcsm,
        StageName.UNIMATCH: _unimatch,
    }
)


def stage_builder(name: StageName | str) -> StageBuilder:
    """The builder of stage ``name``; an unknown name raises ValueError listing the known ones
    with a "did you mean" hint."""
    return STAGE_BUILDERS[StageName.parse(name, "Stage name")]
