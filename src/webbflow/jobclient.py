"""A stage job's own start without Snakemake's script preamble (issues 14 and 18).

Snakemake runs a ``script:`` rule as ``python <temporary script>`` whose preamble unpickles the
job's ``snakemake`` object: that imports ``snakemake.logging`` and ``snakemake.iocontainers``
(~0.1 s of CPU per job, as much as the rest of a served job's start) before the script runs.  The
stage rules are ``shell:`` rules instead::

    shell:
        job_command("detector1.py", locals())

Snakemake evaluates that expression twice.  While it reads the rule (module level, no job) the
answer is :data:`TEMPLATE`: the rule's recorded code (Snakemake re-runs a job when its rule's code
differs from the code recorded with its outputs), the very text the ``script:`` rule recorded, so
the products of the ``script:`` rules are not made again.  When a job runs, in the rule's function
(its ``locals()`` carry Snakemake's rule-function marker, ``input``, ``output``, ``params``, ``log``
...), :func:`shell_command` writes the job's description, plain data, to a file of its own under
:data:`JOB_DIR` and answers ``<python> workflow/scripts/<script> <that file>``: a short command for
any association size (an argument holds at most 128 KiB on Linux).

The adapter script, the one place that maps a rule's ``input``/``output``/``params`` to a
:mod:`webbflow.jobs` function's arguments, starts with :func:`snakemake_object`: under ``script:``
(the report's rules) the object Snakemake injected, under ``shell:`` a stand-in read from the job
file (:class:`Job`, with :class:`Names` for Snakemake's named lists), with the same attributes and
values.  The script then hands the job by name (``"webbflow.jobs:detector1"``) to
:func:`webbflow.workflow.run_job`: with the warm job server up, this process imports only the
standard library and webbflow's light modules (no numpy, astropy or snakemake).

Standard library only at import time: every stage job pays it.
"""

import os
import pickle
import sys

__all__ = ["JOB_DIR", "TEMPLATE", "Job", "Names", "read_job", "shell_command", "snakemake_object", "write_job"]

JOB_DIR = os.path.join(".snakemake", "webbflow", "jobs")
"""Where a job's description waits for its process (relative to the working folder); the process
removes it once read (kept with ``--skip-script-cleanup``, as Snakemake keeps its temporary scripts)."""

TEMPLATE = '        "../scripts/{script}"\n'
"""The stage rules' command as Snakemake records it (``rule.shellcmd``: compared for the ``code``
re-run trigger, printed by ``-p``): what Snakemake 9 recorded as the code of the ``script:`` rule it
replaces (the source text of its ``script:`` line), so neither results made before this change nor
later ones re-run for it.  It must not change."""

_MARKER = "__is_snakemake_rule_func"
"""The keyword Snakemake gives every rule function (``snakemake.common.RULEFUNC_CONTEXT_MARKER``)."""


class Names(list):
    """A Snakemake named list (``input``, ``output``, ``params``, ``log``, ``wildcards``, ``resources``)
    as plain data: its values in order, the named ones also as attributes, ``[name]``, ``get``,
    ``keys`` and ``items``.

    Parameters
    ----------
    values : iterable
        Every value in order.
    names : dict, optional
        name -> value, as Snakemake gives it (a name of one item: the item; of several: a list).
    """

    def __init__(self, values=(), names=None):
        super().__init__(values)
        self._names = dict(names or {})

    def __getattr__(self, name):
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        """The value of ``key``, or ``default`` when the list has no such name."""
        return self._names.get(key, default)

    def keys(self):
        """The names."""
        return self._names.keys()

    def items(self):
        """(name, value) of the named values, in Snakemake's order."""
        return self._names.items()

    def __reduce__(self):
        return Names, (list(self), self._names)


class Job:
    """The ``snakemake`` object of a ``script:`` job, as plain data (:func:`read_job`).

    Attributes: ``input``, ``output``, ``params``, ``wildcards``, ``resources``, ``log``
    (:class:`Names`), ``threads``, ``rule``, ``config`` (a dict) and ``scriptdir``.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        return f"Job(rule={self.__dict__.get('rule')!r})"


def _plain(value):
    """``value`` without Snakemake's types: its path strings as ``str``, its named lists as lists
    (dicts, lists and tuples of them too); anything else as it is (pickled with the job)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if type(value) is tuple:
        return tuple(_plain(v) for v in value)
    return value


def _names(named):
    """A Snakemake named list as the arguments of :class:`Names`."""
    return ([_plain(v) for v in named], {name: _plain(v) for name, v in named.items()})


def write_job(namespace, config, folder=JOB_DIR):
    """Write the job of a rule function's ``namespace`` to a new file in ``folder``; its absolute path.

    Parameters
    ----------
    namespace : dict
        The rule function's ``locals()`` (``input``, ``output``, ``params``, ``wildcards``, ``threads``,
        ``resources``, ``log``, ``rule``, ``cleanup_scripts``).
    config : dict
        The workflow's config (the adapters read settings that must not re-run jobs from it).
    folder : str
        Created if needed.

    Returns
    -------
    str
    """
    import tempfile

    job = {"rule": str(namespace["rule"]), "threads": namespace.get("threads"), "config": _plain(dict(config)),
           "keep": not namespace.get("cleanup_scripts", True)}
    for field in ("input", "output", "params", "wildcards", "resources", "log"):
        job[field] = _names(namespace[field])
    folder = os.path.abspath(folder)
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f"{job['rule']}-", suffix=".job", dir=folder)
    with os.fdopen(fd, "wb") as handle:
        pickle.dump(job, handle, protocol=4)
    return path


def shell_command(namespace, script, config):
    """The ``shell:`` command of a stage rule (see the module notes).

    Parameters
    ----------
    namespace : dict
        ``locals()`` where Snakemake evaluates the command: the Snakefile's module level while it
        reads the rule (then :data:`TEMPLATE`), the rule function when a job runs.
    script : str or os.PathLike
        The rule's adapter script (``workflow/scripts/<job>.py``).
    config : dict
        The workflow's config.

    Returns
    -------
    str
        A command for Snakemake's ``shell()`` (braces escaped): the job's Python (Snakemake's own,
        or the ``python`` of the job's conda environment, container or modules, as for ``script:``),
        the script, the job file.
    """
    import shlex

    if not namespace.get(_MARKER):
        return TEMPLATE.format(script=os.path.basename(script))
    in_env = any(namespace.get(name) for name in ("conda_env", "container_img", "env_modules"))
    python = "python" if in_env else sys.executable
    command = " ".join(shlex.quote(str(part)) for part in (python, script, write_job(namespace, config)))
    return command.replace("{", "{{").replace("}", "}}")


def read_job(path, remove=True):
    """The :class:`Job` of the file :func:`write_job` wrote (removed, unless it asks to be kept).

    Parameters
    ----------
    path : str
    remove : bool
        Remove the file once read (unless written with ``--skip-script-cleanup``).

    Returns
    -------
    Job
    """
    with open(path, "rb") as handle:
        job = pickle.load(handle)
    if remove and not job.get("keep"):
        os.unlink(path)
    fields = {name: Names(*job[name]) for name in ("input", "output", "params", "wildcards", "resources", "log")}
    return Job(rule=job["rule"], threads=job["threads"], config=job["config"], bench_iteration=None,
               scriptdir=os.path.dirname(os.path.abspath(sys.argv[0])), **fields)


def snakemake_object(namespace):
    """The job's ``snakemake`` object: the one Snakemake injected into a ``script:`` (in
    ``namespace``, the script's globals), else the :class:`Job` of the file named on the command line
    (a ``shell:`` rule's :func:`shell_command`).

    Parameters
    ----------
    namespace : dict
        The adapter script's ``globals()``.

    Returns
    -------
    snakemake.script.Snakemake or Job
    """
    if "snakemake" in namespace:
        return namespace["snakemake"]
    # `python <script>` put the scripts' folder first on sys.path; Snakemake's preamble only appends it
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    if sys.path and sys.path[0] == here:
        del sys.path[0]
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python {sys.argv[0]} JOB_FILE (the file a shell: rule's job_command writes)")
    return read_job(sys.argv[1])
