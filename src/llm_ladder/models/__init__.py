"""Model backends. `base` holds the protocol; each backend is one module, loaded lazily."""
