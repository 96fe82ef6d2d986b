"""stack_refs for coronagraphy, as jwst 3.0's ``coron.stack_refs.make_cube``.

Every integration of every PSF-reference exposure, in association order, in one cube.  jwst
builds it in float64 and the CubeModel schema casts SCI and ERR back to float32, so the stack
holds the members' float32 values unchanged; DQ is uint32.  No VAR arrays, no parameters.
"""

import numpy as np

__all__ = ["stack_refs"]


def stack_refs(members):
    """Concatenate the PSF exposures' integrations.

    Parameters
    ----------
    members : sequence of object
        Each with ``data``, ``err`` and ``dq`` arrays of shape (nints, ny, nx) (``err`` may be None:
        zeros, as an absent ERR of a CubeModel reads).

    Returns
    -------
    data, err : ndarray
        (sum of nints, ny, nx) float32.
    dq : ndarray
        (sum of nints, ny, nx) uint32.

    Raises
    ------
    ValueError
        No member, or members whose images differ in shape (jwst: "All PSF exposures must have the
        same x/y dimensions!").
    """
    if not members:
        raise ValueError("no PSF reference exposure to stack")
    shape = members[0].data.shape[-2:]
    for k, m in enumerate(members):
        if m.data.ndim != 3 or m.data.shape[-2:] != shape:
            raise ValueError(f"PSF member {k} has shape {m.data.shape}; all PSF exposures must be "
                             f"(nints, {shape[0]}, {shape[1]}) cubes")
    data = np.concatenate([np.asarray(m.data, np.float32) for m in members])
    err = np.concatenate([np.zeros(m.data.shape, np.float32) if m.err is None else np.asarray(m.err, np.float32)
                          for m in members])
    dq = np.concatenate([np.zeros(m.data.shape, np.uint32) if m.dq is None else np.asarray(m.dq, np.uint32)
                         for m in members])
    return data, err, dq
