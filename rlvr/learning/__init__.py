"""The learning side: pure tensor math of the objectives (`algorithms.py`), optimizer steps
that survive bad numbers (`updates.py`), and the phases that update weights: pretraining on
synthetic solutions (`pretrain.py`) and the GRPO learner role (`learner.py`)."""
