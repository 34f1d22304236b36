"""The claims registry (ood_lib.claims) on hand-made per-seed tidy rows."""
import hashlib
import inspect
import math
import re

import pandas as pd
import pytest

from ood_lib import ablations, claims

SEEDS = (0, 1, 2)


def rows(loss, generator, score, auroc, acc=0.99, seeds=SEEDS, group="near", collapsed=None, **extra):
    """Tidy rows of one model: one OOD set of ``group``; ``auroc``, ``acc``, ``collapsed`` and
    ``extra`` values given as lists are per seed."""
    per = lambda v, i: v[i] if isinstance(v, (list, tuple)) else v
    return [{"generator": generator, "loss": loss, "score": score, "seed": seed, "ood_dataset": f"{group}_set",
             "ood_group": group, "AUROC": per(auroc, i), "FPR95": 1 - per(auroc, i), "ID_acc": per(acc, i),
             **({} if collapsed is None else {"collapsed": per(collapsed, i)}),
             **{k: per(v, i) for k, v in extra.items()}}
            for i, seed in enumerate(seeds)]


def frame(*parts):
    df = pd.DataFrame([r for p in parts for r in p])
    if "collapsed" in df.columns:
        df["collapsed"] = df.collapsed.fillna(False).astype(bool)
    return df


def row(evidence, claim_id):
    return claims.judge_all(evidence).set_index("id").loc[claim_id]


def verdict(evidence, claim_id):
    return row(evidence, claim_id)["verdict"]


# ----------------------------------------------------------------------------- compare
def test_compare_effect_spread_and_seeds_by_hand():
    a = pd.Series([0.90, 0.92, 0.94], index=[0, 1, 2])
    b = pd.Series([0.88, 0.89, 0.90], index=[0, 1, 2])
    c = claims.compare(a, b)
    assert c.effect == pytest.approx(3.0) and c.spread == pytest.approx(2.0)     # stds 2.0 and 1.0 (ddof=1)
    assert c.n_seeds == 3 and c.seeds == (0, 1, 2) and c.holds
    one = claims.compare(a.loc[[0]], b.loc[[0]])
    assert one.spread == 0.0 and one.effect == pytest.approx(2.0) and one.holds  # one seed: no spread
    shared = claims.compare(a, b.loc[[0, 1]])                                    # only shared seeds count
    assert shared.seeds == (0, 1) and shared.effect == pytest.approx(2.5)


def test_a_gap_beyond_the_spread_with_one_seed_of_opposite_sign_does_not_hold():
    a = pd.Series([0.95, 0.95, 0.95, 0.95, 0.90])
    b = pd.Series([0.91] * 5)
    c = claims.compare(a, b)
    assert c.effect == pytest.approx(3.0) and c.spread == pytest.approx(5 ** 0.5)   # 3.0 > 2.24
    assert c.not_above == (4,) and not c.holds


def test_a_gap_equal_to_the_spread_does_not_hold():
    c = claims.compare(pd.Series([0.978, 0.980, 0.982]), pd.Series([0.977, 0.978, 0.979]))
    assert c.effect == pytest.approx(0.2) and c.spread == pytest.approx(0.2) and not c.holds


# ----------------------------------------------------------------------------- paper 1
def paper1(metric_none: dict, metric_mixup: dict | None = None, soft=(0.90, 0.91, 0.92), oe=(0.95, 0.96, 0.97)):
    parts = [rows("ce", "none", "msp", list(soft)), rows("oe", "mixup", "msp", list(oe))]
    for m, v in metric_none.items():
        parts.append(rows(m, "none", "cosine_proxy", list(v)))
    for m, v in (metric_mixup or {}).items():
        parts.append(rows(m, "mixup", "cosine_proxy", list(v)))
    return frame(*parts)


def test_metric_beats_softmax_yes_partly_no():
    v3 = "P1.metric-beats-softmax.v3"
    good, bad = (0.95, 0.96, 0.97), (0.85, 0.86, 0.87)
    assert verdict({"paper1": paper1({"arcface": good, "cosface": good})}, v3) == "yes"
    assert verdict({"paper1": paper1({"arcface": good, "cosface": bad})}, v3) == "partly"
    assert verdict({"paper1": paper1({"arcface": bad, "cosface": bad})}, v3) == "no"
    r = row({"paper1": paper1({"arcface": good})}, v3)
    assert r["effect"] == pytest.approx(5.0) and r["spread"] == pytest.approx(1.0) and r["seeds"] == "3 [0, 1, 2]"
    assert "arcface − softmax +5.0 (spread 1.0, seeds [0, 1, 2])" in r["evidence"]


def test_a_mean_carried_by_one_seed_passes_v1_but_not_v3():
    lucky = {"arcface": (0.99, 0.99, 0.89)}         # mean 95.7 > 91.0, but seed 2 below softmax
    ev = {"paper1": paper1(lucky)}
    assert verdict(ev, "P1.metric-beats-softmax.v1") == "yes"
    assert verdict(ev, "P1.metric-beats-softmax.v2") == "no"           # 4.7 is inside the 5.8 spread
    assert verdict(ev, "P1.metric-beats-softmax.v3") == "no"
    assert "not above on seed [2]" in row(ev, "P1.metric-beats-softmax.v3")["evidence"]


def test_a_collapsed_model_is_excluded_and_named():
    df = frame(rows("ce", "none", "msp", [0.90, 0.91, 0.92]),
               rows("arcface", "none", "cosine_proxy", [0.95, 0.96, 0.50], acc=[0.99, 0.99, 0.80],
                    collapsed=[False, False, True], ID_acc_vs_ce=[0.0, 0.0, -0.19]))
    r = row({"paper1": df}, "P1.metric-beats-softmax.v3")
    assert r["verdict"] == "yes" and r["seeds"] == "2 [0, 1]"            # seed 2 left out of both sides
    assert "excluded (collapsed: ID accuracy more than 3 points below CE's of the same seed)" in r["evidence"]
    assert "arcface/none seed 2 (ID acc 80.0%, -19.0 vs CE)" in r["evidence"]
    assert verdict({"paper1": df.drop(columns="collapsed")}, "P1.metric-beats-softmax.v3") == "no"


def test_mixup_improves_every_loss_yes_partly_no():
    v2 = "P1.mixup-improves-every-loss.v2"
    none, up, down = (0.90, 0.91, 0.92), (0.95, 0.96, 0.97), (0.85, 0.86, 0.87)
    assert verdict({"paper1": paper1({"arcface": none}, {"arcface": up})}, v2) == "yes"       # OE 96 > CE 91 too
    assert verdict({"paper1": paper1({"arcface": none}, {"arcface": down})}, v2) == "partly"
    assert verdict({"paper1": paper1({"arcface": none}, {"arcface": down}, oe=down)}, v2) == "no"
    assert verdict({"paper1": paper1({"arcface": none}, {"arcface": down})}, "P1.mixup-improves-every-loss.v1") \
        == "partly"


# ----------------------------------------------------------------------------- paper 2
def pvl(latent, sd=(0.90, 0.91, 0.92), mixup=(0.90, 0.91, 0.92)):
    return frame(*(rows("oe", g, "knn", list(v)) for g, v in (("sd", sd), ("mixup", mixup), ("latent", latent))))


def test_latent_cheaper_and_better_yes_partly_no():
    v3, high, low = "P2.latent-cheaper-and-better.v3", (0.95, 0.96, 0.97), (0.85, 0.86, 0.87)
    cheap, dear = {"sd": 44.0, "mixup": 75.0, "latent": 28.0}, {"sd": 44.0, "mixup": 75.0, "latent": 90.0}
    assert verdict({"pixel_vs_latent": pvl(high), "generator_cost": cheap}, v3) == "yes"
    assert verdict({"pixel_vs_latent": pvl(high), "generator_cost": dear}, v3) == "partly"
    assert verdict({"pixel_vs_latent": pvl(low), "generator_cost": dear}, v3) == "no"
    assert verdict({"pixel_vs_latent": pvl(high)}, v3) == "not run"                          # no cost: not judged
    ev = {"pixel_vs_latent": pvl(high), "generator_cost": cheap}
    assert [verdict(ev, f"P2.latent-cheaper-and-better.v{v}") for v in (1, 2)] == ["yes", "yes"]
    assert "s / 1,000 outliers latent 28 vs sd 44" in row({"pixel_vs_latent": pvl(high), "generator_cost": cheap},
                                                           v3)["evidence"]


def oal(full, no_micl, no_kd, acc_full=0.98, acc_kd=0.97):
    def part(name, v, acc):
        return rows(name, "latent", "knn", list(v), acc=acc, variant=name)
    return frame(part("OAL (MICL + KD)", full, acc_full), part("no MICL", no_micl, 0.98), part("no KD", no_kd, acc_kd))


def test_micl_kd_help_yes_partly_no():
    v3, high, low = "P2.micl-kd-help.v3", (0.95, 0.96, 0.97), (0.85, 0.86, 0.87)
    assert verdict({"oal": oal(high, low, low)}, v3) == "yes"
    assert verdict({"oal": oal(high, (0.99, 0.99, 0.99), low)}, v3) == "partly"
    assert verdict({"oal": oal(low, high, high, acc_full=0.90, acc_kd=0.98)}, v3) == "no"   # and no KD keeps acc better
    r = row({"oal": oal(high, low, low)}, v3)
    assert "ID acc OAL − no KD +1.0" in r["evidence"]
    assert [verdict({"oal": oal(high, low, low)}, f"P2.micl-kd-help.v{v}") for v in (1, 2)] == ["yes", "yes"]


def test_kd_accuracy_counts_collapsed_models():
    df = oal((0.95, 0.96, 0.97), (0.85, 0.86, 0.87), (0.85, 0.86, 0.87), acc_kd=0.80)
    df["collapsed"] = df.variant.eq("no KD")
    r = row({"oal": df}, "P2.micl-kd-help.v3")
    assert r["verdict"] == "yes" and "no KD seed 0" in r["evidence"] and "ID acc OAL − no KD +18.0" in r["evidence"]


# ----------------------------------------------------------------------------- paper 3
def grid(cells: dict):
    return frame(*(rows("sd_three_head", "sd", "dod", list(v), S=S, w=w) for (S, w), v in cells.items()))


FLAT = (0.975, 0.975, 0.975)
T2 = {(50, 2.0): (0.970,) * 3, (80, 2.0): (0.981, 0.982, 0.983), (200, 2.0): (0.979,) * 3,
      (50, 3.0): (0.978, 0.980, 0.982), (80, 3.0): FLAT, (200, 3.0): (0.977, 0.978, 0.979)}


def test_limited_S_yes_partly_no_and_the_32dc57f_rewrite_beside_its_original():
    ev = {"sd_grid": grid(T2)}        # w = 2: 98.2 ± 0.1 vs 97.9 ± 0.0; w = 3: 98.0 ± 0.2 vs 97.8 ± 0.1
    assert verdict(ev, "P3.T2.limited-S-best.v1") == "yes"             # best S below 200 at both w
    assert verdict(ev, "P3.T2.limited-S-best.v2") == "partly"          # 0.2 is inside the spread at w = 3
    assert verdict(ev, "P3.T2.limited-S-best.v3") == "partly"
    clear = {**T2, (50, 3.0): (0.985, 0.986, 0.987)}
    assert verdict({"sd_grid": grid(clear)}, "P3.T2.limited-S-best.v3") == "yes"
    top = {k: ((0.99,) * 3 if k[0] == 200 else v) for k, v in T2.items()}
    assert verdict({"sd_grid": grid(top)}, "P3.T2.limited-S-best.v3") == "no"


def voting(dod: dict, dist=(0.90, 0.90, 0.90), alpha=0.01):
    return frame(*(rows("sd_three_head", "sd", "dod", list(v), S=S, alpha=alpha)
                   + rows("sd_three_head", "sd", "dod_distance", list(dist), S=S, alpha=alpha) for S, v in dod.items()))


def test_voting_yes_partly_no_at_the_validation_alpha():
    v3, up, same = "P3.T3.voting-adds.v3", (0.92, 0.93, 0.92), (0.90, 0.90, 0.90)
    assert verdict({"voting": voting({50: up, 100: up})}, v3) == "yes"
    assert verdict({"voting": voting({50: up, 100: same})}, v3) == "partly"
    r = row({"voting": voting({50: same, 100: same}, alpha=0.03)}, v3)
    assert r["verdict"] == "no" and "alpha = 0.03 (chosen on validation)" in r["evidence"]
    lucky = voting({50: (0.93, 0.93, 0.89)})                  # mean above, one seed below
    assert [verdict({"voting": lucky}, f"P3.T3.voting-adds.v{v}") for v in (1, 2, 3)] == ["yes", "no", "no"]
    with pytest.raises(ValueError, match="one alpha"):
        claims.judge_all({"voting": pd.concat([voting({50: up}), voting({50: up}, alpha=0.1)])})


def table4(sd_head_control, no_outlier=None, collapsed_arcface=False):
    def model(loss, gen, score, sd, control, **kw):
        return (rows(loss, gen, score, list(sd), group="sd_test", test_set="sd", **kw)
                + rows(loss, gen, score, list(control), group="sd_test", test_set="control", **kw))
    parts = [model("ce", "none", "msp", (0.51, 0.52, 0.50), (0.50,) * 3),
             model("ce", "none", "knn", (0.50,) * 3, (0.50,) * 3),
             model("oe", "mixup", "msp", (0.83, 0.84, 0.82), (0.60,) * 3),
             model("sd_three_head", "sd", "msp", (0.65,) * 3, (0.60,) * 3),
             model("sd_three_head", "sd", "sd_binary", (0.96, 0.97, 0.965), list(sd_head_control)),
             model("supcon", "sd", "msp", (0.50,) * 3, (0.50,) * 3)]
    if no_outlier is not None:
        parts.append(model("arcface", "none", "cosine_proxy", no_outlier, (0.5,) * 3,
                           collapsed=collapsed_arcface, acc=0.80 if collapsed_arcface else 0.99))
    return frame(*parts)


SEMANTIC, FINGERPRINT = (0.55, 0.56, 0.54), (0.96, 0.97, 0.965)


def test_table4_v3_yes_when_no_outlier_models_are_near_chance_and_sd_detection_is_semantic():
    r = row({"table4": table4(SEMANTIC)}, "P3.T4.sd-test-breaks-others.v3")
    assert r["verdict"] == "yes"
    assert "SD three-head (sd_binary): sd − control +41.5 (spread 1.0" in r["evidence"]
    assert "(a) yes, (b) yes" in r["evidence"] and r["effect"] == pytest.approx(41.5)
    assert "ce (no outliers): best-score AUROC 50.0–52.0" in r["evidence"]


def test_table4_v3_says_no_when_sd_trained_models_flag_the_control_as_well():
    r = row({"table4": table4(FINGERPRINT)}, "P3.T4.sd-test-breaks-others.v3")
    assert r["verdict"] == "no" and "(a) yes, (b) no" in r["evidence"]


def test_table4_v3_partly_when_a_no_outlier_model_is_not_near_chance_unless_it_collapsed():
    assert verdict({"table4": table4(SEMANTIC, (0.71, 0.72, 0.70))}, "P3.T4.sd-test-breaks-others.v3") == "partly"
    r = row({"table4": table4(SEMANTIC, (0.71, 0.72, 0.70), collapsed_arcface=True)}, "P3.T4.sd-test-breaks-others.v3")
    assert r["verdict"] == "yes" and "none/arcface seed 0 (ID acc 80.0%)" in r["evidence"]


def test_table4_old_versions_keep_their_verdicts_and_ignore_the_control():
    for control in (SEMANTIC, FINGERPRINT):
        ev = {"table4": table4(control)}
        # v1: the failing SD-trained SupCon (50) is below mixup-trained OE (83.0): no. v2 (32dc57f): yes.
        assert verdict(ev, "P3.T4.sd-test-breaks-others.v1") == "no"
        assert verdict(ev, "P3.T4.sd-test-breaks-others.v2") == "yes"
    no_control = table4(SEMANTIC)
    no_control = no_control[no_control.test_set == "sd"]
    assert verdict({"table4": no_control}, "P3.T4.sd-test-breaks-others.v3") == "not run"
    assert verdict({"table4": no_control}, "P3.T4.sd-test-breaks-others.v2") == "yes"


# ----------------------------------------------------------------------------- the registry and the table
# sha256 of each rule's text and its judge's source. A rule whose results exist is never
# edited: register a new version instead. Update a digest only for a rule no result has been
# judged by yet.
PINNED = {
    "P1.metric-beats-softmax.v1": "cb45b0cfe16eb4fd",
    "P1.metric-beats-softmax.v2": "b6dadb6289b2ec2e",
    "P1.metric-beats-softmax.v3": "6f3e2cc77756fcd0",
    "P1.mixup-improves-every-loss.v1": "a755959f269f2afb",
    "P1.mixup-improves-every-loss.v2": "43f2195198dbd652",
    "P2.latent-cheaper-and-better.v1": "c69d7082767de9af",
    "P2.latent-cheaper-and-better.v2": "968f895026111511",
    "P2.latent-cheaper-and-better.v3": "ceb33592de59a793",
    "P2.micl-kd-help.v1": "6ce27503d387fb23",
    "P2.micl-kd-help.v2": "f1b82a4b30f98ab1",
    "P2.micl-kd-help.v3": "22c918123b01a91c",
    "P3.T2.limited-S-best.v1": "1f5d1ec4b94639cc",
    "P3.T2.limited-S-best.v2": "76037411946ef7f9",
    "P3.T2.limited-S-best.v3": "ebf79e9e8a99ec45",
    "P3.T3.voting-adds.v1": "17b0d00d2f90ad23",
    "P3.T3.voting-adds.v2": "ca9c080306589589",
    "P3.T3.voting-adds.v3": "d7546ba661543a7a",
    "P3.T4.sd-test-breaks-others.v1": "c2b21bd6fb5b21e4",
    "P3.T4.sd-test-breaks-others.v2": "3f23bbbeec03e480",
    "P3.T4.sd-test-breaks-others.v3": "2ff44912eaf209a4",
}


def digest(c):
    return hashlib.sha256((c.rule + "\n" + inspect.getsource(c.judge)).encode()).hexdigest()[:16]


def test_rules_are_pinned_by_id():
    assert {c.id: digest(c) for c in claims.REGISTRY} == PINNED


def test_registry_history_is_honest():
    ids = [c.id for c in claims.REGISTRY]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"P\d\.[\w.-]+\.v\d+", i) for i in ids)
    for base in {c.base for c in claims.REGISTRY}:
        versions = sorted(c.version for c in claims.REGISTRY if c.base == base)
        assert versions == list(range(1, len(versions) + 1))
    by = claims.BY_ID
    for cid in ("P3.T4.sd-test-breaks-others", "P3.T2.limited-S-best"):         # rewritten in 32dc57f
        assert by[cid + ".v1"].fixed_before_results and not by[cid + ".v2"].fixed_before_results
        assert "rewritten after the results it judges existed" in by[cid + ".v2"].note
    assert by["P3.T4.sd-test-breaks-others.v3"].fixed_before_results
    assert by["P3.T4.sd-test-breaks-others.v3"].written == "2026-12-03"
    assert claims.superseded_by(by["P3.T4.sd-test-breaks-others.v1"]) == "P3.T4.sd-test-breaks-others.v3"


def test_claims_table_columns_and_not_run(tmp_path):
    table = claims.judge_all({})
    assert list(table.columns) == ["id", "paper", "claim", "rule", "written", "fixed before results", "note",
                                   "superseded by", "verdict", "effect", "spread", "seeds", "evidence"]
    assert len(table) == len(claims.REGISTRY) and set(table.verdict) == {"not run"}
    assert math.isnan(table.effect.iloc[0])
    out = ablations.write_claims({"paper1": paper1({"arcface": (0.95, 0.96, 0.97)})},
                                 type("P", (), {"name": "t", "seeds": SEEDS})(), tmp_path, "_t", "cmd")
    md = (tmp_path / "paper_claims_t.md").read_text()
    # a readable summary table, then each rule listed under it; the CSV keeps every column
    header = next(line for line in md.splitlines() if line.startswith("| id"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["id", *claims.SUMMARY_COLUMNS]
    assert "## The rules, and what each judged" in md
    assert md.count("\n- **") == len(claims.REGISTRY) and "- **P1.metric-beats-softmax.v3** (paper 1;" in md
    assert list(pd.read_csv(tmp_path / "paper_claims_t.csv").columns) == list(out.columns)
    assert out.set_index("id").loc["P1.metric-beats-softmax.v3", "verdict"] == "yes"
    assert out.equals(ablations.claim_checks({"paper1": paper1({"arcface": (0.95, 0.96, 0.97)})}))


def test_rounded_tables_are_refused():
    t2 = pd.DataFrame({"w = 2": ["98.2 ± 0.1", "97.9 ± 0.0"]}, index=pd.Index([80, 200], name="S"))
    with pytest.raises(ValueError, match="unknown evidence keys"):
        claims.judge_all({"table2": t2})
    with pytest.raises(ValueError, match="lacks columns"):
        claims.judge_all({"table4": t2})


def test_v2_cell_gap_counts_only_beyond_the_cells_spread():
    assert claims._above("98.2 ± 0.1", "97.9 ± 0.0")        # 0.3 > 0.1
    assert not claims._above("98.0 ± 0.2", "97.8 ± 0.1")    # 0.2 is within the spread
    assert claims._above("98.6", "98.4")                     # one seed: no spread to compare
