"""The AI brain: sentiment, walk-forward ML models and their registry, regimes, the three views
(banker, investor, market) and their ensemble. Features live in :mod:`hflite.features`."""
