"""Partially labelled factors (ZeroDIM on the Diff-AE code): the code's
construction, where gradients go, which images carry labels, labels files,
the metric pieces on codes whose answer is known, and a tiny run end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import config_lib, data, errors, models, objective, supervision, train_step
from cldis_jax.metrics import labelled as labelled_metrics
from cldis_jax.models.labelled import LabelledCode
from conftest import config_path

SIZES = (3, 5)


@pytest.fixture(scope="module")
def code_module():
  module = LabelledCode(sizes=SIZES, factor_dim=2, residual_dim=4, features=8)
  params = module.init(jax.random.key(0), jnp.zeros((1, 8)))["params"]
  return module, params


def _features(n=6):
  return jax.random.normal(jax.random.key(1), (n, 8))


def test_a_labelled_image_gets_its_values_embedding_exactly(code_module):
  module, params = code_module
  labels = jnp.array([[0, 4], [2, 1], [1, 0], [2, 3], [0, 0], [1, 2]])
  out = module.apply({"params": params}, _features(), labels)
  for f in range(len(SIZES)):
    np.testing.assert_array_equal(out["factor_codes"][:, f],
                                  params[f"table_{f}"][labels[:, f]])
  np.testing.assert_array_equal(out["code"][:, 4:], out["residual"])


def test_an_unlabelled_code_is_the_softmax_mix_of_the_table(code_module):
  module, params = code_module
  unknown = -jnp.ones((6, 2), jnp.int32)
  out = module.apply({"params": params}, _features(), unknown)
  no_labels = module.apply({"params": params}, _features())
  np.testing.assert_array_equal(out["code"], no_labels["code"])
  for f, logits in enumerate(out["logits"]):
    p = jax.nn.softmax(logits)
    assert np.all(p >= 0) and np.allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(out["factor_codes"][:, f], p @ params[f"table_{f}"], rtol=1e-6)
    table = params[f"table_{f}"]  # a convex mix lies inside the rows' bounding box
    assert np.all(out["factor_codes"][:, f] >= table.min(0) - 1e-7)
    assert np.all(out["factor_codes"][:, f] <= table.max(0) + 1e-7)


def test_the_table_learns_from_labelled_images_only(code_module):
  module, params = code_module
  labels = jnp.array([[-1, -1], [-1, -1], [2, -1], [-1, -1], [-1, -1], [-1, -1]])

  def total(p):
    return jnp.sum(jnp.square(module.apply({"params": p}, _features(), labels)["code"]))

  grads = jax.grad(total)(params)
  g0, g1 = np.asarray(grads["table_0"]), np.asarray(grads["table_1"])
  assert np.all(g1 == 0)  # no image knows factor 1
  assert np.all(g0[[0, 1]] == 0) and np.any(g0[2] != 0)  # only the known value's row
  # ... while the classifiers do learn from the unlabelled images' mixes.
  assert np.any(np.asarray(grads["classifier_1"]["kernel"]) != 0)


def test_the_tables_take_their_own_learning_rate(code_module):
  """Adam's first update is lr * sign(gradient) per element: the tables move
  by the table rate (or not at all), every other parameter by the model's."""
  _, params = code_module
  optim = config_lib.load_config(config_path("test.py")).optim
  optim.update(dict(learning_rate=1e-4, warmup_steps=0, grad_clip_norm=0.0, weight_decay=0.0))
  tree = {"labels": params, "diffae": {"w": jnp.ones(3)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), tree)
  for table_rate in (1e-2, 0.0):  # 0: the tables stay as they are
    tx = train_step.make_optimizer(optim, 100, table_learning_rate=table_rate)
    updates, _ = tx.update(grads, tx.init(tree), tree)
    for name, u in jax.tree_util.tree_leaves_with_path(updates):
      rate = table_rate if "table_" in jax.tree_util.keystr(name) else 1e-4
      np.testing.assert_allclose(u, -rate, rtol=1e-3, atol=1e-12,
                                 err_msg=jax.tree_util.keystr(name))


def _labelled_config(**supervision_overrides):
  config = config_lib.load_config(config_path("test.py"))
  config.model.labels.update(dict(factors=("floor_hue", "object_hue"), sizes=(10, 10),
                                  residual_dim=4))
  config.supervision.update(dict(num_labelled=30, **supervision_overrides))
  return config


def test_the_labelled_images_are_the_same_for_every_factor_and_every_start():
  config = _labelled_config()
  source = data.source_of(config)
  table = supervision.label_table(config, source)
  known = table >= 0
  assert known.sum(0).tolist() == [30, 30]
  assert np.array_equal(known[:, 0], known[:, 1])  # the same images for each factor
  rows = np.flatnonzero(known[:, 0])
  truth = source.factors_of(rows)[:, [0, 2]]
  np.testing.assert_array_equal(table[rows], truth)
  again = supervision.label_table(config, data.source_of(config))  # a resumed run
  np.testing.assert_array_equal(again, table)
  config.seed = 1
  other = supervision.label_table(config, source)
  assert not np.array_equal(other >= 0, known)


def test_both_pipelines_give_the_same_batches_after_a_restart():
  config = _labelled_config()
  source = data.source_of(config)
  table = supervision.label_table(config, source)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  first = supervision.build_pipelines(config, source, table, mesh)
  second = supervision.build_pipelines(config, source, table, mesh)
  for step in (0, 7):
    for a, b in zip(first, second):
      x, y = a.local_batch(step), b.local_batch(step)
      np.testing.assert_array_equal(x["labels"], y["labels"])
      np.testing.assert_array_equal(x["image"], y["image"])
  few = first[1].local_batch(3)
  assert np.all(few["labels"] >= 0)  # the labelled batch holds labelled images only
  everything = first[0].local_batch(3)
  np.testing.assert_array_equal(everything["labels"], table[everything["index"]])


def _write_folder(tmp_path, names):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "faces"
  folder.mkdir()
  for i, name in enumerate(names):
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / name)
  return folder


def _folder_config(folder, labels_file):
  config = config_lib.load_config(config_path("test.py"))
  config.data.update(dict(name="folder", dir=str(folder)))
  config.model.labels.update(dict(factors=("smiling", "glasses"), sizes=(2, 3)))
  config.supervision.update(dict(file=str(labels_file),
                                 value_names={"smiling": ("no", "yes"),
                                         "glasses": ("none", "reading", "sun")}))
  return config


def test_a_labels_file_gives_each_image_its_known_values(tmp_path):
  folder = _write_folder(tmp_path, ["a.png", "b.png", "c.png"])
  labels = tmp_path / "labels.csv"
  labels.write_text("file,smiling,glasses\na.png,yes,\nc.png,no,sun\n")
  config = _folder_config(folder, labels)
  table = supervision.label_table(config, data.source_of(config))
  assert table.tolist() == [[1, -1], [-1, -1], [0, 2]]


@pytest.mark.parametrize("rows,message", [
    ("file,smiling,glasses\nz.png,yes,\n", "row 2: file 'z.png' is not an image"),
    ("file,smiling,glasses\na.png,maybe,\n", "row 2: smiling = 'maybe'; valid: no, yes"),
    ("file,smiling,glasses,age\na.png,yes,,3\n", "column(s) 'age' are not in"),
    ("file,smiling\na.png,yes\n", "no column for factor(s) 'glasses'"),
    ("file,smiling,glasses\na.png,yes,\nb.png,no,none\na.png,no,\n",
     "row 4: file 'a.png' is labelled twice"),
])
def test_a_bad_labels_file_stops_at_start_up_naming_file_and_row(tmp_path, rows, message):
  folder = _write_folder(tmp_path, ["a.png", "b.png"])
  labels = tmp_path / "labels.csv"
  labels.write_text(rows)
  config = _folder_config(folder, labels)
  with pytest.raises(supervision.LabelsFileError) as e:
    supervision.label_table(config, data.source_of(config))
  assert message in str(e.value) and str(labels) in str(e.value)
  assert "\n" not in str(e.value)


def test_labels_the_data_cannot_give_are_refused_with_the_valid_ones():
  config = _labelled_config()
  config.model.labels.factors = ("floor_hue", "colour")
  with pytest.raises(errors.ConfigError, match="'colour', not a factor of .*valid: floor_hue"):
    supervision.label_table(config, data.source_of(config))
  config = _labelled_config()
  config.model.labels.sizes = (10, 4)
  with pytest.raises(errors.ConfigError, match=r"gives \(10, 10\)"):
    supervision.label_table(config, data.source_of(config))
  config.model.labels.sizes = (10,)
  with pytest.raises(errors.ConfigError, match="one integer >= 2 per factor"):
    models.build_models(config.model)


def test_the_step_takes_known_cross_entropy_and_warms_up_the_entropy():
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]))
  labels = jnp.array([0, -1, 2])
  np.testing.assert_allclose(objective.known_cross_entropy(logits, labels),
                             -(np.log(0.7) + np.log(0.4)) / 2, rtol=1e-6)
  assert float(objective.known_cross_entropy(logits, -jnp.ones(3, jnp.int32))) == 0.0
  np.testing.assert_allclose(objective.entropy(jnp.zeros((1, 4))), [np.log(4)], rtol=1e-6)


def test_a_perfect_block_code_scores_dci_one_and_a_leaking_residual_is_caught():
  rng = np.random.RandomState(0)
  factors = rng.randint(0, 4, size=(600, 2))
  # Two dims per factor: both copy the factor (with noise); blocks are separate.
  codes = np.concatenate([factors[:, :1] + 0.01 * rng.randn(600, 2),
                          factors[:, 1:] + 0.01 * rng.randn(600, 2)], axis=1)
  out = labelled_metrics.block_dci(codes[:400], factors[:400], codes[400:], factors[400:],
                                   factor_dim=2, workers=1)
  assert out["disentanglement"] > 0.99 and out["completeness"] > 0.99
  assert out["informativeness_test"] > 0.99
  mixed = labelled_metrics.block_dci(codes[:400, [0, 2, 1, 3]], factors[:400],
                                     codes[400:, [0, 2, 1, 3]], factors[400:], factor_dim=2,
                                     workers=1)
  assert mixed["disentanglement"] < 0.2  # each block now holds both factors
  factors = rng.randint(0, 4, size=(3000, 2))
  clean = rng.randn(3000, 3)
  leaking = np.concatenate([clean, factors[:, :1] + 0.1 * rng.randn(3000, 1)], axis=1)
  probe = labelled_metrics.residual_probe(clean, factors, ("a", "b"))
  caught = labelled_metrics.residual_probe(leaking, factors, ("a", "b"))
  assert abs(probe["a"]["accuracy"] - probe["a"]["chance"]) < 0.1
  assert caught["a"]["accuracy"] > 0.9 and abs(caught["b"]["accuracy"]
                                                - caught["b"]["chance"]) < 0.1


@pytest.mark.slow
def test_a_tiny_labelled_run_trains_evaluates_and_edits(tmp_path):
  from cldis_jax import (api, autoencoding_eval, edit, evaluate,  # pylint: disable=g-import-not-at-top
                         train)
  config = _labelled_config()
  config.train.update(dict(num_steps=3, checkpoint_every=3, log_every=3))
  config.samples.every = 0
  config.evaluate.update(dict(metrics=("labels", "autoencoding"), labels_edit_images=2))
  workdir = str(tmp_path / "run")
  metrics = train.train_and_evaluate(config, workdir)
  assert {"classify", "entropy", "residual_decay", "loss_diff_labelled"} <= set(
      metrics["train"])
  summary = evaluate.run(config, workdir)
  labels = summary["results"]["labels"]
  assert set(labels) == {"dci", "mig", "sap", "classifier", "residual_probe", "edit"}
  assert set(labels["classifier"]) == {"floor_hue", "object_hue", "mean"}
  column = summary["results"]["autoencoding"]  # also decoded from the true labels' rows
  assert set(column["true_labels"]["agreement"]) == set(column["fresh"]["agreement"])
  assert column["true_labels"]["mse"] >= 0
  model = api.load(workdir, config)
  rows = np.arange(5)
  np.testing.assert_array_equal(autoencoding_eval._true_labels(config, model.source, rows),
                                model.source.factors_of(rows)[:, [0, 2]])
  x = model.images(count=2)
  frames = model.set_factor(x, "object_hue", [0, 9])
  assert frames.shape == (2, 2, 16, 16, 3)
  with pytest.raises(api.InputError, match="not labelled; valid: floor_hue, object_hue"):
    model.set_factor(x, "wall_hue", [0])
  config.edit.directions = "labels"
  out = edit.run(config, workdir)
  assert [os.path.basename(f) for f in out["files"][:2]] == ["labels_floor_hue.png",
                                                              "labels_object_hue.png"]
  with open(os.path.join(workdir, "edit", "3", "edit.json")) as f:
    assert json.load(f)["values"]["object_hue"] == [str(v) for v in range(10)]
