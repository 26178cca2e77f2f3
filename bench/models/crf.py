"""Dense CRF refinement of the localization ROI (paper 3.3 and 3.9).

The paper uses a conditional random field "to optimize the ROI segmentation results in first
network" without giving its form or parameters. We use the fully connected CRF of Kraehenbuehl
and Koltun (2011) through ``pydensecrf`` (distribution ``pydensecrf2``, an optional extra):

* unary: ``-log p`` for the two labels (background ``1 - p``, ROI ``p``), ``p`` clipped to
  [``clip``, 1 - ``clip``] so no pixel is certain and the pairwise terms can still move it;
* pairwise Gaussian (smoothness): ``sxy_gaussian`` pixels, weight ``compat_gaussian``;
* pairwise bilateral (appearance): ``sxy_bilateral`` pixels and ``schan_bilateral`` intensity
  units on the slice min-max normalised to [0, 1] (0.05 ~ 13 grey levels of 255, the value
  commonly used with 8-bit images), weight ``compat_bilateral``;
* ``n_iter`` mean-field iterations; the label with the higher marginal wins.

Defaults are the values popularised by DeepLab's CRF post-processing, with the colour scale
converted to normalised CT intensity. They are function defaults, not config fields, because
the paper gives none to reproduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.errors import ConfigError

CRF_MISSING = "cascade.crf=true needs the optional CRF package: pip install 'liverbench[crf]' (pydensecrf2)"


def _densecrf() -> tuple[Any, Any]:
    try:
        import pydensecrf.densecrf as dcrf  # lazy: optional extra [crf]; its absence is a one-line ConfigError
        import pydensecrf.utils as dutils  # lazy: optional extra [crf], as above
    except ImportError:
        raise ConfigError(CRF_MISSING) from None
    return dcrf, dutils


def require_crf(enabled: bool) -> None:
    """When the CRF is asked for, refuse in one line (before any training) if pydensecrf2 is missing."""
    if enabled:
        _densecrf()


def crf_available() -> bool:
    try:
        _densecrf()
    except ConfigError:
        return False
    return True


def normalise_slice(image: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (a constant slice becomes all zeros): the bilateral term's intensity scale."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    if hi - lo <= 0:
        return np.zeros_like(image)
    return (image - lo) / (hi - lo)


def crf_refine(
    prob: np.ndarray,
    image: np.ndarray,
    n_iter: int = 5,
    sxy_gaussian: float = 3.0,
    compat_gaussian: float = 3.0,
    sxy_bilateral: float = 20.0,
    schan_bilateral: float = 0.05,
    compat_bilateral: float = 5.0,
    clip: float = 0.01,
) -> np.ndarray:
    """Refine one slice's foreground probability ``prob`` (H, W) given the slice ``image`` (H, W).

    Returns the refined binary ROI (H, W) bool.
    """
    dcrf, dutils = _densecrf()
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2 or prob.shape != np.shape(image):
        raise ConfigError(f"crf_refine: prob {prob.shape} and image {np.shape(image)} must be equal 2-D shapes")
    h, w = prob.shape
    p = np.clip(prob, clip, 1.0 - clip)
    unary = np.ascontiguousarray(-np.log(np.stack([1.0 - p, p]).reshape(2, -1)), dtype=np.float32)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary)
    gauss = dutils.create_pairwise_gaussian(sdims=(sxy_gaussian, sxy_gaussian), shape=(h, w))
    crf.addPairwiseEnergy(np.ascontiguousarray(gauss, dtype=np.float32), compat=compat_gaussian)
    feats = dutils.create_pairwise_bilateral(
        sdims=(sxy_bilateral, sxy_bilateral),
        schan=(schan_bilateral,),
        img=normalise_slice(image)[..., None],
        chdim=2,
    )
    crf.addPairwiseEnergy(np.ascontiguousarray(feats, dtype=np.float32), compat=compat_bilateral)
    marginals = np.asarray(crf.inference(n_iter)).reshape(2, h, w)
    return marginals[1] > marginals[0]


__all__ = ["CRF_MISSING", "crf_available", "require_crf", "normalise_slice", "crf_refine"]
