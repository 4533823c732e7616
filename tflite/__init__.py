"""Device-side runtime for exported kerasseg models (``runtime.py``: numpy, Pillow and LiteRT only)."""
