"""worldvid explain: the factorial decomposition on toys with known answers, attributions of a linear toy, the
deletion check, a model that ignores its actions by construction, and the report on a tiny trained run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import fast, tiny_config
from worldvid.explain import (
    Inputs,
    Projections,
    attribution_order,
    bootstrap_shares,
    curve_area,
    deletion_curve,
    imagine_cells,
    integrated_gradients,
    model_rollout,
    occlusion,
    random_order,
    static_context,
)
from worldvid.explain.factorial import action_baseline
from worldvid.model import WorldModel
from worldvid.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

B, K, C, H, W, A, T = 5, 3, 3, 4, 4, 2, 2


def _batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    context = torch.rand(B, K, C, H, W, generator=g) * 2 - 1
    past = torch.randn(B, K, A, generator=g)
    actions = torch.randn(B, T, A, generator=g)
    noise = torch.randn(B, T, C, H, W, generator=g)
    return context, past, actions, noise


def _g(context: torch.Tensor) -> torch.Tensor:
    """What the frames contribute: the history's difference from the last frame (zero for a static context)."""
    weights = torch.arange(1, K + 1, dtype=torch.float32).view(1, K, 1, 1, 1)
    return (weights * (context - context[:, -1:])).sum(1)  # [B, C, H, W]


PATTERN = torch.linspace(-1, 1, C * H * W).view(C, H, W)


def _h(past: torch.Tensor, actions: torch.Tensor, step: int) -> torch.Tensor:
    """What the actions contribute at ``step`` (zero for zero actions)."""
    stream = torch.cat([past[:, 1:], actions[:, :step + 1]], dim=1)
    return (stream.sum((1, 2)) + stream[:, -1, 0] ** 3).view(-1, 1, 1, 1) * PATTERN


def _rollout(combine):
    def rollout(context, past, actions, noise):
        frames = [combine(_g(context), _h(past, actions, t)) + 0.3 * noise[:, t] for t in range(actions.shape[1])]
        return torch.stack(frames, dim=1)
    return rollout


def _cells(rollout):
    context, past, actions, noise = _batch()
    cells = imagine_cells(rollout, context, past, actions, noise, static_context(context),
                          torch.zeros_like(past), torch.zeros_like(actions))
    return cells, (context, past, actions)


def test_additive_toy_has_no_interaction_and_its_main_effects_are_g_and_h():
    cells, (context, past, actions) = _cells(_rollout(lambda g, h: g + h))
    terms = cells.terms()
    for t in range(T):
        torch.testing.assert_close(terms["frames"][:, t], _g(context), atol=1e-5, rtol=0)
        torch.testing.assert_close(terms["actions"][:, t], _h(past, actions, t), atol=1e-5, rtol=0)
    assert terms["interaction"].abs().max() < 1e-5
    torch.testing.assert_close(terms["frames"] + terms["actions"] + terms["interaction"], terms["change"])
    shares = Projections.of(cells).shares()
    assert abs(shares["interaction"]) < 1e-6 and abs(sum(shares.values()) - 1) < 1e-9
    assert shares["frames"] > 0.01 and shares["actions"] > 0.01


def test_multiplicative_toy_has_no_main_effects():
    cells, _ = _cells(_rollout(lambda g, h: g * h))
    terms = cells.terms()
    assert terms["frames"].abs().max() < 1e-5 and terms["actions"].abs().max() < 1e-5
    torch.testing.assert_close(terms["interaction"], terms["change"], atol=1e-5, rtol=0)
    shares = bootstrap_shares(Projections.of(cells), resamples=50)
    assert abs(shares["interaction"]["share"] - 1) < 1e-6


def test_a_toy_that_ignores_actions_gets_exactly_zero_action_share_with_a_zero_interval():
    cells, _ = _cells(_rollout(lambda g, h: g))
    shares = bootstrap_shares(Projections.of(cells), resamples=100)
    assert shares["actions"] == {"share": 0.0, "low": 0.0, "high": 0.0}
    assert shares["interaction"]["share"] == 0.0 and shares["frames"]["share"] == pytest.approx(1.0)


def test_baselines_and_their_errors():
    context, past, actions, _ = _batch()
    c0 = static_context(context)
    assert torch.equal(c0[:, 0], context[:, -1]) and torch.equal(c0[:, -1], context[:, -1])
    mean = torch.tensor([0.5, -0.25])
    assert torch.equal(action_baseline(actions, "mean", mean)[3, 1], mean)
    with pytest.raises(ValueError, match="unknown action baseline 'median'"):
        action_baseline(actions, "median")
    with pytest.raises(ValueError, match="needs the mean action"):
        action_baseline(actions, "mean")


# ---------------------------------------------------------------- attributions of a linear toy
W_FRAMES = torch.randn(K, C, H, W, generator=torch.Generator().manual_seed(3))
V_ACTIONS = torch.randn(K * A, C, H, W, generator=torch.Generator().manual_seed(4))


def _linear(context, actions, noise):
    return (W_FRAMES * context).sum(1) + torch.einsum("bj,jchw->bchw", actions.flatten(1), V_ACTIONS) + 0.1 * noise


def _linear_inputs() -> Inputs:
    context, past, _, noise = _batch(1)
    return Inputs(context, past, noise[:, 0], static_context(context), torch.zeros_like(past))


def _expected_linear(x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    d = _linear(x.context, x.actions, x.noise) - _linear(x.context0, x.actions0, x.noise)
    u = d / (d * d).flatten(1).sum(1).view(-1, 1, 1, 1)
    frames = ((x.context - x.context0) * W_FRAMES * u[:, None]).sum(2)
    actions = (x.actions - x.actions0) * torch.einsum("jchw,bchw->bj", V_ACTIONS, u).view(-1, K, A)
    return frames, actions


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_a_linear_toy_gets_its_known_attributions(method):
    x = _linear_inputs()
    found = integrated_gradients(_linear, x, steps=4) if method == "integrated_gradients" else occlusion(_linear, x, patch=1)
    frames, actions = _expected_linear(x)
    torch.testing.assert_close(found.frames, frames, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(found.actions, actions, atol=1e-4, rtol=1e-4)
    assert found.frames[:, -1].abs().max() == 0  # the last frame is the scene, equal to its baseline
    # completeness: attributions add up to S(x) - S(x0) = 1
    np.testing.assert_allclose(found.features().sum(1).numpy(), 1.0, atol=1e-4)


def test_occlusion_refuses_a_patch_that_does_not_tile_the_frame():
    with pytest.raises(ValueError, match="patch must be a positive divisor of the frame size 4x4, got 3"):
        occlusion(_linear, _linear_inputs(), patch=3)


def test_deletion_by_attribution_beats_random_and_a_reversed_order_is_worse():
    x = _linear_inputs()
    fractions = np.linspace(0, 1, 11)
    found = integrated_gradients(_linear, x, steps=2)
    n = found.features().shape[1]
    best = deletion_curve(_linear, x, attribution_order(found), fractions)
    assert best.shape == (B, 11)
    np.testing.assert_allclose(best[:, 0], 1.0, atol=1e-5)  # nothing deleted: all of the change
    np.testing.assert_allclose(best[:, -1], 0.0, atol=1e-5)  # everything deleted: the baseline
    rand = np.mean([deletion_curve(_linear, x, random_order(B, n, s), fractions) for s in range(3)], axis=0)
    worst = deletion_curve(_linear, x, attribution_order(found).flip(1), fractions)
    area = {k: curve_area(v, fractions).mean() for k, v in (("best", best), ("random", rand), ("worst", worst))}
    assert area["best"] < area["random"] < area["worst"]
    with pytest.raises(ValueError, match="order must be long"):
        deletion_curve(_linear, x, attribution_order(found)[:, :-1], fractions)


# ---------------------------------------------------------------- the real model
def _ignoring_actions(model: WorldModel) -> WorldModel:
    """The model with the action inputs of its action embedding cut: it ignores actions by construction."""
    first = next(m for name, m in model.named_modules() if name.endswith("action_embedding.0"))
    with torch.no_grad():
        first.weight[:, :-1] = 0  # the last input is the context-noise level, not an action
    return model


def test_a_world_model_that_ignores_actions_gets_zero_action_contribution():
    model = WorldModel(tiny_config())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights of a trained-looking model: none of them zero (a fresh UNet's last layer is)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    model = _ignoring_actions(model)
    context = torch.rand(3, 4, 3, 16, 16, generator=g) * 2 - 1
    past, actions = torch.randn(3, 4, 2, generator=g), torch.randn(3, 2, 2, generator=g)
    noise = torch.randn(3, 2, 3, 16, 16, generator=g)
    cells = imagine_cells(model_rollout(model), context, past, actions, noise, static_context(context),
                          torch.zeros_like(past), torch.zeros_like(actions))
    terms = cells.terms()
    assert terms["actions"].abs().max() == 0 and terms["interaction"].abs().max() == 0
    assert terms["frames"].abs().max() > 0


@pytest.fixture(scope="module")
def tiny_run(store_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("explain") / "run"
    train(store_dir, run, fast(6), model_config=tiny_config(), progress=False)
    return run


def test_explain_writes_a_report_whose_shares_add_up(tiny_run, tmp_path):
    from worldvid.experiments.explain import ExplainConfig, explain_model, format_summary

    config = ExplainConfig(windows=6, horizon=3, attribution_windows=2, ig_steps=2, deletion_points=5, random_orders=1,
                           counterfactual_steps=3, resamples=20)
    report = explain_model(tiny_run, tmp_path / "out", config=config, progress=False)
    for name in ("report.json", "report.html", "shares.png", "deletion.png", "attributions.png", "counterfactual_actions.gif"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    d = saved["decomposition"]
    assert d["windows"] >= 6 and len(d["per_step"]) == 3
    for entry in [*d["per_step"], d["all_steps"]]:
        assert sum(entry[t]["share"] for t in ("frames", "actions", "interaction")) == pytest.approx(1, abs=1e-6)
    assert saved["attribution"]["chosen"] in ("integrated_gradients", "occlusion")
    assert len(saved["counterfactual"]["labels"]) == 9  # zero and 8 directions of a 2-D action
    assert "share of the predicted change" in format_summary(report)


def test_a_run_whose_model_ignores_actions_is_flagged(tiny_run, tmp_path):
    import shutil

    from worldvid.experiments.explain import ExplainConfig, explain_model

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model = _ignoring_actions(WorldModel.from_pretrained(run / "model"))
    model.save_pretrained(run / "model")
    config = ExplainConfig(windows=6, horizon=2, attribution_windows=2, ig_steps=2, deletion_points=3, random_orders=1,
                           counterfactual_steps=2, resamples=20)
    report = explain_model(run, tmp_path / "out", config=config, progress=False)
    assert report["decomposition"]["per_step"][0]["actions"]["share"] == 0.0
    assert report["flag"] and "may be ignoring its actions" in report["flag"]


def test_cli_explain_runs_and_bad_input_gets_one_line(tiny_run, tmp_path, capsys):
    from worldvid.cli import main

    out = tmp_path / "cli"
    assert main(["explain", "--model", str(tiny_run), "--out", str(out), "--windows", "4", "--horizon", "2",
                 "--attribution-windows", "2", "--ig-steps", "2", "--counterfactual-steps", "2"]) == 0
    assert "share of the predicted change" in capsys.readouterr().out and (out / "report.html").is_file()
    with pytest.raises(SystemExit):
        main(["explain", "--model", str(tiny_run), "--out", str(out), "--action-baseline", "median"])
    assert "invalid choice: 'median'" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["explain", "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no world model at" in err[0]
