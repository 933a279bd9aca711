"""NCF models: shapes, hashed lookup through one function, losses."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fairjax import models
from fairjax import subspace
from fairjax.errors import InputError


@pytest.mark.parametrize("kind", models.MODELS)
def test_shapes_and_param_paths(kind):
  m = models.make_model(kind, 5, 7, 4, (8, 4))
  params = m.init(jax.random.PRNGKey(0))
  out = m.apply(params, jnp.array([0, 1, 4]), jnp.array([6, 0, 3]))
  chex.assert_shape(out, (3,))
  for path in models.item_table_paths(kind) + models.user_table_paths(kind):
    chex.assert_shape(params[path[0]][path[1]], (5 if path[0].startswith("user") else 7, 4))


def test_hashed_model_equals_plain_model_on_expanded_table():
  """A hashed item table behaves exactly like the plain table it expands to."""
  spec = subspace.TableSpec(7, 4, 123, 8)
  hashed = models.make_model("gmf", 3, 7, 4, item_sizes={"item_gmf": 8},
                             seeds={"item_gmf": 123})
  plain = models.make_model("gmf", 3, 7, 4)
  hp = hashed.init(jax.random.PRNGKey(1))
  chex.assert_shape(hp["item_gmf"]["embedding"], (8,))
  pp = dict(hp, item_gmf={"embedding": subspace.expand(hp["item_gmf"]["embedding"], spec)})
  u, i = jnp.array([0, 1, 2, 2]), jnp.array([6, 5, 0, 3])
  chex.assert_trees_all_close(hashed.apply(hp, u, i), plain.apply(pp, u, i), atol=1e-6)


def test_rejects_bad_hyperparameters():
  with pytest.raises(InputError, match="embed_dim"):
    models.make_model("neumf", 3, 3, 0)
  with pytest.raises(InputError, match="model"):
    models.make_model("transformer", 3, 3, 4)


def test_losses_prefer_positives_above_negatives():
  good = models.bce_loss(jnp.array([5.0]), jnp.array([[-5.0, -5.0]]))
  bad = models.bce_loss(jnp.array([-5.0]), jnp.array([[5.0, 5.0]]))
  assert good < bad
  assert models.bpr_loss(jnp.array([3.0]), jnp.array([[0.0]])) < models.bpr_loss(
      jnp.array([0.0]), jnp.array([[3.0]]))
  # Masked examples do not count.
  m = models.bce_loss(jnp.array([5.0, -50.0]), jnp.array([[-5.0], [50.0]]), jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(m, models.bce_loss(jnp.array([5.0]), jnp.array([[-5.0]])), rtol=1e-6)
