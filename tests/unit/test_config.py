"""Config groups compose as documented."""

from __future__ import annotations

from seqflow.config import load_config


def test_gpu_trainer_sizes_a_real_gpu_run_and_cpu_stays_the_default():
    cpu, gpu = load_config([]), load_config(["trainer=gpu", "ray.use_gpu=true"])
    assert (cpu.trainer.accelerator, cpu.trainer.precision, cpu.model.batch_size) == ("cpu", "32-true", 16)
    assert (gpu.trainer.accelerator, gpu.trainer.precision, gpu.model.batch_size) == ("gpu", "bf16-mixed", 64)
    assert gpu.batching.batch_seconds == 240.0 and gpu.ray.use_gpu
    asr = load_config(["trainer=gpu", "model=ctc"])
    assert asr.model.name == "ctc" and asr.batching.batch_seconds == 240.0
    # a command-line override still wins over the group
    assert load_config(["trainer=gpu", "model.batch_size=8"]).model.batch_size == 8
