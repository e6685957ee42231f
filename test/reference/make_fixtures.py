#!/usr/bin/python3
"""Writes the safetensors fixtures described in test/reference/FIXTURES.md.

    /usr/bin/python3 test/reference/make_fixtures.py [--ops] [--model] [--check-only]

(default: both; /usr/bin/python3 = Debian torch 1.13 + numpy + pip safetensors.)

Conventions (see FIXTURES.md): every random input is drawn in float32; outputs
and gradients are computed in float64 from those float32 values and rounded to
float32 once, so the fixtures are as exact as float32 storage allows.
Activations are stored channels-last (B,H,W,C) except the model `input`
(NCHW).  Each gradient d<name> is of the scalar loss sum(out * dout).
Everything is seeded: re-running gives bit-identical files.

After writing, every file is reloaded with safetensors.numpy and the
ss2d_scan fixture is re-derived by an independent scalar (numpy, float64)
implementation written straight from the spec text.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file as np_load_file
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import medmamba  # noqa: E402

FIX = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
OPS = os.path.join(FIX, "ops")

F32, F64 = torch.float32, torch.float64


def common_meta(**kw):
    meta = {"generator": "test/reference/make_fixtures.py", "torch": torch.__version__,
            "compute_dtype": "float64 (stored float32)", "layout": "channels-last (B,H,W,C)"}
    meta.update({k: str(v) for k, v in kw.items()})
    return meta


def f32(t):
    return t.detach().to(F32).contiguous()


class Rng:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=self.g, dtype=F32) * scale + shift).contiguous()

    def uniform(self, lo, hi, *shape):
        return (torch.rand(*shape, generator=self.g, dtype=F32) * (hi - lo) + lo).contiguous()


def run_op(fn, inputs, grad_names, rng, extra_out=None):
    """inputs: dict name -> float32 tensor.  fn(**float64 tensors) -> out
    (float64) or (out, extras dict).  Returns dict with inputs, out, dout and d<name>."""
    t64 = {k: (v.to(F64).requires_grad_(k in grad_names) if v.is_floating_point() else v.clone())
           for k, v in inputs.items()}
    res = fn(**t64)
    extras = {}
    if isinstance(res, tuple):
        res, extras = res
    dout = rng.randn(*res.shape)
    loss = (res * dout.to(F64)).sum()
    grads = torch.autograd.grad(loss, [t64[k] for k in grad_names])
    out = dict(inputs)
    out["out"] = f32(res)
    for k, v in extras.items():
        out[k] = f32(v)
    out["dout"] = dout
    for k, g in zip(grad_names, grads):
        out["d" + k] = f32(g)
    return out


def canonicalize_header(path):
    """safetensors (Rust HashMap) writes __metadata__ in random key order; sort
    it in place (same header length, data untouched) so that re-running the
    script gives bit-identical files."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        hdr = json.loads(raw.decode("utf-8"), object_pairs_hook=lambda p: dict(p))
        text = raw.decode("utf-8").rstrip(" ")
        assert json.dumps(hdr, separators=(",", ":"), ensure_ascii=False) == text, "unexpected header format"
        if "__metadata__" in hdr:
            hdr["__metadata__"] = dict(sorted(hdr["__metadata__"].items()))
        new = json.dumps(hdr, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        assert len(new) == len(text.encode("utf-8"))
        f.seek(8)
        f.write(new + b" " * (n - len(new)))


def save_fixture(tensors, path, meta):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    canonicalize_header(path)


def save(name, tensors, meta):
    path = os.path.join(OPS, name + ".safetensors")
    save_fixture(tensors, path, meta)
    print(f"wrote {os.path.relpath(path, os.path.join(FIX, '..', '..'))} "
          f"({os.path.getsize(path):,} bytes, {len(tensors)} tensors)")


def nchw(x):
    return x.permute(0, 3, 1, 2)


def nhwc(x):
    return x.permute(0, 2, 3, 1)


# --------------------------------------------------------------------------
# Per-op fixtures
# --------------------------------------------------------------------------

def make_ops():
    os.makedirs(OPS, exist_ok=True)
    W3 = ["x", "weight", "bias"]

    # convolutions: non-square images, Cin != Cout, channels-last in/out
    def conv_fixture(name, seed, B, H, W, Cin, Cout, k, stride, pad, groups=1):
        rng = Rng(seed)
        fan_in = Cin // groups * k * k
        inp = {"x": rng.randn(B, H, W, Cin),
               "weight": rng.randn(Cout, Cin // groups, k, k, scale=1 / math.sqrt(fan_in)),
               "bias": rng.randn(Cout, scale=0.5)}

        def fn(x, weight, bias):
            return nhwc(F.conv2d(nchw(x), weight, bias, stride=stride, padding=pad, groups=groups))
        save(name, run_op(fn, inp, W3, rng),
             common_meta(op=name, stride=stride, pad=pad, groups=groups, kernel=k))

    conv_fixture("conv2d_patch4", 101, 2, 8, 12, 3, 8, 4, 4, 0)
    conv_fixture("conv2d_3x3", 102, 2, 6, 8, 8, 12, 3, 1, 1)
    conv_fixture("conv2d_1x1", 103, 2, 6, 8, 8, 12, 1, 1, 0)
    conv_fixture("dwconv3x3", 104, 2, 6, 8, 16, 16, 3, 1, 1, groups=16)

    # linear
    rng = Rng(105)
    inp = {"x": rng.randn(10, 12), "weight": rng.randn(20, 12, scale=0.3), "bias": rng.randn(20, scale=0.5)}
    save("linear", run_op(lambda x, weight, bias: F.linear(x, weight, bias), inp, W3, rng),
         common_meta(op="linear"))

    # layernorm (rows with non-zero mean and different scales)
    rng = Rng(106)
    N, C = 10, 16
    x = rng.randn(N, C) * rng.uniform(0.2, 3.0, N, 1) + rng.randn(N, 1, scale=2.0)
    inp = {"x": x.contiguous(), "weight": rng.uniform(0.5, 1.5, C), "bias": rng.randn(C, scale=0.5)}
    save("layernorm", run_op(lambda x, weight, bias: F.layer_norm(x, (C,), weight, bias, 1e-5), inp, W3, rng),
         common_meta(op="layernorm", eps="1e-05"))

    # batchnorm train / eval (same inputs)
    rng = Rng(107)
    B, H, W, C = 2, 6, 8, 8
    bn_inp = {"x": (rng.randn(B, H, W, C) * rng.uniform(0.5, 2.0, C) + rng.randn(C)).contiguous(),
              "weight": rng.uniform(0.5, 1.5, C), "bias": rng.randn(C, scale=0.5),
              "running_mean": rng.randn(C, scale=0.5), "running_var": rng.uniform(0.5, 2.0, C)}
    bn_meta = dict(eps="1e-05", momentum="0.1", running_var_update="unbiased batch variance (n/(n-1))",
                   normalisation="biased batch variance in train mode")

    def bn_train(x, weight, bias, running_mean, running_var):
        rm, rv = running_mean.clone(), running_var.clone()
        out = F.batch_norm(nchw(x), rm, rv, weight, bias, training=True, momentum=0.1, eps=1e-5)
        return nhwc(out), {"new_running_mean": rm, "new_running_var": rv}
    save("batchnorm_train", run_op(bn_train, bn_inp, W3, rng), common_meta(op="batchnorm_train", **bn_meta))

    def bn_eval(x, weight, bias, running_mean, running_var):
        return nhwc(F.batch_norm(nchw(x), running_mean, running_var, weight, bias, training=False, eps=1e-5))
    save("batchnorm_eval", run_op(bn_eval, bn_inp, W3, Rng(108)), common_meta(op="batchnorm_eval", **bn_meta))

    # elementwise
    rng = Rng(109)
    x = rng.randn(64, scale=3.0)
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x)  # keep away from relu's kink
    save("relu", run_op(lambda x: F.relu(x), {"x": x}, ["x"], rng), common_meta(op="relu"))
    rng = Rng(110)
    x = rng.randn(64, scale=4.0)
    save("silu", run_op(lambda x: F.silu(x), {"x": x}, ["x"], rng), common_meta(op="silu"))
    rng = Rng(111)
    x = torch.cat([rng.uniform(-30.0, 30.0, 48),
                   torch.tensor([-30.0, -20.5, -1e-3, 0.0, 1e-3, 15.0, 19.5, 19.99, 20.01, 20.5, 25.0, 30.0,
                                 -5.0, 5.0, 1.0, -1.0])]).contiguous()
    save("softplus", run_op(lambda x: F.softplus(x), {"x": x}, ["x"], rng),
         common_meta(op="softplus", beta="1", threshold="20",
                     note="PyTorch semantics: out = x where x > 20, else log1p(exp(x))"))

    # ss2d_scan: non-square so row/column-major mix-ups show; N=16 (the model's) and N=4
    make_ss2d_fixture("ss2d_scan", seed=112, B=2, H=4, W=6, D=8, N=16, R=2)
    make_ss2d_fixture("ss2d_scan_n4", seed=113, B=2, H=4, W=6, D=8, N=4, R=2)

    # channel shuffle
    rng = Rng(114)
    B, H, W, c = 2, 4, 6, 8

    def shuffle(l, s):
        cat = torch.cat([l, s], dim=-1)
        return nhwc(medmamba.channel_shuffle(nchw(cat), 2))
    save("channel_shuffle", run_op(shuffle, {"l": rng.randn(B, H, W, c), "s": rng.randn(B, H, W, c)},
                                   ["l", "s"], rng),
         common_meta(op="channel_shuffle", groups="2", rule="out[...,2m]=l[...,m], out[...,2m+1]=s[...,m]"))

    # patch merging
    rng = Rng(115)
    B, H, W, C = 2, 4, 6, 8
    inp = {"x": rng.randn(B, H, W, C), "norm_weight": rng.uniform(0.5, 1.5, 4 * C),
           "norm_bias": rng.randn(4 * C, scale=0.5), "reduction_weight": rng.randn(2 * C, 4 * C, scale=0.2)}

    def pm(x, norm_weight, norm_bias, reduction_weight):
        x0, x1, x2, x3 = x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]
        y = F.layer_norm(torch.cat([x0, x1, x2, x3], -1), (4 * C,), norm_weight, norm_bias, 1e-5)
        return F.linear(y, reduction_weight)
    save("patch_merging", run_op(pm, inp, ["x", "norm_weight", "norm_bias", "reduction_weight"], rng),
         common_meta(op="patch_merging", eps="1e-05",
                     order="concat(x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]) (h,w)"))

    # average pool
    rng = Rng(116)
    save("avgpool", run_op(lambda x: x.mean(dim=(1, 2)), {"x": rng.randn(2, 4, 6, 16)}, ["x"], rng),
         common_meta(op="avgpool", over="H and W"))

    # cross entropy (mean over batch); the loss is the output, dlogits = d loss / d logits
    rng = Rng(117)
    logits = rng.randn(4, 5, scale=2.0)
    labels = torch.tensor([3, 0, 4, 1], dtype=torch.int64)
    l64 = logits.to(F64).requires_grad_()
    loss = F.cross_entropy(l64, labels)
    (dl,) = torch.autograd.grad(loss, l64)
    save("cross_entropy", {"logits": logits, "labels": labels, "loss": f32(loss).reshape(()),
                           "dlogits": f32(dl)},
         common_meta(op="cross_entropy", reduction="mean"))


def make_ss2d_fixture(name, seed, B, H, W, D, N, R):
    rng = Rng(seed)
    inp = {
        "u": F.silu(rng.randn(B, H, W, D, scale=1.5)).contiguous(),
        "x_proj_weight": rng.randn(4, R + 2 * N, D, scale=1 / math.sqrt(D)),
        "dt_projs_weight": rng.randn(4, D, R, scale=0.5),
        "dt_projs_bias": rng.uniform(-3.0, 1.0, 4, D),          # Delta roughly 0.05 .. 1.5
        "A_logs": (torch.log(torch.arange(1, N + 1, dtype=F32)).repeat(4 * D, 1)
                   + rng.randn(4 * D, N, scale=0.5) - 1.0).contiguous(),
        "Ds": rng.randn(4 * D, scale=0.7, shift=1.0),
    }
    names = ["u", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"]

    def fn(u, **w):
        return nhwc(medmamba.ss2d_scan(nchw(u), impl="loop", **w))
    t = run_op(fn, inp, names, rng)
    save(name, t, common_meta(
        op="ss2d_scan", B=B, H=H, W=W, D=D, N=N, R=R, K=4,
        directions="k0 row-major l=h*W+w; k1 column-major l=w*H+h; k2=k0 reversed; k3=k1 reversed",
        delta="softplus(dt_projs_weight[k] @ dbl[:R] + dt_projs_bias[k]), threshold 20",
        recurrence="h=exp(delta*A)*h+delta*B*u, y=C.h+Ds*u, A=-exp(A_logs), channel index k*D+d"))


def naive_ss2d_numpy(u, xpw, dtw, dtb, A_logs, Ds):
    """Independent scalar implementation straight from the spec (float64).
    u (B,H,W,D) -> out (B,H,W,D)."""
    u = u.astype(np.float64)
    B, H, W, D = u.shape
    K, RN2, _ = xpw.shape
    N = A_logs.shape[1]
    R = RN2 - 2 * N
    L = H * W
    out = np.zeros((B, H, W, D))

    def pos(k, l):  # sequence index -> (h, w)
        if k >= 2:
            l = L - 1 - l
        if k % 2 == 0:
            return divmod(l, W)          # l = h*W + w
        w, h = divmod(l, H)               # l = w*H + h
        return h, w

    def softplus(x):
        return x if x > 20 else math.log1p(math.exp(x))
    for b in range(B):
        for k in range(K):
            h_state = np.zeros((D, N))
            for l in range(L):
                hh, ww = pos(k, l)
                ul = u[b, hh, ww]                        # (D,)
                dbl = xpw[k].astype(np.float64) @ ul
                dt, Bk, Ck = dbl[:R], dbl[R:R + N], dbl[R + N:]
                for d in range(D):
                    delta = softplus(float(dtw[k, d].astype(np.float64) @ dt) + float(dtb[k, d]))
                    A = -np.exp(A_logs[k * D + d].astype(np.float64))
                    h_state[d] = np.exp(delta * A) * h_state[d] + delta * Bk * ul[d]
                    out[b, hh, ww, d] += float(Ck @ h_state[d]) + float(Ds[k * D + d]) * ul[d]
    return out


# --------------------------------------------------------------------------
# Model fixture
# --------------------------------------------------------------------------

SMALL_CFG = dict(dims=[16, 32, 64, 128], depths=[2, 1, 2, 1], d_state=16, num_classes=3, in_chans=3,
                 image_size=64)
# A T-size fixture (dims 96..768) would hold ~60 MB of weights (+ as much again in
# gradients), far over the ~3 MB budget for committed fixtures, so none is written.


def randomise_model(model, seed):
    """Move every parameter/buffer away from its init value so nothing hides
    behind an identity (BN stats, norms, A_logs, Ds, biases), and give the
    Linear weights fan-in scaled magnitudes so the SS2D branch matters."""
    g = torch.Generator().manual_seed(seed)

    def rn(*s):
        return torch.randn(*s, generator=g, dtype=F32)

    def ru(lo, hi, *s):
        return torch.rand(*s, generator=g, dtype=F32) * (hi - lo) + lo
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(ru(0.6, 1.4, c))
                mod.bias.copy_(rn(c) * 0.2)
                mod.running_mean.copy_(rn(c) * 0.3)
                mod.running_var.copy_(ru(0.5, 2.0, c))
                mod.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(mod, torch.nn.LayerNorm):
                n = mod.normalized_shape[0]
                mod.weight.copy_(ru(0.6, 1.4, n))
                mod.bias.copy_(rn(n) * 0.2)
            elif isinstance(mod, torch.nn.Linear):
                fan_in = mod.weight.shape[1]
                mod.weight.copy_(rn(*mod.weight.shape) / math.sqrt(fan_in))
                if mod.bias is not None:
                    mod.bias.copy_(rn(*mod.bias.shape) * 0.2)
            elif isinstance(mod, torch.nn.Conv2d):
                mod.bias.copy_(rn(*mod.bias.shape) * 0.1)
            elif isinstance(mod, medmamba.SS2D):
                mod.A_logs.add_(rn(*mod.A_logs.shape) * 0.5)
                mod.Ds.copy_(ru(0.5, 1.5, *mod.Ds.shape) * torch.sign(ru(-0.2, 1.0, *mod.Ds.shape)))
                mod.dt_projs_bias.copy_(ru(-4.0, 0.5, *mod.dt_projs_bias.shape))
                mod.dt_projs_weight.mul_(ru(0.5, 2.0, *mod.dt_projs_weight.shape))


def build_small_model():
    torch.manual_seed(2024)
    cfg = SMALL_CFG
    m = medmamba.VSSM(in_chans=cfg["in_chans"], num_classes=cfg["num_classes"], depths=cfg["depths"],
                      dims=cfg["dims"], d_state=cfg["d_state"], drop_path_rate=0.0)
    randomise_model(m, 7)
    return m


def make_model():
    cfg = SMALL_CFG
    model32 = build_small_model()
    sd32 = {k: v.detach().clone().contiguous() for k, v in model32.state_dict().items()}
    g = torch.Generator().manual_seed(99)
    B, S = 2, cfg["image_size"]
    inp = (torch.rand(B, cfg["in_chans"], S, S, generator=g, dtype=F32) * 2 - 1).contiguous()
    labels = torch.tensor([2, 0], dtype=torch.int64)

    # float64 copy of the float32-rounded model
    m = build_small_model().double()
    m.load_state_dict(sd32)
    m.set_scan_impl("loop")
    m.eval()
    with torch.no_grad():
        logits_eval = m(inp.double())
    m.train()
    x = inp.double().requires_grad_()
    logits_train = m(x)
    loss = F.cross_entropy(logits_train, labels)
    m.zero_grad()
    loss.backward()

    t = dict(sd32)
    t["input"] = inp
    t["labels"] = labels
    t["logits_eval"] = f32(logits_eval)
    t["logits_train"] = f32(logits_train)
    t["loss_train"] = f32(loss).reshape(())
    for k, p in m.named_parameters():
        t["grad." + k] = f32(p.grad)
    t["grad.input"] = f32(x.grad)
    for k, v in m.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            t["running_after." + k] = f32(v)
    meta = common_meta(config=json.dumps(cfg), drop_path_rate="0", loss="mean cross-entropy",
                       note="grads of the conv biases feeding a train-mode BatchNorm (conv33conv33conv11.1/.4"
                            ".bias) are mathematically 0 (stored values ~1e-17): compare with an absolute tolerance",
                       layout="input NCHW; parameters in PyTorch layout")
    path = os.path.join(FIX, "model_small.safetensors")
    save_fixture(t, path, meta)
    print(f"wrote test/fixtures/model_small.safetensors ({os.path.getsize(path):,} bytes, {len(t)} tensors)")
    print(f"  logits_eval={logits_eval.tolist()}\n  logits_train={logits_train.tolist()} loss={loss.item():.6f}")
    # how much the SS2D branch matters (a fixture where the scan is invisible would hide bugs)
    m.eval().set_scan_impl("noop")
    with torch.no_grad():
        d = (m(inp.double()) - logits_eval).abs().max().item()
    print(f"  max |logits_eval(scan replaced by D*u) - logits_eval| = {d:.4f} "
          f"(logit scale {logits_eval.abs().max().item():.4f})")


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

def check():
    ok = True
    # every op file reloads; sizes
    for fn in sorted(os.listdir(OPS)):
        p = os.path.join(OPS, fn)
        t = np_load_file(p)
        assert all(v.dtype in (np.float32, np.int64) for v in t.values()), fn
        assert os.path.getsize(p) < 200_000, fn
        print(f"reload ops/{fn}: {len(t)} tensors, {os.path.getsize(p):,} bytes")
    # independent scalar re-derivation of the scan fixtures
    for name in ("ss2d_scan", "ss2d_scan_n4"):
        t = np_load_file(os.path.join(OPS, name + ".safetensors"))
        ref = naive_ss2d_numpy(t["u"], t["x_proj_weight"], t["dt_projs_weight"], t["dt_projs_bias"],
                               t["A_logs"], t["Ds"])
        err = np.abs(ref - t["out"]).max() / max(1.0, np.abs(ref).max())
        print(f"{name}: naive numpy vs fixture out, max rel err {err:.2e}")
        ok &= err < 1e-6
        # the chunked (vectorised) torch implementation gives the same grads
        ins = {k: torch.from_numpy(t[k]).double().requires_grad_() for k in
               ["u", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"]}
        y = nhwc(medmamba.ss2d_scan(nchw(ins["u"]), impl="chunked",
                                    **{k: v for k, v in ins.items() if k != "u"}))
        gs = torch.autograd.grad((y * torch.from_numpy(t["dout"]).double()).sum(), list(ins.values()))
        for (k, _), gr in zip(ins.items(), gs):
            e = np.abs(gr.numpy() - t["d" + k]).max() / max(1.0, np.abs(t["d" + k]).max())
            ok &= e < 1e-6
        print(f"{name}: chunked-scan grads vs fixture OK")
    # model fixture reload + recompute with the float32 model
    p = os.path.join(FIX, "model_small.safetensors")
    if os.path.exists(p):
        from safetensors import safe_open
        with safe_open(p, framework="pt") as f:
            meta = f.metadata()
            t = {k: f.get_tensor(k) for k in f.keys()}
        cfg = json.loads(meta["config"])
        m = medmamba.VSSM(in_chans=cfg["in_chans"], num_classes=cfg["num_classes"], depths=cfg["depths"],
                          dims=cfg["dims"], d_state=cfg["d_state"], drop_path_rate=0.0)
        sd_keys = set(m.state_dict().keys())
        m.load_state_dict({k: t[k] for k in sd_keys})
        m.set_scan_impl("chunked").eval()
        with torch.no_grad():
            le = m(t["input"])
        m.train()
        lt = m(t["input"])
        loss = F.cross_entropy(lt, t["labels"])
        loss.backward()
        e1 = (le - t["logits_eval"]).abs().max().item()
        e2 = (lt - t["logits_train"]).abs().max().item()
        gerr = max(((p_.grad - t["grad." + k]).abs().max() / t["grad." + k].abs().max().clamp(min=1e-3)).item()
                   for k, p_ in m.named_parameters())
        rerr = max((v - t["running_after." + k]).abs().max().item() for k, v in m.state_dict().items()
                   if k.endswith("running_mean") or k.endswith("running_var"))
        n_grad = sum(1 for k in t if k.startswith("grad."))
        n_params = sum(1 for _ in m.named_parameters())
        print(f"model_small: fp32 chunked-scan recompute |dlogits_eval|={e1:.2e} |dlogits_train|={e2:.2e} "
              f"max rel grad err={gerr:.2e} running-stat err={rerr:.2e}; {n_grad} grads for {n_params} params + input")
        ok &= e1 < 1e-4 and e2 < 1e-4 and gerr < 1e-3 and rerr < 1e-5 and n_grad == n_params + 1
    assert ok, "fixture checks failed"
    print("all fixture checks OK")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", action="store_true")
    ap.add_argument("--model", action="store_true")
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not a.check_only:
        both = not (a.ops or a.model)
        if a.ops or both:
            make_ops()
        if a.model or both:
            make_model()
    check()
