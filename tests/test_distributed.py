"""Distributed training through torchrun (gloo, 2 CPU processes) on a tiny real model."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import SENTENCES

from dec2vec import Encoder


def _recipe(tmp_path, batch_size: int, steps: int = 6, stage_options: str = ""):
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"query": SENTENCES[i], "positive": SENTENCES[i + 1], "negative": SENTENCES[i + 2]} for i in range(64)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / f"recipe-{batch_size}.toml"
    path.write_text(
        f"""name = "ddp-test"
attention = "bidirectional"
[[stage]]
name = "sup"
objective = "supervised"
data = ["{pairs}"]
steps = {steps}
batch_size = {batch_size}
learning_rate = 1e-3
max_length = 32
bf16 = false
checkpoint_every = 2
{stage_options}
"""
    )
    return path


def _train(recipe, model, out, processes: int, *extra: str, launcher: str = "torchrun") -> subprocess.Popen:
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    launchers = {
        "torchrun": ["-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                     "--master-port", port],
        "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                       "--main_process_port", port],
    }  # fmt: skip
    launch = [sys.executable, *(launchers[launcher] if processes > 1 else [])]
    command = [*launch, "-m", "dec2vec", "train", "--recipe", str(recipe), "--model", model,
               "--out", str(out), *extra]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _finish(process) -> str:
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output[-3000:]
    return output


def _log(run):
    return [json.loads(line) for line in (run / "01-sup" / "log.jsonl").open()]


def _weights(path):
    return {k: v.clone() for k, v in Encoder.load(path).model.state_dict().items()}


@pytest.mark.parametrize(
    ("stage_options", "launcher"),
    [("", "torchrun"), ("fsdp = true", "accelerate"), ("fsdp = true\nlora = false", "torchrun")],
    ids=["ddp-lora", "fsdp-lora-accelerate", "fsdp-full"],
)
def test_two_processes_train_like_one_with_their_batches_together_and_resume_after_a_kill(
    make_tiny_checkpoint, tmp_path, stage_options, launcher
):
    model = str(make_tiny_checkpoint("llama"))
    _finish(_train(_recipe(tmp_path, 8, stage_options=stage_options), model, tmp_path / "one", 1))
    # 4 per process: the same global batches of 8 (with FSDP each process holds half of every layer)
    two_recipe = _recipe(tmp_path, 4, stage_options=stage_options)
    output = _finish(_train(two_recipe, model, tmp_path / "two", 2, launcher=launcher))
    assert ("FSDP over 2" in output) == ("fsdp" in stage_options)
    held = [_log(tmp_path / run)[-1]["state_mib"] for run in ("one", "two")]  # weights, grads, Adam moments
    if "fsdp" in stage_options:  # each process holds half of every decoder layer
        assert held[1] < 0.95 * held[0]
    else:
        assert held[1] == held[0]
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    changed = 0
    for name, value in one.items():  # gathered negatives + averaged gradients = one process, batch 8
        torch.testing.assert_close(two[name], value, rtol=0, atol=2e-5, msg=name)
        changed += not torch.equal(value, _weights(model)[name]) if "layers.0." in name else 0
    assert changed > 0  # training did move the weights
    assert len(_log(tmp_path / "two")) == 6

    killed = _train(two_recipe, model, tmp_path / "killed", 2, launcher=launcher)
    checkpoint = tmp_path / "killed" / "01-sup" / "checkpoint.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline:
        assert killed.poll() is None, killed.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)  # torchrun and both workers, without warning
    killed.wait()
    assert 0 < torch.load(checkpoint, weights_only=True)["step"] < 6
    _finish(_train(two_recipe, model, tmp_path / "killed", 2, "--resume", launcher=launcher))
    resumed = _weights(tmp_path / "killed")
    for name, value in two.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)
