"""Losses as pure functions: UR-DMU's L_MIL (:mod:`.mil`), PEL4VAD's (:mod:`.pel4vad`), each backbone's by type (:mod:`.backbone`) and the Poly-modal Inductor's (:mod:`.inductor`)."""
