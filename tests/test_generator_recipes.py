"""benchmarks/generator_recipes.py: what a candidate trains, and one command per candidate
adding to the recipes table instead of replacing it."""
import importlib.util
from pathlib import Path

import pandas as pd

from ood_lib import get_profile

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "generator_recipes.py"
_spec = importlib.util.spec_from_file_location("generator_recipes", _PATH)
gr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gr)


def test_a_latent_candidate_names_its_autoencoder_and_keeps_the_rest_of_the_profile():
    base = get_profile("digits_nuisance")
    model, profile = gr.candidate_profile(base, "latent_f2_v_deep_2000")
    assert model == "latent_ddpm"
    assert profile.latent_ddpm.block_out_channels == (32, 64, 64)
    assert profile.latent_ddpm.prediction_type == "v_prediction" and profile.latent_ddpm.snr_gamma == 5.0
    assert profile.autoencoder.block_out_channels == (16, 32) and profile.autoencoder.steps == 2000
    assert profile.ddpm == base.ddpm and profile.clf == base.clf
    model, profile = gr.candidate_profile(base, "ae_400")
    assert model == "autoencoder" and profile.autoencoder.block_out_channels == (16, 32, 32)
    assert profile.latent_ddpm == base.latent_ddpm


def test_a_candidate_adds_its_rows_and_replaces_only_its_own(tmp_path):
    out = tmp_path / "recipes"
    first = pd.DataFrame({"candidate": ["a", "a", "b"], "step": [1, 2, 1]})
    assert gr.with_earlier_rows(first, out).equals(first)        # nothing written yet
    first.to_csv(out.with_suffix(".csv"), index=False)
    again = gr.with_earlier_rows(pd.DataFrame({"candidate": ["a"], "step": [3]}), out)
    assert again.to_dict("list") == {"candidate": ["b", "a"], "step": [1, 3]}
