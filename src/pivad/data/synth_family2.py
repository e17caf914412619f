"""Synthetic family 2: a second generative process, built independently of version 6 (issue 20).

Same on-disk layout as :mod:`pivad.data.synth` (which writes the files); this module only decides
what the videos contain. Pure numpy; each video draws from ``np.random.default_rng([seed, 21,
index])``, the plan from ``[seed, 20]`` and the fixed maps from ``[seed, 22, ...]``; float64
arithmetic, float32 at the end, so the same seed gives the same bytes.

How it differs from version 6 (``docs/synthetic.md``, "Family 2"):

- RGB is a random two-layer network of the latents: ``hid = tanh(norm(W1 z))`` (z = scene, activity,
  camera; ``norm`` fixes each snippet's RMS), then ``softplus(gain(t) * W2 hid + noise)`` in 1024 d;
- the normal activity is a smooth non-negative *level* times a slowly rotating *direction*;
- the anomaly enters RGB mostly through an **interaction**: while it lasts, the activity reaches the
  hidden layer through a class-specific map ``M_c`` instead of ``W_a`` (``M_c a(t)``: its direction is
  set by the current activity, its size by the activity level; no activity, no trace), plus a small
  added part ``e(t) r_c``; distractors (normal look-alikes) enter additively;
- scenes are Dirichlet mixes of place prototypes with linear drift and, in some videos, a camera cut;
  the noise is heavy-tailed (Student-t), the lighting ramps over the video, some snippets freeze;
- 24-400 snippets (log-uniform), 1-3 events per abnormal video from 2 snippets to 40 % of it with
  three profile shapes, 7 imbalanced classes;
- modality ``j`` is a random one-hidden-layer read-out of scene and activity (flow: camera motion too)
  with the anomaly added along a class direction at gain ``SENSITIVITY[j][c]``; distractors show there
  too, partly (cosine ``distractor_overlap``) along the anomaly's direction.

The knob ``rgb_event`` (how loud ``M_c`` is against ``W_a``) sets how hard the anomaly is to find in
RGB; the presets' value is the calibrated one (UR-DMU at 85-90 frame AUC, ``docs/synthetic.md``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from pivad.data.synth_signal import SNIPPET, VideoPlan, _ar1, _smooth
from pivad.errors import ConfigError

FAMILY = 2
VERSION = 8  # bump whenever the same seed and spec would give different bytes

CLASSES = ["Assault", "Burglary", "Arson", "Vandalism", "Stealing", "Abuse", "Shooting"]
CLASS_SHARE = [0.24, 0.19, 0.16, 0.13, 0.11, 0.10, 0.07]  # of the abnormal videos (largest/smallest 3.4)
DISTRACTORS = ["Wrestling", "Bonfire", "Delivery", "Construction", "Browsing", "Playing", "Firecrackers"]
# How strongly each modality sees each class (rows: modalities; columns: CLASSES).
SENSITIVITY: dict[str, list[float]] = {
    #            Asslt Burgl Arson Vand  Steal Abuse Shoot
    "pose": [1.00, 0.50, 0.10, 0.60, 0.70, 0.90, 0.40],
    "depth": [0.30, 0.60, 0.90, 0.50, 0.20, 0.20, 0.30],
    "panoptic": [0.20, 0.70, 0.80, 0.90, 0.60, 0.03, 0.30],
    "flow": [0.80, 0.30, 0.60, 0.40, 0.30, 0.70, 1.00],
    "text": [0.30, 0.20, 0.50, 0.20, 0.03, 0.20, 0.40],
}
NONLINEARITY = {"pose": "relu", "depth": "softplus", "panoptic": "sigmoid", "flow": "magnitude", "text": "l2"}
PROFILES = ("plateau", "ramp", "burst")


@dataclass
class Family2Spec:
    """Sizes and knobs of family 2 (amplitudes in per-dimension std units)."""

    n_train_abnormal: int = 72
    n_train_normal: int = 72
    n_test_abnormal: int = 28
    n_test_normal: int = 28
    t_min: int = 24  # snippets per video, log-uniform in [t_min, t_max]
    t_max: int = 400
    num_crops: int = 2
    feature_dim: int = 1024
    modality_dims: dict[str, int] = field(
        default_factory=lambda: {"pose": 48, "depth": 64, "panoptic": 96, "flow": 32, "text": 128}
    )
    event_counts: list[float] = field(default_factory=lambda: [0.5, 0.3, 0.2])  # P(1, 2, 3 events)
    event_min_snippets: int = 2
    event_max_share: float = 0.4  # of the video, per event
    event_min_share: float = 0.05  # of the video, per event (but never under event_min_snippets)
    distractor_prob: float = 0.5  # of any video (normal or abnormal) having 1-2 distractors
    cut_prob: float = 0.25  # of a camera cut (scene change) in any video
    freeze_prob: float = 0.03  # per snippet: repeats the previous one
    n_places: int = 10
    k_scene: int = 10
    k_activity: int = 8
    k_camera: int = 6
    hidden: int = 192  # RGB hidden layer width
    mod_hidden: int = 64  # modality read-out hidden width
    # RGB
    rgb_event: float = 10.0  # difficulty knob: loudness of M_c against W_a (calibrated, docs/synthetic.md)
    rgb_additive: float = 0.15  # the anomaly's added (non-interaction) part, times rgb_event
    rgb_activity: float = 2.0  # weight of the activity latent in the RGB hidden layer
    rgb_distractor: float = 0.4
    rgb_hidden_rms: float = 1.3  # every snippet's hidden pre-activation is normalised to this RMS
    rgb_noise: float = 0.3  # heavy-tailed content noise (shared by crops)
    rgb_crop_noise: float = 0.2
    rgb_crop_offset: float = 0.1
    rgb_bias: float = -0.5
    rgb_scale: float = 0.3
    # modalities
    mod_base: float = 1.0
    mod_event: float = 2.0  # times SENSITIVITY[j][c]
    mod_distractor: float = 0.5
    distractor_overlap: float = 0.3  # cosine between a distractor's and its class's modality direction
    mod_noise: float = 0.4
    text_smooth: float = 2.0


PRESETS: dict[str, dict] = {
    "demo": {},
    "tiny": {
        "n_train_abnormal": 8,
        "n_train_normal": 4,
        "n_test_abnormal": 4,
        "n_test_normal": 3,
        "t_max": 60,
        "modality_dims": {"pose": 8, "depth": 12, "panoptic": 16, "flow": 8, "text": 16},
    },
}

DESCRIPTION = (
    "Family 2 (docs/synthetic.md): RGB = softplus of a random two-layer network of scene (Dirichlet "
    "place mix, drift, camera cuts), activity (level x rotating direction) and camera latents; the anomaly "
    "enters its hidden layer mostly as an interaction event x activity level x class map of the activity "
    "direction, distractors additively; heavy-tailed noise, lighting ramps, frozen snippets. Modalities = "
    "random one-hidden-layer read-outs of the same latents with the anomaly added at a class x modality "
    "sensitivity and distractors partly along it. 7 imbalanced classes, 24-400 snippets, 1-3 events."
)


# ------------------------------------------------------------------------------------------------ spec


def make_spec(preset: str = "demo", **overrides) -> Family2Spec:
    """The spec of a family-2 preset with keyword overrides (any :class:`Family2Spec` field)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset '{preset}' for family 2 (known: {', '.join(PRESETS)})")
    values = {**PRESETS[preset], **overrides}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(Family2Spec)})
    if unknown:
        raise ConfigError(f"unknown synthetic dataset option(s) for family 2: {', '.join(unknown)}")
    spec = Family2Spec(**values)
    shortest = max(3 * (spec.event_min_snippets + 1), math.ceil(spec.event_min_snippets / spec.event_max_share))
    if spec.t_min < shortest or spec.t_max < spec.t_min:
        raise ConfigError(f"synthetic family 2: need {shortest} <= t_min <= t_max (3 events of "
                          f"{spec.event_min_snippets} snippets must fit), got {spec.t_min}, {spec.t_max}")
    counts = (spec.n_train_abnormal, spec.n_train_normal, spec.n_test_abnormal, spec.n_test_normal)
    if min(counts) < 1 or spec.num_crops < 1:
        raise ConfigError("synthetic dataset: every split needs at least one normal and one abnormal video")
    if any(d < 1 for d in spec.modality_dims.values()) or spec.feature_dim < 1:
        raise ConfigError("synthetic dataset: feature and modality widths must be positive")
    return spec


def meta_fields(spec: Family2Spec, plans: list[VideoPlan]) -> dict:
    """What ``meta.json`` records beyond the layout-wide fields (written by :mod:`pivad.data.synth`)."""
    return {
        "feature_dim": spec.feature_dim,
        "num_crops": spec.num_crops,
        "modalities": [{"name": k, "dim": v} for k, v in spec.modality_dims.items()],
        "classes": list(CLASSES),
        "class_counts": {s: dict(zip(CLASSES, class_counts(n))) for s, n in
                         (("train", spec.n_train_abnormal), ("test", spec.n_test_abnormal))},
        "distractors": dict(zip(CLASSES, DISTRACTORS)),
        "sensitivity": {k: dict(zip(CLASSES, v)) for k, v in SENSITIVITY.items() if k in spec.modality_dims},
        "modality_nonlinearity": {k: NONLINEARITY.get(k, "softplus") for k in spec.modality_dims},
        "description": DESCRIPTION,
    }


# ------------------------------------------------------------------------------------------------ plan


def class_counts(n: int) -> list[int]:
    """``n`` abnormal videos split over CLASSES by CLASS_SHARE (largest remainder), deterministic."""
    raw = np.asarray(CLASS_SHARE) * n / sum(CLASS_SHARE)
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def _length(rng: np.random.Generator, spec: Family2Spec) -> int:
    t = round(math.exp(rng.uniform(math.log(spec.t_min), math.log(spec.t_max))))  # log-uniform
    return int(np.clip(t, spec.t_min, spec.t_max))


def _events(rng: np.random.Generator, spec: Family2Spec, n: int) -> list[tuple[int, int]]:
    """1-3 non-overlapping events (frames s..e inclusive), one per equal share of the video, each at
    least ``event_min_snippets`` snippets and at most ``event_max_share`` of the video long."""
    n_frames = n * SNIPPET
    k = 1 + int(rng.choice(len(spec.event_counts), p=np.asarray(spec.event_counts) / sum(spec.event_counts)))
    share = n_frames // k
    lo_len = max(spec.event_min_snippets * SNIPPET, int(spec.event_min_share * n_frames))
    events = []
    for i in range(k):
        hi_len = max(lo_len, min(int(spec.event_max_share * n_frames), share - SNIPPET))
        length = int(round(math.exp(rng.uniform(math.log(lo_len), math.log(hi_len)))))
        length = min(max(length, lo_len), hi_len)
        start = i * share + int(rng.integers(0, max(1, share - length - SNIPPET + 1)))
        events.append((start, start + length - 1))
    return events


def dataset_plan(spec: Family2Spec, seed: int) -> list[VideoPlan]:
    """Every video (train then test, each abnormal-first, classes in order, then normal)."""
    rng = np.random.default_rng([seed, 20])
    plans: list[VideoPlan] = []
    numbers = {c: 0 for c in CLASSES}
    normal_number = 0
    for split, n_abn, n_nor in (
        ("train", spec.n_train_abnormal, spec.n_train_normal),
        ("test", spec.n_test_abnormal, spec.n_test_normal),
    ):
        entries = [(c, 1) for c, k in zip(CLASSES, class_counts(n_abn)) for _ in range(k)] + [("Normal", 0)] * n_nor
        for cls, label in entries:
            n = _length(rng, spec)
            if label:
                numbers[cls] += 1
                name = f"{cls}{numbers[cls]:03d}_x264"
                events = _events(rng, spec, n)
            else:
                normal_number += 1
                name = f"Normal_Videos_{normal_number:03d}_x264"
                events = []
            place = int(rng.integers(spec.n_places))
            distractors = []
            if rng.random() < spec.distractor_prob:
                for _ in range(1 + int(rng.random() < 0.3)):
                    kind = int(rng.integers(len(CLASSES)))
                    length = min(max(2 * SNIPPET, int(rng.uniform(0.05, 0.3) * n * SNIPPET)), n * SNIPPET - SNIPPET)
                    start = int(rng.integers(0, n * SNIPPET - length + 1))
                    distractors.append((kind, start, start + length - 1))
            plans.append(VideoPlan(len(plans), name, split, cls, label, n, place, events, distractors))
    return plans


# --------------------------------------------------------------------------------------------- world


@dataclass
class World2:
    """Fixed maps and prototypes shared by every video of one dataset."""

    places: np.ndarray  # (P, Ks)
    w1: np.ndarray  # (H, Ks + Ka + Kc)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (D, H)
    b2: np.ndarray  # (D,)
    interaction: np.ndarray  # (C, H, Ka) M_c
    additive: np.ndarray  # (C, H) r_c
    distractor: np.ndarray  # (C, H)
    modality: dict[str, dict[str, np.ndarray]]


def _column_scale(spec: Family2Spec) -> np.ndarray:
    """Per-latent weight of W1's columns: the activity block is scaled by ``rgb_activity``."""
    scale = np.ones(spec.k_scene + spec.k_activity + spec.k_camera)
    scale[spec.k_scene : spec.k_scene + spec.k_activity] = spec.rgb_activity
    return scale


def build_world(spec: Family2Spec, seed: int) -> World2:
    rng = np.random.default_rng([seed, 22])
    n_cls, h, ka = len(CLASSES), spec.hidden, spec.k_activity
    k_in = spec.k_scene + ka + spec.k_camera
    modality = {}
    for j, (name, dim) in enumerate(spec.modality_dims.items()):
        mrng = np.random.default_rng([seed, 22, 100 + j])
        anomaly = mrng.standard_normal((n_cls, dim))  # unit variance per dimension
        own = mrng.standard_normal((n_cls, dim))
        rho = spec.distractor_overlap
        sens = SENSITIVITY.get(name) or list(mrng.uniform(0.1, 1.0, n_cls))
        modality[name] = {
            "a": mrng.standard_normal((spec.mod_hidden, k_in)) * 1.5 / math.sqrt(k_in),
            "b": mrng.standard_normal((dim, spec.mod_hidden)) / math.sqrt(spec.mod_hidden) * math.sqrt(2.0),
            "anomaly": anomaly,
            "distractor": rho * anomaly + math.sqrt(1 - rho * rho) * own,
            "sens": np.asarray(sens, dtype=np.float64),
            "distractor_sens": mrng.uniform(0.4, 1.0, n_cls),
        }
    return World2(
        places=rng.standard_normal((spec.n_places, spec.k_scene)),
        w1=rng.standard_normal((h, k_in)) * 1.5 / math.sqrt(k_in) * _column_scale(spec),
        b1=0.3 * rng.standard_normal(h),
        w2=rng.standard_normal((spec.feature_dim, h)) / math.sqrt(h) * math.sqrt(2.0),
        b2=spec.rgb_bias + 0.3 * rng.standard_normal(spec.feature_dim),
        interaction=rng.standard_normal((n_cls, h, ka)) * spec.rgb_event * spec.rgb_activity * 1.5 / math.sqrt(k_in),
        additive=rng.standard_normal((n_cls, h)),
        distractor=rng.standard_normal((n_cls, h)),
        modality=modality,
    )


# ---------------------------------------------------------------------------------------- processes


# _ar1 and _smooth are v6's (pivad.data.synth_signal): the same processes, and the same bytes on float64


def _heavy(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Student-t noise with 3 degrees of freedom, scaled to unit variance."""
    return rng.standard_t(3, shape) / math.sqrt(3.0)


def event_intensity(n: int, start: int, end: int, profile: str) -> np.ndarray:
    """Per-snippet intensity (T,): the share of the snippet's frames inside s..e, times the profile."""
    frames = np.arange(n * SNIPPET)
    inside = (frames >= start) & (frames <= end)
    pos = np.clip((frames - start) / max(1, end - start), 0.0, 1.0)
    shape = {"plateau": np.ones_like(pos), "ramp": 0.3 + 0.7 * pos, "burst": 0.3 + 0.7 * np.exp(-4.0 * pos)}[profile]
    return np.where(inside, shape, 0.0).reshape(n, SNIPPET).mean(axis=1)


def _scene(rng: np.random.Generator, spec: Family2Spec, world: World2, place: int, n: int) -> np.ndarray:
    """Dirichlet place mix, linear drift, slow wobble and maybe a camera cut, (T, Ks)."""

    def mix(main: int) -> np.ndarray:
        w = rng.dirichlet(np.full(spec.n_places, 0.3))
        w[main] += 1.0
        return (w / w.sum()) @ world.places

    ramp = (np.arange(n) / max(1, n - 1) - 0.5)[:, None]
    scene = mix(place) + 0.5 * ramp * rng.standard_normal(spec.k_scene) + 0.15 * _ar1(rng, n, spec.k_scene, 0.98)
    if rng.random() < spec.cut_prob:
        cut = int(rng.integers(n // 4, 3 * n // 4 + 1))
        scene[cut:] += mix(int(rng.integers(spec.n_places))) - mix(place)
    return scene


def _activity(rng: np.random.Generator, spec: Family2Spec, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Level (T,) >= 0 and unit direction (T, Ka) rotating slowly."""
    level = np.log1p(np.exp(1.2 * _ar1(rng, n, 1, 0.95)[:, 0] + rng.normal(0.3, 0.5)))
    walk = rng.standard_normal(spec.k_activity) + np.cumsum(0.12 * rng.standard_normal((n, spec.k_activity)), axis=0)
    walk = _smooth(walk, 2.0)
    return level, walk / np.linalg.norm(walk, axis=1, keepdims=True)


def _modality_out(name: str, x: np.ndarray) -> np.ndarray:
    kind = NONLINEARITY.get(name, "softplus")
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if kind == "magnitude":  # a speed: mostly monotone in x (offset), folded only for large negative x
        return np.sqrt((x + 1.5) ** 2 + 0.01)
    if kind == "l2":
        return x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(x.shape[1])
    return np.logaddexp(0.0, x)


def generate_video(
    spec: Family2Spec, world: World2, plan: VideoPlan, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RGB ``[C, T, D]`` float32 and modalities ``{name: [T, d_j] float32}`` of one planned video."""
    rng = np.random.default_rng([seed, 21, plan.index])
    n = plan.n_snippets
    scene = _scene(rng, spec, world, plan.scene, n)  # (T, Ks)
    level, direction = _activity(rng, spec, n)  # (T,), (T, Ka)
    camera = _ar1(rng, n, spec.k_camera, 0.9)  # (T, Kc)
    anomaly = np.zeros(n)  # (T,) intensity of the video's class
    for s, e in plan.events:
        anomaly += event_intensity(n, s, e, PROFILES[int(rng.integers(len(PROFILES)))]) * rng.uniform(0.8, 1.2)
    distract = np.zeros((n, len(CLASSES)))  # (T, C)
    for k, s, e in plan.distractors:
        distract[:, k] += event_intensity(n, s, e, PROFILES[int(rng.integers(len(PROFILES)))]) * rng.uniform(0.8, 1.2)
    c = CLASSES.index(plan.cls) if plan.label else 0
    z = np.concatenate([scene, level[:, None] * direction, camera], axis=1)  # (T, K)

    # RGB: two-layer random network. The anomaly is an interaction: while it lasts, the activity reaches
    # the hidden layer through a class-specific map M_c instead of W_a (mixed by m), so it moves RGB along
    # a direction set by the current activity, by an amount set by its level; M_c is rgb_event times as
    # loud as W_a (1: the swap preserves the hidden layer's variance).
    ks, ka = spec.k_scene, spec.k_activity
    act = level[:, None] * direction  # (T, Ka)
    m = np.clip(anomaly, 0.0, 1.0)[:, None]  # (T, 1) mixing weight
    w_act = world.w1[:, ks : ks + ka]  # (H, Ka)
    pre1 = z @ world.w1.T + world.b1 + (np.sqrt(1 - m * m) - 1) * (act @ w_act.T) + m * (act @ world.interaction[c].T)
    pre1 += spec.rgb_event * spec.rgb_additive * anomaly[:, None] * world.additive[c]
    pre1 += spec.rgb_distractor * distract @ world.distractor  # (T, H)
    pre1 = spec.rgb_hidden_rms * pre1 / np.sqrt((pre1 * pre1).mean(axis=1, keepdims=True))  # fixed RMS per snippet
    hid = np.tanh(pre1)  # (T, H)
    pre = hid @ world.w2.T + spec.rgb_noise * _heavy(rng, (n, spec.feature_dim))  # (T, D)
    ramp = np.arange(n) / max(1, n - 1)
    gain = np.exp(0.2 * rng.standard_normal() + 0.3 * rng.standard_normal() * (ramp - 0.5))[:, None]  # lighting
    frozen = np.arange(n)
    for t in range(1, n):
        frozen[t] = frozen[t - 1] if rng.random() < spec.freeze_prob else t
    crops = np.empty((spec.num_crops, n, spec.feature_dim), dtype=np.float32)
    for k in range(spec.num_crops):
        h = gain * (pre + spec.rgb_crop_offset * rng.standard_normal(spec.feature_dim)) + world.b2
        h = h + spec.rgb_crop_noise * _heavy(rng, (n, spec.feature_dim))
        crops[k] = (spec.rgb_scale * np.logaddexp(0.0, h))[frozen].astype(np.float32)

    # modalities: one-hidden-layer read-outs of the same latents, the anomaly added along its class direction
    motion = np.diff(camera, axis=0, prepend=camera[:1])
    mods: dict[str, np.ndarray] = {}
    for name, m in world.modality.items():
        zin = np.concatenate([scene, level[:, None] * direction, motion if name == "flow" else 0 * camera], axis=1)
        x = spec.mod_base * np.tanh(zin @ m["a"].T) @ m["b"].T  # (T, d_j)
        x = x + spec.mod_event * (anomaly * m["sens"][c])[:, None] * m["anomaly"][c]
        x = x + spec.mod_distractor * (distract * m["distractor_sens"]) @ m["distractor"]
        if name == "text":
            x = _smooth(x, spec.text_smooth)
        x = x + spec.mod_noise * _heavy(rng, x.shape)
        mods[name] = _modality_out(name, x)[frozen].astype(np.float32)
    return crops, mods
