r"""Runs an experiment as a real Flower deployment on this machine.

  python -m launch.deploy --config=configs/ml100k.py --workdir=runs/deploy \
      --nodes=4 [--config.KEY=VALUE ...]

Starts a Flower SuperLink and `--nodes` SuperNodes on free loopback ports
(127.0.0.1 only), one per device, each with a capacity level of
`config.capacities` (round-robin over the levels) and its own partition of
the data (WORKDIR/partitions/node-I.npz, its users' interactions only);
then runs the fairjax Flower app (`fairjax.flower`, `launch/flower_app`)
on them. Writes WORKDIR/metrics.jsonl in `launch.train`'s format (plus
`time/compute_seconds`, `time/overhead_seconds` and `wire/bytes_*/LEVEL`),
WORKDIR/rounds.jsonl (one line per round: wall time, compute, overhead,
serialized bytes per level), and logs under WORKDIR/logs/. Every process
it starts is stopped by process group when it ends, on failure or Ctrl-C.

Needs flwr: `pip install -e .[deploy]`. Bad input: exit code 2 and one
`error:` line.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics, partitions and logs go.")
_NODES = flags.DEFINE_integer("nodes", 4, "SuperNodes (devices) to start.")
_ROUND_TIMEOUT = flags.DEFINE_float(
    "round_timeout", 300.0, "Seconds the server waits for a round's replies; devices "
    "that have not answered by then count as dropped.")
_SAVE_PARAMS = flags.DEFINE_bool(
    "save_params", False, "Write the server's params after every round to "
    "WORKDIR/params/round-R.npz (flat keys, as in the messages).")
_COMPARE = flags.DEFINE_bool(
    "compare", False, "After the deployment, run the same config through "
    "`launch.train`'s code in-process (WORKDIR/simulation) and write "
    "WORKDIR/equivalence.json: the max abs difference of the server params after "
    "every round, and of every metric of every metrics.jsonl record (time/ keys aside).")
_KILL = flags.DEFINE_string(
    "kill", "", "Test hook, NODE:ROUND[:RESTART]: SIGKILL SuperNode NODE (0-based) once "
    "round ROUND is sent to the devices; start it again (a new process, the same "
    "device) once round RESTART is done.")
_FAULT = flags.DEFINE_string(
    "fault", "", "Test hook, NODE:MODE: SuperNode NODE replies with a bad update "
    "(MODE nan, shape or level).")

APP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flower_app")
FAULTS = ("nan", "shape", "level")


def parse_flags(argv):
  rest = cli.parse_flags_or_fail(argv)
  cli.require_config_and_workdir(_CONFIG, _WORKDIR, "configs/ml100k.py")
  return rest


def free_port():
  """A free TCP port on 127.0.0.1 (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_port(port, proc, timeout=120.0):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      s.settimeout(0.5)
      if s.connect_ex(("127.0.0.1", port)) == 0:
        return True
    time.sleep(0.2)
  return False


class Processes:
  """Processes started in their own sessions; `stop` ends each by process group."""

  def __init__(self, log_dir):
    self.log_dir = log_dir
    self.procs = {}

  def start(self, name, argv, env):
    log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    log.close()
    self.procs[name] = proc
    return proc

  def kill(self, name, sig=signal.SIGKILL):
    proc = self.procs.pop(name, None)
    if proc is None:
      return
    try:
      os.killpg(proc.pid, sig)
    except ProcessLookupError:
      pass
    proc.wait()

  def stop(self, grace=5.0):
    """SIGTERM to every group, SIGKILL to what is left after `grace` seconds."""
    groups = [p.pid for p in self.procs.values()]
    for pid in groups:
      try:
        os.killpg(pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
    deadline = time.time() + grace
    for proc in self.procs.values():
      try:
        proc.wait(max(0.1, deadline - time.time()))
      except subprocess.TimeoutExpired:
        pass
    for pid in groups:  # children (SuperExec, ClientApp, ServerApp) share the group
      try:
        os.killpg(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    for proc in self.procs.values():
      try:
        proc.wait(5)
      except subprocess.TimeoutExpired:
        pass
    self.procs.clear()
    return [pid for pid in groups if _group_alive(pid)]


def _group_alive(pgid):
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      if int(fields[2]) == pgid and fields[0] != "Z":
        return True
    except (OSError, IndexError, ValueError):
      continue
  return False


def _hook(text, flag, modes=None):
  """Parses a NODE:ARG[:ARG] test-hook flag (InputError when malformed)."""
  from fairjax.errors import InputError  # pylint: disable=g-import-not-at-top
  if not text:
    return None
  bits = text.split(":")
  try:
    node = int(bits[0])
    if modes is not None:
      if len(bits) != 2 or bits[1] not in modes:
        raise ValueError
      return node, bits[1]
    if len(bits) not in (2, 3):
      raise ValueError
    return (node,) + tuple(int(b) for b in bits[1:])
  except ValueError:
    raise InputError(f"--{flag}: {text!r} is not " + (
        f"NODE:MODE (MODE one of {', '.join(modes)})" if modes else
        "NODE:ROUND[:RESTART_ROUND]")) from None


def deploy(config, workdir, nodes, round_timeout, kill=None, fault=None, echo=True,
           save_params=False):
  """Runs `config` on a local Flower deployment; returns the final metrics record."""
  from fairjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from fairjax import deployment  # pylint: disable=g-import-not-at-top
  from fairjax import evaluation  # pylint: disable=g-import-not-at-top
  from fairjax import experiment  # pylint: disable=g-import-not-at-top
  from fairjax import metrics  # pylint: disable=g-import-not-at-top
  from fairjax import validation  # pylint: disable=g-import-not-at-top
  from fairjax.errors import InputError  # pylint: disable=g-import-not-at-top
  validation.validate(config)
  from fairjax import algorithms  # pylint: disable=g-import-not-at-top
  if algorithms.parse(config.algorithm)[0] not in algorithms.federated():
    raise InputError(f"algorithm: {config.algorithm!r} is not federated; nothing to deploy")
  if config.client.poison:
    raise InputError(f"client.poison={config.client.poison!r}: a simulation hook; a "
                     "deployment's bad device is --fault=NODE:MODE")
  from fairjax import capacity  # pylint: disable=g-import-not-at-top
  levels = capacity.parse_capacities(config.capacities)
  if nodes < len(levels.compressions):
    raise InputError(f"--nodes={nodes}: fewer devices than capacity levels "
                     f"({len(levels.compressions)} in {config.capacities!r}); each level "
                     "needs one")
  for hook, name in ((kill, "kill"), (fault, "fault")):
    if hook is not None and not 0 <= hook[0] < nodes:
      raise InputError(f"--{name}: node {hook[0]} is not one of 0..{nodes - 1}")
  experiment.prepare_workdir(workdir)
  dataset = data_lib.load(config.data)
  evaluator = evaluation.Evaluator(dataset, config.eval.protocol, config.eval.num_negatives,
                                   seed=config.seed)
  parts = deployment.write_partitions(config, dataset, evaluator, nodes,
                                      os.path.join(workdir, "partitions"))
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(deployment.config_to_json(config))
  for name in ("metrics.jsonl", "rounds.jsonl", "progress.log"):
    if os.path.exists(os.path.join(workdir, name)):
      os.remove(os.path.join(workdir, name))
  log_dir = os.path.join(workdir, "logs")
  os.makedirs(log_dir, exist_ok=True)
  home = tempfile.mkdtemp(prefix="flwr-home-")
  bin_dir = os.path.dirname(sys.executable)
  env = dict(os.environ, FLWR_HOME=home, FLWR_TELEMETRY_ENABLED="0",
             FLWR_DISABLE_UPDATE_CHECK="1", PATH=bin_dir + os.pathsep + os.environ["PATH"])
  env.setdefault("JAX_PLATFORMS", "cpu")
  # Every message starts a fresh ClientApp process: the persistent compilation
  # cache spares all but the first its XLA compiles.
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(workdir, ".jax_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  link_port = free_port()
  with open(os.path.join(home, "config.toml"), "w") as f:
    f.write(f'[superlink]\ndefault = "local-deploy"\n\n[superlink.local-deploy]\n'
            f'address = "127.0.0.1:{link_port}"\ninsecure = true\n')
  procs = Processes(log_dir)

  def supernode(i):
    capacity, path = parts[i]
    node_config = f'capacity={capacity:g} partition="{path}"'
    if fault is not None and fault[0] == i:
      node_config += f' fault="{fault[1]}"'
    port = free_port()
    proc = procs.start(f"supernode-{i}", [
        os.path.join(bin_dir, "flower-supernode"), "--insecure",
        "--superlink", f"127.0.0.1:{link_port}", "--host", "127.0.0.1", "--port", str(port),
        "--node-config", node_config], env)
    return proc

  pids = {}
  try:
    link = procs.start("superlink", [
        os.path.join(bin_dir, "flower-superlink"), "--insecure",
        "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
        "--port", str(link_port)], env)
    if not wait_port(link_port, link):
      raise RuntimeError(f"the SuperLink did not start (see {log_dir}/superlink.log)")
    for i in range(nodes):
      supernode(i)
    pids = {name: p.pid for name, p in procs.procs.items()}
    with open(os.path.join(workdir, "pids.json"), "w") as f:
      json.dump(pids, f, indent=1)
    run_config = (f"workdir='{os.path.abspath(workdir)}' nodes={nodes} "
                  f"round-timeout={float(round_timeout)} "
                  f"save-params={'true' if save_params else 'false'}")
    runner = procs.start("run", [
        os.path.join(bin_dir, "flwr"), "run", APP_DIR, "local-deploy", "--stream",
        "--run-config", run_config], env)
    progress = os.path.join(workdir, "progress.log")
    seen = 0
    killed = False
    while runner.poll() is None:
      time.sleep(0.2)
      if not os.path.exists(progress):
        continue
      with open(progress) as f:
        lines = f.read().splitlines()
      for line in lines[seen:]:
        if echo:
          print(line, file=sys.stderr, flush=True)
        if kill is not None and not killed and line.startswith(f"round {kill[1]} sent"):
          time.sleep(1.0)  # the devices are starting their ClientApps
          procs.kill(f"supernode-{kill[0]}")
          killed = True
          print(f"test hook: SIGKILLed supernode-{kill[0]} during round {kill[1]}",
                file=sys.stderr, flush=True)
        if (kill is not None and killed and len(kill) == 3
            and line.startswith(f"round {kill[2]} done")):
          supernode(kill[0])
          print(f"test hook: restarted supernode-{kill[0]}", file=sys.stderr, flush=True)
      seen = len(lines)
      if lines and lines[-1] == "finished":
        break
    try:
      runner.wait(60)
    except subprocess.TimeoutExpired:
      pass
    records = (metrics.read_metrics(workdir)
               if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else [])
    if not records or not records[-1].get("final"):
      raise RuntimeError(f"the deployment ended before its last round (see {log_dir}/)")
    return records[-1]
  finally:
    left = procs.stop()
    if left:
      print(f"warning: process groups {left} still had processes", file=sys.stderr)


def compare(config, workdir):
  """Runs `config` as `launch.train` does and compares it with the deployment's files."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fairjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from fairjax import deployment  # pylint: disable=g-import-not-at-top
  from fairjax import experiment  # pylint: disable=g-import-not-at-top
  from fairjax import metrics  # pylint: disable=g-import-not-at-top
  from fairjax import simulate  # pylint: disable=g-import-not-at-top
  sim_dir = os.path.join(workdir, "simulation")
  experiment.run(config, sim_dir, verbose=False)
  # The same rounds again, one at a time (what simulate.run does), for the
  # params after each one (the run's checkpoints keep only the last two).
  sim = simulate.Simulation(config, data_lib.load(config.data))
  state = sim.init_state()
  params = {}
  seconds = {}
  for rnd in range(1, int(config.rounds) + 1):
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(sim.round(state, rnd))
    seconds[rnd] = time.perf_counter() - t0
    with np.load(os.path.join(workdir, "params", f"round-{rnd}.npz")) as z:
      got = deployment.unflatten(dict(z), state["params"])
    params[rnd] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(state["params"])))
  worst, compared = {}, 0
  for have, want in zip(metrics.read_metrics(workdir), metrics.read_metrics(sim_dir)):
    for k, w in want.items():
      if k.startswith("time/") or k not in have:
        continue
      compared += 1
      h = have[k]
      if isinstance(w, (int, float)) and isinstance(h, (int, float)):
        d = abs(float(h) - float(w))
      else:
        d = 0.0 if h == w else float("inf")
      if d > worst.get("diff", -1.0):
        worst = {"diff": d, "key": k, "round": want.get("round"), "deployed": h,
                 "simulated": w}
  out = {"max_abs_param_diff_by_round": params, "simulated_round_seconds": seconds,
         "metric_values_compared": compared,
         "worst_metric": worst}
  with open(os.path.join(workdir, "equivalence.json"), "w") as f:
    json.dump(out, f, indent=1)
  return out


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    import flwr  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    cli.fail("flwr is not installed; install the deploy extra: pip install -e '.[deploy]'")
  from fairjax import experiment  # pylint: disable=g-import-not-at-top
  from fairjax.errors import InputError  # pylint: disable=g-import-not-at-top
  # SIGTERM ends the run like Ctrl-C: the `finally` above stops every process.
  signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
  config = _CONFIG.value
  try:
    final = deploy(config, _WORKDIR.value, _NODES.value, _ROUND_TIMEOUT.value,
                   _hook(_KILL.value, "kill"), _hook(_FAULT.value, "fault", FAULTS),
                   save_params=_SAVE_PARAMS.value or _COMPARE.value)
    if _COMPARE.value:
      eq = compare(config, _WORKDIR.value)
      rounds = eq["max_abs_param_diff_by_round"]
      print("equivalence with launch.train: max abs diff of server params "
            + ", ".join(f"round {r}: {d:.2e}" for r, d in rounds.items())
            + f"; largest metric difference {eq['worst_metric'].get('diff', 0):.2e} "
            f"({eq['worst_metric'].get('key')}) over {eq['metric_values_compared']} values")
  except InputError as e:
    cli.fail(str(e))
  except RuntimeError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    print("interrupted: every process the deployment started was stopped", file=sys.stderr)
    sys.exit(130)
  print(f"{config.algorithm} on {config.data.name or config.data.path}, deployed on "
        f"{_NODES.value} Flower devices ({config.eval.protocol} protocol), round "
        f"{final.get('round')}:")
  print(experiment.format_table(final, config.eval.protocol))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
