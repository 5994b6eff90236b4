r"""DenseCRF refinement and the box constraint (docs/method.md §7).

:func:`dense_crf` is the fully connected CRF of Krähenbühl and Koltun (``pydensecrf``) with the
unary :math:`\psi_u(x_p = k) = -\log \max(P_k(p), \epsilon)` and the pairwise kernels

.. math::
    \mu_g \exp\!\Big(-\frac{\lVert p_i - p_j \rVert^2}{2\theta_\gamma^2}\Big)
    + \mu_b \exp\!\Big(-\frac{\lVert p_i - p_j \rVert^2}{2\theta_\alpha^2}
                       -\frac{\lVert I_i - I_j \rVert^2}{2\theta_\beta^2}\Big)

with Potts compatibilities ``μ_g = 3``, ``μ_b = 3`` and ``θ_γ = 4``, ``θ_α = 83``,
``θ_β = 5`` (RGB 0..255), 10 mean-field iterations.

:func:`clear_outside_boxes` is the box constraint of box runs: a foreground class cannot occur
outside its own boxes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from graphwsss.data.records import BACKGROUND, IGNORE_INDEX, Box

PROBABILITY_FLOOR = 1e-8


def _import_densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as error:
        raise ImportError("dense_crf needs pydensecrf: install the 'pydensecrf2' package "
                          "(pip install pydensecrf2), or run without the CRF "
                          "(crf.enabled=false)") from error
    return dcrf


def dense_crf(image: np.ndarray, probs: np.ndarray, iterations: int = 10,
              gaussian_sxy: float = 4.0, gaussian_compat: float = 3.0,
              bilateral_sxy: float = 83.0, bilateral_srgb: float = 5.0,
              bilateral_compat: float = 3.0, floor: float = PROBABILITY_FLOOR) -> np.ndarray:
    r"""DenseCRF mean-field inference from class probabilities (docs/method.md §7 defaults).

    Args:
        image: ``[H, W, 3]`` uint8 RGB (the bilateral kernel's colours).
        probs: ``[K, H, W]`` float class probabilities (``K >= 1``).
        iterations: mean-field iterations.
        gaussian_sxy, gaussian_compat: ``θ_γ`` and ``μ_g`` of the smoothness kernel.
        bilateral_sxy, bilateral_srgb, bilateral_compat: ``θ_α``, ``θ_β`` and ``μ_b`` of the
            appearance kernel.
        floor: ``ε``, the probability floor of the unary (``-log 0`` is infinite).

    Returns:
        ``[K, H, W]`` float32 marginals (each pixel sums to 1).
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        raise ValueError("image must be an [H, W, 3] uint8 array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} "
                         f"shape {getattr(image, 'shape', None)}")
    if not isinstance(probs, np.ndarray):
        raise TypeError(f"probs must be an np.ndarray [K, H, W], got {type(probs).__name__}"
                        " (DenseCRF runs on the CPU: convert with .cpu().numpy())")
    if probs.ndim != 3 or probs.shape[0] < 1 or probs.shape[1:] != image.shape[:2] \
            or not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be float [K, H, W] with (H, W) = {image.shape[:2]}, got "
                         f"{probs.dtype} shape {probs.shape}")
    if iterations < 0:
        raise ValueError(f"iterations must be non-negative, got {iterations}")
    dcrf = _import_densecrf()
    num_classes, height, width = probs.shape
    # pydensecrf wants C-contiguous float32 [K, N] unaries and a C-contiguous uint8 image.
    unary = -np.log(np.clip(probs.reshape(num_classes, -1), floor, 1.0))
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=float(gaussian_sxy), compat=float(gaussian_compat))
    crf.addPairwiseBilateral(sxy=float(bilateral_sxy), srgb=float(bilateral_srgb),
                             rgbim=np.ascontiguousarray(image), compat=float(bilateral_compat))
    marginals = np.asarray(crf.inference(int(iterations)), dtype=np.float32)
    return marginals.reshape(num_classes, height, width)


def clear_outside_boxes(values: np.ndarray | torch.Tensor,
                        boxes: Sequence[Box]) -> np.ndarray | torch.Tensor:
    r"""Every foreground class cleared outside its own boxes (box runs, docs/method.md §7).

    * Probabilities ``[K, H, W]``: :math:`P_c(p) \leftarrow 0` for every class ``c >= 1`` and
      pixel ``p`` outside all boxes of class ``c`` (a class without a box is cleared
      everywhere), then each pixel is renormalised to sum 1; a pixel left with nothing (all its
      mass was cleared) becomes background with probability 1.
    * Labels ``[H, W]`` integer: a class pixel outside all boxes of its class becomes background
      (0); 255 stays 255.

    Works on ``np.ndarray`` and on ``torch.Tensor`` (on the tensor's device) alike.

    Args:
        values: ``[K, H, W]`` float probabilities or ``[H, W]`` integer labels.
        boxes: the image's boxes, class ids below ``K`` for probabilities.

    Returns:
        A new array or tensor of the same shape, dtype and type.
    """
    is_tensor = isinstance(values, torch.Tensor)
    if not is_tensor and not isinstance(values, np.ndarray):
        raise TypeError(f"expected an np.ndarray or torch.Tensor, got {type(values).__name__}")
    floating = values.is_floating_point() if is_tensor else np.issubdtype(values.dtype,
                                                                           np.floating)
    if values.ndim == 2 and not floating:
        inside = (torch.zeros(values.shape, dtype=torch.bool, device=values.device) if is_tensor
                  else np.zeros(values.shape, dtype=bool))
        for box in boxes:
            inside[box.slices()] |= values[box.slices()] == box.class_id
        foreground = (values != BACKGROUND) & (values != IGNORE_INDEX)
        cleared = values.clone() if is_tensor else values.copy()
        cleared[foreground & ~inside] = BACKGROUND
        return cleared
    if values.ndim != 3 or not floating:
        raise ValueError(f"expected float probabilities [K, H, W] or integer labels [H, W], got "
                         f"{values.dtype} shape {tuple(values.shape)}")
    num_classes = values.shape[0]
    for box in boxes:
        if not 1 <= box.class_id < num_classes:
            raise ValueError(f"{box} has a class id outside the {num_classes} probability maps")
    allowed = (torch.zeros(values.shape, dtype=torch.bool, device=values.device) if is_tensor
               else np.zeros(values.shape, dtype=bool))
    allowed[BACKGROUND] = True
    for box in boxes:
        rows, cols = box.slices()
        allowed[box.class_id, rows, cols] = True
    cleared = values * allowed
    total = cleared.sum(0)
    emptied = total <= 0
    cleared[BACKGROUND][emptied] = 1
    total[emptied] = 1
    return cleared / total[None]
