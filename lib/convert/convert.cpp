#include "convert/convert.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "convert/infer_config.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "model/quantization.h"
#include "io/torch_checkpoint.h"

namespace mm {

namespace {

// Weights as read from the input file, before they meet a model.
struct InputWeights {
  NamedTensors listing;              // as the file holds them (wrapper prefixes already stripped)
  std::map<std::string, Tensor> state;
  std::optional<ModelMeta> meta;     // from our model file's metadata
  std::string description;
  std::vector<std::string> notes;
};

std::string lower_extension(const std::string& path) {
  const size_t slash = path.find_last_of('/'), dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext;
}

InputWeights read_input(const std::string& path) {
  const std::optional<WeightsFormat> format = weights_format_for(path);
  if (!format) throw Error(path + ": unknown extension (expected .pth, .pt, .bin, .ckpt or .safetensors)");
  InputWeights in;
  if (*format == WeightsFormat::Torch) {
    TorchCheckpoint ck = read_torch_checkpoint(path);
    in.description = ck.format == "zip" ? "PyTorch checkpoint (zip archive, torch.save since 1.6)"
                                        : "PyTorch checkpoint (legacy pickle stream)";
    if (!ck.state_dict_key.empty()) in.notes.push_back("state dict found under '" + ck.state_dict_key + "'");
    if (!ck.stripped_prefix.empty()) in.notes.push_back("prefix '" + ck.stripped_prefix + "' stripped from every key");
    for (const std::string& e : ck.ignored) in.notes.push_back("ignored entry " + e);
    in.listing = std::move(ck.tensors);
  } else {
    SafetensorsFile f = read_safetensors(path);
    in.listing.assign(f.tensors.begin(), f.tensors.end());
    if (f.metadata.count("config")) {
      in.description = "medmamba-cpp model file (safetensors with metadata)";
      in.meta = load_model(path).meta;
      if (in.meta->int8_weights) {  // an int8 file: its weights as load_model reads them
        const std::map<std::string, Tensor> dequantized = dequantize_state_int8(f.tensors);
        in.listing.assign(dequantized.begin(), dequantized.end());
      }
    } else {
      in.description = "safetensors file without medmamba-cpp metadata (architecture inferred)";
      const std::string stripped = strip_wrapper_prefixes(in.listing);
      if (!stripped.empty()) in.notes.push_back("prefix '" + stripped + "' stripped from every key");
    }
  }
  in.state = std::map<std::string, Tensor>(in.listing.begin(), in.listing.end());
  if (!in.meta) {
    const std::string prefix = strip_model_prefix(in.state);
    if (!prefix.empty()) in.notes.push_back("model prefix '" + prefix + "' stripped from every key");
  }
  return in;
}

// The config and metadata the output will carry: the input's own, or inferred, then the options.
ModelMeta output_meta(const InputWeights& in, const ConvertOptions& o) {
  ModelMeta meta;
  if (in.meta) {
    meta = *in.meta;
    if (o.image_size) meta.config.image_size = *o.image_size;
  } else {
    meta.config = infer_model_config(in.state, o.image_size.value_or(224));
    meta.preprocess.input_size = meta.config.image_size;
  }
  meta.config.validate();
  if (o.image_size) meta.preprocess.input_size = *o.image_size;
  if (!o.class_names.empty()) meta.class_names = o.class_names;
  if (o.mean) meta.preprocess.mean = *o.mean;
  if (o.std) meta.preprocess.std = *o.std;
  const int64_t classes = meta.config.num_classes, chans = meta.config.in_chans;
  MM_CHECK(meta.class_names.empty() || int64_t(meta.class_names.size()) == classes,
           std::to_string(meta.class_names.size()) + " class names given for a model with " +
               std::to_string(classes) + " classes");
  MM_CHECK(int64_t(meta.preprocess.mean.size()) == chans && int64_t(meta.preprocess.std.size()) == chans,
           "mean and std need one value per input channel (" + std::to_string(chans) + ")");
  for (float s : meta.preprocess.std) MM_CHECK(s > 0.f, "std values must be positive");
  meta.int8_weights = o.quantize_int8;
  if (!o.quantize_int8) meta.int8_activation_scales.clear();
  return meta;
}

MedMamba build_model(const InputWeights& in, const ModelConfig& cfg) {
  // A model far larger than the weights offered cannot match them; refusing it
  // here keeps a hostile shape from costing a huge allocation before
  // load_state names what is wrong.
  int64_t offered = 0;
  for (const auto& [name, t] : in.state) offered += t.numel();
  const int64_t needed = ParamTable::for_config(cfg).total_floats();
  if (needed > 4 * offered + (int64_t(1) << 20))
    throw Error("the inferred architecture (" + cfg.to_json() + ") needs " + std::to_string(needed) +
                " values but the file holds " + std::to_string(offered));
  MedMamba model(cfg);
  model.load_state(in.state);
  return model;
}

// The state dict in the reference module order (as PyTorch's state_dict()
// lists it), float tensors in the requested precision.
NamedTensors reference_order_state(const MedMamba& model, DType precision) {
  std::map<std::string, Tensor> state = model.state();
  NamedTensors out;
  auto emit = [&](const std::string& name) {
    Tensor t = state.at(name);
    out.emplace_back(name, t.dtype() == DType::F32 ? t.to(precision) : t);
  };
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() > tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  // ParamTable follows module order except in patch merging, whose module
  // registers `reduction` before `norm`; BatchNorm's num_batches_tracked
  // (not in the table) follows its running_var.
  const std::string merge_norm = ".downsample.norm.weight", merge_reduction = ".downsample.reduction.weight";
  for (const ParamEntry& e : model.table().entries()) {
    if (ends_with(e.name, merge_reduction)) continue;
    if (ends_with(e.name, merge_norm)) emit(e.name.substr(0, e.name.size() - merge_norm.size()) + merge_reduction);
    emit(e.name);
    if (ends_with(e.name, ".running_var"))
      emit(e.name.substr(0, e.name.size() - std::string("running_var").size()) + "num_batches_tracked");
  }
  return out;
}

void write_output(const std::string& path, const MedMamba& model, const ModelMeta& meta, DType precision) {
  // Written beside the target and renamed, so a failure never leaves half a file under the output name.
  const std::string tmp = path + ".partial";
  try {
    if (*weights_format_for(path) == WeightsFormat::Safetensors) save_model(tmp, model, meta, precision);
    else write_torch_checkpoint(tmp, reference_order_state(model, precision));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot write the output file");
  }
}

std::string config_summary(const ModelConfig& c) {
  auto list = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  };
  return "dims " + list(c.dims) + ", depths " + list(c.depths) + ", " + std::to_string(c.num_classes) +
         " classes, d_state " + std::to_string(c.d_state) + ", in_chans " + std::to_string(c.in_chans);
}

}  // namespace

std::optional<WeightsFormat> weights_format_for(const std::string& path) {
  const std::string ext = lower_extension(path);
  if (ext == ".pth" || ext == ".pt" || ext == ".bin" || ext == ".ckpt") return WeightsFormat::Torch;
  if (ext == ".safetensors") return WeightsFormat::Safetensors;
  return std::nullopt;
}

DType parse_precision(const std::string& name) {
  if (name == "fp32" || name == "f32" || name == "float32") return DType::F32;
  if (name == "fp16" || name == "f16" || name == "float16") return DType::F16;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  throw Error("unknown precision '" + name + "' (expected fp32, fp16 or bf16)");
}

std::vector<std::string> read_class_names(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open the class-name file");
  std::vector<std::string> names;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    names.push_back(line);
  }
  while (!names.empty() && names.back().empty()) names.pop_back();
  for (size_t i = 0; i < names.size(); ++i)
    MM_CHECK(!names[i].empty(), path + ": line " + std::to_string(i + 1) + " is an empty class name");
  return names;
}

ConvertReport convert_weights(const std::string& input, const std::string& output, const ConvertOptions& options) {
  MM_CHECK(weights_format_for(output).has_value(),
           output + ": unknown output extension (expected .pth, .pt, .bin, .ckpt or .safetensors)");
  MM_CHECK(options.precision == DType::F32 || options.precision == DType::F16 || options.precision == DType::BF16,
           "output precision must be fp32, fp16 or bf16");
  MM_CHECK(!options.quantize_int8 || *weights_format_for(output) == WeightsFormat::Safetensors,
           output + ": int8 weights are written as safetensors only (.safetensors)");
  const InputWeights in = read_input(input);
  ConvertReport report;
  report.notes = in.notes;
  try {
    report.meta = output_meta(in, options);
  } catch (const Error& e) {
    throw Error(input + ": " + e.what());
  }
  MedMamba model = [&] {
    try {
      return build_model(in, report.meta.config);
    } catch (const Error& e) {
      throw Error(input + ": " + e.what());
    }
  }();
  if (options.calibrate) {
    MM_CHECK(options.quantize_int8, "calibration is for int8 output (--quantize int8)");
    report.meta.int8_activation_scales = options.calibrate(model, report.meta);
  }
  write_output(output, model, report.meta, options.precision);
  return report;
}

LoadedModel load_weights_as_model(const std::string& path) {
  const InputWeights in = read_input(path);
  try {
    ModelMeta meta = output_meta(in, ConvertOptions{});
    MedMamba model = build_model(in, meta.config);
    return LoadedModel{std::move(model), std::move(meta)};
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

std::string inspect_weights(const std::string& path) {
  const InputWeights in = read_input(path);
  std::ostringstream out;
  out << path << ": " << in.description << "\n";
  for (const std::string& n : in.notes) out << "  " << n << "\n";
  size_t width = 4;
  for (const auto& [name, t] : in.listing) width = std::max(width, name.size());
  out << "\n" << std::string("name") << std::string(width - 4 + 2, ' ') << "dtype  shape\n";
  int64_t values = 0;
  for (const auto& [name, t] : in.listing) {
    out << name << std::string(width - name.size() + 2, ' ') << dtype_name(t.dtype())
        << std::string(7 - std::string(dtype_name(t.dtype())).size(), ' ') << shape_str(t.shape()) << "\n";
    values += t.numel();
  }
  out << "\n" << in.listing.size() << " tensors, " << values << " values\n";
  try {
    const ModelMeta meta = output_meta(in, ConvertOptions{});
    build_model(in, meta.config);
    out << "MedMamba: " << config_summary(meta.config) << "; every tensor present with the right shape\n";
    if (in.meta) {
      out << "class names:";
      for (int64_t i = 0; i < meta.config.num_classes; ++i) out << (i ? ", " : " ") << meta.class_name(i);
      out << "\npreprocess: " << meta.preprocess.to_json() << "\n";
    }
  } catch (const Error& e) {
    out << "not a loadable MedMamba state dict: " << e.what() << "\n";
  }
  return out.str();
}

}  // namespace mm
