"""numba kernels that run their ahead-of-time compiled twin when there is one, else numba's JIT on first call.

Importing numba costs ~0.3 s of CPU and its first jitted call another ~0.5 s (the typing and lowering
registries, see :mod:`webbflow.steps._warmup`), and loading numba, llvmlite and LLVM ~110 MiB of a job's
memory.  A kernel made with :func:`njit` (or :func:`lazy_njit`, the same) does not import numba: its call
runs the kernel's twin in :mod:`webbflow.aot`'s compiled module when one matches the arguments' types
exactly (dtype, ndim, layout, read-only, as numba types them), and otherwise makes the numba dispatcher
``@njit(**options)`` at import would have made (same Python function, so the same on-disk cache entry
and machine code) and calls it.  A ``parallel`` kernel runs its (serial) twin only in a job given one
thread (:func:`serial_job`).

A kernel that another kernel calls is typed by numba as its dispatcher, and :data:`prange` is ``range``
until numba is first needed, then ``numba.prange`` in every loaded ``webbflow`` module (numba reads a
kernel's globals when it compiles it).
"""

import functools
import os
import sys

import numpy as np

__all__ = ["Kernel", "dispatcher", "kernels", "lazy_njit", "njit", "num_threads", "prange", "serial_job",
           "set_num_threads"]

prange = range
"""``range`` until numba is imported by :func:`dispatcher`, then ``numba.prange`` (import it from here)."""

_THREADS = []  # the thread count a job asked for (set_num_threads) before numba was loaded


class Kernel:
    """A numba kernel that runs its compiled twin (:mod:`webbflow.aot`) or numba's JIT.

    Attributes
    ----------
    py_func : callable
        The Python function.
    njit_options : dict
        The options of :func:`numba.njit`.
    dispatcher : numba.core.registry.CPUDispatcher or None
        numba's dispatcher, once a call (or :func:`dispatcher`) made it.
    """

    def __init__(self, fn, options):
        functools.update_wrapper(self, fn)
        self.py_func, self.njit_options, self.dispatcher = fn, dict(options), None
        self._twins = None

    def __repr__(self):
        return f"<webbflow kernel {self.__module__}.{self.__qualname__}>"

    @property
    def targetoptions(self):
        """The dispatcher's options (numba's inliner reads a callee's ``inline`` there)."""
        return dispatcher(self).targetoptions

    def twin(self, args):
        """The compiled twin matching ``args``' types, or None."""
        if self._twins is None:
            from webbflow import aot

            parallel = bool(self.njit_options.get("parallel"))
            self._twins = [(f, keys, parallel) for f, keys in aot.twins(f"{self.__module__}.{self.__name__}")]
        if not self._twins:
            return None
        keys = tuple(map(_key, args))
        for function, declared, parallel in self._twins:
            if len(declared) == len(keys) and all(map(_matches, declared, keys)):
                return function if not parallel or serial_job() else None
        return None

    def __call__(self, *args):
        function = self.twin(args)
        if function is not None:
            return function(*args)
        if _TRACE:
            _trace(self, args)
        return (self.dispatcher or dispatcher(self))(*args)


_TRACE = os.environ.get("WEBBFLOW_AOT_TRACE")
"""A file to which every kernel call that runs numba's JIT appends its kernel and argument types, as a
:data:`webbflow.aot.SPEC` entry (how SPEC's signatures are found: run the jobs with it set)."""


def _code(key):
    """A :func:`_key` as a :data:`webbflow.aot.SPEC` type code (``f4``, ``u1[3C,ro]``)."""
    if key[0] == "?":
        return f"?{key[1].__name__}"
    code = key[1].str[1:]
    return code if key[0] == "s" else f"{code}[{key[2]}{key[3]}{',ro' if key[4] else ''}]"


def _trace(kernel, args):
    name = f"{kernel.__module__}.{kernel.__name__}".removeprefix("webbflow.")
    with open(_TRACE, "a") as out:  # one short line per write: whole lines even from several processes
        out.write(f"{name}\t{' '.join(_code(_key(a)) for a in args)}\n")


def _key(a):
    """numba's type of argument ``a`` as a :func:`webbflow.aot.parse` key."""
    if isinstance(a, np.ndarray):
        flags = a.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return ("a", a.dtype, a.ndim, layout, not flags.writeable)
    if isinstance(a, (bool, np.bool_)):
        return ("s", np.dtype(bool))
    if isinstance(a, int):
        return ("s", np.dtype(np.int64))
    if isinstance(a, float):
        return ("s", np.dtype(np.float64))
    if isinstance(a, np.generic):
        return ("s", a.dtype)
    return ("?", type(a))


def _matches(declared, key):
    if declared[0] != key[0] or declared[0] == "s":
        return declared == key
    if declared[1:3] != key[1:3] or declared[4] != key[4]:
        return False
    # an 'A' twin takes any layout (the same values: layout changes only the indexing code)
    return declared[3] in ("A", key[3])


def njit(*args, **options):
    """Decorator: a :class:`Kernel` of the function with ``numba.njit`` options.

    Use as ``@njit(cache=True, ...)`` (or bare ``@njit``).

    Parameters
    ----------
    *args
        The function, when used bare.
    **options
        Passed to :func:`numba.njit` when numba's JIT runs the kernel.

    Returns
    -------
    Kernel or callable
    """
    if args and callable(args[0]):
        return Kernel(args[0], options)
    return lambda fn: Kernel(fn, options)


lazy_njit = njit  # its former name: a kernel compiled on first call


def _numba_ready():
    """Import numba for a dispatcher: kernels typed as their dispatchers, ``prange`` set, threads limited."""
    global prange
    import numba

    if prange is not numba.prange:
        from numba.extending import typeof_impl

        @typeof_impl.register(Kernel)
        def _typeof_kernel(val, c):
            return typeof_impl(dispatcher(val), c)

        prange = numba.prange
        for name, module in list(sys.modules.items()):
            if name.startswith("webbflow") and getattr(module, "prange", None) is range:
                module.prange = numba.prange
        for n in _THREADS[-1:]:
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return numba


def dispatcher(kernel):
    """The numba dispatcher of a kernel, made now if no call has made it (a job server loads the
    kernel's cached machine code before it forks its jobs).

    Parameters
    ----------
    kernel : Kernel
        A function decorated with :func:`njit`.

    Returns
    -------
    numba.core.registry.CPUDispatcher
        ``numba.njit(**options)(kernel.py_func)``, the one every later JIT call of ``kernel`` uses.
    """
    if kernel.dispatcher is None:
        numba = _numba_ready()
        kernel.dispatcher = numba.njit(**kernel.njit_options)(kernel.py_func)
    return kernel.dispatcher


def kernels(module):
    """The numba kernels ``module`` defines, as their dispatchers (made now, as by :func:`dispatcher`:
    nothing is compiled).

    Parameters
    ----------
    module : module
        A module with ``@njit`` kernels (this module's or numba's); those it imports from other modules
        are left out.

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
        if isinstance(value, Kernel):
            value = dispatcher(value)
        if isinstance(value, CPUDispatcher):
            found[name] = value
    return found


def set_num_threads(n):
    """Run numba's parallel loops on at most ``n`` threads (now if numba is loaded, else when it is).

    Parameters
    ----------
    n : int
    """
    _THREADS.append(int(n))
    if "numba" in sys.modules and prange is not range:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def num_threads():
    """The threads numba's parallel loops would run on (``numba.get_num_threads()``), without loading
    numba when it is not loaded: the count :func:`set_num_threads` asked for, capped as numba caps it."""
    if "numba" in sys.modules and prange is not range:
        return sys.modules["numba"].get_num_threads()
    from webbflow.jobmode import cpus

    default = int(os.environ.get("NUMBA_NUM_THREADS") or 0) or cpus()
    return min(_THREADS[-1], default) if _THREADS else default


def serial_job():
    """Whether a ``parallel`` kernel would run on one thread here (its serial twin gives the same
    result): a job given one thread, or a process on one CPU."""
    return num_threads() == 1
