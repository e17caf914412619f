"""The generative process behind the synthetic dataset: latent factors -> RGB and modality features.

Pure numpy, no file I/O (:mod:`pivad.data.synth` writes the files). Everything is drawn from
``np.random.default_rng([seed, stream, index])`` streams, so a video's content depends only on the
seed, the spec and its own index, never on the order of generation. Arithmetic runs in float64 and
is cast to float32 at the end, so repeated runs give the same bytes.

Per snippet ``t`` of a video there are latent factors (widths in :class:`SignalSpec`):

- scene ``z_s`` (one of ``n_scenes`` prototypes per video, slow drift);
- normal activity ``z_a`` (a Markov chain over ``n_activities`` prototypes, long dwell times,
  smoothed transitions);
- nuisance ``z_n`` (camera/lighting: an AR(1) process per video, plus a per-video gain and offset);
- events in a shared event space ``R^{k_event}``: anomalous events of class ``c`` carry a signature
  ``u_c``; *distractor* events (normal look-alikes that occur in normal and abnormal videos) carry
  ``v_c``, one paired with each anomaly class.

RGB (``[T, D]``, D = 1024 like I3D): pre-activation ``h = Ws z_s + Wa z_a + Wn z_n + We e + noise``,
then a ReLU averaged over noisy "spatial cells" (:func:`pooled_relu`: non-negative, smooth, almost
no exact zeros, like I3D's pooled Mixed_5c). The anomaly is weak in RGB: its event vector is
``rho * v_c + sqrt(1 - rho^2) * u_c`` (partly the distractor's direction) at a modest amplitude, and
the nuisance leaks into the same event subspace (``We M z_n``), so lighting/camera changes look like
events in RGB.

Modality ``j`` (``[T, d_j]``): a noisy nonlinear read-out of the same latents without the RGB
nuisance, where an anomaly of class ``c`` appears as ``gain[j, c] * u_c`` (strong, separate from the
distractors' ``v_c``), so each modality is sensitive to its own classes (pose to human-centred ones,
flow and depth to motion and scene-scale ones, text mostly to scene and normal activity).
Crops are small perturbations of the same content (a per-crop offset and per-crop noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SNIPPET = 16  # frames per snippet

# Anomaly classes and, for each, the normal look-alike ("distractor") that shares its RGB direction.
DEFAULT_CLASSES = ["Fighting", "Explosion", "RoadAccidents", "Shoplifting", "Robbery"]
DEFAULT_DISTRACTORS = ["Sparring", "Fireworks", "FastTraffic", "Shopping", "Jogging"]

# How strongly each modality sees each anomaly class (rows: modalities, columns: DEFAULT_CLASSES).
# Pose: human-centred classes; depth: scene-scale changes; panoptic: objects/scene; flow: motion;
# text: coarse scene semantics, weak on events.
DEFAULT_SENSITIVITY: dict[str, list[float]] = {
    #            Fight  Expl  Road  Shop  Robb
    "pose": [1.00, 0.05, 0.10, 0.80, 0.90],
    "depth": [0.35, 1.00, 0.80, 0.20, 0.30],
    "panoptic": [0.10, 0.70, 0.85, 0.20, 0.25],
    "flow": [0.80, 0.70, 1.00, 0.50, 0.40],
    "text": [0.15, 0.30, 0.20, 0.05, 0.10],
}
# Per-class share of a video's snippets covered by one event (min, max) and its typical profile.
DEFAULT_EVENT_FRACTION: dict[str, tuple[float, float]] = {
    "Fighting": (0.12, 0.35),
    "Explosion": (0.06, 0.15),
    "RoadAccidents": (0.06, 0.18),
    "Shoplifting": (0.12, 0.30),
    "Robbery": (0.10, 0.28),
}
# Output nonlinearity per modality (the modalities are disparate by construction).
MODALITY_NONLINEARITY = {"pose": "relu", "depth": "tanh", "panoptic": "softmax", "flow": "abs", "text": "l2"}


@dataclass
class SignalSpec:
    """Shape and strength of the generative process (all amplitudes are per-dimension std units)."""

    feature_dim: int = 1024  # RGB width D
    modality_dims: dict[str, int] = field(
        default_factory=lambda: {"pose": 48, "depth": 64, "panoptic": 96, "flow": 32, "text": 128}
    )
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    n_scenes: int = 8  # scene prototypes
    n_activities: int = 6  # normal activity prototypes
    k_scene: int = 12  # latent widths
    k_activity: int = 12
    k_nuisance: int = 8
    k_event: int = 16
    # RGB amplitudes
    rgb_scene: float = 1.0
    rgb_activity: float = 0.6
    rgb_nuisance: float = 0.5
    rgb_nuisance_leak: float = 0.35  # nuisance leaking into the event subspace
    rgb_event: float = 0.9  # anomalous event amplitude
    rgb_distractor: float = 0.35  # distractor event amplitude
    rgb_rho: float = 0.5  # share of an anomaly's RGB direction taken from its distractor
    rgb_noise_smooth: float = 0.35  # temporally correlated content noise (shared by crops)
    rgb_noise_cell: float = 0.8  # spread of the spatial cells a ReLU is averaged over (pooled_relu)
    rgb_noise_crop: float = 0.25  # i.i.d. noise per crop, snippet, dim
    rgb_crop_offset: float = 0.1  # per-video, per-crop fixed offset
    rgb_bias: float = -0.3  # mean ReLU threshold
    rgb_scale: float = 0.35  # output scale (I3D-like mean of about 0.3)
    # modality amplitudes
    mod_scene: float = 0.8
    mod_activity: float = 0.6
    mod_event: float = 1.6  # multiplied by the sensitivity of the modality to the class
    mod_distractor: float = 0.9
    mod_noise: float = 0.45
    flow_camera: float = 0.4  # flow also sees camera motion (but not lighting)
    text_smooth: float = 3.0  # text features are smoothed over this many snippets (Gaussian sigma)
    # structure
    scene_bias: float = 0.35  # probability an anomaly video takes its class's preferred scene
    distractor_prob: float = 0.5  # probability a video has distractor events (normal and abnormal alike)
    two_event_prob: float = 0.3  # probability an abnormal video has two events
    activity_dwell: float = 16.0  # mean snippets per normal-activity segment
    nuisance_ar: float = 0.9  # AR(1) coefficient of nuisance and smooth noise


@dataclass
class VideoPlan:
    """What a video contains, decided before any feature is drawn."""

    index: int  # global index (seeds the content stream)
    name: str  # UCF-style id, e.g. Fighting003_x264
    split: str  # train | test
    cls: str  # anomaly class, or "Normal"
    label: int  # 1 abnormal, 0 normal
    n_snippets: int  # T
    scene: int
    events: list[tuple[int, int]]  # anomalous events, frames s..e inclusive
    distractors: list[tuple[int, int, int]]  # (type, s, e) in frames


# --------------------------------------------------------------------------------------------- world


@dataclass
class World:
    """The fixed mixing matrices and prototypes shared by all videos of one dataset."""

    scene_protos: np.ndarray  # (S, Ks)
    activity_protos: np.ndarray  # (A, Ka)
    anomaly_sig: np.ndarray  # (C, Ke) unit rows u_c
    distractor_sig: np.ndarray  # (C, Ke) unit rows v_c, orthogonal to all u
    preferred_scene: np.ndarray  # (C,) scene each class favours
    w_scene: np.ndarray  # (D, Ks)
    w_activity: np.ndarray  # (D, Ka)
    w_nuisance: np.ndarray  # (D, Kn)
    w_event: np.ndarray  # (D, Ke)
    nuisance_leak: np.ndarray  # (Ke, Kn)
    rgb_bias: np.ndarray  # (D,)
    modality: dict[str, dict[str, np.ndarray]]  # name -> {"scene","activity","event","camera","sens"}


def _gauss(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Random mixing matrix whose rows map a unit-variance latent to unit per-dimension variance."""
    return rng.standard_normal(shape) / math.sqrt(fan_in)


def build_world(spec: SignalSpec, seed: int) -> World:
    rng = np.random.default_rng([seed, 0])
    n_cls = len(spec.classes)
    if 2 * n_cls > spec.k_event:
        raise ValueError(f"k_event={spec.k_event} is too small for {n_cls} classes (needs {2 * n_cls})")
    q, _ = np.linalg.qr(rng.standard_normal((spec.k_event, 2 * n_cls)))  # orthonormal columns
    sig = q.T  # (2C, Ke)
    d = spec.feature_dim
    modality: dict[str, dict[str, np.ndarray]] = {}
    for j, (name, dim) in enumerate(spec.modality_dims.items()):
        mrng = np.random.default_rng([seed, 0, 1000 + j])
        sens_row = DEFAULT_SENSITIVITY.get(name)
        if sens_row is None or len(sens_row) != n_cls:
            sens = mrng.uniform(0.1, 1.0, n_cls)  # modalities/classes beyond the defaults
        else:
            sens = np.asarray(sens_row, dtype=np.float64)
        modality[name] = {
            "scene": _gauss(mrng, (dim, spec.k_scene), spec.k_scene),
            "activity": _gauss(mrng, (dim, spec.k_activity), spec.k_activity),
            "event": _gauss(mrng, (dim, spec.k_event), 1),  # unit event vectors -> unit variance
            "camera": _gauss(mrng, (dim, spec.k_nuisance), spec.k_nuisance),
            "distractor_sens": mrng.uniform(0.3, 1.0, n_cls),
            "sens": sens,
        }
    return World(
        scene_protos=rng.standard_normal((spec.n_scenes, spec.k_scene)),
        activity_protos=rng.standard_normal((spec.n_activities, spec.k_activity)),
        anomaly_sig=sig[:n_cls],
        distractor_sig=sig[n_cls:],
        preferred_scene=rng.integers(0, spec.n_scenes, n_cls),
        w_scene=_gauss(rng, (d, spec.k_scene), spec.k_scene),
        w_activity=_gauss(rng, (d, spec.k_activity), spec.k_activity),
        w_nuisance=_gauss(rng, (d, spec.k_nuisance), spec.k_nuisance),
        w_event=_gauss(rng, (d, spec.k_event), 1),
        nuisance_leak=_gauss(rng, (spec.k_event, spec.k_nuisance), spec.k_nuisance),
        rgb_bias=spec.rgb_bias + 0.3 * rng.standard_normal(d),
        modality=modality,
    )


# ---------------------------------------------------------------------------------------- processes


def _ar1(rng: np.random.Generator, n: int, k: int, coef: float) -> np.ndarray:
    """Stationary unit-variance AR(1) process, (n, k)."""
    eps = rng.standard_normal((n, k))
    out = np.empty((n, k))
    out[0] = eps[0]
    scale = math.sqrt(1.0 - coef * coef)
    for t in range(1, n):
        out[t] = coef * out[t - 1] + scale * eps[t]
    return out


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 with edge padding, (n, k) -> (n, k)."""
    radius = max(1, int(round(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(x, ((radius, radius), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for i, w in enumerate(taps):
        out += w * padded[i : i + x.shape[0]]
    return out


def event_envelope(n_snippets: int, start: int, end: int) -> np.ndarray:
    """Per-snippet intensity of an event over frames ``start..end`` (inclusive), (T,).

    The share of the snippet's 16 frames inside the event, times a smooth profile that rises to a
    peak mid-event (so boundary snippets are partial and the event varies smoothly in time).
    """
    frames = np.arange(n_snippets * SNIPPET)
    inside = (frames >= start) & (frames <= end)
    pos = np.clip((frames - start) / max(1, end - start), 0.0, 1.0)
    profile = np.where(inside, 0.6 + 0.4 * np.sin(np.pi * pos), 0.0)
    return profile.reshape(n_snippets, SNIPPET).mean(axis=1)


def _activity_track(rng: np.random.Generator, spec: SignalSpec, world: World, n: int) -> np.ndarray:
    """Markov chain of normal activities with long dwell times, smoothed at the switches, (T, Ka)."""
    states = np.empty(n, dtype=np.int64)
    state = int(rng.integers(spec.n_activities))
    switch = 1.0 / spec.activity_dwell
    for t in range(n):
        if t and rng.random() < switch:
            state = int(rng.integers(spec.n_activities))
        states[t] = state
    track = world.activity_protos[states] * rng.uniform(0.7, 1.3)
    return _smooth(track, 1.5)


# ------------------------------------------------------------------------------------------ a video


def pooled_relu(h: np.ndarray, sigma: float) -> np.ndarray:
    """``E[relu(h + sigma * eps)]``, eps ~ N(0, 1): a ReLU averaged over many noisy spatial cells.

    ``h * Phi(h / sigma) + sigma * phi(h / sigma)``, with the tanh approximation of Phi (GELU's,
    error < 1e-3): non-negative and smooth like I3D's spatially pooled ReLU features.
    """
    z = h / sigma
    cdf = 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return np.maximum(h * cdf + sigma * pdf, 0.0)


def _nonlinear(name: str, x: np.ndarray) -> np.ndarray:
    kind = MODALITY_NONLINEARITY.get(name, "tanh")
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "abs":
        return np.abs(x)
    if kind == "softmax":  # mask-area-like: positive, rows sum to a constant
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True) * math.sqrt(x.shape[1])
    if kind == "l2":  # CLIP-like unit embeddings, scaled to unit per-dimension size
        return x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(x.shape[1])
    return np.tanh(x)


def generate_video(
    spec: SignalSpec, world: World, plan: VideoPlan, seed: int, num_crops: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """RGB ``[C, T, D]`` float32 and modalities ``{name: [T, d_j] float32}`` of one planned video."""
    rng = np.random.default_rng([seed, 1, plan.index])
    n = plan.n_snippets
    cls_index = {c: i for i, c in enumerate(spec.classes)}

    # latent factors
    scene = world.scene_protos[plan.scene] + 0.25 * _ar1(rng, n, spec.k_scene, 0.97)  # (T, Ks)
    activity = _activity_track(rng, spec, world, n)  # (T, Ka)
    nuisance = _ar1(rng, n, spec.k_nuisance, spec.nuisance_ar)  # (T, Kn)
    distract_by_type = np.zeros((n, len(spec.classes)))  # (T, C)
    anomaly_by_class = np.zeros((n, len(spec.classes)))  # (T, C)
    for s, e in plan.events:
        anomaly_by_class[:, cls_index[plan.cls]] += event_envelope(n, s, e) * rng.uniform(0.8, 1.2)
    for k, s, e in plan.distractors:
        distract_by_type[:, k] += event_envelope(n, s, e) * rng.uniform(0.8, 1.2)
    anomaly_ev = anomaly_by_class @ world.anomaly_sig  # u-part of anomalous events, (T, Ke)
    distract_ev = distract_by_type @ world.distractor_sig  # (T, Ke)
    anomaly_look_alike = anomaly_by_class @ world.distractor_sig  # the distractor direction of each anomaly

    # RGB: the anomaly is mostly its distractor's direction, weakly its own; nuisance leaks in
    rho = spec.rgb_rho
    event_rgb = (
        spec.rgb_event * (rho * anomaly_look_alike + math.sqrt(1 - rho * rho) * anomaly_ev)
        + spec.rgb_distractor * distract_ev
        + spec.rgb_nuisance_leak * nuisance @ world.nuisance_leak.T
    )  # (T, Ke)
    h = (
        spec.rgb_scene * scene @ world.w_scene.T
        + spec.rgb_activity * activity @ world.w_activity.T
        + spec.rgb_nuisance * nuisance @ world.w_nuisance.T
        + event_rgb @ world.w_event.T
    )  # (T, D)
    d = spec.feature_dim
    h += spec.rgb_noise_smooth * _ar1(rng, n, d, spec.nuisance_ar)
    gain = math.exp(0.25 * rng.standard_normal())  # per-video lighting gain
    offset = 0.15 * rng.standard_normal()  # per-video brightness offset
    crops = np.empty((num_crops, n, d), dtype=np.float32)
    for c in range(num_crops):
        crop_h = gain * (h + spec.rgb_crop_offset * rng.standard_normal(d)) + world.rgb_bias + offset
        crop_h += spec.rgb_noise_crop * rng.standard_normal((n, d))
        crops[c] = (spec.rgb_scale * pooled_relu(crop_h, spec.rgb_noise_cell)).astype(np.float32)

    # modalities: the same latents, no lighting nuisance, anomaly strong and class-specific
    mods: dict[str, np.ndarray] = {}
    for name, m in world.modality.items():
        ev = (anomaly_by_class * m["sens"]) @ world.anomaly_sig  # (T, Ke)
        dv = (distract_by_type * m["distractor_sens"]) @ world.distractor_sig  # (T, Ke)
        pre = (
            spec.mod_scene * scene @ m["scene"].T
            + spec.mod_activity * activity @ m["activity"].T
            + spec.mod_event * ev @ m["event"].T
            + spec.mod_distractor * dv @ m["event"].T
        )  # (T, d_j)
        if name == "flow":
            pre += spec.flow_camera * np.diff(nuisance, axis=0, prepend=nuisance[:1]) @ m["camera"].T
        if name == "text":  # caption-level semantics: coarse in time
            pre = _smooth(pre, spec.text_smooth)
        pre += spec.mod_noise * _ar1(rng, n, m["scene"].shape[0], 0.5)
        mods[name] = _nonlinear(name, pre).astype(np.float32)
    return crops, mods
