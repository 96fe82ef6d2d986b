"""image3 associations: grouping from headers, jwst product names, association JSON."""

import json
import subprocess
from pathlib import Path

import pytest

from webbflow.associations import (
    associations_from_cals,
    image3_associations,
    opt_element,
    product_name,
    read_asn,
    write_asn,
)
from webbflow.exposures import exposure_from_header
from webbflow.io.errors import InputError

REPO = Path(__file__).resolve().parents[1]
ORACLE = REPO / ".oracle" / "bin" / "python"


def _row(obs=1, exp=1, det="NRCA1", filt="F200W", pupil="CLEAR", exp_type="NRC_IMAGE", program="1234"):
    header = {"PROGRAM": program, "OBSERVTN": str(obs), "VISIT": "1", "VISITGRP": "2", "SEQ_ID": "1",
              "ACT_ID": "1", "EXPOSURE": str(exp), "DETECTOR": det, "FILTER": filt, "PUPIL": pupil,
              "EXP_TYPE": exp_type, "SUBARRAY": "SUB160"}
    # A file name that says nothing: identity must come from the header.
    return exposure_from_header(header, f"/data/file{obs}{exp}{det}.fits")


def test_opt_element_follows_jwst_sorting():
    assert opt_element("F200W", "CLEAR") == "clear-f200w"
    assert opt_element("F444W", "F405N") == "f405n-f444w"
    assert opt_element("F322W2", "GRISMR") == "f322w2-grismr"
    assert opt_element("N/A", None) == "clear"
    assert product_name("1234", "7", "F150W", "CLEAR") == "jw01234-o007_t001_nircam_clear-f150w"


def test_grouping_by_program_observation_and_optical_path():
    rows = [_row(1, e, d, f) for e in (1, 2, 3) for d, f in (("NRCA1", "F200W"), ("NRCALONG", "F444W"))]
    rows += [_row(2, 1, "NRCA1", "F200W"), _row(1, 4, "NRCA1", "F200W", exp_type="NRC_TSIMAGE"),
             _row(1, 5, "NRCALONG", "F444W", pupil="F405N")]
    asns = image3_associations(rows)
    names = [a.product for a in asns]
    assert names == ["jw01234-o001_t001_nircam_clear-f200w", "jw01234-o001_t001_nircam_clear-f444w",
                     "jw01234-o001_t001_nircam_f405n-f444w", "jw01234-o002_t001_nircam_clear-f200w"]
    f200 = asns[0]
    assert f200.asn_id == "o001"
    # TSO exposure excluded; three dithers, sorted root names.
    assert f200.members == [f"jw01234001001_02101_0000{e}_nrca1" for e in (1, 2, 3)]
    assert len(asns[1].members) == 3 and len(asns[2].members) == 1 and asns[3].asn_id == "o002"


def test_asn_json_round_trip(tmp_path):
    asn = image3_associations([_row(1, e) for e in (1, 2)])[0]
    path = write_asn(asn, tmp_path / f"{asn.product}_asn.json")
    data = json.loads(path.read_text())
    assert data["asn_type"] == "image3" and data["asn_id"] == "o001" and data["asn_pool"] == "webbflow"
    assert data["products"][0]["name"] == "jw01234-o001_t001_nircam_clear-f200w"
    assert data["products"][0]["members"] == [
        {"expname": "jw01234001001_02101_00001_nrca1_cal.fits", "exptype": "science"},
        {"expname": "jw01234001001_02101_00002_nrca1_cal.fits", "exptype": "science"}]
    back = read_asn(path)
    assert back["product"] == asn.product
    assert [Path(m).name for m in back["members"]] == asn.expnames()
    assert Path(back["members"][0]).parent == tmp_path


def test_read_asn_rejects_incomplete_json(tmp_path):
    bad = tmp_path / "x_asn.json"
    bad.write_text(json.dumps({"products": []}))
    with pytest.raises(InputError, match="x_asn.json.*asn_id"):
        read_asn(bad)


def test_associations_from_cal_headers(tmp_path):
    from test_image3_synth import make_cal, make_sky

    truth = make_sky(5)
    paths = []
    for exp, filt in ((1, "F200W"), (2, "F200W"), (3, "F150W")):
        model, _ = make_cal(truth, exposure=exp, filt=filt, shape=(32, 32), noise=False)
        path = tmp_path / f"renamed_{exp}.fits"  # names carry no identity
        model.save(path)
        paths.append(path)
    asns = associations_from_cals(paths)
    assert [(a.product, len(a.members)) for a in asns] == [
        ("jw01234-o001_t001_nircam_clear-f150w", 1), ("jw01234-o001_t001_nircam_clear-f200w", 2)]


@pytest.mark.parity
@pytest.mark.skipif(not ORACLE.exists(), reason="needs the .oracle environment with jwst 3.0")
def test_jwst_reads_our_association(tmp_path):
    asn = image3_associations([_row(1, e) for e in (1, 2)])[0]
    path = write_asn(asn, tmp_path / "a_asn.json")
    code = ("import sys; from jwst.associations import load_asn; a = load_asn(open(sys.argv[1]));"
            "print(a['asn_type'], a['products'][0]['name'], len(a['products'][0]['members']))")
    out = subprocess.run([str(ORACLE), "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["image3", asn.product, "2"]
