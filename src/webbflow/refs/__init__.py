"""Reference files: selection from a local folder and decoding to step arrays."""

from webbflow.refs.load import PlaneStack, load_reference, load_references, map_dq
from webbflow.refs.select import DETECTOR1_REFTYPES, scan_reference_dir, select_references

__all__ = [
    "DETECTOR1_REFTYPES",
    "PlaneStack",
    "load_reference",
    "load_references",
    "map_dq",
    "scan_reference_dir",
    "select_references",
]
