// mm-convert: PyTorch checkpoints in every form torch.save is used
// (test/reference/make_checkpoint_fixtures.py), converted and run against
// PyTorch's logits; round trips; the command line.
#include <cstdlib>
#include <cstring>

#include <unistd.h>

#include "convert/convert.h"
#include "convert/infer_config.h"
#include "convert_test_util.h"
#include "core/error.h"
#include "model/model_file.h"

using namespace mm;
using namespace mm::test;

namespace {

void check_same_tensors(const std::map<std::string, Tensor>& got, const std::map<std::string, Tensor>& want,
                        bool bitwise_same_dtype) {
  REQUIRE(got.size() == want.size());
  for (const auto& [name, w] : want) {
    CAPTURE(name);
    auto it = got.find(name);
    REQUIRE(it != got.end());
    const Tensor& g = it->second;
    REQUIRE(g.shape() == w.shape());
    if (bitwise_same_dtype) {
      REQUIRE(g.dtype() == w.dtype());
      CHECK(std::memcmp(g.data(), w.data(), w.nbytes()) == 0);
    } else if (w.dtype() == DType::I64) {
      CHECK(g.to(DType::F64).as<double>()[0] == w.to(DType::F64).as<double>()[0]);
    } else {
      check_close(name, g, w, 0.f, 0.f);
    }
  }
}

Tensor run_model(const std::string& model_path, const Tensor& input) {
  LoadedModel m = load_model(model_path);
  return m.model.forward(input);
}

void check_logits(const std::string& what, const Tensor& got, const Tensor& want) {
  REQUIRE(got.shape() == want.shape());
  const double err = rel_l2(got.f32(), want.f32(), want.numel());
  INFO(what << ": relative L2 error " << err);
  CHECK(err < 1e-4);
}

// The torch-capable Python for the interop test, or "" (with the reason) when there is none.
std::string torch_python(std::string& why) {
  const char* env = std::getenv("MM_TORCH_PYTHON");
  const std::string py = env ? env : "/usr/bin/python3";
  const std::string probe = py + " -c 'import torch, safetensors' >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) {
    why = py + " cannot import torch and safetensors (set MM_TORCH_PYTHON to a Python that can)";
    return "";
  }
  return py;
}

std::string mm_convert_binary() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  REQUIRE(n > 0);
  std::string self(buf, size_t(n));
  return self.substr(0, self.find_last_of('/')) + "/mm-convert";
}

}  // namespace

TEST_CASE("every form torch.save is used in reads to the same state dict") {
  const auto want = read_torch_checkpoint(checkpoint_fixture("tiny_zip.pth")).state();
  const ParamTable table = ParamTable::for_config(infer_model_config(want, 32));
  CHECK(want.size() == table.entries().size() + table.batchnorms().size());  // + num_batches_tracked
  struct Form {
    const char* file;
    const char* format;
    const char* key;
    const char* prefix;
  };
  const Form forms[] = {
      {"tiny_zip.pth", "zip", "", ""},
      {"tiny_legacy.pth", "legacy", "", ""},
      {"tiny_wrapped_model.pth", "zip", "model", ""},
      {"tiny_wrapped_state_dict.pth", "zip", "state_dict", ""},
      {"tiny_module_prefix.pth", "zip", "", "module."},
      {"tiny_views.pth", "zip", "", ""},
      {"tiny_views_legacy.pth", "legacy", "", ""},
      {"tiny_deflate.pth", "zip", "", ""},
  };
  for (const Form& f : forms) {
    CAPTURE(f.file);
    const TorchCheckpoint ck = read_torch_checkpoint(checkpoint_fixture(f.file));
    CHECK(ck.format == f.format);
    CHECK(ck.state_dict_key == f.key);
    CHECK(ck.stripped_prefix == f.prefix);
    check_same_tensors(ck.state(), want, /*bitwise_same_dtype=*/true);
  }
  const TorchCheckpoint wrapped = read_torch_checkpoint(checkpoint_fixture("tiny_wrapped_state_dict.pth"));
  REQUIRE(wrapped.ignored.size() == 4);  // epoch, optimizer, best_acc, args
  CHECK(wrapped.ignored[0] == "epoch (the integer 7)");
  CHECK(wrapped.ignored[1].rfind("optimizer (a dict", 0) == 0);
  // float64 (legacy format) holds the same float32 values widened.
  check_same_tensors(read_torch_checkpoint(checkpoint_fixture("tiny_fp64_legacy.pth")).state(), want, false);
}

TEST_CASE("float16 and bfloat16 checkpoints hold torch's rounding of the float32 weights, bit for bit") {
  const auto f32 = read_torch_checkpoint(checkpoint_fixture("tiny_zip.pth")).state();
  for (const auto& [file, dt] : {std::pair{"tiny_fp16.pth", DType::F16}, std::pair{"tiny_bf16.pth", DType::BF16}}) {
    CAPTURE(file);
    std::map<std::string, Tensor> want;
    for (const auto& [k, t] : f32) want[k] = t.dtype() == DType::F32 ? t.to(dt) : t;
    check_same_tensors(read_torch_checkpoint(checkpoint_fixture(file)).state(), want, true);
  }
}

TEST_CASE("converted checkpoints give PyTorch's logits") {
  SUBCASE("small model (the model_small fixture's weights)") {
    TempFile out("small.safetensors");
    convert_weights(checkpoint_fixture("small.pth"), out.path, {});
    const auto f = load_fixture("model_small.safetensors");
    const Tensor logits = run_model(out.path, f.at("input"));
    check_logits("small.pth", logits, f.at("logits_eval"));
    check_close("small.pth logits", logits, f.at("logits_eval"), 1e-4f, 1e-5f);
  }
  SUBCASE("tiny model, every form") {
    const auto f = load_fixture("checkpoints/tiny_logits.safetensors");
    const std::pair<const char*, const char*> cases[] = {
        {"tiny_zip.pth", "logits"},          {"tiny_legacy.pth", "logits"},
        {"tiny_wrapped_model.pth", "logits"}, {"tiny_wrapped_state_dict.pth", "logits"},
        {"tiny_module_prefix.pth", "logits"}, {"tiny_views.pth", "logits"},
        {"tiny_views_legacy.pth", "logits"},  {"tiny_deflate.pth", "logits"},
        {"tiny_fp64_legacy.pth", "logits"},   {"tiny_fp16.pth", "logits_fp16"},
        {"tiny_bf16.pth", "logits_bf16"},
    };
    for (const auto& [file, key] : cases) {
      CAPTURE(file);
      TempFile out("tiny.safetensors");
      convert_weights(checkpoint_fixture(file), out.path, {});
      check_logits(file, run_model(out.path, f.at("input")), f.at(key));
    }
  }
}

TEST_CASE(".pth -> safetensors -> .pth is lossless, in the reference key order") {
  for (const auto& [file, precision] : {std::pair{"small.pth", DType::F32}, std::pair{"tiny_fp16.pth", DType::F16},
                                        std::pair{"tiny_bf16.pth", DType::BF16}}) {
    CAPTURE(file);
    TempFile mid("rt.safetensors"), back("rt.pth");
    ConvertOptions o;
    o.precision = precision;
    convert_weights(checkpoint_fixture(file), mid.path, o);
    convert_weights(mid.path, back.path, o);
    const TorchCheckpoint orig = read_torch_checkpoint(checkpoint_fixture(file));
    const TorchCheckpoint ours = read_torch_checkpoint(back.path);
    check_same_tensors(ours.state(), orig.state(), /*bitwise_same_dtype=*/true);
    // torch.save wrote the original in module order; ours must list the keys the same way.
    REQUIRE(ours.tensors.size() == orig.tensors.size());
    for (size_t i = 0; i < orig.tensors.size(); ++i) CHECK(ours.tensors[i].first == orig.tensors[i].first);
  }
}

TEST_CASE("checkpoints we write load in PyTorch (weights_only) and the reference's load_state_dict") {
  std::string why;
  const std::string py = torch_python(why);
  if (py.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  TempFile mid("py.safetensors"), back("py.pth"), zip64("py64.pth");
  convert_weights(checkpoint_fixture("small.pth"), mid.path, {});
  convert_weights(mid.path, back.path, {});
  const std::string script = std::string(MM_SOURCE_DIR) + "/test/reference/check_torch_roundtrip.py";
  const std::string fixture = fixture_path("model_small.safetensors");
  std::string cmd = py + " " + script + " " + back.path + " --fixture " + fixture + " --reference " +
                    checkpoint_fixture("small.pth");
  CHECK_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  // The same state dict in ZIP64 records (what a > 4 GiB checkpoint needs) loads too.
  TorchWriteOptions z64;
  z64.force_zip64 = true;
  z64.archive_name = "py64";
  write_torch_checkpoint(zip64.path, read_torch_checkpoint(back.path).tensors, z64);
  cmd = py + " " + script + " " + zip64.path + " --fixture " + fixture + " --reference " + checkpoint_fixture("small.pth");
  CHECK_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
}

TEST_CASE("ZIP64 checkpoints and foreign safetensors files read") {
  const TorchCheckpoint ck = read_torch_checkpoint(checkpoint_fixture("tiny_zip.pth"));
  TempFile z64("z64.pth");
  TorchWriteOptions o;
  o.force_zip64 = true;
  write_torch_checkpoint(z64.path, ck.tensors, o);
  check_same_tensors(read_torch_checkpoint(z64.path).state(), ck.state(), true);

  // A safetensors file from another tool: no metadata, keys under a Lightning-style "model." prefix.
  std::map<std::string, Tensor> prefixed;
  for (const auto& [k, t] : ck.tensors) prefixed["model." + k] = t;
  TempFile foreign("foreign.safetensors"), out("foreign-out.safetensors");
  write_safetensors(foreign.path, prefixed);
  const ConvertReport r = convert_weights(foreign.path, out.path, {});
  REQUIRE(r.notes.size() == 1);
  CHECK(r.notes[0] == "model prefix 'model.' stripped from every key");
  CHECK(r.meta.config.dims == std::vector<int64_t>{8, 16, 32, 64});
  const auto f = load_fixture("checkpoints/tiny_logits.safetensors");
  check_logits("foreign safetensors", run_model(out.path, f.at("input")), f.at("logits"));
}

TEST_CASE("the architecture is inferred from shapes, and mismatches are named") {
  auto state = read_torch_checkpoint(checkpoint_fixture("small.pth")).state();
  const ModelConfig cfg = infer_model_config(state, 64);
  CHECK(cfg.dims == std::vector<int64_t>{16, 32, 64, 128});
  CHECK(cfg.depths == std::vector<int64_t>{2, 1, 2, 1});
  CHECK(cfg.num_classes == 3);
  CHECK(cfg.d_state == 16);
  CHECK(cfg.in_chans == 3);
  CHECK(cfg.image_size == 64);

  // A model with another dt_rank cannot be ours: said plainly, naming the tensor.
  auto odd_rank = state;
  odd_rank["layers.0.blocks.0.self_attention.dt_projs_weight"] = Tensor::zeros({4, 16, 3});
  CHECK_THROWS_WITH_AS(infer_model_config(odd_rank), doctest::Contains("dt_projs_weight has dt_rank 3"), Error);
  auto no_embed = state;
  no_embed.erase("patch_embed.proj.weight");
  CHECK_THROWS_WITH_AS(infer_model_config(no_embed), doctest::Contains("no tensor 'patch_embed.proj.weight'"), Error);

  // Missing, unexpected and mis-shaped tensors are all named by the conversion.
  auto broken = read_torch_checkpoint(checkpoint_fixture("small.pth")).tensors;
  NamedTensors edited;
  for (auto& [k, t] : broken)
    if (k != "layers.1.blocks.0.ln_1.bias") edited.emplace_back(k, k == "head.bias" ? Tensor::zeros({5}) : t);
  edited.emplace_back("extra.weight", Tensor::zeros({2}));
  TempFile in("broken.pth"), out("broken.safetensors");
  write_torch_checkpoint(in.path, edited);
  try {
    convert_weights(in.path, out.path, {});
    FAIL("a broken state dict converted");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find(in.path) != std::string::npos);
    CHECK(msg.find("layers.1.blocks.0.ln_1.bias") != std::string::npos);
    CHECK(msg.find("extra.weight") != std::string::npos);
    CHECK(msg.find("head.bias (file [5], model [3])") != std::string::npos);
  }
  CHECK(::access(out.path.c_str(), F_OK) != 0);  // nothing written
}

TEST_CASE("class names, preprocessing and precision options reach the model file") {
  TempFile out("opts.safetensors"), labels("labels.txt");
  ConvertOptions o;
  o.class_names = {"benign", "malignant", "normal"};
  o.image_size = 96;
  o.mean = std::vector<float>{0.485f, 0.456f, 0.406f};
  o.std = std::vector<float>{0.229f, 0.224f, 0.225f};
  o.precision = DType::BF16;
  convert_weights(checkpoint_fixture("tiny_zip.pth"), out.path, o);
  const SafetensorsFile f = read_safetensors(out.path);
  CHECK(f.at("head.weight").dtype() == DType::BF16);
  CHECK(f.at("layers.0.blocks.0.conv33conv33conv11.0.num_batches_tracked").dtype() == DType::I64);
  const LoadedModel m = load_model(out.path);
  CHECK(m.meta.class_names == o.class_names);
  CHECK(m.meta.config.image_size == 96);
  CHECK(m.meta.preprocess.input_size == 96);
  CHECK(m.meta.preprocess.mean == *o.mean);

  write_bytes(labels.path, as_bytes("a\r\nb\nc\n\n"));
  CHECK(read_class_names(labels.path) == std::vector<std::string>{"a", "b", "c"});
  o.class_names = {"a", "b"};
  CHECK_THROWS_WITH_AS(convert_weights(checkpoint_fixture("tiny_zip.pth"), out.path, o),
                       doctest::Contains("2 class names given for a model with 3 classes"), Error);
  CHECK(parse_precision("bf16") == DType::BF16);
  CHECK_THROWS_AS(parse_precision("int8"), Error);
}

TEST_CASE("--inspect lists every tensor and says whether it is a MedMamba") {
  const std::string text = inspect_weights(checkpoint_fixture("tiny_wrapped_state_dict.pth"));
  CHECK(text.find("PyTorch checkpoint (zip archive") != std::string::npos);
  CHECK(text.find("state dict found under 'state_dict'") != std::string::npos);
  CHECK(text.find("ignored entry optimizer") != std::string::npos);
  CHECK(text.find("layers.3.blocks.0.self_attention.A_logs") != std::string::npos);
  CHECK(text.find("I64    []") != std::string::npos);
  CHECK(text.find("MedMamba: dims [8, 16, 32, 64], depths [1, 1, 1, 1], 3 classes") != std::string::npos);
  const std::string half = inspect_weights(checkpoint_fixture("tiny_fp16.pth"));
  CHECK(half.find("F16    [64, 3, 4, 4]") == std::string::npos);  // patch_embed is [8, 3, 4, 4]
  CHECK(half.find("F16    [8, 3, 4, 4]") != std::string::npos);
}

TEST_CASE("mm-convert exits 0 on success, 1 on a conversion error, 2 on a usage error") {
  const std::string bin = mm_convert_binary();
  if (::access(bin.c_str(), X_OK) != 0) {
    MESSAGE("skipped: " << bin << " not built");
    return;
  }
  TempFile out("cli.safetensors");
  auto run = [&](const std::string& args) {
    const int rc = std::system((bin + " " + args + " >/dev/null 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  const std::string tiny = checkpoint_fixture("tiny_zip.pth");
  CHECK(run(tiny + " " + out.path + " --labels a,b,c --image-size 64 --precision fp16") == 0);
  CHECK(load_model(out.path).meta.class_names == std::vector<std::string>{"a", "b", "c"});
  CHECK(run("--inspect " + tiny) == 0);
  CHECK(run(checkpoint_fixture("hostile_os_system.pth") + " " + out.path) == 1);
  CHECK(run(tiny + " " + out.path + " --labels a,b") == 1);
  CHECK(run(tiny) == 2);                          // no OUTPUT
  CHECK(run(tiny + " " + out.path + ".onnx") == 2);  // unknown format
  CHECK(run(tiny + " " + out.path + " --precision int4") == 2);
  CHECK(run(tiny + " " + out.path + " --no-such-option") == 2);
}
