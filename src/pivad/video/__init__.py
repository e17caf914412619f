"""Video input: streamed decoding and 16-frame snippets, the field's crops, and the I3D backbone."""

from pivad.video.decode import VideoInfo, iter_frames, iter_snippets, probe
from pivad.video.i3d import I3D

__all__ = ["I3D", "VideoInfo", "iter_frames", "iter_snippets", "probe"]
