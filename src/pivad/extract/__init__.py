"""Feature extraction from videos: the per-video job runner, I3D RGB features, modality features."""
