"""What a stage's products record about how they were made: webbflow version, step parameters, config digest.

One place for the jobs (:mod:`webbflow.jobs`, which add the CRDS entries) and for the stages
called directly (their products carry the same WF_VER, WF_PARS and WF_CFGD either way).

Standard library only at import: job adapters import this before any science code.
"""

from pathlib import Path

__all__ = ["reference_names", "stage_provenance"]


def reference_names(references):
    """reftype -> file name of the references a job reads (types without a file left out)."""
    return {reftype: Path(path).name for reftype, path in references.items() if path}


def stage_provenance(steps, provenance=None, **inputs):
    """What a stage's products record about the configuration they were made with.

    Parameters
    ----------
    steps : dict
        The effective step parameters of the job.
    provenance : dict, optional
        Entries that win over the computed ones (a job's own, its CRDS context).
    **inputs
        What else identifies the products' configuration, e.g.
        ``references=reference_names(...)`` (stages 1 and 2) or ``members=[...]``
        (stage 3); hashed into ``config_digest`` with the steps.

    Returns
    -------
    dict
        ``webbflow_version``, ``step_parameters`` and ``config_digest`` (sha256 of
        the canonical JSON of ``{"steps": steps, **inputs}``): WF_VER, WF_PARS and
        WF_CFGD in the products; then the entries of ``provenance``.
    """
    import webbflow
    from webbflow.config import config_digest

    return {"webbflow_version": webbflow.__version__, "step_parameters": steps,
            "config_digest": config_digest({"steps": steps, **inputs}), **(provenance or {})}
