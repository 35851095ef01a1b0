"""Sharding on 8 simulated CPU devices and a real 2-process run on 127.0.0.1, each in subprocesses
(XLA_FLAGS and jax.distributed must be set before JAX starts): the training step on a (2, 4) mesh and on
2 processes equals the single-device step, the parameters are really split, and an orbax checkpoint
restores onto another mesh."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_step_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST_COMPILE = "--xla_backend_optimization_level=0"  # as tests/conftest.py sets it for the suite


def run_worker(out, mesh, devices=1, distributed=None, timeout=240):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}", "PYTHONPATH": ROOT,
         "JAX_PLATFORMS": "cpu"}
  args = [sys.executable, WORKER, out, json.dumps(mesh)] + [str(a) for a in (distributed or ())]
  return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240):
  try:
    output, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail("worker timed out (a process whose peer never arrives hangs, then aborts)")
  assert proc.returncode == 0, output[-3000:]


def load(out):
  with open(out + ".json") as f:
    return dict(np.load(out + ".npz")), json.load(f)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("single") / "params")
  finish(run_worker(out, {"data": 1}))
  return load(out)


def test_training_step_on_a_2x4_mesh_equals_the_single_device_step(single, tmp_path):
  out = str(tmp_path / "mesh")
  finish(run_worker(out, {"data": 2, "tensor": 4}, devices=8))
  params, info = load(out)
  assert info["devices"] == 8
  assert info["q_shard_shape"] == [32, 8] and info["q_shape"] == [32, 32]  # split 4 ways on "tensor"
  # The orbax checkpoint of this state restores exactly onto a (1, 1, 8) mesh.
  assert info["restored_equal"] and info["restored_q_shard_shape"] == [32, 4]
  assert (info["restored_step"], info["restored_position"]) == (3, 24)
  np.testing.assert_allclose(info["losses"], single[1]["losses"], rtol=1e-5)
  for name, value in single[0].items():
    np.testing.assert_allclose(params[name], value, atol=1e-4, err_msg=name)


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # the default run has tests/llm/test_trainers.py's 2-process DPO run through the CLI
def test_two_processes_end_with_the_same_params(single, tmp_path):
  address = f"127.0.0.1:{free_port()}"
  outs = [str(tmp_path / f"process{i}") for i in range(2)]
  procs = [run_worker(outs[i], {"data": 2}, distributed=(address, 2, i)) for i in range(2)]
  for proc in procs:
    finish(proc)
  (p0, info0), (p1, info1) = load(outs[0]), load(outs[1])
  assert info0["processes"] == info1["processes"] == 2 and info0["devices"] == 2
  for name, value in single[0].items():
    np.testing.assert_array_equal(p0[name], p1[name])
    np.testing.assert_allclose(p0[name], value, atol=1e-4, err_msg=name)
