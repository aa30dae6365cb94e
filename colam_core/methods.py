"""Target strategies: COLAM, the baselines the paper compares with, and OLS, behind one interface.

Every method turns a batch of logits and hard labels into a loss. Stateful
methods (COLAM, OLS, LR) keep their state small and on the training device:
COLAM and OLS hold C x C class-wise soft labels (never N x C); Label
Refinery holds the frozen generation-1 model, whose output on each augmented
crop is that crop's target, and its run records that it cost two trainings.

Where every default comes from (the paper, the method's own paper, or our choice): docs/DEFAULTS.md.

| name      | method | defaults |
|-----------|--------|----------|
| hl        | hard labels, cross-entropy | - |
| ls        | label smoothing | eps = 0.1 (Szegedy et al. 2016) |
| cp        | confidence penalty, CE - beta * H(p) | beta = 0.1 (Pereyra et al. 2017) |
| dl        | DisturbLabel | alpha = 0.1 (Xie et al. 2016, CIFAR setting) |
| colam     | COLAM (Li et al. 2022) | T = 1.5, 4 stages: our choices (the paper tunes both by cross-validation) |
| ols       | online label smoothing (not a baseline of the COLAM paper) | hard CE weight 0.5 (Zhang et al. 2021) |
| cskd      | class-wise self-knowledge distillation | T = 4, lambda = 1 (Yun et al. 2020) |
| lr        | Label Refinery, per augmented crop | 2 generations (Bagherinezhad et al. 2018) |
| lr_static | Label Refinery with static per-image targets (not the reference; kept to measure the difference) | |
| fixed     | frozen C x C soft labels (for the paper's Fig. 1b) | - |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .data import make_pair_batch_sampler
from .errors import ConfigError, RunError
from .runs import load_soft_label_matrix

if TYPE_CHECKING:  # methods read a validated Config; config checks method names against METHOD_CLASSES
    from .config import Config

SEED_MIX = 1_000_003
#: COLAM's peers for a label update: all of them (the paper), or only those the stage's model classifies correctly
PEER_FILTERS = ("all", "correct")


@dataclass
class StepContext:
    """Where training is: handed to every method hook."""
    stage: int
    epoch: int
    batch: int
    seed: int
    num_stages: int
    last_epoch_of_stage: bool
    #: sums tensors over data-parallel ranks in place (the training strategy's reduce; identity on one device)
    reduce: Callable = field(default=lambda *tensors: None, repr=False)
    #: the batch the model is trained on in this step, as it is fed to the model (augmented, in the run's layout);
    #: set by the training step around `Method.forward` and `Method.loss` (Label Refinery's teacher reads it)
    x: torch.Tensor | None = field(default=None, repr=False)

    def generator(self, salt: int = 0) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((((self.seed * SEED_MIX + self.epoch) * SEED_MIX + self.batch) * 7 + salt) % (2**63))
        return g


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Mean over the batch of -sum_j q_j log softmax(z / T)_j (the paper's Eq. 4), with the standard softmax
    exp(z_j / T) / sum_k exp(z_k / T): the paper's Eq. 5 prints its denominator without the index, a typo."""
    return -(target * F.log_softmax(logits.float() / T, dim=1)).sum(1).mean()


def class_statistics(values: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Per-class sums (C x C, float64) and counts (C,) of the rows of `values`."""
    sums = torch.zeros(num_classes, values.shape[1], dtype=torch.float64, device=values.device)
    sums.index_add_(0, labels, values.double())
    counts = torch.bincount(labels, minlength=num_classes).double()
    return sums, counts


class Method:
    """Base class: hard-label cross-entropy."""

    name = "hl"
    #: temperature the logits are divided by in the loss (predicted probabilities use it too)
    output_temperature = 1.0
    #: Label Refinery: the model and optimiser restart after each stage
    restart_after_stage = False
    #: Label Refinery: when a generation starts, the trainer hands the previous one, frozen, to `set_teacher`
    uses_teacher = False

    def __init__(self, cfg: Config, num_classes: int, train_labels: torch.Tensor, device):
        self.cfg = cfg
        self.C = num_classes
        self.train_labels = train_labels.to(device)
        self.device = torch.device(device)

    # hooks --------------------------------------------------------------
    def batch_sampler(self):
        return None

    def on_epoch_start(self, ctx: StepContext) -> None:
        pass

    def forward(self, forward: Callable, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """The training forward of a batch, under the step's autocast: one pass with gradients."""
        return forward(x)

    def forwards_per_sample(self, stage: int) -> int:
        """Images forwarded per trained sample in `stage`: 1, or 2 where a second forward without gradients
        makes the targets (CS-KD's partners, Label Refinery's teacher). The run records the extra ones
        (summary.json `extra_forward_images`) and counts them in `images_per_s`."""
        return 1

    def set_teacher(self, model: torch.nn.Module, forward: Callable) -> None:
        """The previous generation's frozen model and its forward (x -> float32 logits, no gradients)."""
        raise NotImplementedError(f"method {self.name!r} uses no teacher")

    def loss(self, logits, y, idx, ctx: StepContext):
        """Return (loss, logits used for accuracy, their labels)."""
        return F.cross_entropy(logits.float(), y), logits, y

    def on_epoch_end(self, ctx: StepContext) -> None:
        pass

    def stage_end(self, infer: Callable, data, ctx: StepContext) -> np.ndarray | None:
        """Called at the end of every stage with the stage's model. Returns new C x C soft labels or None."""
        return None

    @property
    def soft_labels(self) -> np.ndarray | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def one_hot(self, y):
        return F.one_hot(y, self.C).float()


class HardLabels(Method):
    name = "hl"


class LabelSmoothing(Method):
    """Targets (1 - eps) one-hot + eps / C (Szegedy et al. 2016)."""
    name = "ls"

    def loss(self, logits, y, idx, ctx):
        q = self.one_hot(y) * (1 - self.cfg.ls_eps) + self.cfg.ls_eps / self.C
        return soft_cross_entropy(logits, q), logits, y


class ConfidencePenalty(Method):
    """CE - beta * H(softmax(z)) (Pereyra et al. 2017)."""
    name = "cp"

    def loss(self, logits, y, idx, ctx):
        logp = F.log_softmax(logits.float(), 1)
        entropy = -(logp.exp() * logp).sum(1).mean()
        return F.nll_loss(logp, y) - self.cfg.cp_beta * entropy, logits, y


class DisturbLabel(Method):
    """Each label is replaced, with probability alpha, by a class drawn uniformly (Xie et al. 2016)."""
    name = "dl"

    def loss(self, logits, y, idx, ctx):
        g = ctx.generator(salt=11)
        flip = torch.rand(len(y), generator=g) < self.cfg.dl_alpha
        rand = torch.randint(0, self.C, (len(y),), generator=g)
        y_noisy = torch.where(flip.to(y.device), rand.to(y.device), y)
        return F.cross_entropy(logits.float(), y_noisy), logits, y


class FixedSoftLabels(Method):
    """Train on a frozen C x C soft-label matrix (the paper's Fig. 1b 'expected accuracy')."""
    name = "fixed"

    def __init__(self, cfg, num_classes, train_labels, device):
        super().__init__(cfg, num_classes, train_labels, device)
        self.output_temperature = cfg.T
        m = load_soft_label_matrix(cfg.fixed_targets)
        if m.shape != (num_classes, num_classes):
            raise ConfigError("fixed_targets", cfg.fixed_targets,
                              f"a {num_classes} x {num_classes} matrix for this dataset (got {m.shape})")
        self.matrix = torch.as_tensor(m, dtype=torch.float32, device=self.device)

    def loss(self, logits, y, idx, ctx):
        q = self.matrix[y]
        w = self.cfg.hard_weight  # the same one-hot mix COLAM applies to its learned labels
        q = q if w == 0 else (1 - w) * q + w * self.one_hot(y)
        return soft_cross_entropy(logits, q, self.cfg.T), logits, y

    @property
    def soft_labels(self):
        return self.matrix.cpu().numpy()


class COLAM(Method):
    """Co-learning of the network and class-wise soft labels (Li et al. 2022, Alg. 1).

    Stage 1 trains on hard labels; at the end of stage s < m the soft label of
    class c becomes softmax(mean_{x in peers(c)} f(x) / T) (Eq. 6: the mean is
    the argmin of the summed squared distances), and stage s + 1 trains every
    sample of class c on it with loss CE(q_c, softmax(f(x) / T)) (Eq. 4; the standard softmax: Eq. 5 as printed
    omits the index of its denominator's sum, a typo). The paper tunes T and the number of stages by 5-fold
    cross-validation and reports neither: the defaults (T = 1.5 inside the 1-2 that Sec. 5.3 recommends, 4 stages
    as Sec. 5.1 uses "for demonstration") are our choices (docs/DEFAULTS.md).

    Extensions, off by default (not in the paper; docs/RESULTS.md measures why they exist):

    - ``peer_filter="correct"``: average only over the peers the stage's model classifies correctly. Each such
      peer's logits peak at its own class c (z_c > z_j), so their mean does too, and so does softmax(mean / T):
      the label's largest entry is provably c, and no class can be *erased* (trained toward another class).
      A class without a correct peer keeps its previous label (one-hot after stage 1) and is reported.
    - ``own_floor=f``: where a learned label gives its own class less than f, mix in the one-hot label just
      enough (weight (f - q_cc) / (1 - q_cc)) for q_cc = f; other labels are unchanged.
    - ``stage1_T``: the temperature of stage 1's hard-label loss (default T, as Eq. 4 prints it; 1.0 trains
      stage 1 exactly as HL does).
    """
    name = "colam"

    def __init__(self, cfg, num_classes, train_labels, device):
        super().__init__(cfg, num_classes, train_labels, device)
        self.output_temperature = cfg.T
        self.T = cfg.T
        self.soft = None            # C x C tensor on device, None while training on hard labels
        self._sums = None           # online accumulation
        self._counts = None
        self._peer_mask = None
        self.no_peer_classes: list[int] = []   # classes of the last update that kept their previous label

    def targets(self, y):
        if self.soft is None:
            return self.one_hot(y)
        q = self.soft[y]
        w = self.cfg.hard_weight
        return q if w == 0 else (1 - w) * q + w * self.one_hot(y)

    def peer_indices(self, stage: int) -> torch.Tensor | None:
        """k random training samples of each class (seeded by stage), or None for all."""
        k = self.cfg.peer_samples
        if k == "all":
            return None
        g = torch.Generator()
        g.manual_seed(self.cfg.seed * SEED_MIX + 7919 * stage)
        labels = self.train_labels.cpu()
        chosen = []
        for c in range(self.C):
            members = torch.nonzero(labels == c).flatten()
            chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
        return torch.sort(torch.cat(chosen)).values

    def _values(self, logits):
        z = logits.float()
        return z if self.cfg.average == "logits" else F.softmax(z / self.T, 1)

    def _peer_stats(self, z, y):
        """Class sums and counts of the values of the peers in this batch (correct ones only, if filtered)."""
        if self.cfg.peer_filter == "correct":
            keep = z.argmax(1) == y
            z, y = z[keep], y[keep]
        return class_statistics(self._values(z), y, self.C)

    def _finish(self, sums, counts, reduce) -> np.ndarray:
        reduce(sums, counts)
        mean = sums / counts.clamp_min(1)[:, None]
        soft = F.softmax(mean / self.T, 1) if self.cfg.average == "logits" else mean
        soft = soft / soft.sum(1, keepdim=True)
        # a class without peers (tiny subsets, or none classified correctly) keeps its previous / hard label
        empty = counts == 0
        self.no_peer_classes = [int(c) for c in torch.nonzero(empty).flatten()]
        if empty.any():
            prev = self.soft.double() if self.soft is not None else torch.eye(self.C, dtype=torch.float64,
                                                                              device=soft.device)
            soft[empty] = prev[empty].to(soft.device)
        floor = self.cfg.own_floor
        if floor > 0:
            own = torch.diagonal(soft)
            a = ((floor - own) / (1 - own).clamp_min(1e-12)).clamp(0, 1)[:, None]  # 0 where own >= floor
            soft = (1 - a) * soft + a * torch.eye(self.C, dtype=soft.dtype, device=soft.device)
        self.soft = soft.float().to(self.device)
        return self.soft.cpu().numpy()

    def on_epoch_start(self, ctx):
        if self.cfg.update == "online" and ctx.last_epoch_of_stage and ctx.stage < ctx.num_stages:
            if ctx.batch == 0 or self._sums is None:  # resumed mid-epoch: keep the sums loaded from the checkpoint
                self._sums = torch.zeros(self.C, self.C, dtype=torch.float64, device=self.device)
                self._counts = torch.zeros(self.C, dtype=torch.float64, device=self.device)
            peers = self.peer_indices(ctx.stage)
            if peers is not None:
                self._peer_mask = torch.zeros(len(self.train_labels), dtype=torch.bool, device=self.device)
                self._peer_mask[peers.to(self.device)] = True
            else:
                self._peer_mask = None
        else:
            self._sums = self._counts = None

    def loss(self, logits, y, idx, ctx):
        if self._sums is not None:
            with torch.no_grad():
                vals, ys = logits.detach(), y
                if self._peer_mask is not None:
                    keep = self._peer_mask[idx]
                    vals, ys = vals[keep], y[keep]
                s, c = self._peer_stats(vals.float(), ys)
                self._sums += s
                self._counts += c
        T = self.cfg.stage1_T if ctx.stage == 1 and self.cfg.stage1_T is not None else self.T
        return soft_cross_entropy(logits, self.targets(y), T), logits, y

    def stage_end(self, infer, data, ctx):
        if ctx.stage >= ctx.num_stages:
            return None  # no update after the last stage: COLAM costs what vanilla training costs
        if self.cfg.update == "online":
            sums, counts = self._sums, self._counts
            self._sums = self._counts = None
            return self._finish(sums, counts, ctx.reduce)
        sums = torch.zeros(self.C, self.C, dtype=torch.float64, device=self.device)
        counts = torch.zeros(self.C, dtype=torch.float64, device=self.device)
        for x, y, _ in data.eval_batches("train", self.cfg.eval_batch_size, indices=self.peer_indices(ctx.stage)):
            s, c = self._peer_stats(infer(x), y.to(self.device))
            sums += s
            counts += c
        return self._finish(sums, counts, ctx.reduce)

    @property
    def soft_labels(self):
        return None if self.soft is None else self.soft.cpu().numpy()

    def state_dict(self):
        st = {"soft": None if self.soft is None else self.soft.cpu()}
        if self._sums is not None:
            st["sums"], st["counts"] = self._sums.cpu(), self._counts.cpu()
        return st

    def load_state_dict(self, state):
        self.soft = None if state.get("soft") is None else state["soft"].to(self.device)
        if "sums" in state:
            self._sums, self._counts = state["sums"].to(self.device), state["counts"].to(self.device)


class OnlineLabelSmoothing(Method):
    """OLS (Zhang et al. 2021; not one of the COLAM paper's baselines), as the authors' CIFAR script
    (zhangchbin/OnlineLabelSmoothing, cifar/scripts/train_cifar_all_methods.py) trains it: loss =
    alpha * CE(hard) + (1 - alpha) * CE(soft), the soft label of class c being the mean, over the previous epoch,
    of the (training-mode, augmented) probabilities of the samples of c the model classified correctly.
    As in that script the soft labels start at zero (epoch 1 trains on alpha * CE(hard) alone), and a class with
    no correctly classified sample in an epoch gets the uniform label 1/C for the next one."""
    name = "ols"

    def __init__(self, cfg, num_classes, train_labels, device):
        super().__init__(cfg, num_classes, train_labels, device)
        self.soft = torch.zeros(self.C, self.C, device=self.device)
        self._reset()

    def _reset(self):
        self._sums = torch.zeros(self.C, self.C, dtype=torch.float64, device=self.device)
        self._counts = torch.zeros(self.C, dtype=torch.float64, device=self.device)

    def on_epoch_start(self, ctx):
        if ctx.batch == 0:
            self._reset()

    def loss(self, logits, y, idx, ctx):
        with torch.no_grad():
            p = F.softmax(logits.detach().float(), 1)
            correct = p.argmax(1) == y
            s, c = class_statistics(p[correct], y[correct], self.C)
            self._sums += s
            self._counts += c
        a = self.cfg.ols_alpha
        loss = a * F.cross_entropy(logits.float(), y) + (1 - a) * soft_cross_entropy(logits, self.soft[y])
        return loss, logits, y

    def on_epoch_end(self, ctx):
        ctx.reduce(self._sums, self._counts)
        seen = self._counts > 0
        soft = torch.full((self.C, self.C), 1.0 / self.C, dtype=torch.float64, device=self.device)
        soft[seen] = self._sums[seen] / self._counts[seen, None]
        self.soft = soft.float()
        self._reset()

    @property
    def soft_labels(self):
        return self.soft.cpu().numpy()

    def state_dict(self):
        return {"soft": self.soft.cpu(), "sums": self._sums.cpu(), "counts": self._counts.cpu()}

    def load_state_dict(self, state):
        self.soft = state["soft"].to(self.device)
        self._sums, self._counts = state["sums"].to(self.device), state["counts"].to(self.device)


class ClassWiseSelfKD(Method):
    """CS-KD (Yun et al. 2020): each batch holds samples and a same-class partner of each; loss =
    CE(samples) + lambda * T^2 * KL(softmax(partner / T) || softmax(sample / T)), partner detached.

    As in the reference (alinlab/cs-kd, train.py) the partners are forwarded separately, without gradients and in
    train mode, after the samples: each half is normalised by its own BatchNorm batch statistics (a joint
    forward would mix them), and the BatchNorm running statistics are updated by both forwards."""
    name = "cskd"

    def batch_sampler(self):
        return make_pair_batch_sampler(self.train_labels.cpu())

    def forward(self, forward, x, ctx):
        n = len(x) // 2
        z = forward(x[:n])
        with torch.no_grad():
            z_pair = forward(x[n:])
        return torch.cat([z, z_pair])

    def forwards_per_sample(self, stage):
        return 2

    def loss(self, logits, y, idx, ctx):
        n = len(y) // 2
        z, z_pair = logits[:n].float(), logits[n:].detach().float()
        T = self.cfg.cskd_T
        kl = F.kl_div(F.log_softmax(z / T, 1), F.softmax(z_pair / T, 1), reduction="batchmean") * T * T
        return F.cross_entropy(z, y[:n]) + self.cfg.cskd_lambda * kl, logits[:n], y[:n]


class LabelRefinery(Method):
    """Label Refinery (Bagherinezhad et al. 2018) as its reference code trains it (hessamb/label-refinery:
    ModelRefineryWrapper and RefineryLoss): generation 1 trains on hard labels; generation 2, a fresh model
    trained for as long, learns on every augmented crop of every batch the target softmax(teacher(crop)), the
    frozen generation-1 model's output on that same crop ("soft labels based on cropped images"). That costs one
    extra forward without gradients per step (summary.json `extra_forward_images`) and two full trainings
    (`trainings: 2`).

    The teacher runs in eval mode (BatchNorm running statistics, no dropout): a frozen model. The reference's
    wrapper is switched to train mode as a whole, so its teacher normalises each crop batch by that batch's
    statistics; we keep the teacher's function fixed, as the paper describes it.

    At the end of generation 1 the class means of the teacher's outputs on the un-augmented training images are
    recorded as `soft_labels.npz:stage_1` (for the heatmaps and the soft-label health checks only: training
    uses the per-crop outputs; this display costs one inference pass)."""
    name = "lr"
    restart_after_stage = True
    uses_teacher = True

    def __init__(self, cfg, num_classes, train_labels, device):
        super().__init__(cfg, num_classes, train_labels, device)
        self.teacher_model: torch.nn.Module | None = None
        self.teacher: Callable | None = None   # x -> float32 logits of the frozen generation-1 model
        self._display = None                   # C x C numpy (class means of the teacher's un-augmented outputs)

    def set_teacher(self, model, forward):
        self.teacher_model, self.teacher = model, forward

    def forwards_per_sample(self, stage):
        return 1 if stage == 1 else 2

    def loss(self, logits, y, idx, ctx):
        if self.teacher is None:
            return F.cross_entropy(logits.float(), y), logits, y
        with torch.no_grad():
            q = F.softmax(self.teacher(ctx.x).float(), 1)
        return soft_cross_entropy(logits, q), logits, y

    def _train_outputs(self, infer, data):
        """(softmax outputs, labels, indices) of the stage's model, batch by batch, on the un-augmented training
        images (this rank's share of them under data-parallel training)."""
        for x, y, idx in data.eval_batches("train", self.cfg.eval_batch_size):
            yield F.softmax(infer(x).float(), 1), y.to(self.device), idx.to(self.device)

    @staticmethod
    def _class_means(sums, counts) -> np.ndarray:
        return (sums / counts.clamp_min(1)[:, None]).float().cpu().numpy()

    def stage_end(self, infer, data, ctx):
        if ctx.stage >= ctx.num_stages:
            return None
        sums = torch.zeros(self.C, self.C, dtype=torch.float64, device=self.device)
        counts = torch.zeros(self.C, dtype=torch.float64, device=self.device)
        for p, y, _ in self._train_outputs(infer, data):
            s, c = class_statistics(p, y, self.C)
            sums += s
            counts += c
        ctx.reduce(sums, counts)  # data-parallel: each rank measured its share of the samples
        self._display = self._class_means(sums, counts)
        return self._display

    @property
    def soft_labels(self):
        return self._display

    def state_dict(self):
        teacher = None if self.teacher_model is None else {k: v.cpu() for k, v in
                                                           self.teacher_model.state_dict().items()}
        return {"teacher": teacher,
                "display": None if self._display is None else torch.from_numpy(self._display)}

    def load_state_dict(self, state):
        d = state.get("display")
        self._display = None if d is None else d.numpy()
        if state.get("teacher") is not None:
            if self.teacher_model is None:
                raise RunError("a Label Refinery checkpoint of generation 2 needs its teacher attached first")
            self.teacher_model.load_state_dict(state["teacher"])


class StaticLabelRefinery(LabelRefinery):
    """Label Refinery with static targets (not the reference): generation 2 trains each image, whatever its crop,
    on softmax of generation 1's output on the un-augmented image in eval mode, computed once at the end of
    generation 1 (N x C targets, no extra forward per step). Kept to measure what the per-crop targets change."""
    name = "lr_static"
    uses_teacher = False

    def __init__(self, cfg, num_classes, train_labels, device):
        super().__init__(cfg, num_classes, train_labels, device)
        self.targets = None  # N x C (by construction of this variant)

    def forwards_per_sample(self, stage):
        return 1

    def loss(self, logits, y, idx, ctx):
        if self.targets is None:
            return F.cross_entropy(logits.float(), y), logits, y
        return soft_cross_entropy(logits, self.targets[idx]), logits, y

    def stage_end(self, infer, data, ctx):
        if ctx.stage >= ctx.num_stages:
            return None
        targets = torch.zeros(len(self.train_labels), self.C, device=self.device)
        for p, _, idx in self._train_outputs(infer, data):
            targets[idx] = p
        ctx.reduce(targets)  # data-parallel: each rank filled its share of the rows, the rest are zeros
        self.targets = targets
        self._display = self._class_means(*class_statistics(targets, self.train_labels, self.C))
        return self._display

    def state_dict(self):
        return {**super().state_dict(), "targets": None if self.targets is None else self.targets.cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        t = state.get("targets")
        self.targets = None if t is None else t.to(self.device)


METHOD_CLASSES = {cls.name: cls for cls in (HardLabels, LabelSmoothing, ConfidencePenalty, DisturbLabel, COLAM,
                                           OnlineLabelSmoothing, ClassWiseSelfKD, LabelRefinery, StaticLabelRefinery,
                                           FixedSoftLabels)}


def build_method(cfg: Config, num_classes: int, train_labels: torch.Tensor, device) -> Method:
    try:
        cls = METHOD_CLASSES[cfg.method]
    except KeyError:
        raise ConfigError("method", cfg.method, ", ".join(METHOD_CLASSES)) from None
    return cls(cfg, num_classes, train_labels, device)



def available_methods() -> Iterable[str]:
    return tuple(METHOD_CLASSES)
