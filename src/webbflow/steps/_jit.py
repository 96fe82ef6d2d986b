"""numba kernels compiled on first call, so that importing a step module does not import numba.

Importing numba costs ~0.3 s of CPU and its first jitted call another ~0.5 s (the typing and lowering
registries, see :mod:`webbflow.steps._warmup`).  A step module whose kernel serves one mode only (the
rolling median of the time-series outlier detection, say) would make every job that imports the module
pay the import, used or not; :func:`lazy_njit` defers both to the kernel's first call.
"""

import functools

__all__ = ["dispatcher", "kernels", "lazy_njit"]


def lazy_njit(**options):
    """Decorator: ``numba.njit(**options)`` applied to the function on its first call.

    The compiled dispatcher is the one ``@njit(**options)`` at import would have made (same Python
    function, so the same on-disk cache entry with ``cache=True`` and the same machine code); only the
    moment numba is imported changes.

    Parameters
    ----------
    **options
        Passed to :func:`numba.njit` (``cache=True``, ``error_model=...``).

    Returns
    -------
    callable
        A decorator.  The wrapped function keeps the Python original as ``py_func``.

    Notes
    -----
    For leaf kernels, called from Python: a jitted function cannot call the wrapper (numba sees a
    plain Python function); a kernel that other kernels call keeps a plain ``@njit``.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def call(*args):
            return (call.dispatcher or dispatcher(call))(*args)

        call.dispatcher = None
        call.py_func = fn
        call.njit_options = dict(options)
        return call

    return decorate


def dispatcher(kernel):
    """The numba dispatcher of a :func:`lazy_njit` kernel, made now if its first call has not made it
    (for a job server that loads the kernel's cached machine code before it forks its jobs).

    Parameters
    ----------
    kernel : callable
        A function decorated with :func:`lazy_njit`.

    Returns
    -------
    numba.core.registry.CPUDispatcher
        ``numba.njit(**options)(kernel.py_func)``, the one every later call of ``kernel`` uses.
    """
    if kernel.dispatcher is None:
        from numba import njit

        kernel.dispatcher = njit(**kernel.njit_options)(kernel.py_func)
    return kernel.dispatcher


def kernels(module):
    """The numba kernels ``module`` defines, :func:`lazy_njit` ones as their dispatchers (made now, as
    by :func:`dispatcher`: nothing is compiled).

    Parameters
    ----------
    module : module
        A module with ``@njit`` or ``@lazy_njit`` kernels; those it imports from other modules are
        left out.

    Returns
    -------
    dict
        name -> ``numba.core.registry.CPUDispatcher``, in the module's order.
    """
    from numba.core.registry import CPUDispatcher

    found = {}
    for name, value in list(vars(module).items()):
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(getattr(value, "njit_options", None), dict) and hasattr(value, "py_func"):
            value = dispatcher(value)  # a lazy_njit kernel
        if isinstance(value, CPUDispatcher):
            found[name] = value
    return found
