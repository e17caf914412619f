"""Models: the backbones (UR-DMU, PEL4VAD, RTFM: teacher / baseline / student) and π-VAD."""

from pivad.models.urdmu import URDMU, URDMUOutput
from pivad.models.pel4vad import PEL4VAD, PEL4VADOutput
from pivad.models.rtfm import RTFMBackbone, RTFMOutput
from pivad.models.pivad import PIVAD, PIVADInference, PIVADOutput
from pivad.models.factory import build_model

__all__ = ["URDMU", "URDMUOutput", "PEL4VAD", "PEL4VADOutput", "RTFMBackbone", "RTFMOutput", "PIVAD", "PIVADInference", "PIVADOutput",
           "build_model"]
