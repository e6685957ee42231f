#!/usr/bin/python3
"""Writes the PyTorch checkpoint fixtures for mm-convert (test/fixtures/checkpoints/).

    /usr/bin/python3 test/reference/make_checkpoint_fixtures.py

(/usr/bin/python3 = Debian torch 1.13 + pip safetensors.)  Every file is
written by torch.save itself, so the tests read what users' checkpoints hold:

  small.pth                      zip format, the model_small fixture's weights (dims 16..128,
                                 depths 2,1,2,1): its logits_eval are the reference logits
  tiny_*.pth                     a smaller model (dims 8..64, depths 1,1,1,1, image 32) in every
                                 form torch.save is used: zip, legacy, wrapped, module.-prefixed,
                                 float16, bfloat16, float64, storage views, deflated zip
  tiny_logits.safetensors        input and PyTorch logits (float64 compute) for the tiny model,
                                 for float32 weights and for weights rounded to fp16 / bf16
  torchscript.pt                 a TorchScript archive (must be refused with a clear message)
  hostile_os_system.pth          a torch.save'd object whose unpickling would call os.system

It also writes the fuzzers' seed corpora (fuzz/seeds/): small checkpoints in the
same forms (a few hundred bytes each, so that mutations stay fast) and their
pickles alone.
"""
import collections
import copy
import json
import os
import sys
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import medmamba  # noqa: E402
import make_fixtures  # noqa: E402  (SMALL_CFG, build_small_model, randomise_model)

OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "checkpoints"))
SEEDS = os.path.normpath(os.path.join(HERE, "..", "..", "fuzz", "seeds"))
TINY_CFG = dict(dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], d_state=16, num_classes=3, in_chans=3, image_size=32)


def build_tiny_model():
    torch.manual_seed(11)
    c = TINY_CFG
    m = medmamba.VSSM(in_chans=c["in_chans"], num_classes=c["num_classes"], depths=c["depths"], dims=c["dims"],
                      d_state=c["d_state"], drop_path_rate=0.0)
    make_fixtures.randomise_model(m, 13)
    return m.eval()


def logits_f64(model, state, x):
    """Eval-mode logits computed in float64 from the given (possibly rounded) weights."""
    m = copy.deepcopy(model).double()
    m.load_state_dict({k: (v.double() if v.is_floating_point() else v) for k, v in state.items()})
    m.set_scan_impl("loop")
    m.eval()
    with torch.no_grad():
        return m(x.double()).float()


def save(obj, name, **kw):
    path = os.path.join(OUT, name)
    torch.save(obj, path, **kw)
    print(f"wrote {os.path.relpath(path, os.path.join(HERE, '..', '..'))} ({os.path.getsize(path):,} bytes)")
    return path


def storage_views(sd):
    """The same values as sd, but every float tensor a view into one shared
    storage at a non-zero offset, with non-contiguous layouts: 1-D with stride
    2, 2-D transposed, 4-D channels-last; int64 scalars are views into one
    LongStorage."""
    floats = [(k, v) for k, v in sd.items() if v.is_floating_point()]
    flat = torch.zeros(sum((2 if v.dim() == 1 else 1) * v.numel() + 3 for _, v in floats) + 7)
    longs = torch.zeros(len(sd) + 1, dtype=torch.int64)
    out = collections.OrderedDict()
    off, li = 7, 1
    for k, v in sd.items():
        if not v.is_floating_point():
            longs[li] = v
            out[k] = longs[li]
            li += 1
            continue
        n = v.numel()
        if v.dim() == 1:
            view = flat[off:off + 2 * n:2]
        elif v.dim() == 2:
            view = flat[off:off + n].view(v.shape[1], v.shape[0]).t()
        elif v.dim() == 4:
            s = v.shape
            view = flat[off:off + n].view(s[0], s[2], s[3], s[1]).permute(0, 3, 1, 2)
        else:
            view = flat[off:off + n].view(v.shape)
        view.copy_(v)
        out[k] = view
        off += (2 if v.dim() == 1 else 1) * n + 3
    for k, v in sd.items():
        assert torch.equal(out[k], v), k
    assert not all(t.is_contiguous() for t in out.values())
    return out


def deflate_copy(src, dst):
    """The same zip records, deflate-compressed (torch never compresses; zip tools do).
    Fixed timestamps keep re-runs byte-identical."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0))
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, zin.read(info.filename))


class OsSystem:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __reduce__(self):
        return (os.system, ("echo this checkpoint ran a shell command",))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    small = make_fixtures.build_small_model()
    save(small.state_dict(), "small.pth")

    model = build_tiny_model()
    sd = model.state_dict()
    save(sd, "tiny_zip.pth")
    save(sd, "tiny_legacy.pth", _use_new_zipfile_serialization=False)
    save({"model": sd, "epoch": 12}, "tiny_wrapped_model.pth")
    trained = copy.deepcopy(model)  # the step must not move the weights sd refers to
    opt = torch.optim.SGD(trained.parameters(), lr=1e-3, momentum=0.9)
    trained(torch.rand(1, 3, 32, 32)).sum().backward()
    opt.step()
    save({"epoch": 7, "state_dict": sd, "optimizer": opt.state_dict(), "best_acc": 0.91,
          "args": {"lr": 1e-3, "name": "run-3", "amp": False}}, "tiny_wrapped_state_dict.pth")
    save(torch.nn.DataParallel(model).state_dict(), "tiny_module_prefix.pth")
    sd16 = copy.deepcopy(model).half().state_dict()
    save(sd16, "tiny_fp16.pth")
    sdbf = copy.deepcopy(model).to(torch.bfloat16).state_dict()
    save(sdbf, "tiny_bf16.pth")
    save(copy.deepcopy(model).double().state_dict(), "tiny_fp64_legacy.pth", _use_new_zipfile_serialization=False)
    views = storage_views(sd)
    save(views, "tiny_views.pth")
    save(views, "tiny_views_legacy.pth", _use_new_zipfile_serialization=False)

    dst = os.path.join(OUT, "tiny_deflate.pth")
    deflate_copy(os.path.join(OUT, "tiny_zip.pth"), dst)
    print(f"wrote test/fixtures/checkpoints/tiny_deflate.pth ({os.path.getsize(dst):,} bytes)")

    g = torch.Generator().manual_seed(5)
    x = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).contiguous()
    t = {"input": x, "logits": logits_f64(model, sd, x), "logits_fp16": logits_f64(model, sd16, x),
         "logits_bf16": logits_f64(model, sdbf, x)}
    path = os.path.join(OUT, "tiny_logits.safetensors")
    make_fixtures.save_fixture(t, path, {"config": json.dumps(TINY_CFG), "torch": torch.__version__,
                                         "generator": "test/reference/make_checkpoint_fixtures.py",
                                         "compute_dtype": "float64 (stored float32)"})
    print(f"wrote test/fixtures/checkpoints/tiny_logits.safetensors ({os.path.getsize(path):,} bytes)")
    print("  logits", t["logits"].tolist())

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(OUT, "torchscript.pt"))
    print("wrote test/fixtures/checkpoints/torchscript.pt")
    save({"model": OsSystem()}, "hostile_os_system.pth")

    make_fuzz_seeds()
    check()


def make_fuzz_seeds():
    ck_dir, pkl_dir = os.path.join(SEEDS, "torch_checkpoint"), os.path.join(SEEDS, "torch_pickle")
    os.makedirs(ck_dir, exist_ok=True)
    os.makedirs(pkl_dir, exist_ok=True)
    lin = torch.nn.Linear(3, 2)
    bn = torch.nn.BatchNorm2d(2)
    sd = collections.OrderedDict(lin.state_dict())
    sd.update(("bn." + k, v) for k, v in bn.state_dict().items())
    base = torch.arange(12.0)
    sd["view"] = base[2:10].view(2, 4).t()
    sd["half"] = torch.ones(3).half()
    forms = {"zip": (sd, {}), "legacy": (sd, {"_use_new_zipfile_serialization": False}),
             "wrapped": ({"model": sd, "epoch": 1, "opt": {"lr": 0.1, "betas": (0.9, 0.99), "names": ["a", None]}}, {}),
             "module": (collections.OrderedDict(("module." + k, v) for k, v in sd.items()), {}),
             "param": ({"w": torch.nn.Parameter(torch.ones(2, 2))}, {"_use_new_zipfile_serialization": False})}
    for name, (obj, kw) in forms.items():
        path = os.path.join(ck_dir, name + ".pth")
        torch.save(obj, path, **kw)
        if kw:  # legacy: the whole stream is pickles and raw storages
            with open(path, "rb") as f, open(os.path.join(pkl_dir, name + ".stream"), "wb") as g:
                g.write(f.read())
        else:
            with zipfile.ZipFile(path) as z:
                with open(os.path.join(pkl_dir, name + ".pkl"), "wb") as g:
                    g.write(z.read(name + "/data.pkl"))
    deflate_copy(os.path.join(ck_dir, "zip.pth"), os.path.join(ck_dir, "deflate.pth"))
    for fixture in ("torchscript.pt", "hostile_os_system.pth"):
        with open(os.path.join(OUT, fixture), "rb") as f, open(os.path.join(ck_dir, fixture), "wb") as g:
            g.write(f.read())
    print(f"wrote fuzz seeds: {len(os.listdir(ck_dir))} in fuzz/seeds/torch_checkpoint, "
          f"{len(os.listdir(pkl_dir))} in fuzz/seeds/torch_pickle")


def check():
    """Every fixture but the hostile ones loads in torch with weights_only=True."""
    for name in sorted(os.listdir(OUT)):
        if not name.endswith(".pth") or name.startswith("hostile"):
            continue
        try:
            torch.load(os.path.join(OUT, name), weights_only=True)
        except Exception as e:  # noqa: BLE001
            # torch 1.13: weights_only cannot read floats (BINFLOAT), as in the wrapped extras
            print(f"  note: torch.load(weights_only=True) refuses {name}: {type(e).__name__}: {str(e)[:80]}")
        else:
            print(f"  torch.load(weights_only=True) reads {name}")


if __name__ == "__main__":
    main()
