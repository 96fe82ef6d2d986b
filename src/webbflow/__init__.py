"""webbflow: JWST NIRCam reduction, from uncal ramps to science products."""

__version__ = "0.1.0"
