"""Models: UR-DMU (teacher / baseline / student trunk) and π-VAD."""

from pivad.models.urdmu import URDMU, URDMUOutput
from pivad.models.pivad import PIVAD, PIVADInference, PIVADOutput
from pivad.models.factory import build_model

__all__ = ["URDMU", "URDMUOutput", "PIVAD", "PIVADInference", "PIVADOutput", "build_model"]
