"""The conformance runner agrees where the backends agree, and fails, naming the right stage, where
one backend is perturbed (a runner that cannot fail proves nothing)."""
import json

import numpy as np
import pytest

from conformance.backends import ReferenceBackend, TorchBackend
from conformance.cases import builtin_cases
from conformance.runner import compare, random_weights, run_matrix
from conformance.tolerances import TOLERANCES, stage_kind
from wav2vec2.cli import main
from wav2vec2.spec.names import HEADS, canonical_shapes

pytest.importorskip("torch")


def cases(*names):
    chosen = [c for c in builtin_cases() if c.name in names]
    assert len(chosen) == len(names)
    return chosen


def test_builtin_cases_cover_every_head_both_architectures_and_adapters():
    all_cases = builtin_cases()
    assert {c.head for c in all_cases} == set(HEADS)
    assert {c.config.do_stable_layer_norm for c in all_cases} == {True, False}
    assert any(c.config.add_adapter for c in all_cases)
    assert any(c.config.adapter_attn_dim for c in all_cases)
    for case in all_cases:  # inputs are drawn from the seed alone
        a, b = case.make_inputs(3), case.make_inputs(3)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_random_weights_fit_the_canonical_key_set():
    for case in builtin_cases():
        state = random_weights(case.config, case.head)
        assert {k: v.shape for k, v in state.items()} == canonical_shapes(case.config, case.head)


def test_compare_applies_the_tolerance_table():
    expected = {"hidden_states.0": np.ones((2, 3)), "loss": np.array(10.0)}
    atol, rtol = TOLERANCES[("float32", stage_kind("hidden_states.0"))]
    near = {"hidden_states.0": expected["hidden_states.0"] + 0.5 * (atol + rtol), "loss": np.array(10.0)}
    stages, first, worst = compare(expected, near, "float32")
    assert first == "" and 0 < worst < 1
    far = {"hidden_states.0": expected["hidden_states.0"] + 3 * (atol + rtol), "loss": np.array(10.0)}
    assert compare(expected, far, "float32")[1] == "hidden_states.0"
    assert compare(expected, {"loss": np.array(10.0)}, "float32")[1] == "hidden_states.0"  # missing stage
    nan = {"hidden_states.0": np.full((2, 3), np.nan), "loss": np.array(10.0)}
    assert compare(expected, nan, "float32")[1] == "hidden_states.0"


@pytest.fixture(scope="module")
def backends():
    if not ReferenceBackend.available():
        pytest.skip("the reference implementation is not installed")
    return [ReferenceBackend(), TorchBackend()]


def test_agreeing_backends_pass(backends):
    results = run_matrix(cases("base/ctc", "stable/pretraining"), backends, dtypes=("float32",))
    assert [r.status for r in results] == ["ok", "ok"]
    stages = results[0].stages
    assert "grad.input_values" in stages and "loss" in stages
    # every weight's gradient, under its canonical name, is compared too
    assert "grad.lm_head.weight" in stages and "grad.wav2vec2.encoder.pos_conv_embed.conv.weight_g" in stages
    assert "grad.quantizer.codevectors" in results[1].stages


@pytest.mark.parametrize("case_name", ["base/model", "stable/ctc"])
def test_perturbed_backend_fails_at_the_perturbed_layer(backends, case_name):
    (case,) = cases(case_name)
    (result,) = run_matrix([case], backends, dtypes=("float32",), perturb="torch")
    assert result.status == "FAIL"
    # The last layer's feed-forward was changed: every earlier stage still agrees.
    assert result.first_failure == f"hidden_states.{case.config.num_hidden_layers}"
    earlier = [s for s in result.stages if s.startswith("hidden_states.")][:-1]
    assert earlier and all(result.stages[s]["max_abs_err"] == 0 or
                           result.stages[s]["max_abs_err"] <= result.stages[s]["allowed"] for s in earlier)


def test_cli_exit_status_and_json(tmp_path, capsys):
    pytest.importorskip("transformers")
    report = tmp_path / "report.json"
    argv = ["conformance", "--backends", "reference,torch", "--cases", "base/xvector", "--dtypes", "float32"]
    assert main(argv + ["--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "base/xvector" in out and "1 agree, 0 differ" in out
    (record,) = json.loads(report.read_text())
    assert record["status"] == "ok" and record["backend"] == "torch"
    assert main(argv + ["--perturb", "torch"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_on_a_users_checkpoint(tmp_path, capsys):
    pytest.importorskip("transformers")
    from conftest import small_config
    from wav2vec2.io import write_state_dict

    config = small_config("stable")
    config.save_pretrained(tmp_path)
    write_state_dict(random_weights(config, "sequence_classification"), tmp_path, format="tensorflow")
    assert main(["conformance", "--backends", "reference,torch", "--model", str(tmp_path), "--dtypes", "float32"]) == 0
    assert "1 agree" in capsys.readouterr().out


def test_cli_needs_two_backends(capsys):
    assert main(["conformance", "--backends", "torch"]) == 2
    assert "at least two backends" in capsys.readouterr().err
