"""Blockwise advantages for GRPO: the confidence gets its own credit.

Plain GRPO gives every token of a completion one advantage, computed from the weighted sum of all
rewards: the correctness reward and the calibration reward are then mixed over the reasoning
tokens and the confidence tokens alike, so a well-calibrated "Confidence: 0.2" after a wrong
solution is pushed down with it. Blockwise advantage ("blockwise advantage", arXiv:2602.10231;
CoCA, arXiv:2603.05881) splits the completion into two spans and gives each the advantage of its
own rewards:

- the **confidence span**: the tokens from the last ``Confidence:`` label to the end
  (:func:`confidence_token_mask`) get ``A_conf``, the calibration reward(s) (``confidence_l1``,
  ``confidence_l2``, ``brier``, ``log_score``) weighted and normalised within the group;
- the **solution span**: every other token gets ``A_sol``, the remaining rewards (correctness,
  format, ...) weighted and normalised within the group.

A completion without a confidence label has no confidence span: all its tokens get
``A_sol + A_conf`` (the plain signal, so a missing confidence is still penalised). Normalisation
is GRPO's: ``(r - mean_group) / (std_group + 1e-4)``, NaN rewards left out of the group statistics
and their advantage 0. TRL's ``GRPOTrainer._compute_loss`` accepts per-token advantages of shape
``(B, T)`` from a subclass; :func:`blockwise_trainer_cls` is that subclass.
"""

from __future__ import annotations

from typing import Callable, Sequence

CALIBRATION_REWARDS = frozenset({"confidence_l1", "confidence_l2", "brier", "log_score"})


def confidence_token_mask(token_texts: Sequence[str]) -> list[bool]:
    """Per token, whether it belongs to the confidence span: it ends after the start of the last
    ``Confidence:`` label of the concatenated text (:func:`corea.parsing.confidence_label_spans`).
    All False when the text has no label.

    >>> confidence_token_mask(["So", " \\\\boxed{4}", "\\n", "Conf", "idence", ":", " 0", ".", "8"])
    [False, False, False, True, True, True, True, True, True]
    """
    from corea.parsing import confidence_label_spans

    text = "".join(token_texts)
    spans = confidence_label_spans(text)
    if not spans:
        return [False] * len(token_texts)
    start = spans[-1][0]
    out, pos = [], 0
    for t in token_texts:
        pos += len(t)
        out.append(pos > start)
    return out


def group_normalize(rewards, num_generations: int):
    """``(r - mean) / (std + 1e-4)`` within consecutive groups of ``num_generations``; NaN rewards
    are left out of the statistics and get advantage 0. ``rewards``: tensor (N,), N a multiple of
    ``num_generations``."""
    import torch

    g = rewards.view(-1, num_generations)
    valid = ~torch.isnan(g)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = torch.where(valid, g, torch.zeros_like(g)).sum(1, keepdim=True) / n
    var = torch.where(valid, (g - mean) ** 2, torch.zeros_like(g)).sum(1, keepdim=True) / n
    adv = (g - mean) / (var.sqrt() + 1e-4)
    return torch.nan_to_num(adv, nan=0.0).view(-1)


def weighted(rewards, weights, columns):
    """The weighted sum of the chosen reward columns (NaN where all of them are NaN); ``rewards``
    (N, F), ``weights`` (F,), ``columns`` bool (F,)."""
    import torch

    sel = rewards[:, columns] * weights[columns][None, :]
    total = torch.nansum(sel, dim=1)
    return torch.where(torch.isnan(sel).all(1), torch.full_like(total, float("nan")), total)


def blockwise_advantages(rewards, weights, is_calibration, num_generations: int, conf_mask):
    """Per-token advantages (N, T).

    Args:
        rewards: (N, F) rewards per completion and reward function (NaN = none).
        weights: (F,) reward weights.
        is_calibration: (F,) bool, True for calibration rewards.
        num_generations: G, the group size (consecutive rows).
        conf_mask: (N, T) bool, True on confidence-span tokens.
    """
    import torch

    cal = torch.as_tensor(is_calibration, dtype=torch.bool)
    a_sol = group_normalize(weighted(rewards, weights, ~cal), num_generations) if (~cal).any() \
        else torch.zeros(rewards.size(0))
    a_conf = group_normalize(weighted(rewards, weights, cal), num_generations) if cal.any() \
        else torch.zeros(rewards.size(0))
    has_span = conf_mask.any(1, keepdim=True)
    plain = (a_sol + a_conf)[:, None].expand_as(conf_mask)
    split = torch.where(conf_mask, a_conf[:, None], a_sol[:, None])
    return torch.where(has_span, split, plain)


class RewardRecorder:
    """Wraps a reward function (same ``__name__`` and output) and keeps its last outputs, so the
    trainer can split rewards by kind after TRL has called them."""

    def __init__(self, func: Callable):
        self.func = func
        self.__name__ = getattr(func, "__name__", type(func).__name__)
        self.last: list | None = None

    def __call__(self, *args, **kwargs):
        out = self.func(*args, **kwargs)
        self.last = list(out)
        return out


def blockwise_trainer_cls():
    """A ``GRPOTrainer`` whose advantages are blockwise (module docstring). Its reward functions
    must be :class:`RewardRecorder` instances (:func:`record_rewards`)."""
    import torch
    from trl import GRPOTrainer

    class BlockwiseGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            names = [getattr(f, "__name__", "") for f in self.reward_funcs]
            local = [[float("nan") if v is None else float(v) for v in f.last]
                     for f in self.reward_funcs]
            r_local = torch.tensor(local, dtype=torch.float32).T.to(self.accelerator.device)
            r = self.accelerator.gather(r_local).cpu()
            weights = self.reward_weights.detach().float().cpu()
            is_cal = [n in CALIBRATION_REWARDS for n in names]
            ids = out["completion_ids"]
            texts = [[self.processing_class.decode([t]) for t in row] for row in ids.tolist()]
            mask_local = torch.tensor([confidence_token_mask(t) for t in texts], dtype=torch.bool)
            n = mask_local.size(0)
            start = self.accelerator.process_index * n
            g = self.num_generations
            # group statistics on all processes' rewards, then this process's rows
            full = torch.zeros((r.size(0), mask_local.size(1)), dtype=torch.bool)
            full[start:start + n] = mask_local
            adv = blockwise_advantages(r, weights, is_cal, g, full)[start:start + n]
            out["advantages"] = adv.to(out["advantages"].device)
            frac = mask_local.float().sum(1) / out["completion_mask"].float().cpu().sum(1).clamp(1)
            self._metrics["train"]["blockwise/confidence_token_share"].append(frac.mean().item())
            return out

    return BlockwiseGRPOTrainer


def record_rewards(funcs: Sequence[Callable]) -> list[RewardRecorder]:
    """Each reward function wrapped in a :class:`RewardRecorder`."""
    return [f if isinstance(f, RewardRecorder) else RewardRecorder(f) for f in funcs]
