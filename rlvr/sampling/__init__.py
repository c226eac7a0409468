"""The sampling side: the engine that decodes token ids (`engine.py`), the rollout that turns
problems into verified, scored episodes (`rollout.py`), and the sampler role that produces a
training step's episodes from a given policy version (`sampler.py`), in this process or in
its own (`process.py`), with weights handed over through `weight_sync.py`."""
