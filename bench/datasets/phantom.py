"""A seeded synthetic abdominal CT, written in the LiTS layout: the data set that needs no download.

Why a phantom: every command (train, evaluate, report, the CI golden tables) must run on a fresh
machine, so the default data set is generated, not fetched. It is built to be *learnable but not
trivial*: the liver is a smooth irregular blob whose size, position and shape vary per case, and
it touches organs of liver-like attenuation (stomach, spleen, IVC, kidney cortex, myocardium), so
a HU threshold cannot separate it (tests/test_phantom.py checks that an oracle-tuned threshold
stays far below a trained network) while a small U-Net learns it from shape and position.

Anatomy (portal-venous phase, HU): air -1000 outside an elliptic body; subcutaneous fat ~-100;
abdominal wall and paraspinal muscle ~50; mesenteric fat and bowel mixed at random, with
enhancing small-bowel loops a little darker than the liver; pancreas (liver-like); lumbar
spine (cortical ~800, cancellous ~250, discs ~80) posteriorly; aorta ~170 and IVC (liver-like);
kidneys (cortex ~160, medulla ~60); spleen and stomach (wall and, in some cases, contents of
liver-like HU) touching the left lobe; gallbladder (~10, not liver); lung bases and heart in the
top slices above the liver dome; liver ~95-130 with bright portal/hepatic vessels; 1-3
hypodense lesions ~30-60 strictly inside the liver, one of them small. Partial-volume blur, then
correlated Gaussian noise of 10-20 HU. Labels: 0 background, 1 liver (vessels included, as in
LiTS), 2 lesion.

Axes of a `Case`: (Z, Y, X) with Z inferior -> superior, Y anterior -> posterior, X from the
patient's right to left (radiological view: the liver is on the image's left). On disk the
volume is stored (x, y, z) with the in-plane axes flipped in the affine (diag(-sx, -sy, sz)), as
LiTS files are, so a reader has to reorient from the affine rather than assume an axis order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from bench.atomic import write_json
from bench.datasets import DATASETS
from bench.datasets.base import Case
from bench.datasets.lits import LitsDataset
from bench.datasets.nifti import save_nifti_zyx, zyx_affine_from_xyz
from bench.errors import DataError
from bench.paths import DEFAULT_DATA_ROOT
from bench.progress import note

# The embedded default data set (`default_root`): small enough to generate in seconds.
DEFAULT_CASES = 16  # splits 11/3/2: two test patients, three for validation
DEFAULT_SIZE = 128
DEFAULT_SLICES = 48
DEFAULT_SEED = 0
DEFAULT_ROOT = DEFAULT_DATA_ROOT / "phantom"

# Physical field of view: in-plane 0.8 mm x 512 (a typical abdominal CT), 240 mm craniocaudal,
# so the liver (about 150 mm tall) leaves liver-free slices at the top and the bottom.
FOV_MM = 0.8 * 512
Z_EXTENT_MM = 240.0
GENERATOR_VERSION = 1
MANIFEST = "phantom.json"

_LITS_FILE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$", re.IGNORECASE)


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` in a data set seeded ``seed`` (independent streams per case)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def phantom_spacing(size: int, slices: int) -> tuple[float, float, float]:
    """(z, y, x) voxel spacing in mm: the field of view is fixed, the grid sets the resolution."""
    return (Z_EXTENT_MM / slices, FOV_MM / size, FOV_MM / size)


# ---------------------------------------------------------------- geometry helpers


class _Grid:
    """Voxel-centre coordinates in mm, centred in-plane, z from the bottom slice (broadcastable)."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        self.shape = shape
        self.spacing = spacing
        nz, ny, nx = shape
        sz, sy, sx = spacing
        self.z = ((np.arange(nz, dtype=np.float32) + 0.5) * sz)[:, None, None]
        self.y = ((np.arange(ny, dtype=np.float32) + 0.5) * sy - ny * sy / 2)[None, :, None]
        self.x = ((np.arange(nx, dtype=np.float32) + 0.5) * sx - nx * sx / 2)[None, None, :]

    def radius(self, center: tuple[float, float, float], semi: tuple[float, float, float]) -> np.ndarray:
        """Normalised ellipsoid radius: < 1 inside. ``center``/``semi`` are (z, y, x) in mm."""
        cz, cy, cx = center
        az, ay, ax = semi
        return np.sqrt(((self.z - cz) / az) ** 2 + ((self.y - cy) / ay) ** 2 + ((self.x - cx) / ax) ** 2)

    def radius2d(self, center: tuple[float, float], semi: tuple[float, float], power: float = 2.0) -> np.ndarray:
        """In-plane (super)ellipse radius, constant along z; shape (1, Y, X)."""
        cy, cx = center
        ay, ax = semi
        return (np.abs((self.y - cy) / ay) ** power + np.abs((self.x - cx) / ax) ** power) ** (1.0 / power)


def _dome(g: _Grid, center: tuple[float, float], semi: tuple[float, float], top: float, height: float) -> np.ndarray:
    """Height (z, mm) of a hemidiaphragm over the (y, x) plane: an ellipsoidal cap peaking at ``top``."""
    q = ((g.y - center[0]) / semi[0]) ** 2 + ((g.x - center[1]) / semi[1]) ** 2
    return top - height + height * np.sqrt(np.clip(1.0 - q, 0.0, None))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], coarse: tuple[int, int, int]) -> np.ndarray:
    """A smooth random field with unit standard deviation: coarse Gaussian noise, Gaussian-kernel upsampling.

    Separable (one small matrix per axis), so it costs a few tensor products instead of a cubic
    spline zoom of the whole grid (which dominated the generation time).
    """
    base = rng.standard_normal(coarse).astype(np.float32)
    weights = []
    for n, c in zip(shape, coarse):
        t = (np.arange(n, dtype=np.float32) + 0.5) / n * c - 0.5  # voxel centres in coarse-grid units
        w = np.exp(-0.5 * ((t[:, None] - np.arange(c, dtype=np.float32)[None, :]) / 0.75) ** 2)
        weights.append(w / w.sum(axis=1, keepdims=True))
    out = np.einsum("zi,yj,xk,ijk->zyx", *weights, base, optimize=True).astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


# ---------------------------------------------------------------- the generator


class _T:
    """Codes of the tissue map: structures are painted in order (later ones win); `_hu_table` gives their HU."""

    AIR, FAT, MUSCLE, BOWEL, VFAT, BONE, MARROW, DISC, CSF, AORTA, IVC = range(11)
    KCORTEX, KMEDULLA, SPLEEN, SWALL, SCONTENT, SAIR, LUNG, MYO, BLOOD, GALL, LIVER, VESSEL, LESION = range(11, 24)
    PANCREAS, LOOPS = 24, 25
    COUNT = LOOPS + 1


@dataclass(frozen=True)
class _Trunk:
    """The frame every organ is placed in: the grid, the body outline and the abdominal cavity."""

    g: _Grid
    center: tuple[float, float]  # (y, x) mm of the body outline
    axes: tuple[float, float]  # its (y, x) semi-axes, mm
    body: np.ndarray  # (Z, Y, X) inside the skin
    cavity: np.ndarray  # (Z, Y, X) inside the abdominal wall: where the viscera may go

    @property
    def vox(self) -> float:
        """The coarsest voxel side: thin structures (stomach wall, lesions) are kept at least this thick."""
        return max(self.g.spacing)


@dataclass(frozen=True)
class _Spine:
    """The vertebral column: the posterior landmark that kidneys, great vessels and pancreas are placed from."""

    center: tuple[float, float]  # (y, x) mm of the vertebral body
    radius: float  # its antero-posterior semi-axis, mm
    body: np.ndarray  # (Z, Y, X) the vertebral body (kept out of the lungs)


@dataclass(frozen=True)
class _LiverShape:
    """The liver's outline, drawn before its neighbours (placed against it) and painted after them."""

    hu: float  # parenchyma HU of this case; liver-like neighbours are drawn relative to it
    z: float  # craniocaudal centre of the right lobe, mm
    right_c: tuple[float, float, float]  # right lobe centre (z, y, x), mm
    right_a: tuple[float, float, float]  # right lobe semi-axes, mm
    left_c: tuple[float, float, float]
    left_a: tuple[float, float, float]
    noise: np.ndarray  # the smooth field that makes its surface irregular (reused for the spleen)
    mask: np.ndarray  # (Z, Y, X) the outline inside the cavity, before the diaphragm cuts its top

    @property
    def top(self) -> float:
        """z (mm) of the right lobe's dome, where the right hemidiaphragm sits."""
        return self.right_c[0] + self.right_a[0]


def generate_case(
    seed: int,
    size: int = DEFAULT_SIZE,
    slices: int = DEFAULT_SLICES,
    *,
    case_id: str | None = None,
    noise_hu: tuple[float, float] = (10.0, 20.0),
) -> Case:
    """One synthetic abdominal CT (HU int16, (Z, Y, X)) with its 0/1/2 label; same seed, same case.

    The recipe: paint the anatomy into a tissue map, outside in and later structures winning
    (body wall, gut, spine, then the organs placed around the liver, the liver last with its
    interior and lesions); the label follows the liver; each tissue gets a per-case HU; then the
    scanner's blur and noise. The steps draw from one random stream in this order; reordering them (or any draw inside)
    changes every case, which is a new GENERATOR_VERSION (tests/test_phantom.py pins the output).
    """
    if size < 16 or slices < 8:
        raise ValueError(f"phantom grid {slices}x{size}x{size} is too small (need size >= 16, slices >= 8)")
    rng = np.random.default_rng(seed)
    spacing = phantom_spacing(size, slices)
    shape = (slices, size, size)
    g = _Grid(shape, spacing)
    tissue = np.zeros(shape, dtype=np.uint8)

    trunk = _body_wall(rng, g, tissue)
    mix = _mesentery(rng, trunk, tissue)
    spine = _spine(rng, trunk, tissue)
    aorta, ivc = _great_vessels(rng, g, spine)
    liver_shape = _liver_geometry(rng, trunk)
    _kidneys(rng, trunk, spine, liver_shape, tissue)
    spleen_hu, stomach_iso, stomach = _spleen_and_stomach(rng, trunk, liver_shape, tissue)
    pancreas_hu = _pancreas(rng, trunk, spine, liver_shape, stomach, mix, tissue)
    dome = _chest(rng, trunk, spine, liver_shape, tissue)
    liver = _liver_interior(rng, trunk, liver_shape, dome, aorta, ivc, tissue)
    lesions, lesion_info = _place_lesions(rng, g, liver, trunk.vox)
    tissue[lesions > 0] = _T.LESION

    label = np.zeros(shape, dtype=np.uint8)
    label[liver] = 1
    label[lesions > 0] = 2

    hu = _hu_table(rng, liver_shape.hu, spleen_hu, pancreas_hu, stomach_iso)
    image = _attenuation(tissue, hu, lesions, lesion_info, mix)
    image, noise_sd = _scan(rng, image, spacing, noise_hu)

    params = {
        "seed": int(seed), "size": size, "slices": slices, "generator_version": GENERATOR_VERSION,
        "liver_hu": round(float(liver_shape.hu), 1), "spleen_hu": round(float(spleen_hu), 1),
        "stomach_iso": bool(stomach_iso), "noise_sd_hu": round(float(noise_sd), 1),
        "lesions": [{"radius_mm": round(i["radius_mm"], 1), "hu": round(float(i["hu"]), 1)} for i in lesion_info],
    }
    return Case(id=case_id or str(seed), image=image, label=label, spacing=spacing, meta={"phantom": params})


def _body_wall(rng: np.random.Generator, g: _Grid, tissue: np.ndarray) -> _Trunk:
    """Skin outline, subcutaneous fat, abdominal wall muscle; returns the cavity they enclose.

    An abdomen's cross-section is wider than deep and rather boxy, hence a superellipse (power
    2.4) of semi-axes ~115 x 160 mm, slightly off-centre; it tapers a little towards the top and
    bottom of the field. Fat (12-30 mm, ~-100 HU) and wall muscle (8-13 mm, ~50 HU) are concentric
    shells, so the cavity inside keeps the body's shape.
    """
    u = rng.uniform
    center = (u(5, 15), u(-8, 8))
    axes = (u(105, 125), u(150, 175))
    zt = (g.z / Z_EXTENT_MM - 0.5)  # -0.5 (bottom) .. 0.5 (top)
    taper = 1.0 - 0.06 * (2 * zt) ** 2
    r_body = g.radius2d(center, axes, power=2.4) / taper
    fat_t = u(12, 30)  # subcutaneous fat thickness, mm
    wall_t = u(8, 13)  # abdominal wall muscle, mm
    body = r_body < 1
    r_inner = g.radius2d(center, (axes[0] - fat_t, axes[1] - fat_t), power=2.4) / taper
    r_cavity = g.radius2d(center, (axes[0] - fat_t - wall_t, axes[1] - fat_t - wall_t), power=2.4) / taper
    tissue[body] = _T.FAT
    tissue[(r_inner < 1) & body] = _T.MUSCLE
    cavity = np.broadcast_to(r_cavity < 1, g.shape)
    return _Trunk(g=g, center=center, axes=axes, body=body, cavity=cavity)


def _mesentery(rng: np.random.Generator, trunk: _Trunk, tissue: np.ndarray) -> np.ndarray:
    """Fill the cavity with bowel and visceral fat, plus enhancing small-bowel loops; returns the mixing field.

    What the organs do not occupy is gut in its mesenteric fat: a smooth random field splits the
    cavity into bowel (~35 HU) and fat (~-85 HU) patches. Thin bands where a second field is
    near zero become enhancing small-bowel loops (wall and contrast-filled lumen) a little darker
    than the liver, so a liver-HU window also picks up tubular structures all over the abdomen.
    The mixing field is returned because the pancreas outline and the tissue inhomogeneity reuse it.
    """
    u = rng.uniform
    shape, cavity = trunk.g.shape, trunk.cavity
    mix = _smooth_field(rng, shape, (6, 10, 10))
    tissue[cavity] = _T.BOWEL
    tissue[cavity & (mix > u(0.2, 0.7))] = _T.VFAT
    loops = _smooth_field(rng, shape, (8, 12, 12))
    tissue[cavity & (tissue == _T.BOWEL) & (np.abs(loops) < u(0.25, 0.4))] = _T.LOOPS
    return mix


def _spine(rng: np.random.Generator, trunk: _Trunk, tissue: np.ndarray) -> _Spine:
    """Lumbar spine: vertebral body, discs, canal and posterior arch, with the paraspinal muscles.

    The vertebral body (radius 17-22 mm) sits 50-60 mm in front of the back skin. A ~3 mm
    cortical shell (~750 HU) surrounds cancellous bone (~250 HU); every 28-34 mm an
    intervertebral disc (~80 HU, at least 7 mm or one slice thick) interrupts it. Behind it the
    canal (CSF ~10 HU) inside the bony arch, and on either side the erector spinae muscles.
    Bone gives the volume its only voxels far above the liver, as in a real scan.
    """
    u = rng.uniform
    g, body_c, body_a, shape = trunk.g, trunk.center, trunk.axes, trunk.g.shape
    back = body_c[0] + body_a[0]
    vert_c = (back - u(50, 60), body_c[1] + u(-4, 4))
    vert_r = u(17, 22)
    r_vert = g.radius2d(vert_c, (vert_r, vert_r * 1.1))
    disc_period, disc_phase = u(28, 34), u(0, 30)
    disc = (np.mod(g.z + disc_phase, disc_period) < max(7.0, g.spacing[0])) * np.ones((1, 1, 1), bool)
    para = (g.radius2d((vert_c[0] + 25, vert_c[1] - 35), (30, 22)) < 1) | (
        g.radius2d((vert_c[0] + 25, vert_c[1] + 35), (30, 22)) < 1
    )
    tissue[np.broadcast_to(para & trunk.body, shape)] = _T.MUSCLE
    canal_c = (vert_c[0] + vert_r + 10, vert_c[1])
    arch = g.radius2d(canal_c, (15, 14)) < 1
    tissue[np.broadcast_to(arch & trunk.body, shape)] = _T.BONE
    tissue[np.broadcast_to(g.radius2d(canal_c, (8, 8)) < 1, shape)] = _T.CSF
    vb = np.broadcast_to(r_vert < 1, shape)
    tissue[vb] = _T.BONE
    tissue[vb & (np.broadcast_to(r_vert, shape) < 1 - 3.0 / vert_r)] = _T.MARROW
    tissue[vb & disc] = _T.DISC
    return _Spine(center=vert_c, radius=vert_r, body=vb)


def _great_vessels(rng: np.random.Generator, g: _Grid, spine: _Spine) -> tuple[np.ndarray, np.ndarray]:
    """(aorta, IVC) masks: straight cylinders in front of the spine, painted later over the liver.

    The aorta (radius 10-13 mm, ~170 HU) runs just left-anterior of the vertebral body, the IVC
    (an ellipse 10-13 x 12-16 mm) right-anterior, along the back of the liver. In the
    portal-venous phase the IVC enhances like the liver, so it is a liver-like structure that
    touches the liver and must not be labelled liver.
    """
    u = rng.uniform
    vert_c, vert_r = spine.center, spine.radius
    aorta_r = u(10, 13)
    aorta = np.broadcast_to(
        g.radius2d((vert_c[0] - vert_r - aorta_r - 2, vert_c[1] + 14), (aorta_r, aorta_r)) < 1, g.shape
    )
    ivc_c = (vert_c[0] - vert_r - 8, vert_c[1] - u(22, 30))
    ivc = np.broadcast_to(g.radius2d(ivc_c, (u(10, 13), u(12, 16))) < 1, g.shape)
    return aorta, ivc


def _liver_geometry(rng: np.random.Generator, trunk: _Trunk) -> _LiverShape:
    """The liver's outline and HU, drawn first because the other organs are placed against it.

    Two ellipsoids: the large right lobe in the patient's right upper quadrant (semi-axes ~70 mm
    craniocaudal, centred at 52-60 % of the field so liver-free slices remain above and below),
    and the smaller left lobe, higher, anterior and reaching across the midline. Their union is
    roughened by a smooth field, so size, position and shape vary per case (learnable from shape
    and position, not from a template). Parenchyma 95-130 HU, as in the portal-venous phase.
    """
    u = rng.uniform
    g, body_c = trunk.g, trunk.center
    liver_hu = u(95, 130)
    lz = Z_EXTENT_MM * u(0.52, 0.60)
    right_c = (lz, body_c[0] + u(-12, 8), body_c[1] - u(50, 70))
    right_a = (u(62, 76), u(55, 68), u(50, 64))
    left_c = (lz + u(5, 20), body_c[0] - u(28, 42), body_c[1] + u(5, 25))
    left_a = (u(28, 40), u(24, 34), u(45, 62))
    shape_noise = _smooth_field(rng, g.shape, (5, 7, 7))
    r_liver = np.minimum(g.radius(right_c, right_a), g.radius(left_c, left_a)) + 0.14 * shape_noise
    mask = (r_liver < 1) & trunk.cavity
    return _LiverShape(
        hu=liver_hu, z=lz, right_c=right_c, right_a=right_a, left_c=left_c, left_a=left_a, noise=shape_noise, mask=mask
    )


def _kidneys(
    rng: np.random.Generator, trunk: _Trunk, spine: _Spine, liver: _LiverShape, tissue: np.ndarray
) -> None:
    """Both kidneys beside the spine; the right one lower, against the liver's posterior-inferior surface.

    The liver pushes the right kidney down, so its centre is tied to the right lobe's bottom,
    while the left one hangs 25-40 mm below the liver's centre. Ellipsoids ~50 x 27 x 29 mm with
    a ~7 mm cortex (~160 HU, brighter than the liver) around the medulla (~60 HU, darker).
    """
    u = rng.uniform
    g, vert_c = trunk.g, spine.center
    right_c, right_a, lz = liver.right_c, liver.right_a, liver.z
    for side, zc in ((-1, right_c[0] - right_a[0] * u(0.6, 0.8)), (1, lz - u(25, 40))):
        kc = (zc, vert_c[0] - u(0, 10), vert_c[1] + side * u(55, 68))
        ka = (u(45, 55), u(24, 30), u(26, 32))
        rk = g.radius(kc, ka)
        kid = (rk < 1) & trunk.cavity
        tissue[kid] = _T.KCORTEX
        tissue[kid & (rk < 1 - 7.0 / min(ka))] = _T.KMEDULLA


def _spleen_and_stomach(
    rng: np.random.Generator, trunk: _Trunk, liver: _LiverShape, tissue: np.ndarray
) -> tuple[float, bool, np.ndarray]:
    """Spleen (posterior left, high) and stomach (left upper quadrant, against the left lobe).

    Both are classic confusers of a liver model: in the portal-venous phase the spleen enhances
    like the liver (-8..+15 HU from it), and the stomach wall does too (-12..+5); the stomach
    sits right behind the left lobe, the spleen further back and left.
    The stomach holds food of liver-like attenuation in 60 % of cases (water-like ~15 HU
    otherwise) and, in 60 % of cases, an air cap at its anterior top, where gas rises in a
    supine patient. The spleen's outline shares the liver's roughness field.
    Returns (spleen HU, whether the contents are liver-like, the stomach mask).
    """
    u = rng.uniform
    g, body_c, cavity = trunk.g, trunk.center, trunk.cavity
    lz, left_c, left_a = liver.z, liver.left_c, liver.left_a
    spleen_hu = liver.hu + u(-8, 15)
    sp_c = (lz + u(0, 20), left_c[1] + left_a[1] + u(15, 30), body_c[1] + u(75, 95))
    sp_a = (u(45, 58), u(38, 48), u(24, 32))
    spleen = (g.radius(sp_c, sp_a) + 0.1 * liver.noise < 1) & cavity
    st_c = (left_c[0] - u(10, 25), left_c[1] + left_a[1] * u(0.9, 1.3), left_c[2] + u(15, 35))
    st_a = (u(45, 60), u(32, 42), u(38, 50))
    r_st = g.radius(st_c, st_a)
    stomach = (r_st < 1) & cavity
    wall_frac = 1 - max(5.0, 1.2 * trunk.vox) / min(st_a)
    iso_contents = rng.random() < 0.6  # food of liver-like attenuation in most cases
    tissue[stomach] = _T.SWALL
    tissue[stomach & (r_st < wall_frac)] = _T.SCONTENT
    if rng.random() < 0.6:  # an air cap at the anterior top of the stomach
        tissue[stomach & (r_st < wall_frac) & (g.y < st_c[1] - 0.45 * st_a[1]) & (g.z > st_c[0])] = _T.SAIR
    tissue[spleen] = _T.SPLEEN
    return spleen_hu, iso_contents, stomach


def _pancreas(
    rng: np.random.Generator,
    trunk: _Trunk,
    spine: _Spine,
    liver: _LiverShape,
    stomach: np.ndarray,
    mix: np.ndarray,
    tissue: np.ndarray,
) -> float:
    """The pancreas across the upper abdomen, below the liver's centre; returns its HU.

    Three ellipsoids in a row: the head on the right by the liver's visceral surface, the body
    crossing in front of the aorta, the tail rising and running back towards the splenic hilum.
    It enhances almost like the liver (0-20 HU darker), never overlaps the stomach, and its
    outline is lobulated by the mesentery's field.
    """
    u = rng.uniform
    g, body_c = trunk.g, trunk.center
    pan_hu = liver.hu + u(-20, 0)
    pz = liver.z - u(25, 40)
    py = spine.center[0] - spine.radius - u(28, 38)
    r_pan = np.minimum.reduce([
        g.radius((pz - 8, py + 5, body_c[1] - u(30, 45)), (u(16, 22), u(14, 18), u(18, 24))),
        g.radius((pz, py, body_c[1] + 5), (u(12, 16), u(9, 12), u(32, 40))),
        g.radius((pz + 10, py + 18, body_c[1] + u(50, 65)), (u(12, 16), u(9, 12), u(24, 32))),
    ])
    pancreas = (r_pan + 0.1 * mix < 1) & trunk.cavity & ~stomach
    tissue[pancreas] = _T.PANCREAS
    return pan_hu


def _chest(
    rng: np.random.Generator, trunk: _Trunk, spine: _Spine, liver: _LiverShape, tissue: np.ndarray
) -> np.ndarray:
    """Diaphragm, lung bases and heart in the top slices; returns the diaphragm height map (z, mm).

    Each hemidiaphragm is an ellipsoidal dome: the right one sits 4 mm above the right lobe's top
    and follows its footprint (so it caps the liver), the left one is lower and further left.
    Above the domes: aerated lung (~-850 HU) either side of the spine and the heart resting on
    the diaphragm, anterior and to the left, with a 12 mm myocardium of liver-like attenuation
    around the bright blood pool (~155 HU) -- another liver-like neighbour at the liver's dome.
    """
    u = rng.uniform
    g, body_c, cavity = trunk.g, trunk.center, trunk.cavity
    right_c, right_a = liver.right_c, liver.right_a
    liver_top = liver.top
    dome_r = _dome(g, (right_c[1], right_c[2]), (right_a[1] * 1.3, right_a[2] * 1.2), liver_top + 4, u(50, 70))
    dome_l = _dome(g, (body_c[0], body_c[1] + u(50, 70)), (right_a[1] * 1.6, 110.0), liver_top - u(0, 15), u(40, 60))
    dome = np.maximum(dome_r, dome_l)
    chest = cavity & (g.z > dome)
    heart_c = (Z_EXTENT_MM + u(10, 30), body_c[0] - u(20, 35), body_c[1] + u(10, 30))
    heart_a = (u(60, 75), u(55, 65), u(60, 75))
    rh = g.radius(heart_c, heart_a)
    heart = chest & (rh < 1)
    lungs = chest & ~heart & (np.abs(g.x - spine.center[1]) > spine.radius + 5)
    tissue[lungs & ~spine.body] = _T.LUNG
    tissue[heart] = _T.MYO
    tissue[heart & (rh < 1 - 12.0 / min(heart_a))] = _T.BLOOD
    return dome


def _liver_interior(
    rng: np.random.Generator,
    trunk: _Trunk,
    liver: _LiverShape,
    dome: np.ndarray,
    aorta: np.ndarray,
    ivc: np.ndarray,
    tissue: np.ndarray,
) -> np.ndarray:
    """Paint the liver under the diaphragm with its vessels; carve out IVC, aorta, gallbladder. Returns label 1.

    The liver stops 4 mm below the diaphragm. Portal and hepatic vessels (~160 HU) are where two
    independent smooth fields are both near zero: thin branching tubes, brighter than the
    parenchyma and labelled liver, as LiTS labels them. The IVC and aorta are painted over it and
    removed from the label. In 70 % of cases a gallbladder (bile ~10 HU, not liver) is carved
    out of the right lobe's anterior-inferior, medial part; otherwise it is absent (resected or
    contracted).
    """
    u = rng.uniform
    g, shape = trunk.g, trunk.g.shape
    right_c, right_a = liver.right_c, liver.right_a
    mask = liver.mask & ~(np.broadcast_to(g.z, shape) > dome - 4)
    tissue[mask] = _T.LIVER
    f1 = _smooth_field(rng, shape, (6, 9, 9))
    f2 = _smooth_field(rng, shape, (6, 9, 9))
    width = 0.10
    vessels = mask & (np.abs(f1) < width) & (np.abs(f2) < width * 2.5)
    tissue[vessels] = _T.VESSEL
    tissue[ivc] = _T.IVC
    tissue[aorta] = _T.AORTA
    mask &= ~ivc & ~aorta
    if rng.random() < 0.7:
        gb_c = (right_c[0] - right_a[0] * u(0.3, 0.5), right_c[1] - right_a[1] * u(0.35, 0.55), right_c[2] + u(10, 30))
        gb = g.radius(gb_c, (u(25, 35), u(13, 18), u(13, 18))) < 1
        mask &= ~gb
        tissue[gb & trunk.cavity] = _T.GALL
    return mask


def _hu_table(
    rng: np.random.Generator, liver_hu: float, spleen_hu: float, pancreas_hu: float, stomach_iso: bool
) -> np.ndarray:
    """HU of every tissue code for this case (portal-venous phase), each jittered per case.

    The liver-like structures (IVC, stomach wall and food, myocardium, bowel loops; spleen and
    pancreas, drawn with their organs) are set relative to this case's liver, so they stay
    within ~25 HU of it whatever the liver's own value: no fixed window isolates the liver.
    """
    u = rng.uniform
    values = {  # a dict literal is evaluated top to bottom: this is the order of the draws
        _T.AIR: -1000,
        _T.FAT: u(-110, -90),
        _T.MUSCLE: u(45, 60),
        _T.BOWEL: u(25, 45),
        _T.VFAT: u(-95, -75),
        _T.BONE: u(650, 850),  # cortical
        _T.MARROW: u(200, 300),  # cancellous
        _T.DISC: u(70, 95),
        _T.CSF: u(5, 15),
        _T.AORTA: u(150, 190),
        _T.IVC: liver_hu + u(-5, 10),
        _T.KCORTEX: u(145, 175),
        _T.KMEDULLA: u(45, 75),
        _T.SPLEEN: spleen_hu,
        _T.SWALL: liver_hu + u(-12, 5),
        _T.SAIR: -950,
        _T.SCONTENT: (liver_hu + u(-10, 10)) if stomach_iso else u(5, 25),  # food, or water-like
        _T.LUNG: u(-880, -820),
        _T.MYO: liver_hu + u(-15, 0),
        _T.BLOOD: u(140, 170),
        _T.GALL: u(0, 20),
        _T.LIVER: liver_hu,
        _T.VESSEL: u(150, 175),
        _T.PANCREAS: pancreas_hu,
        _T.LOOPS: liver_hu + u(-25, -5),
    }
    hu = np.zeros(_T.COUNT, dtype=np.float32)  # LESION stays 0: `_attenuation` shades each lesion
    for code, value in values.items():
        hu[code] = value
    return hu


def _attenuation(
    tissue: np.ndarray, hu: np.ndarray, lesions: np.ndarray, lesion_info: list[dict[str, Any]], mix: np.ndarray
) -> np.ndarray:
    """The noiseless HU map (float32): tissue HU, lesion shading, low-frequency inhomogeneity.

    Lesions are hypodense (~30-60 HU) and darken by up to 10 HU towards their centre (a less
    enhancing, often necrotic core, as in metastases); every soft tissue gets a ~4 HU smooth variation (the
    mesentery's field), so no organ is perfectly flat.
    """
    image = hu[tissue]
    for i, info in enumerate(lesion_info):  # hypodense, darker towards the centre
        m = lesions == i + 1
        image[m] = info["hu"] - 10.0 * (1 - np.clip(info["r"][m[info["box"]]], 0, 1))
    image += 4.0 * mix * (tissue > _T.AIR)  # low-frequency tissue inhomogeneity
    return image


def _scan(
    rng: np.random.Generator, image: np.ndarray, spacing: tuple[float, float, float], noise_hu: tuple[float, float]
) -> tuple[np.ndarray, float]:
    """Image formation: partial-volume blur, correlated noise, int16 HU; returns (image, noise SD).

    The blur is ~0.7 voxel in-plane and thinner along z for thick slices (a voxel then already
    averages across its thickness). Noise of SD drawn from ``noise_hu`` is white along z but
    correlated in-plane, as the reconstruction kernel makes CT noise. Values are rounded and
    clipped to the 12-bit CT range [-1024, 3071].
    """
    sigma_pv = (0.6 * min(1.0, 2.5 / spacing[0]), 0.7, 0.7)  # partial volume, in voxels
    image = ndimage.gaussian_filter(image, sigma_pv, mode="nearest")
    noise_sd = rng.uniform(*noise_hu)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0.0, 0.6, 0.6), mode="wrap")  # CT noise is correlated in-plane
    noise *= noise_sd / max(float(noise.std()), 1e-6)
    image += noise
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), noise_sd


def _place_lesions(
    rng: np.random.Generator, g: _Grid, liver: np.ndarray, vox: float
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """1-3 non-touching ellipsoids strictly inside the liver; the first large, the others small.

    Centres are drawn where the liver's distance map exceeds the lesion's extent plus a voxel, so
    every lesion lies inside the liver and keeps a liver rim (lesion label = 2 inside liver = 1).
    Radii never go below 1.2 voxels, so even a small lesion exists on coarse grids.
    """
    out = np.zeros(g.shape, dtype=np.uint8)
    info: list[dict[str, Any]] = []
    if not liver.any():
        return out, info
    spacing = np.asarray(g.spacing)
    nz = np.nonzero(liver)
    lo = np.array([max(int(a.min()) - 1, 0) for a in nz])
    hi = np.array([int(a.max()) + 2 for a in nz])
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    liver_box = liver[box]
    depth = ndimage.distance_transform_edt(liver_box, sampling=g.spacing)
    n = int(rng.integers(1, 4))
    radii = (rng.uniform(9, 24), rng.uniform(4, 10), rng.uniform(4, 14))[:n]
    placed: list[tuple[np.ndarray, float]] = []
    for k, radius in enumerate(radii):
        semi = np.maximum(radius, 1.2 * vox) * rng.uniform(0.8, 1.2, size=3)
        extent = float(semi.max())
        cand = np.argwhere(depth > extent + vox)
        if len(cand) and placed:
            c_mm = cand * spacing
            far = np.ones(len(cand), bool)
            for pc, pe in placed:
                far &= np.linalg.norm(c_mm - pc, axis=1) > extent + pe + 2 * vox
            cand = cand[far]
        if not len(cand):
            if k > 0:
                continue  # no room for another lesion: keep the ones placed
            # A small liver: shrink the first lesion to fit at its deepest point.
            cand = np.argwhere(depth == depth.max())
            semi = np.minimum(semi, max(float(depth.max()) - vox, 0.6 * vox))
            extent = float(semi.max())
        c = cand[int(rng.integers(len(cand)))]
        r = _radius_in_box(g, box, tuple(c + lo), semi)
        m = (r < 1) & liver_box
        if not m.any():  # a sub-voxel lesion: keep its centre voxel
            m[tuple(c)] = True
        out[box][m] = len(info) + 1
        placed.append((c * spacing, extent))
        info.append({"radius_mm": float(semi.mean()), "hu": float(rng.uniform(30, 60)), "r": r, "box": box})
    return out, info


def _radius_in_box(g: _Grid, box: tuple[slice, ...], center_vox: tuple[int, ...], semi: np.ndarray) -> np.ndarray:
    """Normalised ellipsoid radius around a voxel centre, evaluated on the box only."""
    z, y, x = g.z[box[0]], g.y[:, box[1]], g.x[:, :, box[2]]
    cz = float(g.z[center_vox[0], 0, 0])
    cy = float(g.y[0, center_vox[1], 0])
    cx = float(g.x[0, 0, center_vox[2]])
    return np.sqrt(((z - cz) / semi[0]) ** 2 + ((y - cy) / semi[1]) ** 2 + ((x - cx) / semi[2]) ** 2)


# ---------------------------------------------------------------- the LiTS layout on disk


def lits_affine_zyx(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """The (z, y, x) affine of a LiTS-style file: stored (x, y, z), in-plane axes flipped, centred in-plane.

    World is NIfTI RAS+: storing x with -sx means the first stored axis runs to the patient's left
    (and y with -sy to posterior), as LiTS volumes do, so readers must take the axes from the affine.
    """
    sz, sy, sx = spacing
    nz, ny, nx = shape
    affine_xyz = np.array(
        [[-sx, 0, 0, sx * (nx - 1) / 2], [0, -sy, 0, sy * (ny - 1) / 2], [0, 0, sz, 0.0], [0, 0, 0, 1]], dtype=float
    )
    return zyx_affine_from_xyz(affine_xyz)


def write_case(out_dir: str | Path, index: int, case: Case) -> tuple[Path, Path]:
    """Write ``volume-<index>.nii.gz`` (int16 HU) and ``segmentation-<index>.nii.gz`` (uint8), each atomically."""
    out_dir = Path(out_dir)
    affine = case.affine if case.affine is not None else lits_affine_zyx(case.image.shape, case.spacing)
    vol = save_nifti_zyx(out_dir / f"volume-{index}.nii.gz", case.image.astype(np.int16, copy=False), affine)
    if case.label is None:
        raise DataError(f"phantom case {case.id} has no label to write")
    seg = save_nifti_zyx(out_dir / f"segmentation-{index}.nii.gz", case.label.astype(np.uint8, copy=False), affine)
    return vol, seg


def manifest(cases: int, size: int, slices: int, seed: int) -> dict[str, Any]:
    """What `phantom.json` records: enough to regenerate the data set bit for bit."""
    return {
        "generator": "bench.datasets.phantom",
        "generator_version": GENERATOR_VERSION,
        "cases": int(cases),
        "size": int(size),
        "slices": int(slices),
        "seed": int(seed),
        "case_seeds": [case_seed(seed, i) for i in range(cases)],
        "spacing_zyx_mm": list(phantom_spacing(size, slices)),
        "layout": "LiTS: volume-N.nii.gz (int16 HU) + segmentation-N.nii.gz (uint8 0/1/2), stored x,y,z",
        "complete": True,
    }


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The `phantom.json` of a folder, or None when absent; a corrupt one is a `DataError`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def write_phantom(
    out_dir: str | Path,
    cases: int = DEFAULT_CASES,
    size: int = DEFAULT_SIZE,
    slices: int = DEFAULT_SLICES,
    seed: int = DEFAULT_SEED,
    on_case: Callable[[int, Case], None] | None = None,
) -> Path:
    """Generate ``cases`` phantom cases into ``out_dir`` in the LiTS layout; returns the manifest path.

    Every file is written atomically; `phantom.json` is written first with ``"complete": false``
    (so a killed run is recognised as an unfinished phantom and regenerated) and rewritten with
    ``"complete": true`` last. Rewriting a phantom folder removes case files the new manifest does
    not cover; a folder that holds LiTS files but no manifest (real data?) is refused, never touched.
    ``on_case(index, case)`` is called after each case (progress bars).
    """
    if cases < 1:
        raise DataError(f"{out_dir}: a phantom needs at least one case (got {cases})")
    out_dir = Path(out_dir)
    existing = [p for p in out_dir.glob("*.nii*") if _LITS_FILE.match(p.name)] if out_dir.is_dir() else []
    old = read_manifest(out_dir)
    if existing and old is None:
        raise DataError(f"{out_dir}: holds volume-/segmentation- files but no {MANIFEST}; not overwriting (real data?)")
    out_dir.mkdir(parents=True, exist_ok=True)
    final = manifest(cases, size, slices, seed)
    write_json(out_dir / MANIFEST, {**final, "complete": False})
    for p in existing:
        if int(_LITS_FILE.match(p.name).group(2)) >= cases:  # type: ignore[union-attr]
            p.unlink()
    for i in range(cases):
        case = generate_case(case_seed(seed, i), size, slices, case_id=str(i))
        write_case(out_dir, i, case)
        if on_case is not None:
            on_case(i, case)
    path = out_dir / MANIFEST
    write_json(path, final)
    return path


PARAMETERS = ("generator_version", "cases", "size", "slices", "seed")  # what makes two phantoms differ


def phantom_state(root: str | Path, cases: int, size: int, slices: int, seed: int) -> tuple[str, str]:
    """What writing this phantom into ``root`` would do: ``(state, detail)``.

    ``current``: root holds exactly this phantom (nothing to write). ``new``: root is missing or
    empty. ``unfinished``: a generation of ours was killed (``"complete": false``); nothing in it is
    usable. ``damaged``: our complete manifest with these parameters, but case files are missing.
    ``different``: a complete phantom written with other parameters (``detail`` names them).
    ``foreign``: root holds files and no `phantom.json`: not written by ``bench data phantom``.
    Only the first four may be (re)written without asking (`ensure_phantom`).
    """
    root = Path(root)
    if not root.exists() or (root.is_dir() and not any(p for p in root.iterdir() if not p.name.startswith("."))):
        return "new", f"{root} is new"
    if not root.is_dir():
        return "foreign", f"{root} is a file"
    old = read_manifest(root)
    if old is None or old.get("generator") != "bench.datasets.phantom":
        return "foreign", f"{root} holds files but no {MANIFEST} written by bench data phantom"
    wanted = manifest(cases, size, slices, seed)
    if old.get("complete") is not True:
        return "unfinished", f"{root} holds an unfinished phantom (its generation was interrupted)"
    diff = [f"{k} {old.get(k)!r} (wanted {wanted[k]!r})" for k in PARAMETERS if old.get(k) != wanted[k]]
    if diff:
        return "different", f"{root} holds a phantom written with " + ", ".join(diff)
    missing = [f"{kind}-{i}.nii.gz" for i in range(cases) for kind in ("volume", "segmentation")
               if not (root / f"{kind}-{i}.nii.gz").is_file()]
    if missing:
        return "damaged", f"{root} misses {len(missing)} case file(s) ({missing[0]}{', ...' if len(missing) > 1 else ''})"
    return "current", f"{root} holds this phantom"


def describe_phantom(cases: int, size: int, slices: int, seed: int) -> str:
    return f"{cases} case(s) {slices}x{size}x{size}, seed {seed}"


def ensure_phantom(
    root: str | Path = DEFAULT_ROOT,
    cases: int = DEFAULT_CASES,
    size: int = DEFAULT_SIZE,
    slices: int = DEFAULT_SLICES,
    seed: int = DEFAULT_SEED,
    on_case: Callable[[int, Case], None] | None = None,
    force: bool = False,
    hint: str = "remove the folder or choose another one",
    say: Callable[[str], None] | None = None,
) -> Path:
    """``root`` holding exactly this phantom, generated only when missing, unfinished or damaged.

    Why the guard: a phantom folder is a user's data set (runs and caches are bound to it), so a
    folder written with other parameters (another ``--cases``) is never regenerated silently: it is
    refused in one line naming the folder and the difference (``hint`` says what to do), unless
    ``force``. A folder not written by ``bench data phantom`` is refused even with ``force``.
    Whenever data is (re)generated, ``say`` (default: a line on stderr) says so and why.
    """
    root = Path(root)
    state, detail = check_phantom_target(root, cases, size, slices, seed, force, hint)
    if state == "current":
        return root
    (say or note)(f"generating phantom {describe_phantom(cases, size, slices, seed)} in {root} ({detail})")
    write_phantom(root, cases, size, slices, seed, on_case=on_case)
    return root


def check_phantom_target(root: str | Path, cases: int, size: int, slices: int, seed: int, force: bool = False,
                         hint: str = "remove the folder or choose another one") -> tuple[str, str]:
    """`phantom_state`, raising the one-line refusal for a folder that may not be (re)written."""
    state, detail = phantom_state(root, cases, size, slices, seed)
    if state == "foreign":
        raise DataError(f"{detail}; refusing to write a phantom into it (choose another folder)")
    if state == "different" and not force:
        raise DataError(f"{detail}; refusing to regenerate it ({hint})")
    return state, detail


def default_root_hint() -> str:
    """What to do when data/phantom holds another phantom: use it as it is, or remove it."""
    return f"use it with --root {DEFAULT_ROOT}, or remove it to get the default phantom"


def phantom_is_current(root: str | Path, cases: int, size: int, slices: int, seed: int) -> bool:
    """Whether ``root`` holds this exact phantom (same manifest, every file present)."""
    return phantom_state(root, cases, size, slices, seed)[0] == "current"


@DATASETS.register("phantom")
class PhantomDataset(LitsDataset):
    """Synthetic abdominal CT in the LiTS layout (the default data set; generated under data/phantom)."""

    name = "phantom"

    @staticmethod
    def default_root() -> Path:
        """``data/phantom`` (relative to the working directory), generated there on first use.

        A ``data/phantom`` written with other parameters (``bench data phantom data/phantom --cases 10``)
        is refused, never regenerated: train on it with ``--root data/phantom``.
        """
        return ensure_phantom(DEFAULT_ROOT, DEFAULT_CASES, DEFAULT_SIZE, DEFAULT_SLICES, DEFAULT_SEED,
                              hint=default_root_hint())

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["phantom"] = read_manifest(self.root)
        return out
