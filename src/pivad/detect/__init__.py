"""Detection with a trained model: offline per video, streaming, intervals, pictures (``pivad detect``)."""
