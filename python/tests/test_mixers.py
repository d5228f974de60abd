"""Each mixer against a plain per-query loop oracle (numpy, float64, no masks, no prefix sums)."""

import math
import unittest

import numpy as np

from _synth import mixer_params, qk_width
from attnlab_torch.context import MixContext
from attnlab_torch.mixers import MIXERS
from attnlab_torch.ops import NumpyOps
from attnlab_torch.positions import Rope
from attnlab_torch.spec import parse

ops = NumpyOps()
D, H, T, L = 8, 2, 7, 16


def sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def per_head(p, x, dqk, dh, rope=None):
    """q, k, v as [b][h][t] -> vector, by plain matmuls per token."""
    w, bias = p["heads.qkv.weight"], p.get("heads.qkv.bias")
    out = x @ w + (0 if bias is None else bias)  # [B, T, W]
    B, Tn = x.shape[:2]
    q = np.zeros((B, H, Tn, dqk)); k = np.zeros((B, H, Tn, dqk)); v = np.zeros((B, H, Tn, dh))
    for b in range(B):
        for h in range(H):
            for t in range(Tn):
                q[b, h, t] = out[b, t, h * dqk:(h + 1) * dqk]
                k[b, h, t] = out[b, t, H * dqk + h * dqk:H * dqk + (h + 1) * dqk]
                v[b, h, t] = out[b, t, 2 * H * dqk + h * dh:2 * H * dqk + (h + 1) * dh]
                if rope:
                    for vec in (q, k):
                        r = vec[b, h, t].copy()
                        for i in range(dqk // 2):
                            ang = t * 10000 ** (-2 * i / dqk)
                            c, s = math.cos(ang), math.sin(ang)
                            vec[b, h, t, 2 * i] = r[2 * i] * c - r[2 * i + 1] * s
                            vec[b, h, t, 2 * i + 1] = r[2 * i + 1] * c + r[2 * i] * s
    return q, k, v


def output(p, y, x=None, gate=None):
    """y [B, H, T, dh] -> merged through the (optional) gate and output projection."""
    B, _, Tn, dh = y.shape
    merged = np.zeros((B, Tn, H * dh))
    for b in range(B):
        for t in range(Tn):
            for h in range(H):
                merged[b, t, h * dh:(h + 1) * dh] = y[b, h, t]
            if gate is not None:
                g = x[b, t] @ p["gate.weight"] + p["gate.bias"]
                merged[b, t] *= np.array([sig(z) for z in g])
    return merged @ p["heads.out.weight"] + p["heads.out.bias"]


def keys_of(i, n, causal, window=0):
    """The keys query ``i`` of ``n`` sees: earlier ones when causal, and with a window ``W`` only
    those fewer than ``W`` positions away."""
    keys = list(range(i + 1)) if causal else list(range(n))
    return [j for j in keys if window == 0 or abs(i - j) < window]


def softmax_oracle(p, s, x, causal, rope=False):
    q, k, v = per_head(p, x, D // H, D // H, rope)
    B, _, Tn, d = q.shape
    y = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            lf = [math.log(sig(float(x[b, t] @ p["forget.weight"][:, h] + p["forget.bias"][h]))) for t in range(Tn)] if s["forget"] else None
            for i in range(Tn):
                js = keys_of(i, Tn, causal, s["window"])
                n = len(js)
                z = []
                for j in js:
                    dot = float(q[b, h, i] @ k[b, h, j])
                    sc = s.variant
                    if sc in ("sqrt_d", "softpick"):
                        zz = dot / math.sqrt(d)
                    elif sc == "none":
                        zz = dot
                    elif sc == "num_keys":
                        zz = dot / n
                    elif sc == "sum_key_norms":
                        zz = dot / sum(math.sqrt(float(k[b, h, l] @ k[b, h, l])) for l in js)
                    elif sc == "learned":
                        zz = p["scale"][h] * dot
                    elif sc == "qk_norm":
                        qn, kn = q[b, h, i] / np.linalg.norm(q[b, h, i]), k[b, h, j] / np.linalg.norm(k[b, h, j])
                        zz = p["scale"][h] * float(qn @ kn)
                    elif sc == "ssmax":
                        zz = p["scale"][h] * math.log(n) * dot
                    elif sc == "log_n_temp":
                        tau = math.log(math.floor((i + 1) / s["floor_scale"]) + 1) * s["attn_scale"] + 1
                        zz = tau * dot / math.sqrt(d)
                    if lf is not None:
                        lo, hi = min(i, j), max(i, j)
                        zz += sum(lf[lo + 1:hi + 1])
                    z.append(zz)
                if s.variant == "softpick":
                    tt = [math.exp(a) - 1 for a in z]
                    w = [max(a, 0.0) / (sum(abs(c) for c in tt) + 1e-6) for a in tt]
                elif s["sink"] != "none":
                    sink = p["sink"][h] if s["sink"] == "learned" else 0.0
                    e = [math.exp(a) for a in z]
                    w = [a / (sum(e) + math.exp(sink)) for a in e]
                else:
                    e = [math.exp(a) for a in z]
                    w = [a / sum(e) for a in e]
                y[b, h, i] = sum(wj * v[b, h, j] for wj, j in zip(w, js))
    return output(p, y, x, "gate" if s["gate"] == "output" else None)


def sigmoid_oracle(p, s, x, causal, rope=False):
    q, k, v = per_head(p, x, D // H, D // H, rope)
    B, _, Tn, d = q.shape
    y = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            for i in range(Tn):
                js = keys_of(i, Tn, causal)
                bias = s["bias"] if s["bias"] is not None else -math.log(len(js))
                y[b, h, i] = sum(sig(float(q[b, h, i] @ k[b, h, j]) / math.sqrt(d) + bias) * v[b, h, j] for j in js)
    return output(p, y)


def stickbreak_oracle(p, s, x, causal, rope=False):
    q, k, v = per_head(p, x, D // H, D // H, rope)
    B, _, Tn, d = q.shape
    y = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            beta = lambda i, j: sig(float(q[b, h, i] @ k[b, h, j]) / math.sqrt(d))
            for i in range(Tn):
                for j in range(Tn):
                    if j < i:
                        between = range(j + 1, i)
                    elif j > i and not causal:
                        between = range(i + 1, j)
                    else:
                        continue
                    a = beta(i, j)
                    for l in between:
                        a *= 1 - beta(i, l)
                    y[b, h, i] += a * v[b, h, j]
    return output(p, y)


def diff_oracle(p, s, x, causal, rope=False, layer=0):
    """Differential attention from the paper's equations, query by query: the halves of each
    head's query and key (each rotated as its own head under RoPE), two softmaxes, λ from the
    four vectors, λ_init = 0.8 − 0.6·exp(−0.3·(l − 1)) with l = layer + 1, the RMSNorm written out."""
    dh = D // H
    d = dh // 2
    q, k, v = per_head(p, x, dh, dh)
    B, _, Tn, _ = q.shape
    if rope:
        for vec in (q, k):
            for b in range(B):
                for h in range(H):
                    for t in range(Tn):
                        for start in (0, d):
                            r = vec[b, h, t, start:start + d].copy()
                            for i in range(d // 2):
                                ang = t * 10000 ** (-2 * i / d)
                                c, sn = math.cos(ang), math.sin(ang)
                                vec[b, h, t, start + 2 * i] = r[2 * i] * c - r[2 * i + 1] * sn
                                vec[b, h, t, start + 2 * i + 1] = r[2 * i + 1] * c + r[2 * i] * sn
    l = layer + 1
    init = s["lambda_init"] if s["lambda_init"] is not None else 0.8 - 0.6 * math.exp(-0.3 * (l - 1))
    lam = math.exp(float(p["lambda_q1"] @ p["lambda_k1"])) - math.exp(float(p["lambda_q2"] @ p["lambda_k2"])) + init
    y = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            for i in range(Tn):
                js = keys_of(i, Tn, causal)

                def weights(lo):
                    e = [math.exp(float(q[b, h, i, lo:lo + d] @ k[b, h, j, lo:lo + d]) / math.sqrt(d)) for j in js]
                    return [a / sum(e) for a in e]

                row = sum((a1 - lam * a2) * v[b, h, j] for a1, a2, j in zip(weights(0), weights(d), js))
                rms = math.sqrt(sum(c * c for c in row) / dh + 1e-5)
                y[b, h, i] = row / rms * p["norm.gamma"] * (1 - init)
    return output(p, y)


def phi(name, vec, pos, p, m_len):
    d = len(vec)
    if name == "identity":
        return vec.copy()
    if name == "elu1":
        return np.array([a + 1 if a > 0 else math.exp(a) for a in vec])
    if name == "relu":
        return np.array([max(a, 0.0) for a in vec])
    if name == "cosformer":
        ang = math.pi * pos / (2 * m_len)
        r = [max(a, 0.0) for a in vec]
        return np.array([a * math.cos(ang) for a in r] + [a * math.sin(ang) for a in r])
    if name == "taylor":
        out = [1.0] + [a / d ** 0.25 for a in vec]
        out += [vec[i] * vec[j] / math.sqrt(2 * d) for i in range(d) for j in range(d)]
        return np.array(out)
    if name == "performer":
        w = p["feature_map.random_features"]
        xs = vec / d ** 0.25
        return np.array([math.exp(float(row @ xs) - float(xs @ xs) / 2) for row in w]) / math.sqrt(len(w))
    raise ValueError(name)


def linear_oracle(p, s, x, causal, rope=False):
    dqk = qk_width(s, D // H)
    q, k, v = per_head(p, x, dqk, D // H, rope)
    B, _, Tn, _ = q.shape
    y = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            fq = [phi(s.variant, q[b, h, t], t, p, L) for t in range(Tn)]
            fk = [phi(s.variant, k[b, h, t], t, p, L) for t in range(Tn)]
            for i in range(Tn):
                js = keys_of(i, Tn, causal)
                sims = [float(fq[i] @ fk[j]) for j in js]
                num = sum(sm * v[b, h, j] for sm, j in zip(sims, js))
                if s["norm"] == "sum":
                    den = sum(sims)
                    den = (1 if den >= 0 else -1) * max(abs(den), 1e-6)
                    num = num / den
                y[b, h, i] = num
    return output(p, y)


def rotate(vec, t, width):
    """RoPE of a ``width``-wide vector at position ``t``: pair ``i`` turned by ``t·10000^(−2i/width)``."""
    out = vec.copy()
    for i in range(width // 2):
        ang = t * 10000 ** (-2 * i / width)
        c, s = math.cos(ang), math.sin(ang)
        out[2 * i] = vec[2 * i] * c - vec[2 * i + 1] * s
        out[2 * i + 1] = vec[2 * i + 1] * c + vec[2 * i] * s
    return out


def mla_oracle(p, s, x, causal, rope=False, kv=H, norm_eps=None):
    """DeepSeek-V2's MLA token by token: c = x W_DKV, per head k^C = c W_UK,i and v = c W_UV,i
    (the head's key/value group), q^C = x W_Q,i (or c^Q W_UQ,i), q^R and the shared k^R rotated
    at their own width; q = [q^C; q^R], k = [k^C; k^R]; softmax(q·k/√(d_h + d_R)) v; W_O."""
    B, Tn, _ = x.shape
    dh, dr = D // H, s["rope_dim"]

    def lin(name, vec):
        b = p.get(f"{name}.bias")
        return vec @ p[f"{name}.weight"] + (0 if b is None else b)

    def norm(vec, name):
        if norm_eps is None:
            return vec
        return vec / math.sqrt(float(np.mean(vec * vec)) + norm_eps) * p[f"{name}.gamma"]

    y = np.zeros((B, H, Tn, dh))
    for b in range(B):
        c = [lin("kv_down", x[b, t]) for t in range(Tn)]
        src = [lin("q_down", x[b, t]) if "q_down.weight" in p else x[b, t] for t in range(Tn)]
        for h in range(H):
            g = h // (H // kv)
            q, k, v = [], [], []
            for t in range(Tn):
                qc = norm(lin("q", src[t])[h * dh:(h + 1) * dh], "q_norm")
                kc = norm(c[t] @ p["kv_up.weight"][:, g * dh:(g + 1) * dh], "k_norm")
                v.append(c[t] @ p["kv_up.weight"][:, (kv + g) * dh:(kv + g + 1) * dh])
                if dr:
                    qr = rotate(lin("rope.q", src[t])[h * dr:(h + 1) * dr], t, dr)
                    kr = rotate(lin("rope.k", x[b, t]), t, dr)
                    qc, kc = np.concatenate([qc, qr]), np.concatenate([kc, kr])
                elif rope:
                    qc, kc = rotate(qc, t, dh), rotate(kc, t, dh)
                q.append(qc)
                k.append(kc)
            for i in range(Tn):
                js = keys_of(i, Tn, causal)
                z = [float(q[i] @ k[j]) / math.sqrt(dh + dr) for j in js]
                m = max(z)
                e = [math.exp(zz - m) for zz in z]
                y[b, h, i] = sum(ee * v[j] for ee, j in zip(e, js)) / sum(e)
    merged = np.zeros((B, Tn, H * dh))
    for b in range(B):
        for t in range(Tn):
            for h in range(H):
                merged[b, t, h * dh:(h + 1) * dh] = y[b, h, t]
    return merged @ p["out.weight"] + p["out.bias"]


def moba_oracle(p, s, x, causal, rope=False):
    """MoBA by hand: per query, each candidate block's q·mean(K_block) (past blocks when causal,
    every other block otherwise), sorted high to low with ties to the lower block, the first
    ``topk`` kept with the own block (causally masked), softmax(q·k/√d) over their keys."""
    q, k, v = per_head(p, x, D // H, D // H, rope)
    B, _, Tn, d = q.shape
    block, topk = s["block"], s["topk"]
    blocks = [list(range(j * block, min((j + 1) * block, Tn))) for j in range(-(-Tn // block))]
    y = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            for i in range(Tn):
                own = i // block
                cands = [j for j in range(len(blocks)) if (j < own if causal else j != own)]
                score = {j: float(q[b, h, i] @ (sum(k[b, h, l] for l in blocks[j]) / len(blocks[j]))) for j in cands}
                chosen = sorted(cands, key=lambda j: (-score[j], j))[:topk]
                js = [l for l in range(Tn) if l // block in chosen or (l // block == own and (l <= i or not causal))]
                e = [math.exp(float(q[b, h, i] @ k[b, h, l]) / math.sqrt(d)) for l in js]
                y[b, h, i] = sum(ej / sum(e) * v[b, h, l] for ej, l in zip(e, js))
    return output(p, y)


def nsa_oracle(p, s, x, causal, rope=False):
    """NSA by hand, per query: the complete blocks that end at or before it (their mean keys and
    values, softmax over them, 0 when there is none); the own block and the ``topk − 1`` past
    blocks of highest compressed probability, ties to the lower block, softmax over their keys
    up to the query; softmax over the last ``window`` keys; the three summed under
    ``sigmoid(x · gate.weight)``, column ``3·h + branch``."""
    assert causal, "nsa is causal"
    q, k, v = per_head(p, x, D // H, D // H, rope)
    B, _, Tn, d = q.shape
    block, topk, window = s["block"], s["topk"], s["window"]

    def attend(b, h, i, keys, vals):
        e = [math.exp(float(q[b, h, i] @ key) / math.sqrt(d)) for key in keys]
        return sum(ej / sum(e) * val for ej, val in zip(e, vals))

    y = np.zeros_like(v)
    for b in range(B):
        for h in range(H):
            for i in range(Tn):
                g = [sig(float(x[b, i] @ p["gate.weight"][:, 3 * h + n])) for n in range(3)]
                done = [j for j in range(Tn // block) if (j + 1) * block <= i + 1]
                mean = lambda a, j: sum(a[b, h, l] for l in range(j * block, (j + 1) * block)) / block
                cmp = attend(b, h, i, [mean(k, j) for j in done], [mean(v, j) for j in done]) if done else 0.0
                z = [float(q[b, h, i] @ mean(k, j)) / math.sqrt(d) for j in done]
                prob = {j: math.exp(zj) / sum(math.exp(zl) for zl in z) for j, zj in zip(done, z)}
                past = sorted(range(i // block), key=lambda j: (-prob[j], j))[:topk - 1]
                js = [l for l in range(i + 1) if l // block in past or l // block == i // block]
                slc = attend(b, h, i, [k[b, h, l] for l in js], [v[b, h, l] for l in js])
                ws = keys_of(i, Tn, True, window)
                win = attend(b, h, i, [k[b, h, l] for l in ws], [v[b, h, l] for l in ws])
                y[b, h, i] = g[0] * cmp + g[1] * slc + g[2] * win
    return output(p, y)


ORACLES = {"softmax": softmax_oracle, "sigmoid": sigmoid_oracle, "stickbreak": stickbreak_oracle, "linear": linear_oracle,
           "diff": diff_oracle, "mla": mla_oracle, "moba": moba_oracle, "nsa": nsa_oracle}


def run(spec, seed, causal, rope=False, batch=2, layer=0):
    s = parse(spec)
    rng = np.random.default_rng(seed)
    p = mixer_params(s, D, H, rng, scale=0.6)
    x = rng.normal(0, 1, (batch, T, D))
    ctx = MixContext(d_model=D, n_heads=H, max_seq_len=L, layer=layer, causal=causal, bias=True, rope=Rope(D // H) if rope else None)
    got = MIXERS[s.family][1].mix(ops, {k: ops.asarray(v) for k, v in p.items()}, s, x, ctx)
    oracle = ORACLES[s.family]
    want = oracle(p, s, x, causal, rope=rope, layer=layer) if s.family == "diff" else oracle(p, s, x, causal, rope=rope)
    return got, want


class MixerOracleTests(unittest.TestCase):
    def check(self, spec, causal, seed, rope=False, tol=1e-10, layer=0):
        got, want = run(spec, seed, causal, rope, layer=layer)
        self.assertEqual(got.shape, want.shape)
        self.assertTrue(np.all(np.isfinite(got)), spec)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=f"{spec} causal={causal}")

    def test_softmax_every_scaling(self):
        seed = 100
        for sc in ["sqrt_d", "none", "num_keys", "sum_key_norms", "learned", "qk_norm", "ssmax", "log_n_temp", "softpick",
                   "log_n_temp:floor_scale=2:attn_scale=0.5"]:
            for causal in (True, False):
                seed += 1
                self.check(f"softmax:{sc}", causal, seed)

    def test_softmax_options(self):
        seed = 200
        for scaling in ["sqrt_d", "none", "num_keys", "sum_key_norms", "learned", "qk_norm", "ssmax", "log_n_temp", "softpick"]:
            for opts in ["forget=true", "gate=output", "sink=learned", "sink=zero", "forget=true:gate=output:sink=learned"]:
                if scaling == "softpick" and "sink" in opts:
                    continue
                for causal in (True, False):
                    seed += 1
                    self.check(f"softmax:{scaling}:{opts}", causal, seed)

    def test_softmax_window_with_every_scaling_and_option(self):
        seed = 250
        for scaling in ["sqrt_d", "num_keys", "sum_key_norms", "ssmax", "log_n_temp", "softpick"]:
            for opts in ["window=1", "window=3", "window=3:forget=true:gate=output", "window=5:sink=learned"]:
                if scaling == "softpick" and "sink" in opts:
                    continue
                for causal in (True, False):
                    seed += 1
                    self.check(f"softmax:{scaling}:{opts}", causal, seed)

    def test_sigmoid(self):
        for i, spec in enumerate(["sigmoid", "sigmoid:bias=-2.5", "sigmoid:bias=1"]):
            for causal in (True, False):
                self.check(spec, causal, 300 + 2 * i + causal)

    def test_diff_at_every_depth_and_with_a_fixed_lambda_init(self):
        for i, (spec, layer) in enumerate([("diff", 0), ("diff", 3), ("diff:lambda_init=0.5", 2)]):
            for causal in (True, False):
                self.check(spec, causal, 420 + 2 * i + causal, layer=layer)

    def test_mla(self):
        for i, spec in enumerate(["mla", "mla:latent=3", "mla:q_latent=5", "mla:latent=6:q_latent=3"]):
            for causal in (True, False):
                self.check(spec, causal, 440 + 2 * i + causal)
        # The decoupled RoPE part (its own width), and RoPE on the compressed part without one.
        for i, spec in enumerate(["mla:rope_dim=2", "mla:rope_dim=4:q_latent=5", "mla"]):
            for causal in (True, False):
                self.check(spec, causal, 460 + 2 * i + causal, rope=True, tol=1e-5)

    def test_mla_with_grouped_heads_and_the_head_norm(self):
        for i, spec in enumerate(["mla", "mla:rope_dim=2:q_latent=5"]):
            s = parse(spec)
            rng = np.random.default_rng(480 + i)
            p = mixer_params(s, D, H, rng, scale=0.6, n_kv_heads=1, qk_head_norm=True)
            x = rng.normal(0, 1, (2, T, D))
            ctx = MixContext(d_model=D, n_heads=H, max_seq_len=L, layer=0, causal=True, bias=True,
                             rope=Rope(D // H) if s["rope_dim"] else None, n_kv_heads=1, norm_eps=1e-5)
            got = MIXERS["mla"][1].mix(ops, {k: ops.asarray(v) for k, v in p.items()}, s, x, ctx)
            want = mla_oracle(p, s, x, True, kv=1, norm_eps=1e-5)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=spec)

    def test_mla_refuses_rope_dim_without_rope(self):
        with self.assertRaises(ValueError) as e:
            run("mla:rope_dim=2", 490, True)
        self.assertIn("positions = rope", str(e.exception))

    def test_moba(self):
        seed = 740
        for spec in ["moba", "moba:block=2:topk=1", "moba:block=3:topk=1", "moba:block=2:topk=2", "moba:block=2:topk=0"]:
            for causal in (True, False):
                for rope in (False, True):
                    seed += 1
                    self.check(spec, causal, seed, rope=rope, tol=1e-5 if rope else 1e-10)

    def test_nsa(self):
        seed = 760
        for spec in ["nsa", "nsa:block=2", "nsa:block=2:topk=3:window=3", "nsa:block=3:topk=1:window=2", "nsa:block=2:topk=2:window=1"]:
            for rope in (False, True):
                seed += 1
                self.check(spec, True, seed, rope=rope, tol=1e-5 if rope else 1e-10)
        with self.assertRaises(ValueError) as e:
            run("nsa", 770, False)
        self.assertIn("bidirectional", str(e.exception))

    def test_stickbreak(self):
        for causal in (True, False):
            self.check("stickbreak", causal, 400 + causal)

    def test_linear_every_map(self):
        seed = 500
        for m in ["identity", "elu1", "relu", "cosformer", "taylor:feature_dim=2", "performer:features=5"]:
            for norm in ("sum", "none"):
                for causal in (True, False):
                    seed += 1
                    self.check(f"linear:{m}:norm={norm}", causal, seed, tol=1e-8)

    def test_forms_do_not_change_numbers(self):
        a, _ = run("linear:elu1:form=recurrent:chunk=3", 600, True)
        b, _ = run("linear:elu1", 600, True)
        np.testing.assert_array_equal(a, b)

    def test_rope_inside_attention(self):
        for spec in ["softmax", "softmax:qk_norm", "sigmoid", "stickbreak", "linear:elu1", "diff"]:
            for causal in (True, False):
                self.check(spec, causal, 700, rope=True, tol=1e-5)

    def test_causal_outputs_ignore_the_future(self):
        for spec in ["softmax:sum_key_norms:forget=true", "softmax:softpick", "sigmoid", "stickbreak", "linear:cosformer", "linear:identity", "diff", "mla", "moba:block=2:topk=1", "nsa:block=2:window=2"]:
            s = parse(spec)
            rng = np.random.default_rng(800)
            p = {k: ops.asarray(v) for k, v in mixer_params(s, D, H, rng).items()}
            x = rng.normal(0, 1, (1, T, D))
            ctx = MixContext(d_model=D, n_heads=H, max_seq_len=L, layer=0, causal=True, bias=True)
            y = MIXERS[s.family][1].mix(ops, p, s, x, ctx)
            x2 = x.copy()
            x2[0, 4:] += rng.normal(0, 1, (T - 4, D))
            y2 = MIXERS[s.family][1].mix(ops, p, s, x2, ctx)
            np.testing.assert_allclose(y[0, :4], y2[0, :4], rtol=1e-12, atol=1e-12, err_msg=spec)
            self.assertFalse(np.allclose(y[0, 4:], y2[0, 4:]), spec)

    def test_a_choice_the_mixer_does_not_know_is_refused(self):
        # The registry gives a choice option's default but not its choices, so parse() takes any
        # word (attnlab refused these before training); the mixer must not read one as the default.
        for spec, needle in [("softmax:sink=maybe", "sink"), ("softmax:gate=input", "gate"), ("linear:elu1:norm=maybe", "norm")]:
            with self.assertRaises(ValueError, msg=spec) as e:
                run(spec, 1000, True)
            self.assertIn(needle, str(e.exception), spec)

    def test_large_logits_stay_finite(self):
        for spec in ["softmax", "softmax:softpick", "softmax:sink=zero", "softmax:forget=true", "stickbreak", "sigmoid", "diff", "mla"]:
            s = parse(spec)
            rng = np.random.default_rng(900)
            p = {k: ops.asarray(v) for k, v in mixer_params(s, D, H, rng, scale=3.0).items()}
            x = rng.normal(0, 30, (1, 32, D))
            for causal in (True, False):
                ctx = MixContext(d_model=D, n_heads=H, max_seq_len=L, layer=0, causal=causal, bias=True)
                self.assertTrue(np.all(np.isfinite(MIXERS[s.family][1].mix(ops, p, s, x, ctx))), spec)


if __name__ == "__main__":
    unittest.main()
