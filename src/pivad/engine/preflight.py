"""Every input a training run will read, checked before its run folder exists and its first step.

A run that fails on its annotation after an hour of training, or leaves an empty ``vN`` behind for a
missing teacher checkpoint, costs the user more than a few seconds of header reads up front. Checked:
the config's phases, the output folder, the train (and test) lists, every feature file's header
(dtype and shape), the modality files, the ground truth (annotation parsed, or ``gt.npy`` binary)
and the teacher checkpoint. Values are not read here; the loaders check them as they go.
"""

from __future__ import annotations

from pathlib import Path

from pivad.config import Config
from pivad.errors import CheckpointError, ConfigError, DataError


def _check_features(cfg: Config, which: str) -> list:
    from pivad.data.bundle import _list
    from pivad.data.features import feature_shape

    d = cfg.data
    items = _list(cfg, which)
    if not items:
        raise DataError(f"{getattr(d, f'{which}_list')}: no videos listed")
    for item in items:
        for path in item.files:
            feature_shape(path, d.feature_dim, crops=d.layout != "per_crop")
    return items


def _check_modalities(cfg: Config, train_items: list, test_items: list | None) -> None:
    from pivad.data.bundle import _store
    from pivad.data.features import feature_shape

    store = _store(cfg)
    if store is None:
        return
    missing = store.missing(item.name for item in train_items)
    if missing:
        raise DataError(f"{missing[0]}: modality file not found ({len(missing)} missing for the training videos)")
    if test_items is not None:
        missing = store.missing(item.name for item in test_items)
        if missing and len(missing) != len(test_items) * len(store.names):
            raise DataError(f"{missing[0]}: modality file not found ({len(missing)} missing for the test "
                            "videos; provide all of them or none)")
    for name, dim in store.dims.items():  # one header per modality: a wrong width fails here, not at step 1
        path = store.path(name, train_items[0].name)
        feature_shape(path, dim)


def _check_teacher(cfg: Config) -> None:
    from pivad.engine.checkpoint import load_model

    path = Path(cfg.train.teacher_ckpt)
    _, tcfg, meta = load_model(path, cfg)
    if meta["kind"] != "urdmu":
        raise CheckpointError(f"{path}: the teacher must be a UR-DMU checkpoint, found {meta['kind']}")
    if (tcfg.model.hidden_dim, tcfg.model.input_dim) != (cfg.model.hidden_dim, cfg.model.input_dim):
        raise ConfigError(f"{path}: teacher widths (input {tcfg.model.input_dim}, hidden {tcfg.model.hidden_dim})"
                          f" differ from model.* of this config")


def check_run_inputs(cfg: Config, *, evaluate: bool = True, out_dir: str | Path | None = None) -> None:
    """Raise the :class:`~pivad.errors.PivadError` the run would meet, before anything is written.

    ``evaluate``: the run ends with a test-set evaluation (so the test list and ground truth are needed
    too); ``out_dir``: where the run folder will be made (``train.out_dir`` when None).
    """
    from pivad.data.features import feature_shape
    from pivad.engine.evaluate import GroundTruth
    from pivad.engine.trainer import plan_phases
    from pivad.outputs import check_output_dir

    plan_phases(cfg)
    check_output_dir(out_dir if out_dir is not None else cfg.train.out_dir,
                     "--run-dir" if out_dir is not None else "train.out_dir")
    train_items = _check_features(cfg, "train")
    needs_test = evaluate or cfg.train.selection == "test"
    test_items = _check_features(cfg, "test") if needs_test else None
    _check_modalities(cfg, train_items, test_items)
    if needs_test:
        gt = GroundTruth.from_config(cfg)  # parses the annotation file, or checks gt.npy is a binary vector
        if gt.flat is not None:
            need = 16 * sum(feature_shape(item.files[0], cfg.data.feature_dim,
                                          crops=cfg.data.layout != "per_crop")[0] for item in test_items)
            if len(gt.flat) != need:
                raise DataError(f"{cfg.data.gt}: {len(gt.flat):,} frames, the test features need {need:,} "
                                "(16 per snippet)")
        else:  # every event within the features' frames (pivad.data.ground_truth), before training
            from pivad.data.ground_truth import build_frame_gt

            build_frame_gt([(item.name, feature_shape(item.files[0], cfg.data.feature_dim,
                                                      crops=cfg.data.layout != "per_crop")[0])
                            for item in test_items], gt.annotations)  # fmt: skip
    if cfg.train.teacher_ckpt:
        _check_teacher(cfg)
