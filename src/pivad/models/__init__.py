"""Models: UR-DMU (teacher / baseline / student trunk) and π-VAD."""

from pivad.models.urdmu import URDMU, URDMUOutput

__all__ = ["URDMU", "URDMUOutput"]
