// mm-convert: PyTorch MedMamba checkpoints <-> our safetensors model file.
//   mm-convert INPUT OUTPUT [options]     format by extension (.pth .pt .bin .ckpt | .safetensors)
//   mm-convert --inspect INPUT            list the tensors (name, dtype, shape)
// Exit codes: 0 ok, 1 conversion error, 2 usage error (see docs/mm-convert.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "convert/convert.h"
#include "core/error.h"
#include "labelled_sample_reader.h"
#include "model/int8_calibration.h"

namespace {
constexpr int kExitConversion = 1, kExitUsage = 2;
}

int main(int argc, char** argv) {
  CLI::App app{"mm-convert: convert MedMamba weights between PyTorch checkpoints and medmamba-cpp safetensors"};
  std::string input, output, labels_file, precision = "fp32";
  std::vector<std::string> labels;
  std::vector<float> mean, std_dev;
  int64_t image_size = 0;
  bool inspect = false;
  app.add_option("INPUT", input, "weights to read (.pth .pt .bin .ckpt .safetensors)")->required();
  app.add_option("OUTPUT", output, "file to write; its extension picks the format");
  app.add_flag("--inspect", inspect, "list INPUT's tensors (name, dtype, shape) and whether they form a MedMamba");
  auto* labels_opt = app.add_option("--labels", labels, "class names, comma-separated, in class order")->delimiter(',');
  app.add_option("--labels-file", labels_file, "class names, one per line")->excludes(labels_opt);
  app.add_option("--image-size", image_size, "input side in pixels (multiple of 32; default: the input's, or 224)");
  app.add_option("--mean", mean, "normalisation mean per channel, e.g. 0.5,0.5,0.5")->delimiter(',');
  app.add_option("--std", std_dev, "normalisation std per channel, e.g. 0.5,0.5,0.5")->delimiter(',');
  app.add_option("--precision", precision, "float tensors written as fp32 | fp16 | bf16")->capture_default_str();
  std::string quantize, calibrate;
  int64_t calibrate_images = 300;
  app.add_option("--quantize", quantize, "int8: Linear weights as int8 per output channel (safetensors output)")
      ->check(CLI::IsMember({"int8"}));
  app.add_option("--calibrate", calibrate,
                 "with --quantize int8: static activation scales from the images under this folder "
                 "(default: each input row's own scale at run time)");
  app.add_option("--calibrate-images", calibrate_images, "how many images --calibrate reads, spread over the folder")
      ->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(100000)));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  auto usage = [](const std::string& why) {
    std::fprintf(stderr, "mm-convert: %s (see --help)\n", why.c_str());
    return kExitUsage;
  };
  if (!mm::weights_format_for(input)) return usage("cannot tell INPUT's format from its extension: " + input);
  if (!calibrate.empty() && quantize.empty()) return usage("--calibrate needs --quantize int8");
  if (inspect) {
    if (!output.empty()) return usage("--inspect takes no OUTPUT");
  } else {
    if (output.empty()) return usage("OUTPUT is required (or use --inspect)");
    if (!mm::weights_format_for(output)) return usage("cannot tell OUTPUT's format from its extension: " + output);
  }

  try {
    if (inspect) {
      std::cout << mm::inspect_weights(input);
      return 0;
    }
    mm::ConvertOptions o;
    try {
      o.precision = mm::parse_precision(precision);
    } catch (const mm::Error& e) {
      return usage(e.what());
    }
    o.class_names = labels_file.empty() ? labels : mm::read_class_names(labels_file);
    if (image_size) o.image_size = image_size;
    if (!mean.empty()) o.mean = mean;
    if (!std_dev.empty()) o.std = std_dev;
    o.quantize_int8 = quantize == "int8";
    if (!calibrate.empty())
      o.calibrate = [&](const mm::MedMamba& model, const mm::ModelMeta& meta) {
        const mm::CalibrationReport c =
            mm::calibrate_int8_scales(model, meta, calibrate, calibrate_images,
                                      [](const std::string& file) { return read_labelled_sample(file, {}); });
        std::fprintf(stderr, "mm-convert: int8 activation scales from %lld images under %s (%lld files skipped)\n",
                     (long long)c.images, calibrate.c_str(), (long long)c.skipped);
        return c.scales;
      };
    const mm::ConvertReport r = mm::convert_weights(input, output, o);
    for (const std::string& n : r.notes) std::fprintf(stderr, "mm-convert: %s\n", n.c_str());
    std::printf("wrote %s (%s)\n", output.c_str(), r.meta.config.to_json().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mm-convert: %s\n", e.what());
    return kExitConversion;
  }
  return 0;
}
