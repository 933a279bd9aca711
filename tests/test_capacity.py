"""Capacity strings and level assignment."""
import numpy as np
import pytest

from fairjax import capacity
from fairjax.errors import InputError


def test_parse_sorts_levels():
  lv = capacity.parse_capacities("64:0.25, 1:0.25,8:0.5")
  assert lv.compressions == (1.0, 8.0, 64.0)
  assert lv.fractions == (0.25, 0.5, 0.25)
  assert lv.names == ("1x", "8x", "64x")


@pytest.mark.parametrize("text", ["", "1:0.5,8:0.4", "0.5:1", "x:1", "1:abc", "1-1",
                                  "1:0.5,1:0.5", "1:-1,8:2", "nan:1"])
def test_parse_rejects(text):
  with pytest.raises(InputError, match="capacities"):
    capacity.parse_capacities(text)


def test_assign_levels_follows_fractions_and_seed():
  lv = capacity.parse_capacities("1:0.25,8:0.75")
  a = capacity.assign_levels(101, lv, seed=3)
  assert sorted(np.bincount(a)) == [25, 76]
  np.testing.assert_array_equal(a, capacity.assign_levels(101, lv, seed=3))
  assert not np.array_equal(a, capacity.assign_levels(101, lv, seed=4))
