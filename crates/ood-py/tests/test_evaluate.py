"""oodkit.evaluate: the `ood eval` run and its reports, from arrays or the CLI's files."""

import json
import pickle

import numpy as np
import pytest

import oodkit


def sets(data, files=None):
    head = (data.weight, data.bias)
    if files is not None:
        return dict(fit=files.fit, id=files.id, ood={"near": {"shifted": files.ood},
                                                        "far": {"noise": files.test}},
                    head=files.head)
    fit = {"features": data.fit, "labels": data.labels}
    return dict(fit=fit, id=(data.id_test, None, data.id_labels),
                ood={"near": {"shifted": data.ood_test}, "far": {"noise": data.test}}, head=head)


def test_arrays_and_files_give_the_same_rows(data, files):
    dets = ["msp", "knn", "vim", "mahalanobis"]
    a = oodkit.evaluate(**sets(data), detectors=dets)
    b = oodkit.evaluate(**sets(data, files), detectors=dets)
    assert a.rows == b.rows
    assert a.id_accuracy == b.id_accuracy is not None
    assert [r["detector"] for r in a.rows][::4] == dets
    groups = [(r["dataset"], r["group"], r["is_mean"]) for r in a.rows[:4]]
    assert groups == [("shifted", "near", False), ("noise", "far", False),
                      ("nearood", "near", True), ("farood", "far", True)]


def test_rows_equal_metrics_of_the_detectors_scores(data):
    r = oodkit.evaluate(**sets(data), detectors=["knn", "energy"], convention="hendrycks")
    head = (data.weight, data.bias)
    for name in ("knn", "energy"):
        f = oodkit.Detector(name).fit(data.fit, labels=data.labels, head=head)
        s_id, s_ood = f.score(data.id_test), f.score(data.ood_test)
        assert np.array_equal(r.scores[name]["id"], s_id)
        assert np.array_equal(r.scores[name]["ood"]["shifted"], s_ood)
        m = oodkit.metrics(s_id, s_ood, "hendrycks")
        row = next(x for x in r.rows if x["detector"] == name and x["dataset"] == "shifted")
        assert [row[k] for k in ("auroc", "fpr95", "aupr_in", "aupr_out")] == \
            [m[k] for k in ("auroc", "fpr95", "aupr_in", "aupr_out")]
    assert r.convention == "hendrycks"


def test_grood_fits_on_ood_val_as_evaluate_does(data):
    # GROOD's noise prototype comes from OOD validation features: Detector.fit takes them as
    # ood_val=, and its scores equal evaluate's, where the search pair's val_ood brings them.
    head = (data.weight, data.bias)
    det = oodkit.Detector("grood")
    with pytest.raises(ValueError, match="ood_val"):
        det.fit(data.fit, labels=data.labels, head=head)
    val_id, val_ood = data.id_test[::2], data.test[1::3]
    fitted = det.fit(data.fit, labels=data.labels, head=head, ood_val=val_ood)
    r = oodkit.evaluate(**sets(data), detectors=["grood"], sweep=True, val_id=val_id,
                        val_ood=val_ood)
    assert np.array_equal(r.scores["grood"]["id"], fitted.score(data.id_test))
    assert np.array_equal(r.scores["grood"]["ood"]["shifted"], fitted.score(data.ood_test))
    class_mean = oodkit.Detector("grood", noise="class_mean").fit(
        data.fit, labels=data.labels, head=head)
    assert not np.array_equal(class_mean.score(data.id_test), fitted.score(data.id_test))
    # Pickling keeps the side input: the restored detector refits on it, bit for bit.
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(restored.score(data.test), fitted.score(data.test))


def test_all_detectors_table_and_reports(data, files, tmp_path):
    r = oodkit.evaluate(**sets(data), detectors="all", negatives=files.neg)
    names = {x["detector"] for x in r.rows}
    # Every Python-usable detector but grood, which needs OOD validation features (the sweep's).
    assert len(names) == 33 and "grood" not in names
    t = r.table
    try:
        import pandas as pd
        assert isinstance(t, pd.DataFrame) and len(t) == len(r.rows)
        assert list(t.columns[:4]) == ["detector", "dataset", "group", "is_mean"]
    except ImportError:
        assert t == r.rows
    html = r.to_html(tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text() == html
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "neg_label" in html
    j = json.loads(r.to_json(tmp_path / "results.json"))
    assert set(j) >= {"rows", "convention", "id_accuracy", "detectors"}
    assert json.loads((tmp_path / "results.json").read_text()) == j
    assert r.to_csv().splitlines()[0].startswith("detector,") or "auroc" in r.to_csv().splitlines()[0]
    cfg = r.config
    assert cfg["tool"] == "oodkit" and set(cfg["inputs"]) >= {"fit", "id_test", "ood:shifted"}
    assert len(cfg["inputs"]["fit"]["sha256_f32le"]) == 64
    assert "AUROC" in str(r) and "EvaluationResult" in repr(r)
    # "all" leaves neg_label out when there are no negatives.
    r2 = oodkit.evaluate(**sets(data), detectors="all")
    assert "neg_label" not in {x["detector"] for x in r2.rows}


def test_file_inputs_record_hashes(data, files):
    r = oodkit.evaluate(**sets(data, files), detectors="knn,msp")
    cfg = r.config
    assert cfg["inputs"]["fit"]["path"] == str(files.fit)
    assert cfg["inputs"]["fit"]["metadata"]["dataset"] == "synthetic"
    assert len(cfg["inputs"]["id_test"]["sha256"]) == 64


def test_sweep_fit_val_and_detector_forms(data):
    s = sets(data)
    r = oodkit.evaluate(**s, detectors={"knn": {}, "react": {"percentile": 90.0}, "energy": None},
                        sweep=True, val_id=data.id_test, val_ood=data.ood_test,
                        fit_val=data.id_test)
    assert r.warnings == []
    chosen = dict(r.detectors)
    assert chosen["knn"]["k"] in (50, 100, 200, 500)
    assert chosen["react"]["percentile"] in (85.0, 90.0, 95.0, 99.0)
    outcome = {x["detector"]: x["outcome"] for x in r.config["sweep"]}
    assert len(outcome["knn"]["candidates"]) == 5
    r = oodkit.evaluate(**s, detectors=[oodkit.Detector("knn", k=3), "msp"])
    assert dict(r.detectors)["knn"]["k"] == 3
    # Ungrouped sets get no mean rows.
    r = oodkit.evaluate(s["fit"], s["id"], {"a": data.ood_test}, s["head"], detectors="msp")
    assert [x["dataset"] for x in r.rows] == ["a"]


def test_evaluate_errors(data):
    s = sets(data)
    with pytest.raises(ValueError, match="val_id"):
        oodkit.evaluate(**s, detectors="knn", sweep=True)
    with pytest.raises(TypeError, match="ood"):
        oodkit.evaluate(s["fit"], s["id"], [], s["head"])
    with pytest.raises(ValueError, match="head: needed by vim"):
        oodkit.evaluate(s["fit"], s["id"], s["ood"], detectors="knn,vim")
    with pytest.raises(ValueError, match="fit: labels needed by mahalanobis"):
        oodkit.evaluate(data.fit, s["id"], s["ood"], s["head"], detectors="mahalanobis")
    with pytest.raises(ValueError, match=r"ood\['near'\]\['shifted'\]: features: .*2-D"):
        oodkit.evaluate(**{**s, "ood": {"near": {"shifted": data.ood_test[0]}}}, detectors="knn")
    with pytest.raises(ValueError, match="unknown keys"):
        oodkit.evaluate(**{**s, "id": {"feats": data.id_test}}, detectors="knn")
    with pytest.raises(ValueError, match="unknown detector"):
        oodkit.evaluate(**s, detectors="knn,nope")
    with pytest.raises(ValueError, match="negatives"):
        oodkit.evaluate(**s, detectors="neg_label")
