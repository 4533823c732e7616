"""The few custom layers kerasseg needs, all serializable (``package="kerasseg"``) and free of ``Lambda``."""
