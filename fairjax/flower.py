"""fairjax over Flower: a Strategy, a ServerApp and a ClientApp (needs `pip install -e .[deploy]`).

`FairjaxStrategy` is a `flwr.serverapp.strategy.Strategy` for any algorithm
value of `fairjax.algorithms`: its configure/aggregate methods call the
server's half of the simulation's round (`fairjax.deployment.Server`, made
of `fairjax.engine`'s functions). `client_app` is the device's half
(`fairjax.deployment.Node`): it learns its capacity and its data from its
node config (`capacity=8 partition="/path/node-3.npz"`), keeps its users'
embedding rows in `context.state`, and scores its users with the model it
holds. `launch.deploy` starts a SuperLink and SuperNodes and runs this app.

Messages, per device (arrays travel as numpy `ArrayRecord`s, flat keys):
  query     server -> all    "setup": the experiment config (JSON)
            reply            "node": capacity level, users, example counts
  train     server -> some   "arrays": start/... (the level's broadcast),
                             items (positions), mask, rngs, seeds, users,
                             commit; "config": round, level, group size
            reply            "arrays": new/... (per client), loss;
                             "config": round, level; "metrics": timings
  evaluate  server -> all    "arrays": view/... (or params/...), commit
            reply            "metrics": sum/<metric>, count/<metric>
"""
import json
import os
import sys
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.app import RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fairjax import deployment
from fairjax import metrics as metrics_lib

POLL_SECONDS = 0.05


def _process_age():
  """Seconds since this process started (Linux), or 0."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
      btime = next(int(l.split()[1]) for l in f if l.startswith("btime"))
    return max(0.0, time.time() - (btime + start_ticks / os.sysconf("SC_CLK_TCK")))
  except (OSError, ValueError, StopIteration, IndexError):
    return 0.0


def to_record(flat):
  return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in flat.items()})


def from_record(record):
  return {k: v.numpy() for k, v in record.items()}


def wire_bytes(message):
  """Serialized size of a message as it is pushed (the message and every nested object)."""
  from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects  # pylint: disable=g-import-not-at-top
  try:
    return sum(len(o.deflate()) for o in get_all_nested_objects(message).values())
  except Exception:  # pylint: disable=broad-except
    return 0


# ------------------------------------------------------------------ server


class FairjaxStrategy(Strategy):
  """Rounds of a fairjax algorithm value on Flower devices.

  Args:
    config: the experiment ConfigDict.
    log: one-line notices (rejected replies, dropped devices).
  """

  def __init__(self, config, log=deployment.log):
    self.config = config
    self.log = log
    self.server = None
    self._tasks, self._batches = [], []
    self._sent = {}
    self.last_round = {}

  # setup: one query to every device
  def configure_query(self, node_ids):
    setup = ConfigRecord({"config": deployment.config_to_json(self.config)})
    return [Message(RecordDict({"setup": setup}), dst_node_id=int(n),
                    message_type=MessageType.QUERY) for n in node_ids]

  def aggregate_query(self, replies):
    """Registers the devices that described themselves; returns their ids."""
    described = {}
    for msg in replies:
      node_id = msg.metadata.src_node_id
      if msg.has_error() or not msg.has_content() or "node" not in msg.content:
        reason = msg.error.reason if msg.has_error() else "no description"
        self.log(f"node {node_id}: did not join ({reason})")
        continue
      info = json.loads(msg.content["node"]["json"])
      described[node_id] = info
    if self.server is None:
      if described:
        self.server = deployment.Server(self.config, described, self.log)
      return list(described)
    joined = []
    for node_id, info in described.items():
      why = self.server.register(node_id, info)
      if why:
        self.log(why)
      else:
        joined.append(node_id)
        self.log(f"node {node_id} (level {self.server.sim.levels.names[int(info['level'])]}) "
                 "joined")
    return joined

  # --------------------------------------------------------------- train
  def configure_train(self, server_round, arrays, config, grid):
    del arrays, config, grid  # the server's params live in self.server
    self._tasks, self._batches = self.server.plan(server_round)
    msgs, down = [], {}
    for task in self._tasks:
      flat = dict(task.arrays, users=np.asarray(task.users, np.int64),
                  commit=np.asarray(self.server.take_commit(task.node_id), np.int64))
      cfg = {k: v for k, v in task.config.items() if k != "users"}
      msg = Message(RecordDict({"arrays": to_record(flat), "config": ConfigRecord(cfg)}),
                    dst_node_id=int(task.node_id), message_type=MessageType.TRAIN)
      msgs.append(msg)
    self.last_round = {"wire_down": down, "measure_seconds": 0.0}
    self._sent = {task.node_id: msg for task, msg in zip(self._tasks, msgs)}
    return msgs

  def measure_sent(self):
    """Serialized bytes per level of the round's train messages (after they went out)."""
    t0 = time.perf_counter()
    down = self.last_round["wire_down"]
    for task in self._tasks:
      name = self.server.sim.levels.names[task.lv]
      down[name] = down.get(name, 0) + wire_bytes(self._sent[task.node_id])
    self._sent = {}
    self.last_round["measure_seconds"] += time.perf_counter() - t0

  def _decode(self, msg):
    """(arrays, config) of a train reply, or (reason, {}) when it cannot be read."""
    if msg.has_error():
      return None
    try:
      arrays = from_record(msg.content["arrays"])
      cfg = dict(msg.content["config"])
      return arrays, cfg
    except Exception as e:  # pylint: disable=broad-except
      return f"unreadable reply ({type(e).__name__}: {e})", {}

  def aggregate_train(self, server_round, replies):
    by_node, up, timing = {}, {}, {}
    names = self.server.sim.levels.names
    lv_of = {t.node_id: t.lv for t in self._tasks}
    for msg in replies:
      node_id = msg.metadata.src_node_id
      if node_id not in lv_of:
        continue
      decoded = self._decode(msg)
      if decoded is None:  # the device failed or is gone: its clients count as dropped
        by_node[node_id] = msg.error.reason
        continue
      by_node[node_id] = decoded
      name = names[lv_of[node_id]]
      t0 = time.perf_counter()
      up[name] = up.get(name, 0) + wire_bytes(msg)
      self.last_round["measure_seconds"] += time.perf_counter() - t0
      if "metrics" in msg.content:
        for k, v in msg.content["metrics"].items():
          timing.setdefault(k, []).append(float(v))
    t0 = time.perf_counter()
    stats = self.server.aggregate(server_round, self._tasks, self._batches, by_node)
    stats["time/server_aggregate_seconds"] = time.perf_counter() - t0
    self.last_round.update(wire_up=up, node_times=timing, stats=stats)
    if self._sent:
      self.measure_sent()
    out = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float))
           and np.isfinite(v)}
    return to_record(deployment.flatten(self.server.params)), MetricRecord(out)

  # ------------------------------------------------------------ evaluate
  def configure_evaluate(self, server_round, arrays, config, grid):
    del arrays, config, grid
    views, msgs = {}, []
    for node_id, node in self.server.nodes.items():
      if node.lv not in views:
        views[node.lv] = self.server.eval_arrays(node.lv, server_round)
      flat = dict(views[node.lv],
                  commit=np.asarray(self.server.take_commit(node_id), np.int64))
      msgs.append(Message(RecordDict({"arrays": to_record(flat),
                                      "config": ConfigRecord({"round": server_round})}),
                          dst_node_id=int(node_id), message_type=MessageType.EVALUATE))
    return msgs

  def aggregate_evaluate(self, server_round, replies):
    results = {}
    for msg in replies:
      node_id = msg.metadata.src_node_id
      if msg.has_error() or not msg.has_content() or "metrics" not in msg.content:
        self.log(f"node {node_id}: no evaluation in round {server_round}")
        continue
      m = dict(msg.content["metrics"])
      results[node_id] = {k[len("sum/"):]: (float(v), int(m["count/" + k[len("sum/"):]]))
                          for k, v in m.items() if k.startswith("sum/")}
    self.last_eval = self.server.eval_summary(results)  # NaN where a level has no test
    return MetricRecord({k: float(v) for k, v in self.last_eval.items() if np.isfinite(v)})

  def start(self, grid, initial_arrays=None, num_rounds=3, timeout=3600, **kwargs):
    """Not the base class's loop: devices must describe themselves first (a
    QUERY round) and may rejoin; `run_server` is this strategy's loop."""
    raise NotImplementedError("FairjaxStrategy runs under fairjax.flower.run_server "
                              "(the ServerApp of launch/flower_app)")

  def summary(self):
    self.log(f"FairjaxStrategy: {self.config.algorithm} on capacities {self.config.capacities}")


# -------------------------------------------------------- the run (server)


def exchange(grid, messages, timeout, log=deployment.log):
  """Pushes `messages`, pulls their replies until all came, or `timeout`, or
  their devices left the federation; polls every POLL_SECONDS (the Grid's
  own `send_and_receive` polls every 3 s)."""
  messages = list(messages)
  if not messages:
    return []
  ids = list(grid.push_messages(messages))
  dst = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages)}
  pending = set(i for i in ids if i)
  replies = []
  deadline = time.time() + timeout
  next_check = time.time() + 1.0
  while pending and time.time() < deadline:
    for msg in grid.pull_messages(list(pending)):
      pending.discard(msg.metadata.reply_to_message_id)
      if msg.has_error() and msg.metadata.reply_to_message_id in dst:
        # An error the SuperLink wrote (the device is gone) names the device it was for.
        msg.metadata.__dict__["_src_node_id"] = dst[msg.metadata.reply_to_message_id]
      replies.append(msg)
    if pending and time.time() > next_check:
      alive = set(grid.get_node_ids())
      for mid in [m for m in pending if dst[m] not in alive]:
        log(f"node {dst[mid]}: left the federation while a message was out")
        pending.discard(mid)
      next_check = time.time() + 1.0
    if pending:
      time.sleep(POLL_SECONDS)
  return replies


def run_server(grid, config, workdir, num_nodes, round_timeout, join_timeout=300.0,
               save_params=False):
  """The ServerApp's loop: devices join, rounds, evaluations, metrics.jsonl."""
  strategy = FairjaxStrategy(config)
  strategy.summary()
  progress = open(os.path.join(workdir, "progress.log"), "a", buffering=1)
  say = lambda line: (progress.write(line + "\n"), deployment.log(line))
  deadline = time.time() + join_timeout
  while len(list(grid.get_node_ids())) < num_nodes and time.time() < deadline:
    time.sleep(0.2)
  node_ids = list(grid.get_node_ids())
  joined = strategy.aggregate_query(exchange(grid, strategy.configure_query(node_ids),
                                             round_timeout))
  if strategy.server is None:
    raise RuntimeError("no device joined")
  say(f"joined {len(joined)} devices")
  server = strategy.server
  seen = set(node_ids)
  writer = metrics_lib.MetricsWriter(workdir)
  names = server.sim.levels.names
  static = {}
  for lv, name in enumerate(names):
    b = server.sim.level_bytes(lv)
    static[f"client_param_bytes/{name}"] = b["params"]
    static[f"client_table_bytes/{name}"] = b["tables"]
    static[f"clients_per_round/{name}"] = int(server.sim.per_level[lv])
  static["excluded_clients"] = int(sum(
      len(u) for u, level in zip(server.sim.level_users, server.algorithm.levels)
      if not level.trains))
  rounds, every = int(config.rounds), int(config.eval.every)
  acc = {"dropped": 0, "rejected": 0, "loss_sum": 0.0, "loss_rounds": 0, "answered": 0}
  round_log = open(os.path.join(workdir, "rounds.jsonl"), "a", buffering=1)
  since = {"wall": 0.0, "n": 0}
  for rnd in range(1, rounds + 1):
    t0 = time.time()
    new = [n for n in grid.get_node_ids() if n not in seen]
    if new:  # a device (re)joined: it describes itself first
      seen.update(new)
      strategy.aggregate_query(exchange(grid, strategy.configure_query(new), round_timeout))
    alive = set(grid.get_node_ids())
    for gone in [n for n in server.nodes if n not in alive]:
      say(f"node {gone}: left the federation")
      server.forget(gone)
    t_plan = time.time()
    msgs = strategy.configure_train(rnd, None, None, grid)
    say(f"round {rnd} sent to {len(msgs)} devices")
    t_sent = time.time()
    replies = exchange(grid, msgs, round_timeout)
    t_back = time.time()
    _, _ = strategy.aggregate_train(rnd, replies)
    t_done = time.time()
    if save_params:  # WORKDIR/params/round-R.npz: the server's params after round R
      os.makedirs(os.path.join(workdir, "params"), exist_ok=True)
      np.savez(os.path.join(workdir, "params", f"round-{rnd}.npz"),
               **deployment.flatten(server.params))
    info = strategy.last_round
    stats = info["stats"]
    node_times = info["node_times"]
    slowest = max(node_times.get("time/train", [0.0]) or [0.0])
    server_compute = (t_sent - t_plan) + stats["time/server_aggregate_seconds"]
    # Serializing messages again to count their bytes is this program's
    # measurement, not the deployment's cost: it is left out of the wall time.
    wall = t_done - t0 - info["measure_seconds"]
    compute = server_compute + slowest
    line = {"round": rnd, "wall_seconds": wall, "compute_seconds": compute,
            "overhead_seconds": wall - compute, "server_compute_seconds": server_compute,
            "exchange_seconds": t_back - t_sent, "slowest_node_train_seconds": slowest,
            "devices": len(msgs), "replies": len(replies),
            **{f"node_{k[5:]}_seconds/max": max(v) for k, v in node_times.items() if v},
            **{f"wire_bytes_down/{k}": v for k, v in info["wire_down"].items()},
            **{f"wire_bytes_up/{k}": v for k, v in info["wire_up"].items()},
            **{k: stats[k] for k in ("dropped_clients", "rejected_updates", "dropped_nodes",
                                     "rejected_nodes", "bytes_down", "bytes_up", "clients")}}
    round_log.write(json.dumps(line, sort_keys=True) + "\n")
    say(f"round {rnd} done: {wall:.1f}s ({compute:.2f}s compute)")
    acc["dropped"] += stats["dropped_clients"]
    acc["rejected"] += stats["rejected_updates"]
    if np.isfinite(stats["train_loss"]):
      acc["loss_sum"] += float(np.float32(stats["train_loss"]))
      acc["loss_rounds"] += 1
    acc["answered"] += int(stats["answered_weight"] > 0)
    since["wall"] += wall
    since["n"] += 1
    since.setdefault("compute", 0.0)
    since["compute"] = since.get("compute", 0.0) + compute
    for k in ("wire_down", "wire_up"):
      for name, v in info[k].items():
        since[f"{k}/{name}"] = since.get(f"{k}/{name}", 0) + v
    is_last = rnd == rounds
    if rnd % every == 0 or is_last:
      n_loss = acc["loss_rounds"]
      record = {"round": rnd, "algorithm": config.algorithm,
                "train_loss": acc["loss_sum"] / n_loss if n_loss else None,
                "bytes_down": stats["bytes_down"], "bytes_up": stats["bytes_up"],
                "dropped_clients": acc["dropped"], "rejected_updates": acc["rejected"],
                "time/round_seconds": since["wall"] / since["n"],
                "time/compute_seconds": since["compute"] / since["n"],
                "time/overhead_seconds": (since["wall"] - since["compute"]) / since["n"]}
      for k, v in since.items():
        if k.startswith("wire_"):
          direction, name = k.split("/")
          record[f"wire/bytes_{direction[5:]}/{name}"] = v / since["n"]
      record.update(static)
      te = time.time()
      eval_msgs = strategy.configure_evaluate(rnd, None, None, grid)
      strategy.aggregate_evaluate(rnd, exchange(grid, eval_msgs, round_timeout))
      record.update(strategy.last_eval)
      record["time/eval_seconds"] = time.time() - te
      record["devices"] = len(server.nodes)
      if is_last:
        record["final"] = True
        if acc["answered"] == 0:
          record["note"] = "no client ever answered: this is the initial model"
      writer.write(record)
      say(f"round {rnd}: " + "  ".join(f"{k} {record[k]:.4f}" for k in
                                       metrics_lib.metric_names(config.eval.protocol)
                                       if isinstance(record.get(k), float)))
      acc = {"dropped": 0, "rejected": 0, "loss_sum": 0.0, "loss_rounds": 0,
             "answered": acc["answered"]}
      since = {"wall": 0.0, "n": 0}
  say("finished")
  progress.close()
  round_log.close()


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context) -> None:
  rc = context.run_config
  workdir = str(rc["workdir"])
  with open(os.path.join(workdir, "config.json")) as f:
    config = deployment.config_from_json(f.read())
  run_server(grid, config, workdir, int(rc["nodes"]), float(rc["round-timeout"]),
             float(rc.get("join-timeout", 300.0)), bool(rc.get("save-params", False)))


# ------------------------------------------------------------------ device

client_app = ClientApp()


def _node(context, config_json=None):
  state = context.state
  if config_json is None:
    config_json = state["fairjax"]["config"]
  config = deployment.config_from_json(config_json)
  part = deployment.load_partition(str(context.node_config["partition"]))
  capacity = float(context.node_config["capacity"])
  if capacity != part.compression:
    raise ValueError(f"capacity={capacity:g} but the partition holds level "
                     f"{part.compression:g} users")
  return deployment.Node(config, part)


def _rows(context):
  return from_record(context.state["rows"])


def _commit(context, flat):
  """Keeps the pending rows of the users the server accepted (see deployment)."""
  commit = flat.pop("commit", None)
  if commit is None or "pending" not in context.state:
    return
  if len(commit):
    rows, pending = _rows(context), from_record(context.state["pending"])
    users = from_record(context.state["meta"])["users"]
    at = np.flatnonzero(np.isin(users, commit))
    for n in rows:
      rows[n][at] = pending[n][at]
    context.state["rows"] = to_record(rows)
  del context.state["pending"]


@client_app.query()
def _query(msg, context):
  config_json = msg.content["setup"]["config"]
  node = _node(context, config_json)
  context.state["fairjax"] = ConfigRecord({"config": config_json})
  if "rows" not in context.state:
    context.state["rows"] = to_record(node.initial_rows())
    context.state["meta"] = to_record({"users": np.asarray(node.part.users, np.int64)})
  return Message(RecordDict({"node": ConfigRecord({"json": json.dumps(node.describe())})}),
                 reply_to=msg)


def _fault(flat, node, context):
  """Test hook (node config `fault`): a misbehaving device's reply."""
  fault = str(context.node_config.get("fault", ""))
  new = [k for k in flat if k.startswith("new/")]
  if fault == "nan":
    flat[new[0]] = flat[new[0]] * np.float32("nan")
  elif fault == "shape":
    flat[new[0]] = flat[new[0]][..., :-1]
  elif fault == "level":  # another level's arrays: the most compressed other level's shapes
    import jax  # pylint: disable=g-import-not-at-top
    levels = node.sim.algorithm.levels
    other = max((i for i in range(len(levels)) if i != node.lv),
                key=lambda i: levels[i].compression)
    saved = node.level
    node.level = levels[other]
    template = node.start_template()
    node.level = saved
    k = len(flat["loss"])
    fake = deployment.flatten(jax.tree.map(lambda s: np.zeros((k,) + s.shape, s.dtype),
                                           template), "new/")
    for key in new:
      del flat[key]
    flat.update(fake)
  return flat


@client_app.train()
def _train(msg, context):
  t_enter = time.perf_counter()
  startup = _process_age()
  node = _node(context)
  flat = from_record(msg.content["arrays"])
  _commit(context, flat)
  cfg = dict(msg.content["config"])
  cfg["users"] = flat.pop("users").tolist()
  new_flat, losses, new_rows, times = node.train(flat, cfg, _rows(context))
  context.state["pending"] = to_record(new_rows)
  new_flat["loss"] = np.asarray(losses, np.float32)
  new_flat = _fault(new_flat, node, context)
  timing = {"time/startup": startup, "time/compile": times["compile"],
            "time/train": times["train"], "time/handler": time.perf_counter() - t_enter}
  return Message(RecordDict({"arrays": to_record(new_flat),
                             "config": ConfigRecord({"round": int(cfg["round"]),
                                                     "level": node.lv}),
                             "metrics": MetricRecord(timing)}), reply_to=msg)


@client_app.evaluate()
def _evaluate(msg, context):
  node = _node(context)
  flat = from_record(msg.content["arrays"])
  _commit(context, flat)
  res = node.evaluate(flat, int(msg.content["config"]["round"]), _rows(context))
  out = {}
  for k, (s, n) in res.items():
    out[f"sum/{k}"] = float(s)
    out[f"count/{k}"] = int(n)
  return Message(RecordDict({"metrics": MetricRecord(out)}), reply_to=msg)


if __name__ == "__main__":
  sys.exit("run with launch.deploy")
