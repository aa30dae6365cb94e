"""The network being trained and what goes with it: the model in the run's layout and precision, its optimiser,
its `TrainStep`, and the forward that evaluation and the stage-end pass use (never DDP's wrapper).

Label Refinery trains one model per generation: `next_generation` freezes the model that just finished as the
teacher (if the method uses one) and builds a fresh one, seeded apart; `resume_generation` rebuilds the same
pair when a run resumes inside a later generation (the teacher's weights come from the checkpoint).
"""
from __future__ import annotations

import time

import torch

from ..models import build_model
from ..runs import FAULT, fault_point
from .step import TrainStep, make_optimizer


class Learner:
    """`model`, `optimizer`, `step` and `eval_forward` of the current generation; `infer(x)` gives its logits."""

    def __init__(self, cfg, info, strategy, method, choices):
        self.cfg, self.info, self.strategy, self.method = cfg, info, strategy, method
        self.amp, self.channels_last, self.compile = choices.amp, choices.channels_last, choices.compile
        self.build(generation=1)

    def new_model(self, generation: int, pretrained=None) -> torch.nn.Module:
        """A fresh model of `generation` (seeded apart), on the device, in the run's layout; `pretrained`
        defaults to the configuration's (a teacher about to be loaded from a checkpoint passes False)."""
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed + 100_003 * (generation - 1))
        model = build_model(cfg.model, info.num_classes, info.in_channels, info.image_size,
                            pretrained=cfg.pretrained if pretrained is None else pretrained)
        model = model.to(self.strategy.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def build(self, generation: int) -> None:
        """A fresh model of `generation`, its optimiser and its step."""
        self.model = self.new_model(generation)
        forward, self.eval_forward = self.strategy.wrap(self.model, self.compile)
        self.optimizer = make_optimizer(self.cfg, self.model)
        self.step = TrainStep(self.cfg, forward, self.optimizer, self.method, self.strategy, amp=self.amp,
                              channels_last=self.channels_last, num_train=self.info.num_train)

    def next_generation(self, generation: int) -> None:
        """The model that just finished becomes the frozen teacher (if the method uses one); `generation` starts."""
        if self.method.uses_teacher:
            self._attach_teacher(self.model, self.eval_forward)
        self.build(generation)

    def resume_generation(self, generation: int) -> None:
        """Resuming inside `generation` > 1: the teacher (its weights follow from the checkpoint) and the model."""
        if self.method.uses_teacher:
            teacher = self.new_model(generation - 1, pretrained=False)
            self._attach_teacher(teacher, self.strategy.eval_forward(teacher, self.cfg.compile))
        self.build(generation)

    def _attach_teacher(self, model, forward) -> None:
        model.eval().requires_grad_(False)  # frozen: eval mode for good, no gradients
        self.method.set_teacher(model, lambda x: self.infer_with(forward, x))

    def infer(self, x):
        """Logits (float32) of the current model for a batch, in the run's layout and precision."""
        return self.infer_with(self.eval_forward, x)

    def infer_with(self, forward, x):
        with torch.no_grad(), torch.autocast(self.strategy.device.type, dtype=self.amp, enabled=self.amp is not None):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return forward(x).float()

    def stage_end_pass(self, data, ctx):
        """Alg. 1 lines 9-14: the method learns its labels from this model in eval mode on un-augmented images.
        Returns (the labels or None, seconds)."""
        t1 = time.perf_counter()
        self.model.eval()
        soft = self.method.stage_end(self.infer if FAULT is None else self._fault_infer, data, ctx)
        self.model.train()
        if self.strategy.device.type == "cuda":
            torch.cuda.synchronize()
        return soft, time.perf_counter() - t1

    def _fault_infer(self, x):
        out = self.infer(x)
        fault_point("eval_pass")  # tests: a kill inside the stage-end pass
        return out

    def release(self) -> None:
        """Drop the DDP wrapper (it holds the process group) before the strategy closes."""
        self.step.forward = self.eval_forward


__all__ = ["Learner"]
