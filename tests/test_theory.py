"""Specification of theory.run_theory: each number in theory.json against its known answer."""
import json
import math

import pytest

from byhand.theory import run_theory


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("theory")


@pytest.fixture(scope="module")
def results(out_dir):
    return run_theory(out_dir)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "gelu"])
def test_activation_autograd_derivative_matches_closed_form(results, name):
    assert results["activations"][name] < 1e-6


def test_softmax_jacobian_equals_diag_s_minus_s_s_transpose(results):
    assert results["softmax_jacobian_max_abs_err"] < 1e-10


def test_cross_entropy_gradient_equals_softmax_minus_onehot(results):
    assert results["ce_grad_max_abs_err"] < 1e-10


def test_graph_forward_value_is_ln1_plus_2_e_cubed(results):
    assert results["graph"]["f"] == pytest.approx(math.log(1) + math.exp(3) * 2)


def test_graph_gradients_match_hand_derivation(results):
    graph = results["graph"]
    assert graph["df_dx"] == pytest.approx(1.0)  # 1 / x
    assert graph["df_dy"] == pytest.approx(2 * math.exp(3))  # exp(y) * z
    assert graph["df_dz"] == pytest.approx(math.exp(3))  # exp(y)


def test_handset_weights_compute_xor_exactly(results):
    predictions = results["xor"]["handset_predictions"]
    assert predictions == pytest.approx([0, 1, 1, 0], abs=1e-6)
    assert [p > 0.5 for p in predictions] == [False, True, True, False]


def test_random_init_learns_xor(results):
    assert results["xor"]["random_init_accuracy"] == 1.0


def test_zero_init_gives_first_layer_exactly_zero_gradient(results):
    assert results["xor"]["zero_init_grad_norm"] == 0.0


def test_zero_init_cannot_fit_xor_and_outputs_a_constant(results):
    xor = results["xor"]
    # Only b2 learns, so every input gets the same output (the target mean 0.5),
    # and a constant classifier is right on exactly two of the four points.
    assert len(set(xor["zero_init_predictions"])) == 1
    assert xor["zero_init_predictions"][0] == pytest.approx(0.5, abs=1e-3)
    assert xor["zero_init_accuracy"] == 0.5


def test_constant_init_keeps_hidden_units_identical_and_cannot_fit_xor(results):
    assert results["xor"]["constant_init_hidden_units_identical"] is True
    assert results["xor"]["constant_init_accuracy"] < 1.0


def test_jacobian_shapes_are_output_shape_then_input_shape(results):
    assert results["jacobian_shapes"] == {
        "c": [3], "norm_sq": [3], "wTx": [3], "Xw": [5, 3],
        "w": [3, 3], "w_squared": [3, 3], "XWT": [5, 4, 4, 3],
    }


@pytest.mark.parametrize("name", ["activations.png", "graph.png"])
def test_plot_is_written_and_non_empty(results, out_dir, name):
    path = out_dir / name
    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_theory_json_round_trips_to_returned_dict(results, out_dir):
    assert json.loads((out_dir / "theory.json").read_text()) == results


def test_no_temporary_files_left_behind(results, out_dir):
    assert sorted(p.name for p in out_dir.iterdir()) == ["activations.png", "graph.png", "theory.json"]
