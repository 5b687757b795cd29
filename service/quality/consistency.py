"""Label-free consistency VolDice: does the model say the same on a flipped/rotated copy?

The model predicts T(x), the prediction is mapped back with T⁻¹ and compared with the prediction
on x, class by class, as VolDice. A model that has learned anatomy rather than pixel positions
agrees with itself; a study far from the training distribution (new scanner, protocol, artefacts)
often does not. Consistency is not accuracy: a model can be consistently wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from service.core.segmentation_metrics import per_class_vol_dice
from service.quality.transforms import ConsistencyTransform

#: ``predict(volume) -> labels``: the predictor's label function (same grid in and out).
LabelPredictor = Callable[[np.ndarray], np.ndarray]


def consistency_voldice(
    predict: LabelPredictor,
    hu: np.ndarray,
    labels: np.ndarray,
    classes: Mapping[int, str],
    transform: ConsistencyTransform | str,
    *,
    confine: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """VolDice per class name between ``labels`` (the prediction on ``hu``) and T⁻¹(f(T(hu))).

    ``confine`` is the post-processing the served ``labels`` got on ``hu``'s grid (the study's
    lung field): it is applied to T⁻¹(f(T(hu))), so the field is found once per study and the
    check measures the model, not the classical lung field's own response to T. A voxel-wise
    mask commutes with the voxel permutation T, so this equals confining f(T(hu)) by T(field).
    """
    back = transformed_prediction(predict, hu, labels, transform, confine=confine)
    return class_voldice(back, labels, classes)


def transformed_prediction(
    predict: LabelPredictor,
    hu: np.ndarray,
    labels: np.ndarray,
    transform: ConsistencyTransform | str,
    *,
    confine: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """T⁻¹(f(T(hu))) on ``hu``'s grid, confined like the served ``labels`` (see
    :func:`consistency_voldice`); kept so that the quality score reuses the same pass."""
    t = ConsistencyTransform.parse(transform)
    if hu.shape != labels.shape:
        raise ValueError(
            f"Arguments 'hu' and 'labels' must have the same shape, got {hu.shape} and "
            f"{labels.shape}."
        )
    back = t.invert(np.asarray(predict(t.apply(hu))))
    if back.shape != labels.shape:
        raise ValueError(
            f"The prediction on the transformed volume maps back to shape {back.shape}, "
            f"expected {labels.shape}."
        )
    if confine is not None:
        back = np.asarray(confine(back))
    return back


def class_voldice(
    back: np.ndarray, labels: np.ndarray, classes: Mapping[int, str]
) -> dict[str, float]:
    """VolDice per class name between the mapped-back prediction and the served labels."""
    scores = per_class_vol_dice(back, labels, list(classes))
    return {classes[k]: float(v) for k, v in scores.items()}


def flag_study(voldice: Mapping[str, float], threshold: float, classes: Sequence[str]) -> bool:
    """Flag for review when any of ``classes`` scores below ``threshold``."""
    return any(voldice.get(name, 1.0) < threshold for name in classes)
