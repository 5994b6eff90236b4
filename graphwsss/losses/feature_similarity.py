r"""Feature similarity loss (FSL) of the CAM seed network (docs/method.md §3, eqs. 9–12).

For class activations :math:`a_i \in \mathbb{R}^{C}` and colours :math:`x_i \in [0, 1]^3` at the
cells :math:`p_i` of an ``h x w`` CAM grid (:math:`N = hw`),

.. math::
    L_{fs} = -\frac{1}{Z} \sum_{i, j} w_{ij}\, g(a_i, a_j)\, f(\delta(x_i, x_j))      \quad (9)

    w_{ij} = \frac{1}{2\pi\sigma^2} \exp\Bigl(-\frac{\lVert p_i - p_j\rVert^2}{2\sigma^2}\Bigr)
    \quad (10) \qquad g(a_i, a_j) = \tfrac12 \lVert a_i - a_j \rVert^2                   \quad (11)

    f(\delta) = \tanh\Bigl(\mu + \log\frac{\delta}{1 - \delta}\Bigr), \qquad
    \delta(x_i, x_j) = \operatorname{clamp}\bigl(\lVert x_i - x_j\rVert_1 / 3,\;
    \varepsilon,\; 1 - \varepsilon\bigr)                                              \quad (12)

over ordered pairs (both :math:`(i, j)` and :math:`(j, i)`; :math:`i = j` adds nothing as
:math:`g = 0`). :math:`f < 0` for similar colours (:math:`\delta < \sigma(-\mu)`, about 0.076 at
:math:`\mu = 2.5`), so minimising :math:`L_{fs}` pulls their activations together and pushes those
of differently coloured neighbours apart: CAM contours follow image edges.

Normalisation :math:`Z` (per image; the loss is the mean over the batch):

* ``"pairs"`` (default, the paper's eq. 9 as docs/method.md §3 states it): :math:`Z = N^2`;
* ``"pixels"``: :math:`Z = N`, what the published code computes whenever :math:`\sigma` is set
  (``-(1/(n*h*w)) * w * g * f`` summed). As :math:`\sum_j w_{ij} \approx 1`, this is the
  per-pixel mean of a weighted neighbourhood average, :math:`N` times the ``"pairs"`` value
  (3,136x at a 56x56 CAM), and it is the scale at which the published loss weights (0.5
  multinomial, 1.0 binomial) were tuned.

Published-code differences kept out on purpose: it adds ``1e-5`` inside the logarithm instead of
clamping :math:`\delta` (equal up to :math:`O(\varepsilon)`), and its multinomial version
(ICASSP code) uses :math:`g = \lVert a_i - a_j\rVert^2` without the ½ (same as doubling the
weight).

:func:`feature_similarity_loss` is what graphwsss trains with: a sum over the offsets of a square
window of radius :math:`R = \lceil 3\sigma \rceil` (beyond it :math:`w_{ij} < e^{-4.5} w_{ii}`),
with the same :math:`Z` as the all-pairs form, so a window covering the image gives the all-pairs
value exactly. The summand is symmetric in :math:`(i, j)`, so only one offset of each pair
:math:`\{o, -o\}` is visited and counted twice. A custom autograd function keeps only its inputs
and recomputes every offset's terms in the backward pass: peak memory is a few
``[B, C, h, w]`` tensors whatever the window (never a per-offset or ``N x N`` tensor).
:func:`feature_similarity_loss_allpairs` is the dense reference, for tests and the benchmark only.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from graphwsss.graphs.grid import downsample_image
from graphwsss.utils.shapes import check_shape, describe

__all__ = [
    "FSL_VARIANT_WEIGHTS",
    "FeatureSimilarityLoss",
    "feature_similarity_loss",
    "feature_similarity_loss_allpairs",
    "fsl_activations",
]

Normalization = Literal["pairs", "pixels"]
FSLVariant = Literal["multinomial", "binomial"]

# Loss weight of each variant in the published training scripts (docs/method.md §3).
FSL_VARIANT_WEIGHTS: dict[str, float] = {"multinomial": 0.5, "binomial": 1.0}


# --------------------------------------------------------------------------------------------
# Activations of each variant
# --------------------------------------------------------------------------------------------

def fsl_activations(scores: Tensor, labels: Tensor | None = None,
                    variant: FSLVariant = "multinomial", eps: float = 1e-5) -> Tensor:
    r"""The activations :math:`a` that the FSL compares, for each CAM variant (docs/method.md §3).

    * ``"multinomial"`` (importance sampling with a softmax over classes):
      :math:`a = \operatorname{softmax}(s)` over the ``K + 1`` classes, background included, as
      the published code feeds the softmax CAM; ``labels`` are not used (the softmax already
      covers every class) but are shape-checked when given.
    * ``"binomial"`` (sigmoid classifier): the max-normalised, label-masked CAM
      :math:`\hat a_k = y_k\, \mathrm{ReLU}(s_k) / (\max_{hw} \mathrm{ReLU}(s_k) + \varepsilon)`
      for the ``K`` foreground classes, with the background channel
      :math:`a_0 = 1 - \max_k \hat a_k` in front. The maximum is differentiated through.

    Args:
        scores: ``"multinomial"``: logits ``[B, K + 1, h, w]``, background at channel 0;
            ``"binomial"``: foreground class scores (logits) ``[B, K, h, w]``.
        labels: ``[B, K]`` multi-hot foreground tags (0/1); required for ``"binomial"``.
        variant: ``"multinomial"`` or ``"binomial"``.
        eps: added to the per-class maximum (``"binomial"``).

    Returns:
        ``[B, K + 1, h, w]`` activations, background at channel 0, values in ``[0, 1]``.
    """
    if variant not in FSL_VARIANT_WEIGHTS:
        raise ValueError(f"variant must be one of {sorted(FSL_VARIANT_WEIGHTS)}, got {variant!r}")
    check_shape("scores", scores, "[B, K(+1), h, w]", dims=4, dtype="float")
    batch, channels = scores.shape[:2]
    num_foreground = channels - 1 if variant == "multinomial" else channels
    if num_foreground < 1:
        raise ValueError(f"scores of the {variant} variant need at least one foreground class, "
                         f"got {channels} channels")
    if labels is not None:
        check_shape("labels", labels, f"[B, K] = [{batch}, {num_foreground}]",
                    shape=(batch, num_foreground),
                    what=f"tensor of foreground tags for {variant} scores of shape "
                         f"{tuple(scores.shape)}")
    if variant == "multinomial":
        return torch.softmax(scores, dim=1)
    if labels is None:
        raise ValueError("labels [B, K] are required for the binomial variant (label mask)")
    cams = F.relu(scores)
    cams = cams / (cams.amax(dim=(2, 3), keepdim=True) + eps)
    cams = cams * labels.to(device=cams.device, dtype=cams.dtype)[:, :, None, None]
    background = 1.0 - cams.amax(dim=1, keepdim=True)
    return torch.cat([background, cams], dim=1)


# --------------------------------------------------------------------------------------------
# Windowed loss
# --------------------------------------------------------------------------------------------

def feature_similarity_loss(activations: Tensor, image: Tensor, sigma: float | Tensor = 5.0,
                            mu: float | Tensor = 2.5, window: int | None = None,
                            eps: float = 1e-5, normalization: Normalization = "pairs") -> Tensor:
    r"""Feature similarity loss :math:`L_{fs}` (eqs. 9–12) over a square window.

    Sums eq. 9 over the pairs :math:`(i, j)` with :math:`|y_i - y_j|, |x_i - x_j| \le R`; the
    normalisation :math:`Z` is that of the all-pairs sum (module docstring), per image, and the
    result is averaged over the batch. With :math:`R \ge \max(h, w) - 1` the value equals
    :func:`feature_similarity_loss_allpairs`. Peak memory is :math:`O(BChw)` whatever ``R``
    (forward and backward run over the offsets one at a time and recompute, see the module
    docstring); double backward is not supported.

    Args:
        activations: ``[B, C, h, w]`` activations :math:`a` (see :func:`fsl_activations`).
        image: ``[B, 3, H, W]`` RGB in ``[0, 1]`` (not ImageNet-normalised). When ``(H, W)``
            differs from ``(h, w)`` it is area-averaged to the CAM grid
            (:func:`~graphwsss.graphs.grid.downsample_image`); the published code resizes
            bilinearly. Treated as a constant (no gradient).
        sigma: :math:`\sigma > 0` of eq. 10 in grid cells (default 5): a float, or a 0-d tensor
            that may require grad (learnable variant).
        mu: :math:`\mu` of eq. 12 (default 2.5): a float or a 0-d tensor that may require grad.
        window: window radius :math:`R \ge 1` in grid cells; default :math:`\lceil 3\sigma\rceil`
            (15 at :math:`\sigma = 5`: 961 offsets).
        eps: clamp of :math:`\delta` to :math:`[\varepsilon, 1 - \varepsilon]`.
        normalization: ``"pairs"`` (:math:`Z = (hw)^2`, eq. 9) or ``"pixels"``
            (:math:`Z = hw`, the published code's scale).

    Returns:
        Scalar tensor, differentiable in ``activations``, ``sigma`` and ``mu``.

    Shapes:
        - activations: ``[B, C, h, w]``; image: ``[B, 3, H, W]``
        - output: ``[]``
    """
    _check_activations(activations)
    image = _grid_image(image, activations)
    sigma_value = _check_scalar("sigma", sigma)
    _check_scalar("mu", mu)
    if not sigma_value > 0:
        raise ValueError(f"sigma must be positive, got {sigma_value}")
    _check_options(eps, normalization)
    if window is None:
        radius = max(1, math.ceil(3.0 * sigma_value))
    elif isinstance(window, bool) or int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer radius (or None), got {window!r}")
    else:
        radius = int(window)

    dtype = torch.promote_types(activations.dtype, torch.float32)
    activations = activations.to(dtype)
    image = image.detach().to(dtype)
    sigma = _as_tensor(sigma, activations)
    mu = _as_tensor(mu, activations)
    batch, _, height, width = activations.shape

    offsets = _half_window(radius, height, width)
    if not offsets:                              # a 1x1 grid has no pair
        return (activations.sum() + sigma + mu) * 0.0
    displacement = torch.tensor(offsets, dtype=dtype, device=activations.device)
    weight = _spatial_weight(displacement.square().sum(1), sigma)            # w_o, eq. 10
    # S_o = sum over images and cells of ||a_i - a_{i+o}||^2 f_{i,i+o} = 4 x (sum of g f / 2):
    # the two orders of each pair and g's 1/2 cancel.
    pair_sums = _OffsetPairSums.apply(activations, image, mu, tuple(offsets), eps)
    return -(weight * pair_sums).sum() / (batch * _normalizer(height, width, normalization))


class _OffsetPairSums(torch.autograd.Function):
    r"""``S_o = sum_{b, i} ||a_i - a_{i+o}||^2 f(delta(x_i, x_{i+o}))`` for each offset ``o``.

    Uses :math:`\lVert a_i - a_j\rVert^2 = s_i + s_j - 2\langle a_i, a_j\rangle` with
    :math:`s = \lVert a \rVert^2` computed once, so each offset costs one product-and-sum over
    the channels (half the passes of forming the difference). In the backward pass,
    :math:`\partial S_o / \partial a_i = 2 f_{io} (a_i - a_{i+o})` is split into a per-cell
    factor :math:`\sum_o g_o f_{io}` (accumulated on ``[B, h, w]`` and applied once at the end)
    and the cross terms, added with one fused ``addcmul_`` per crop. Saves only its inputs and
    recomputes each offset, so memory stays at a few ``[B, C, h, w]`` tensors whatever the
    number of offsets.
    """

    @staticmethod
    def forward(ctx, activations: Tensor, image: Tensor, mu: Tensor,
                offsets: Sequence[tuple[int, int]], eps: float) -> Tensor:
        ctx.save_for_backward(activations, image, mu)
        ctx.offsets, ctx.eps = offsets, eps
        squared_norm = activations.square().sum(dim=1)                        # s, [B, h, w]
        sums = []
        for dy, dx in offsets:
            colour = _colour_term(image, dy, dx, mu, eps)                     # f, [B, r, c]
            sums.append((colour * _squared_distance(activations, squared_norm, dy, dx)).sum())
        return torch.stack(sums)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sums: Tensor):
        activations, image, mu = ctx.saved_tensors
        need_activations, _, need_mu = ctx.needs_input_grad[:3]
        grad_activations = torch.zeros_like(activations) if need_activations else None
        grad_mu = torch.zeros_like(mu) if need_mu else None
        squared_norm = activations.square().sum(dim=1) if need_mu else None
        own_factor = activations.new_zeros(activations.shape[0], *activations.shape[2:])
        for k, (dy, dx) in enumerate(ctx.offsets):
            colour = _colour_term(image, dy, dx, mu, ctx.eps)                 # f, [B, r, c]
            if need_mu:                                                       # df/dmu = 1 - f^2
                squared = _squared_distance(activations, squared_norm, dy, dx)
                grad_mu += grad_sums[k] * (squared * (1.0 - colour.square())).sum()
            if need_activations:
                coefficient = grad_sums[k] * colour                           # [B, r, c]
                for view in _pair_crops(own_factor, dy, dx):
                    view += coefficient
                center, neighbour = _pair_crops(activations, dy, dx)
                grad_center, grad_neighbour = _pair_crops(grad_activations, dy, dx)
                coefficient = coefficient.unsqueeze(1)
                grad_center.addcmul_(neighbour, coefficient, value=-2.0)
                grad_neighbour.addcmul_(center, coefficient, value=-2.0)
        if need_activations:
            grad_activations.addcmul_(activations, own_factor.unsqueeze(1), value=2.0)
        return grad_activations, None, grad_mu, None, None


# --------------------------------------------------------------------------------------------
# All-pairs reference
# --------------------------------------------------------------------------------------------

def feature_similarity_loss_allpairs(activations: Tensor, image: Tensor,
                                     sigma: float | Tensor = 5.0, mu: float | Tensor = 2.5,
                                     eps: float = 1e-5,
                                     normalization: Normalization = "pairs") -> Tensor:
    r"""Reference :math:`L_{fs}` over all :math:`N^2` ordered pairs, with dense ``[B, N, N]``
    tensors as the published code computes it (``torch.cdist`` for the position, colour and
    activation distances, then elementwise eqs. 9–12).

    **For tests and benchmarks only**: memory grows as :math:`B N^2` (several ``[B, N, N]``
    tensors; about 3 GB at ``B = 8`` on a 56x56 grid). Same arguments, normalisation and value as
    :func:`feature_similarity_loss` with a window covering the image; :math:`i = j` is included
    (:math:`g = 0`). Fully differentiable through autograd.

    Shapes:
        - activations: ``[B, C, h, w]``; image: ``[B, 3, H, W]``
        - output: ``[]``
    """
    _check_activations(activations)
    image = _grid_image(image, activations)
    if not _check_scalar("sigma", sigma) > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    _check_scalar("mu", mu)
    _check_options(eps, normalization)
    dtype = torch.promote_types(activations.dtype, torch.float32)
    activations = activations.to(dtype)
    sigma, mu = _as_tensor(sigma, activations), _as_tensor(mu, activations)
    batch, _, height, width = activations.shape

    rows, cols = torch.meshgrid(torch.arange(height, device=activations.device, dtype=dtype),
                                torch.arange(width, device=activations.device, dtype=dtype),
                                indexing="ij")
    positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)      # [N, 2]
    weight = _spatial_weight(torch.cdist(positions, positions).square(), sigma)  # [N, N]
    colours = image.detach().to(dtype).flatten(2).transpose(1, 2)             # [B, N, 3]
    delta = torch.cdist(colours, colours, p=1.0) / 3.0                        # [B, N, N]
    colour = torch.tanh(mu + torch.logit(delta, eps=eps))
    points = activations.flatten(2).transpose(1, 2)                           # [B, N, C]
    similarity = 0.5 * torch.cdist(points, points).square()                   # g, [B, N, N]
    total = (weight * similarity * colour).sum()
    return -total / (batch * _normalizer(height, width, normalization))


# --------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------

class FeatureSimilarityLoss(nn.Module):
    r"""Module form of :func:`feature_similarity_loss` holding :math:`\sigma` and :math:`\mu`.

    Args:
        sigma: initial / fixed :math:`\sigma > 0` (default 5, grid cells).
        mu: initial / fixed :math:`\mu` (default 2.5).
        learnable: learn :math:`\sigma` and :math:`\mu` (the paper) instead of keeping them fixed
            (the published code, default). :math:`\sigma` is then stored as the parameter
            ``log_sigma`` (so it stays positive) and :math:`\mu` as the parameter ``mu``.
        window: window radius; default :math:`\lceil 3\sigma \rceil` for the current
            :math:`\sigma`.
        eps, normalization: as :func:`feature_similarity_loss`.

    Shapes:
        - activations: ``[B, C, h, w]``; image: ``[B, 3, H, W]`` in ``[0, 1]``
        - output: ``[]``
    """

    def __init__(self, sigma: float = 5.0, mu: float = 2.5, learnable: bool = False,
                 window: int | None = None, eps: float = 1e-5,
                 normalization: Normalization = "pairs") -> None:
        super().__init__()
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        _check_options(eps, normalization)
        self.learnable, self.window = bool(learnable), window
        self.eps, self.normalization = float(eps), normalization
        if self.learnable:
            self.log_sigma = nn.Parameter(torch.tensor(math.log(float(sigma))))
            self.mu = nn.Parameter(torch.tensor(float(mu)))
        else:
            self._sigma, self.mu = float(sigma), float(mu)

    @property
    def sigma(self) -> float | Tensor:
        """:math:`\\sigma` (a tensor with grad when learnable)."""
        return self.log_sigma.exp() if self.learnable else self._sigma

    def forward(self, activations: Tensor, image: Tensor) -> Tensor:
        return feature_similarity_loss(activations, image, self.sigma, self.mu, self.window,
                                       self.eps, self.normalization)

    def extra_repr(self) -> str:
        return (f"sigma={float(self.sigma):.4g}, mu={float(self.mu):.4g}, "
                f"learnable={self.learnable}, window={self.window}, "
                f"normalization={self.normalization!r}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _half_window(radius: int, height: int, width: int) -> list[tuple[int, int]]:
    """One offset of each pair ``{o, -o}`` of the square window, ``(0, 0)`` excluded, and only
    offsets that join at least one pair of cells on an ``height x width`` grid."""
    reach_y, reach_x = min(radius, height - 1), min(radius, width - 1)
    return [(dy, dx) for dy in range(0, reach_y + 1) for dx in range(-reach_x, reach_x + 1)
            if dy > 0 or dx > 0]


def _pair_crops(t: Tensor, dy: int, dx: int) -> tuple[Tensor, Tensor]:
    """Aligned views ``t[..., i]`` and ``t[..., i + (dy, dx)]`` over the cells ``i`` whose
    neighbour at ``(dy, dx)`` lies on the grid."""
    height, width = t.shape[-2:]
    rows, cols = height - abs(dy), width - abs(dx)
    y0, x0 = max(-dy, 0), max(-dx, 0)
    center = t[..., y0:y0 + rows, x0:x0 + cols]
    neighbour = t[..., y0 + dy:y0 + dy + rows, x0 + dx:x0 + dx + cols]
    return center, neighbour


def _squared_distance(activations: Tensor, squared_norm: Tensor, dy: int, dx: int) -> Tensor:
    """``||a_i - a_{i+o}||^2 = s_i + s_{i+o} - 2 <a_i, a_{i+o}>`` for one offset, ``[B, r, c]``."""
    center, neighbour = _pair_crops(activations, dy, dx)
    norm_center, norm_neighbour = _pair_crops(squared_norm, dy, dx)
    return (norm_center + norm_neighbour) - 2.0 * (center * neighbour).sum(dim=1)


def _colour_term(image: Tensor, dy: int, dx: int, mu: Tensor, eps: float) -> Tensor:
    """``f(delta(x_i, x_{i+o}))`` of eq. 12 for one offset, ``[B, r, c]``."""
    center, neighbour = _pair_crops(image, dy, dx)
    delta = (center - neighbour).abs_().sum(dim=1).div_(3.0)
    return torch.tanh(mu + torch.logit(delta, eps=eps))       # logit clamps to [eps, 1 - eps]


def _spatial_weight(squared_distance: Tensor, sigma: Tensor) -> Tensor:
    """``w`` of eq. 10 from squared grid distances."""
    variance = sigma.square()
    return torch.exp(-squared_distance / (2.0 * variance)) / (2.0 * math.pi * variance)


def _normalizer(height: int, width: int, normalization: str) -> float:
    cells = float(height * width)
    return cells * cells if normalization == "pairs" else cells


def _as_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=like.dtype).reshape(())
    return torch.tensor(float(value), device=like.device, dtype=like.dtype)


def _check_activations(activations: Tensor) -> None:
    check_shape("activations", activations, "[B, C, h, w]", dims=4, dtype="float")
    if 0 in activations.shape:
        raise ValueError(f"activations must not be empty, got shape {tuple(activations.shape)}")


def _grid_image(image: Tensor, activations: Tensor) -> Tensor:
    """Validate the image against the activations and bring it to their grid."""
    check_shape("image", image, "[B, 3, H, W] RGB", shape=(None, 3, None, None), dtype="float",
                what="tensor in [0, 1]")
    if image.shape[0] != activations.shape[0]:
        raise ValueError(f"image batch {image.shape[0]} != activations batch "
                         f"{activations.shape[0]}")
    if image.device != activations.device:
        raise ValueError(f"image is on {image.device}, activations on {activations.device}")
    low, high = float(image.amin()), float(image.amax())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"image must hold RGB in [0, 1] (undo any mean/std normalisation), "
                         f"got values in [{low:.3g}, {high:.3g}]")
    if tuple(image.shape[-2:]) != tuple(activations.shape[-2:]):
        image = downsample_image(image, *activations.shape[-2:])
    return image.clamp(0.0, 1.0)


def _check_scalar(name: str, value: float | Tensor) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(f"{name} must be a float or a one-element float tensor, "
                             f"got {describe(value)}")
        number = float(value.detach())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"{name} must be a float or a one-element tensor, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _check_options(eps: float, normalization: str) -> None:
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    if normalization not in ("pairs", "pixels"):
        raise ValueError(f"normalization must be 'pairs' or 'pixels', got {normalization!r}")
