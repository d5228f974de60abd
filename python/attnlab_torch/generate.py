"""Text generation as ``attnlab sample`` does it (crates/train/src/sample.rs).

The window: the model sees the newest ``max_seq_len`` tokens of the prompt; after each new token,
if the window was full it restarts from the newest ``max(max_seq_len // 2, 1)`` tokens, otherwise
the token is appended. Every step re-runs the whole window (no cache).

Picking: temperature 0 is greedy (the first index of the largest logit). Otherwise the tokens are
ordered by logit, largest first (ties by index), cut to ``top_k`` (0 = all), turned into
probabilities ``exp((l − max)/temperature)`` normalised, cut to the smallest prefix whose mass
reaches ``top_p``, and one is drawn with ``u · total`` for ``u`` from attnlab's own generator
(:mod:`attnlab_torch.rng`: ``StdRng`` = ChaCha12 seeded from ``seed::rng(seed, "sample", 0)``),
so a seed draws the same tokens as ``attnlab sample --seed`` does. The logits are rounded to
float32 first, as attnlab's are; this model's logits differ from attnlab's by ~1e-6, which can
flip a draw only when ``u`` falls within that of a boundary between two tokens' mass.
"""

import math

from .rng import rng as _attnlab_rng


def _logits_row(model, window):
    import numpy as np

    out = model([window]) if callable(model) else model.forward([window])
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    row = np.asarray(out, dtype=np.float64)[0, -1]
    return [float(v) for v in row.astype(np.float32)]


def argmax(logits):
    best = 0
    for i, x in enumerate(logits):
        if x > logits[best]:
            best = i
    return best


def pick(logits, temperature, top_k, top_p, rng):
    """One token from one row of (float32) logits; ``rng`` has ``random_f64()``."""
    if temperature == 0.0:
        return argmax(logits)
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))
    if top_k > 0:
        order = order[:top_k]
    top = logits[order[0]]
    probs = [math.exp((logits[i] - top) / temperature) for i in order]
    total = sum(probs)
    probs = [p / total for p in probs]
    if top_p < 1.0:
        mass, keep = 0.0, len(probs)
        for i, p in enumerate(probs):
            mass += p
            if mass >= top_p:
                keep = i + 1
                break
        order, probs = order[:keep], probs[:keep]
    total = sum(probs)
    r = rng.random_f64() * total
    for i, p in zip(order, probs):
        if r < p:
            return i
        r -= p
    return order[-1]


def generate(model, prompt_ids, tokens, temperature=0.0, top_k=0, top_p=1.0, seed=None):
    """``tokens`` new token ids after ``prompt_ids`` (see the module docs).

    ``model``: a :class:`~attnlab_torch.model.Model` or the module :func:`attnlab_torch.load`
    returns. ``seed`` defaults to 1337, ``attnlab sample``'s default.
    """
    if not (temperature >= 0.0 and math.isfinite(temperature)):
        raise ValueError(f"temperature {temperature} must be >= 0 (0 = greedy)")
    if not (0.0 < top_p <= 1.0):
        raise ValueError(f"top_p {top_p} must be in (0, 1]")
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("a prompt needs at least one token")
    inner = getattr(model, "model", model)
    max_len = inner.max_seq_len
    rng = _attnlab_rng(1337 if seed is None else seed, "sample", 0)
    all_tokens = list(prompt)
    window = all_tokens[-max_len:]
    for i in range(tokens):
        logits = _logits_row(model, window)
        bad = next((v for v in logits if not math.isfinite(v)), None)
        if bad is not None:
            raise ValueError(f"the model's logits are not finite ({bad}) at generated token {i}")
        nxt = pick(logits, temperature, top_k, top_p, rng)
        all_tokens.append(nxt)
        if len(window) == max_len:
            window = all_tokens[-max(max_len // 2, 1):]
        else:
            window.append(nxt)
    return all_tokens[len(prompt):]
