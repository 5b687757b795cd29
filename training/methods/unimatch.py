"""UniMatch: weak-to-strong consistency with thresholded pseudo-labels and dual perturbations.

Yang et al., "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic
Segmentation", CVPR 2023 (FixMatch-style, no teacher network). Each step, for a batch of
unlabeled images:

1. **weak view** ``x_w``: a mild geometric augmentation (flip, small rotation and zoom);
   the model's own prediction on it, detached, gives pseudo-labels ``ŷ = argmax p_w`` and
   confidences ``c = max p_w``;
2. **two strong views** ``x_s1``, ``x_s2`` of ``x_w`` (independent draws): intensity
   perturbations (brightness/contrast, gamma, Gaussian blur, Gaussian noise) and CutMix with
   another unlabeled image of the batch, whose pseudo-labels fill the pasted box;
3. **feature perturbation**: the weak view's encoder features through channel dropout
   (``Dropout2d``) and the decoder again, giving ``p_fp``.

``L_u = (1 − fp_weight)/2 · (CE(s1) + CE(s2)) + fp_weight · CE(fp)`` with every cross-entropy
taken against ``ŷ`` and only on pixels with ``c >= confidence_threshold`` (averaged over all
pixels, as UniMatch), and ``loss = sup + w(step) · L_u``. Geometry is shared by the weak and
strong views (strong perturbations are photometric or CutMix), so pseudo-labels align pixel
for pixel.

Compact deviations from the reference code, all documented in the stage config: CutMix
partners are other images of the same unlabeled batch (a random permutation per strong view)
rather than a second unlabeled loader, and their pseudo-labels are the weak predictions
already computed; labeled, weak, both strong views and the feature-perturbed decode run as
one forward pass (the network uses instance norm, so batch composition does not change the
outputs, and DDP sees one forward per step); 8-bit CT has no colour, so colour jitter and
grayscale become brightness/contrast and gamma.

This module is the method alone (plain modules and tensors, and its hyper-parameters as the
``unimatch`` section of the run's config, :class:`~training.config.UniMatchStageConfig`);
``training.stages.unimatch`` wires it into a training run's data and loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import UniMatchStageConfig
from training.methods.tcsm import sigmoid_rampup
from training.nn.networks import SegmentationNet

__all__ = [
    "UniMatchNet",
    "cutmix_boxes",
    "intensity_perturbation",
    "pseudo_label_loss",
    "unimatch_train_step",
    "weak_view",
]


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def weak_view(
    x: Tensor, max_rotation_deg: float, max_scale_delta: float, generator: torch.Generator | None
) -> Tensor:
    """Random horizontal flip, rotation in ±``max_rotation_deg`` and zoom in ``1 ± delta``
    per sample (bilinear, border padding; intensities untouched, so HU inputs work too)."""
    n, _, h, w = x.shape
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    angle = _uniform(n, -max_rotation_deg, max_rotation_deg, generator) * (math.pi / 180.0)
    scale = _uniform(n, 1.0 - max_scale_delta, 1.0 + max_scale_delta, generator)
    if max_rotation_deg == 0 and max_scale_delta == 0 and bool((flip > 0).all()):
        return x
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    aspect = h / w
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin * aspect
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip / aspect, cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur, one sigma (pixels) per sample."""
    out = []
    for xi, s in zip(x, sigma.tolist(), strict=True):
        radius = max(1, int(math.ceil(3 * s)))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / s) ** 2)
        k = k / k.sum()
        c = xi.shape[0]
        xi = F.pad(xi[None], (radius, radius, 0, 0), mode="replicate")
        xi = F.conv2d(xi, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        xi = F.pad(xi, (0, 0, radius, radius), mode="replicate")
        xi = F.conv2d(xi, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        out.append(xi[0])
    return torch.stack(out)


def intensity_perturbation(
    x: Tensor,
    cfg: UniMatchStageConfig,
    value_range: tuple[float, float],
    generator: torch.Generator | None,
) -> Tensor:
    """Strong photometric perturbation, drawn per sample: with ``cfg.intensity_prob``
    brightness, contrast and gamma (within ``value_range``, the model's input range), with
    ``cfg.blur_prob`` a Gaussian blur, with ``cfg.noise_prob`` Gaussian noise
    (``cfg.noise_std_hu``, input units). Stays within ``value_range``."""
    n = x.shape[0]
    lo, hi = value_range
    span = hi - lo
    dev = x.device
    on = (torch.rand(n, generator=generator) < cfg.intensity_prob).float()
    shift = _uniform(n, -cfg.brightness, cfg.brightness, generator) * span * on
    factor = 1.0 + _uniform(n, -cfg.contrast, cfg.contrast, generator) * on
    gamma_lo, gamma_hi = cfg.gamma_range
    log_gamma = _uniform(n, math.log(gamma_lo), math.log(gamma_hi), generator) * on
    view = (n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    y = (x - mean) * factor.to(dev).view(view) + mean + shift.to(dev).view(view)
    unit = ((y - lo) / span).clamp(0.0, 1.0)
    y = lo + span * unit.pow(torch.exp(log_gamma).to(dev).view(view))
    blur = torch.rand(n, generator=generator) < cfg.blur_prob
    sigma = _uniform(n, *cfg.blur_sigma, generator)
    if bool(blur.any()):
        idx = blur.nonzero()[:, 0]
        y = y.clone()
        y[idx.to(dev)] = _gaussian_blur(y[idx.to(dev)], sigma[idx])
    noisy = (torch.rand(n, generator=generator) < cfg.noise_prob).float()
    if cfg.noise_std_hu > 0 and bool(noisy.any()):
        noise = torch.randn(x.shape, generator=generator) * cfg.noise_std_hu
        y = y + noise.to(dev) * noisy.to(dev).view(view)
    return y.clamp(lo, hi)


def cutmix_boxes(
    n: int,
    size: tuple[int, int],
    prob: float,
    area: tuple[float, float],
    generator: torch.Generator | None,
) -> Tensor:
    """``(n, H, W)`` bool masks: with probability ``prob`` a box covering a fraction of the
    image drawn in ``area`` (aspect ratio in [0.3, 1/0.3], as UniMatch), else empty."""
    h, w = size
    boxes = torch.zeros(n, h, w, dtype=torch.bool)
    use = torch.rand(n, generator=generator) < prob
    frac = _uniform(n, *area, generator)
    ratio = torch.exp(_uniform(n, math.log(0.3), math.log(1 / 0.3), generator))
    u = torch.rand(n, 2, generator=generator)
    for i in range(n):
        if not bool(use[i]):
            continue
        pixels = float(frac[i]) * h * w
        bh = max(1, min(h, round(math.sqrt(pixels * float(ratio[i])))))
        bw = max(1, min(w, round(math.sqrt(pixels / float(ratio[i])))))
        y0 = int(float(u[i, 0]) * (h - bh + 1))
        x0 = int(float(u[i, 1]) * (w - bw + 1))
        boxes[i, y0 : y0 + bh, x0 : x0 + bw] = True
    return boxes


def pseudo_label_loss(
    logits: Tensor, pseudo: Tensor, confidence: Tensor, threshold: float
) -> Tensor:
    """Cross-entropy against ``pseudo`` (N, H, W) on pixels with ``confidence >= threshold``,
    summed and divided by *all* pixels (UniMatch): unconfident pixels give neither loss nor
    gradient, and a batch with few confident pixels contributes little."""
    ce = F.cross_entropy(logits, pseudo, reduction="none")
    keep = (confidence >= threshold).to(ce.dtype)
    return (ce * keep).sum() / max(1, ce.numel())


class UniMatchNet(nn.Module):
    """A :class:`~training.nn.networks.SegmentationNet` whose forward can also decode
    feature-perturbed copies of some rows: ``forward(x, fp_rows)`` returns the logits of
    ``x`` and, for rows ``fp_rows = (start, stop)``, the logits after channel dropout on every
    encoder feature map (None when ``fp_rows`` is None). Runs under bf16 autocast when enabled and
    returns float32; one module, so DDP sees one forward per step."""

    def __init__(
        self, net: SegmentationNet, dropout: float, bf16: bool = False, device_type: str = "cpu"
    ) -> None:
        super().__init__()
        unet = getattr(net, "unet", None)
        if unet is None or not all(hasattr(unet, a) for a in ("conv_0", "down_4", "upcat_1")):
            raise TypeError(
                "UniMatch's feature perturbation needs a SegmentationNet (a MONAI BasicUNet "
                f"under 'unet'), got {type(net).__name__}."
            )
        self.net = net
        self.dropout = float(dropout)
        self.bf16 = bf16
        self.device_type = device_type

    def _decode(self, feats: list[Tensor]) -> Tensor:
        u = self.net.unet
        x0, x1, x2, x3, x4 = feats
        u4 = u.upcat_4(x4, x3)
        u3 = u.upcat_3(u4, x2)
        u2 = u.upcat_2(u3, x1)
        u1 = u.upcat_1(u2, x0)
        return u.final_conv(u1)

    def forward(
        self, x: Tensor, fp_rows: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            u = self.net.unet
            x0 = u.conv_0(self.net.preprocess(x))
            x1 = u.down_1(x0)
            x2 = u.down_2(x1)
            x3 = u.down_3(x2)
            x4 = u.down_4(x3)
            feats = [x0, x1, x2, x3, x4]
            if fp_rows is None or fp_rows[0] >= fp_rows[1]:
                return self._decode(feats).float(), None
            n = x.shape[0]
            start, stop = fp_rows
            perturbed = [F.dropout2d(f[start:stop], self.dropout, training=True) for f in feats]
            both = self._decode([torch.cat([f, p]) for f, p in zip(feats, perturbed, strict=True)])
        both = both.float()
        return both[:n], both[n:]


def unimatch_train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    labeled_batch: tuple[Tensor, Tensor] | None,
    unlabeled_x: Tensor | None,
    supervised_loss: Callable[[Tensor, Tensor], Tensor],
    step: int,
    cfg: UniMatchStageConfig,
    generator: torch.Generator | None = None,
    *,
    value_range: tuple[float, float],
) -> dict[str, float]:
    """One optimisation step: ``sup + w(step)·L_u``, backward, optimizer step.

    ``net`` is a :class:`UniMatchNet` (possibly DDP-wrapped); ``cfg`` the run's ``unimatch``
    config section (the step reads the loss and perturbation settings; batch sizes and the
    optimiser belong to the caller); ``value_range`` the model's input range the strong views
    stay in (the HU window; 0..255 for 8-bit slices). Returns the loss parts as floats
    (``loss``, ``supervised``, ``unlabeled``, ``weighted_unlabeled``, ``strong1``,
    ``strong2``, ``feature_perturbed``, ``unlabeled_weight``) and pseudo-label diagnostics:
    ``confident_fraction`` (pixels above the threshold), ``confidence`` (mean max-probability
    of the weak view) and ``pseudo_foreground`` (non-background pseudo-label fraction).
    """
    if labeled_batch is None and unlabeled_x is None:
        raise ValueError("unimatch_train_step needs 'labeled_batch' or 'unlabeled_x'.")
    parts: list[Tensor] = []
    n_l = 0
    y: Tensor | None = None
    if labeled_batch is not None:
        x_l, y = labeled_batch
        n_l = x_l.shape[0]
        parts.append(x_l)
    n_u = 0 if unlabeled_x is None else unlabeled_x.shape[0]
    boxes: list[Tensor] = []
    perms: list[Tensor] = []
    if unlabeled_x is not None:
        x_w = weak_view(unlabeled_x, cfg.weak_rotation_deg, cfg.weak_scale_delta, generator)
        parts.append(x_w)
        size = (int(x_w.shape[-2]), int(x_w.shape[-1]))
        for _ in range(2):
            s = intensity_perturbation(x_w, cfg, value_range, generator)
            box = cutmix_boxes(n_u, size, cfg.cutmix_prob, cfg.cutmix_area, generator)
            perm = torch.randperm(n_u, generator=generator)
            box_d, perm_d = box.to(x_w.device), perm.to(x_w.device)
            parts.append(torch.where(box_d[:, None], s[perm_d], s))
            boxes.append(box_d)
            perms.append(perm_d)
    x = torch.cat(parts) if len(parts) > 1 else parts[0]

    net.train()
    logits, fp_logits = net(x, (n_l, n_l + n_u) if n_u else None)
    sup = logits.new_zeros(())
    if y is not None and n_l > 0:
        sup = supervised_loss(logits[:n_l], y.to(logits.device))
    out: dict[str, float] = {}
    loss_u = logits.new_zeros(())
    if n_u:
        w_logits = logits[n_l : n_l + n_u]
        s_logits = (logits[n_l + n_u : n_l + 2 * n_u], logits[n_l + 2 * n_u :])
        with torch.no_grad():
            prob = torch.softmax(w_logits.detach(), dim=1)
            conf, pseudo = prob.max(dim=1)
        thr = cfg.confidence_threshold
        assert fp_logits is not None
        losses = []
        for s_l, box, perm in zip(s_logits, boxes, perms, strict=True):
            target = torch.where(box, pseudo[perm], pseudo)
            target_conf = torch.where(box, conf[perm], conf)
            losses.append(pseudo_label_loss(s_l, target, target_conf, thr))
        loss_fp = pseudo_label_loss(fp_logits, pseudo, conf, thr)
        loss_u = (1.0 - cfg.fp_weight) / 2.0 * (losses[0] + losses[1]) + cfg.fp_weight * loss_fp
        if torch.is_grad_enabled() and not loss_u.requires_grad:
            raise RuntimeError("The unlabeled loss carries no gradient; it would train nothing.")
        out = {
            "strong1": float(losses[0].detach()),
            "strong2": float(losses[1].detach()),
            "feature_perturbed": float(loss_fp.detach()),
            "confident_fraction": float((conf >= thr).float().mean()),
            "confidence": float(conf.mean()),
            "pseudo_foreground": float((pseudo > 0).float().mean()),
        }
    weight = sigmoid_rampup(step, cfg.rampup_steps, cfg.unlabeled_weight)
    total = sup + weight * loss_u
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {
        "loss": float(total.detach()),
        "supervised": float(sup.detach()),
        "unlabeled": float(loss_u.detach()),
        "weighted_unlabeled": weight * float(loss_u.detach()),
        "unlabeled_weight": weight,
        **out,
    }
