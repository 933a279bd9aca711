"""Scaling a simulation out: a level's clients sharded along a `clients` axis.

A level's program (`Simulation._level_program`) is already a map-reduce:
map the client update over a leading client axis, reduce the weighted,
expanded deltas to one sum. Here the same program runs under `shard_map` on
a one-axis mesh: every device (of every process) trains its slice of the
clients, and the sums become a cross-device `psum`. Nothing in the program
knows about devices, so one program runs on one CPU, several forced host
devices, a multi-GPU host or several hosts.

  mesh = sharding.make_mesh(config.num_devices)
  program = sharding.shard_clients(level_program, mesh, num_summed=2)

Ragged client counts are padded with zero clients (weight 0, empty mask),
which the level program already treats as clients that dropped out, and the
padding is cut off again before anything is returned.

Several processes (`jax.distributed.initialize`): every process builds the
same host batch (sampling depends on (seed, round) only), so no process
sends clients' data to another; the batch (item ids and masks: small) goes
to every device whole, and each device trains its own slice of it. The
server state is replicated on every device; process 0 writes the files.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fairjax.errors import InputError

CLIENTS = "clients"


def initialize_distributed(coordinator: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None):
  """Joins a multi-process run; must come before any other JAX call.

  Args:
    coordinator: "HOST:PORT" of process 0, or "auto" to let JAX detect the
      cluster (Slurm, Open MPI, Kubernetes, Cloud TPU); None reads
      JAX_COORDINATOR_ADDRESS.
    num_processes: how many processes take part (None: detected).
    process_id: this process's rank in [0, num_processes) (None: detected).
  """
  if coordinator == "auto":
    coordinator = None
  # CPU-only runs need a cross-process collective library; gloo is jax
  # 0.10's default, set here so an older or changed default does not leave
  # multi-process CPU runs without collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)


def is_lead() -> bool:
  """Whether this process writes files (metrics, checkpoints) and prints."""
  return jax.process_index() == 0


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A one-axis mesh named `clients` over `num_devices` devices (0 = all).

  With several processes, every process contributes the same number of its
  own devices, so each one holds a slice of every level's clients.

  Args:
    num_devices: how many devices to use; 0 uses every visible device.

  Returns:
    The mesh (its axis is Auto: code outside `shard_clients` stays
    unaware of it).
  """
  devices = jax.devices()
  num = int(num_devices) or len(devices)
  procs = jax.process_count()
  if num < 0 or num > len(devices):
    raise InputError(f"num_devices: {num_devices} is not between 0 and the "
                     f"{len(devices)} visible devices")
  if num % procs:
    raise InputError(f"num_devices: {num} devices cannot be split evenly over "
                     f"{procs} processes")
  per_process = num // procs
  chosen = []
  for p in range(procs):
    mine = [d for d in devices if d.process_index == p]
    if len(mine) < per_process:
      raise InputError(f"num_devices: process {p} has {len(mine)} devices, "
                       f"{per_process} needed")
    chosen += mine[:per_process]
  return jax.sharding.Mesh(np.array(chosen), (CLIENTS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


def padded_count(k: int, mesh: jax.sharding.Mesh) -> int:
  """The client count rounded up to a multiple of the number of devices."""
  n = mesh.devices.size
  return -(-int(k) // n) * n


def pad_clients(tree, k: int):
  """Zero-pads the leading (client) axis of every leaf to `k` rows."""
  def pad(x):
    extra = k - x.shape[0]
    if extra == 0:
      return x
    return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1))
  return jax.tree.map(pad, tree)


def replicate(tree, mesh: jax.sharding.Mesh):
  """Places every leaf, whole, on every device of the mesh.

  The server state lives this way, so the level programs, the server step
  and the user-table updates all see arrays on the same devices. On one
  device this returns the tree as it is.
  """
  if mesh.devices.size == 1:
    return tree
  everywhere = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, everywhere)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == everywhere:
      return x
    host = np.asarray(x)  # the same on every process (same seed, same data)
    return jax.make_array_from_callback(host.shape, everywhere, lambda idx: host[idx])
  return jax.tree.map(put, tree)


def local(tree):
  """This process's own copy of a replicated tree (one device, no transfer).

  Evaluation runs on it: repeating the same scoring on every device of a
  mesh would only multiply the work.
  """
  def one(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
      return x.addressable_shards[0].data
    return x
  return jax.tree.map(one, tree)


def from_lead(step: Optional[int], state):
  """Process 0's (checkpoint step or None, state) on every process.

  A resumed multi-process run must start every process from the same state,
  even where the workdirs are not one shared filesystem.
  """
  if jax.process_count() == 1:
    return step, state
  mine = (np.int64(-1 if step is None else step), jax.device_get(state))
  step, state = jax.device_get(multihost_utils.broadcast_one_to_all(mine))
  return (None if int(step) < 0 else int(step)), state


def shard_clients(program, mesh: jax.sharding.Mesh, num_summed: int):
  """Runs a level program with its clients split over the mesh's devices.

  Args:
    program: `program(params, *per_client) -> outputs`, where every
      `per_client` leaf has a leading client axis and a client that is all
      zeros (weight 0, empty mask) changes nothing; its first `num_summed`
      outputs are sums over clients, the rest have a leading client axis.
    mesh: from `make_mesh`.
    num_summed: how many leading outputs are sums over clients.

  Returns:
    A jitted function of the same signature and results. On a one-device
    mesh this is `jax.jit(program)` itself, so one device computes exactly
    what it did before sharding existed.
  """
  if mesh.devices.size == 1:
    return jax.jit(program)
  everywhere = NamedSharding(mesh, P())

  def body(params, *per_client):
    outs = program(params, *per_client)
    return jax.lax.psum(tuple(outs[:num_summed]), CLIENTS), tuple(outs[num_summed:])

  def run(params, *per_client):
    k = jax.tree.leaves(per_client)[0].shape[0]
    kp = padded_count(k, mesh)
    per_client = pad_clients(per_client, kp)
    in_specs = (P(),) + (P(CLIENTS),) * len(per_client)
    # check_vma=False: the client code stays ordinary single-device JAX. With
    # the varying-axis checks on, every loop carry that starts from a constant
    # would need a `pcast`, and a gradient with respect to the replicated
    # params would come back summed over devices unless they were first
    # `pcast(..., to="varying")`. Off, each device runs the program on its
    # slice as is; the psum above is the only collective.
    sums, each = jax.shard_map(body, mesh=mesh, in_specs=in_specs,
                               out_specs=(P(), P(CLIENTS)), check_vma=False)(
                                   params, *per_client)
    # Per-client results (a user row and a few scalars each) are gathered to
    # every device: tiny, and the caller can then read them on any process.
    return sums + jax.tree.map(lambda x: x[:k], each)

  return jax.jit(run, out_shardings=everywhere)
