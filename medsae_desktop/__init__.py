"""medsae-desktop: offline sparse-autoencoder interpretation of chest-radiograph models.

Importing the package is cheap: no torch, Qt or onnxruntime at import time.
"""

__version__ = "0.1.0"
