"""How webbflow imports photutils: without its scan of every installed distribution, and
photutils.segmentation without scipy.signal.  Every webbflow module that imports photutils, and the
job server's warm-up (:mod:`webbflow.jobserver`), imports it through :func:`import_photutils`.

The distribution scan: photutils' ``utils._optional_deps`` calls
``importlib.metadata.packages_distributions()`` to learn its own distribution's name, which reads the
file list of every installed distribution (~0.1 s of CPU); its fallback, the import name, is that
name.  :func:`_skip_distribution_scan` imports that module with the scan answering ``{}`` when
photutils' distribution is installed under its import name: the same module, the same answers.

scipy.signal: ``photutils.segmentation.core`` does ``from scipy.signal import fftconvolve`` at import,
for one branch of ``SegmentationImage.make_source_mask`` (a non-rectangular footprint) that
source_catalog never takes; importing ``scipy.signal`` imports ``scipy.stats`` too (its peak finding),
~0.6 s of CPU that every image3 job (or the job server's image3 warm-up) paid for nothing.  While
photutils.segmentation is first imported, :func:`import_segmentation` puts a stand-in for
``scipy.signal`` in ``sys.modules`` whose ``fftconvolve`` imports the real module and calls its
``fftconvolve`` on first use (the same function on the same arguments: the same numbers); any other
name asked of the stand-in imports the real module at once.  The stand-in is removed as soon as that
import is done, so every later ``import scipy.signal`` gets scipy's own module.
"""

import importlib
import sys
import types

__all__ = ["import_photutils", "import_segmentation"]

_MODULE = "photutils.segmentation"


def import_photutils(module="photutils"):
    """Import photutils' ``module`` as webbflow does (see the module notes).

    Parameters
    ----------
    module : str
        ``photutils`` or one of its submodules.

    Returns
    -------
    module
        The imported module.
    """
    _skip_distribution_scan()
    if module == _MODULE or module.startswith(_MODULE + "."):
        import_segmentation()
    return importlib.import_module(module)


def _skip_distribution_scan():
    """Import photutils' ``utils._optional_deps`` without its scan of every installed distribution
    (once; nothing when photutils' distribution has another name or none: photutils looks for itself)."""
    from importlib import metadata

    if "photutils.utils._optional_deps" in sys.modules:
        return
    try:
        if metadata.distribution("photutils").metadata["Name"] != "photutils":
            raise ValueError("another distribution name")
    except (metadata.PackageNotFoundError, ValueError, KeyError, TypeError):
        return
    scan = metadata.packages_distributions
    metadata.packages_distributions = dict  # {}: photutils falls back on its import name
    try:
        import photutils.utils._optional_deps  # noqa: F401
    finally:
        metadata.packages_distributions = scan


def _fftconvolve(*args, **kwargs):
    """scipy.signal.fftconvolve, with scipy.signal imported on the first call."""
    from scipy.signal import fftconvolve

    return fftconvolve(*args, **kwargs)


class _DeferredSignal(types.ModuleType):
    """The stand-in for ``scipy.signal``: ``fftconvolve`` deferred, anything else the real module's.

    Dunder names stay missing (the import system asks for ``__path__`` on every ``from scipy.signal
    import ...``: the stand-in is no package, and answering would import the real module)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if sys.modules.get("scipy.signal") is self:
            del sys.modules["scipy.signal"]
        return getattr(importlib.import_module("scipy.signal"), name)


def import_segmentation():
    """Import ``photutils.segmentation`` (without scipy.signal when neither is imported yet).

    Returns
    -------
    module
        ``photutils.segmentation``.
    """
    _skip_distribution_scan()
    if _MODULE in sys.modules or "scipy.signal" in sys.modules:
        return importlib.import_module(_MODULE)
    import scipy  # noqa: F401 (the package itself: cheap, its submodules load lazily)

    stand_in = _DeferredSignal("scipy.signal")
    stand_in.fftconvolve = _fftconvolve
    sys.modules["scipy.signal"] = stand_in
    try:
        return importlib.import_module(_MODULE)
    finally:
        if sys.modules.get("scipy.signal") is stand_in:
            del sys.modules["scipy.signal"]
