"""MAST listing (recorded tables in place of astroquery's answers) and downloads from a local server.

The HTTP stand-in runs on 127.0.0.1 in a thread, speaks MAST's download endpoint
(``/api/v0.1/Download/file?uri=mast:JWST/product/<name>``), honours ``Range`` and can be told to
cut a response in half; nothing here reaches the real service, and every loop is bounded.
"""

import hashlib
import http.server
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from webbflow.download import DownloadError, download, download_url, list_products, products_from_table

DATA = Path(__file__).parent / "data" / "mast"


class RecordedObservations:
    """Stand-in for ``astroquery.mast.Observations`` answering with the recorded tables."""

    def __init__(self):
        self.calls = []

    def query_criteria(self, **criteria):
        self.calls.append(("query_criteria", criteria))
        table = Table.read(DATA / "observations.ecsv")
        if "filters" in criteria:
            keep = [any(f in row["filters"].split(";") for f in criteria["filters"]) for row in table]
            table = table[np.array(keep, bool)]
        return table

    def get_product_list(self, observations):
        self.calls.append(("get_product_list", list(observations["obsid"])))
        table = Table.read(DATA / "products.ecsv")
        return table[np.isin(table["parent_obsid"], list(observations["obsid"]))]

    def filter_products(self, products, **filters):
        self.calls.append(("filter_products", filters))
        return products[products["productSubGroupDescription"] == filters["productSubGroupDescription"]]


def test_list_products_queries_like_astroquery_and_selects():
    api = RecordedObservations()
    products = list_products("1234", observations=["1"], detectors=["nrca1"], exp_types=["NRC_IMAGE"],
                             observations_api=api)
    assert [p.filename for p in products] == ["jw01234001001_02101_00001_nrca1_uncal.fits",
                                              "jw01234001001_02101_00002_nrca1_uncal.fits"]
    assert products[0].uri == "mast:JWST/product/jw01234001001_02101_00001_nrca1_uncal.fits"
    query = dict(api.calls)["query_criteria"]
    assert query["obs_collection"] == "JWST" and query["proposal_id"] == "1234"
    assert query["instrument_name"] == ["NIRCAM/IMAGE"]
    assert dict(api.calls)["filter_products"] == {"productSubGroupDescription": "UNCAL"}
    by_filter = list_products(1234, filters=["F200W"], observations_api=RecordedObservations())
    assert [p.filename for p in by_filter] == ["jw01234002001_03101_00001_nrca1_uncal.fits"]
    everything = products_from_table(Table.read(DATA / "products.ecsv"), "01234")
    assert len(everything) == 4  # uncal only: cal and i2d rows are not exposures to reduce
    assert download_url(products[0].uri, "http://127.0.0.1:1") == (
        "http://127.0.0.1:1/api/v0.1/Download/file?uri=mast:JWST/product/jw01234001001_02101_00001_nrca1_uncal.fits")


def test_segments_of_a_time_series_are_listed():
    rows = Table({"productFilename": ["jw01366002001_04103_00001-seg001_nrcalong_uncal.fits",
                                      "jw01366002001_04103_00001-seg002_nrcalong_uncal.fits",
                                      "jw01366002001_04103_00001-seg001_nrcalong_rateints.fits"],
                  "dataURI": ["mast:JWST/product/a", "mast:JWST/product/b", "mast:JWST/product/c"]})
    products = products_from_table(rows, 1366, detectors=["nrcalong"])
    assert [p.filename for p in products] == list(rows["productFilename"][:2])


class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}  # name -> bytes
    cut = set()  # names whose next response stops half-way
    log = []  # (name, Range header, status)

    def do_GET(self):  # noqa: N802 (http.server API)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        name = query.get("uri", [""])[0].rsplit("/", 1)[-1]
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            self.log.append((name, None, 404))
            return
        start, status = 0, 200
        header = self.headers.get("Range")
        if header:
            start = int(header.removeprefix("bytes=").split("-")[0])
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.log.append((name, header, status))
        if name in self.cut:
            self.cut.discard(name)
            self.wfile.write(body[: len(data) // 2 - start])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files, _Handler.cut, _Handler.log = {}, set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _uncal_bytes(tmp_path, make, name, seed=0):
    (tmp_path / "src").mkdir(exist_ok=True)
    path = make.uncal(tmp_path / "src" / name, make.ramp(rate=50.0 + seed))
    with fits.open(path) as hdul:
        for hdu in hdul:
            hdu.add_checksum()  # as MAST products carry DATASUM/CHECKSUM
        hdul.writeto(path, overwrite=True, checksum=True)
    return path.read_bytes()


def test_download_fetches_the_listed_files(tmp_path, make, server):
    url, handler = server
    names = [p.filename for p in products_from_table(Table.read(DATA / "products.ecsv"), "01234")][:2]
    for i, name in enumerate(names):
        handler.files[name] = _uncal_bytes(tmp_path, make, name, seed=i)
    out = tmp_path / "uncal"
    for name in names:
        data = handler.files[name]
        got = download(download_url(f"mast:JWST/product/{name}", url), out / name, size=len(data),
                       sha256=hashlib.sha256(data).hexdigest(), retries=1, backoff=0)
        assert got.read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no .part left behind
    assert [s for _, _, s in handler.log] == [200, 200]


def test_download_resumes_a_cut_transfer(tmp_path, make, server):
    url, handler = server
    name = "jw01234001001_02101_00001_nrca1_uncal.fits"
    data = handler.files[name] = _uncal_bytes(tmp_path, make, name)
    handler.cut.add(name)
    got = download(download_url(f"mast:JWST/product/{name}", url), tmp_path / "out" / name, size=len(data),
                   retries=2, backoff=0)
    assert got.read_bytes() == data
    # first answer cut at half the file; the second asked for exactly the missing half
    assert handler.log[0] == (name, None, 200)
    assert handler.log[1] == (name, f"bytes={len(data) // 2}-", 206)
    assert len(handler.log) == 2


def test_a_partial_download_of_an_ended_run_is_resumed_and_removed(tmp_path, make, server):
    """A run that ends (a failure or SIGKILL) with half the file leaves it in its own hidden folder;
    the next run takes it over (asks only for the rest) and leaves nothing behind.  A live writer's
    folder is not touched."""
    import os
    import subprocess
    import sys

    url, handler = server
    name = "jw01234001001_02101_00001_nrca1_uncal.fits"
    data = handler.files[name] = _uncal_bytes(tmp_path, make, name)
    handler.cut.add(name)
    dest = tmp_path / "out" / name
    link = download_url(f"mast:JWST/product/{name}", url)
    ended = (f"from webbflow.download import download\n"
             f"download({link!r}, {str(dest)!r}, size={len(data)}, retries=0, backoff=0)\n")
    proc = subprocess.run([sys.executable, "-c", ended], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "DownloadError" in proc.stderr, proc.stderr[-2000:]
    (left,) = dest.parent.glob(f".{name}.*.part")  # .<name>.<host>-<pid>.<random>.part
    assert [p.stat().st_size for p in left.iterdir()] == [len(data) // 2] and not dest.exists()
    host = left.name[len(name) + 2:].split(".")[0].rsplit("-", 1)[0]
    live = dest.parent / f".{name}.{host}-{os.getpid()}.live.part"
    live.mkdir()  # another download of the same name, still running (this process)

    assert download(link, dest, size=len(data), retries=0, backoff=0).read_bytes() == data
    assert handler.log[-1] == (name, f"bytes={len(data) // 2}-", 206)  # only the missing half
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([name, live.name])
    # a file already present: a leftover of a killed run is removed too
    left.mkdir()
    (left / name).write_bytes(data[:10])
    assert download(link, dest, size=len(data), retries=0, backoff=0) == dest
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([name, live.name])


def test_download_refuses_wrong_size_or_checksum(tmp_path, make, server):
    url, handler = server
    name = "jw01234001001_02101_00001_nrca1_uncal.fits"
    data = handler.files[name] = _uncal_bytes(tmp_path, make, name)
    dest = tmp_path / "out" / name
    link = download_url(f"mast:JWST/product/{name}", url)
    with pytest.raises(DownloadError, match=f"size {len(data)} bytes, expected {len(data) + 10}"):
        download(link, dest, size=len(data) + 10, retries=0, backoff=0)
    assert not dest.exists() and not list(dest.parent.iterdir())  # no partial file kept
    with pytest.raises(DownloadError, match="sha256"):
        download(link, dest, size=len(data), sha256="0" * 64, retries=0, backoff=0)
    # same size, one byte of the science data flipped: the FITS DATASUM no longer matches
    corrupt = bytearray(data)
    corrupt[-100] ^= 0xFF
    handler.files[name] = bytes(corrupt)
    with pytest.raises(DownloadError, match="FITS checksum mismatch"):
        download(link, dest, size=len(data), retries=0, backoff=0)
    assert not dest.exists()
    with pytest.raises(DownloadError, match="failed after 2 attempts"):
        download(download_url("mast:JWST/product/missing_uncal.fits", url), tmp_path / "missing_uncal.fits",
                 retries=1, backoff=0)


@pytest.mark.workflow
def test_workflow_downloads_then_reduces(tmp_path, make, server):
    """download.program set: the checkpoint fetches the listed files from the stand-in, then the
    exposure table is built from them and each is reduced with references chosen through crds."""
    from _snakemake import run_snakemake

    from webbflow.refs.crds_cache import build_cache

    url, handler = server
    rows = []
    for exposure in (1, 2):
        name = f"jw01234001001_02101_0000{exposure}_nrca1_uncal.fits"
        (tmp_path / "src").mkdir(exist_ok=True)
        path = make.uncal(tmp_path / "src" / name, make.ramp(nints=1, ngroups=4, rate=40.0 * exposure),
                          EXPOSURE=str(exposure))
        handler.files[name] = path.read_bytes()
        rows.append((name, f"mast:JWST/product/{name}", len(handler.files[name]), "UNCAL"))
    handler.cut.add(rows[0][0])  # the first transfer breaks half-way and is resumed
    listing = tmp_path / "products.ecsv"
    Table(rows=rows, names=("productFilename", "dataURI", "size", "productSubGroupDescription")).write(listing)
    make.reference_set(tmp_path / "refs", "NRCA1")
    build_cache(tmp_path / "refs", tmp_path / "crds_cache")
    config = tmp_path / "mast.yaml"
    config.write_text(f"inputs: {{uncal_dir: {tmp_path / 'uncal'}}}\nresults_dir: out\n"
                      f"download: {{program: 1234, product_list: {listing}, mast_url: '{url}', retries: 2}}\n"
                      f"crds: {{cache: {tmp_path / 'crds_cache'}, context: jwst_9000.pmap}}\n")
    work = tmp_path / "work"
    work.mkdir()
    run_snakemake(work, "--cores", "2",
                  # stage 1 only (later stages need references this small cache lacks)
                  *[f"out/detector1/f200w/{n.replace('_uncal', '_' + s)}" for n, *_ in rows for s in ("rate", "rateints")],
                  "--configfile", str(config), timeout=300)
    for name, _, size, _ in rows:
        assert (tmp_path / "uncal" / name).read_bytes() == handler.files[name]
    assert (rows[0][0], f"bytes={rows[0][2] // 2}-", 206) in handler.log
    rates = sorted(p.name for p in (work / "out" / "detector1").rglob("*_rate.fits"))
    assert rates == [n.replace("_uncal", "_rate") for n, *_ in rows]
    header = fits.getheader(work / "out" / "detector1" / "f200w" / rates[1])
    assert header["R_GAIN"] == "crds://webbflow_nrca1_gain_full.fits" and header["CRDS_CTX"] == "jwst_9000.pmap"
    manifest = (work / "out" / "download" / "manifest.json").read_text()
    assert rows[1][0] in manifest
