"""Losses as pure functions: UR-DMU's L_MIL (:mod:`.mil`) and the Poly-modal Inductor's (:mod:`.inductor`)."""
