#include "predict/classifier.h"

#include <cstdio>

#include "core/error.h"
#include "model/cpu_bf16_model.h"
#include "model/cpu_int8_model.h"
#include "model/cuda_model.h"
#include "model/medmamba_cuda.h"
#include "ops/gemm_bf16.h"

namespace mm {

namespace {

// Any backend of the model interface: the CPU MedMamba (borrowed), or a device model this
// classifier owns (MedMambaCuda, whose eval forwards run the CudaMedMamba inference engine).
class ModelClassifier : public Classifier {
 public:
  ModelClassifier(Model& model, std::string description) : model_(model), description_(std::move(description)) {}
  ModelClassifier(std::unique_ptr<Model> owned, std::string description)
      : owned_(std::move(owned)), model_(*owned_), description_(std::move(description)) {}
  Tensor logits(const Tensor& images) override { return model_.forward(images, /*train=*/false); }
  std::string description() const override { return description_; }

 protected:
  Model& model() { return model_; }

 private:
  std::unique_ptr<Model> owned_;
  Model& model_;
  std::string description_;
};

class CudaClassifier : public ModelClassifier {
 public:
  CudaClassifier(std::unique_ptr<MedMambaCuda> model, std::string description)
      : ModelClassifier(std::move(model), std::move(description)) {}
  CudaMedMamba* cuda_engine() override { return &static_cast<MedMambaCuda&>(model()).eval_engine(); }
};

std::unique_ptr<Classifier> cpu_fp32_classifier(MedMamba& model) {
  return std::make_unique<ModelClassifier>(model, "cpu");
}

class CpuBf16Classifier : public Classifier {
 public:
  explicit CpuBf16Classifier(const MedMamba& model) : model_(model) {}
  Tensor logits(const Tensor& images) override { return model_.forward(images); }
  std::string description() const override { return "cpu (bf16)"; }

 private:
  CpuBf16Model model_;
};

// bf16 where this build and CPU have a bf16 path; float32, saying so once on stderr, where not.
std::unique_ptr<Classifier> make_cpu_bf16_classifier(MedMamba& model) {
  const std::string why = bf16_unavailable_reason();
  if (why.empty()) return std::make_unique<CpuBf16Classifier>(model);
  std::fprintf(stderr, "mm: --precision bf16 on the CPU: %s; computing in float32\n", why.c_str());
  return cpu_fp32_classifier(model);
}

class CpuInt8Classifier : public Classifier {
 public:
  CpuInt8Classifier(const MedMamba& model, const ActivationScales& scales) : model_(model, scales) {}
  Tensor logits(const Tensor& images) override { return model_.forward(images); }
  std::string description() const override { return "cpu (int8)"; }

 private:
  CpuInt8Model model_;
};

// int8 where this build and CPU have an int8 path; float32, saying so once on stderr, where not.
std::unique_ptr<Classifier> make_cpu_int8_classifier(MedMamba& model, const ActivationScales& scales) {
  const std::string why = int8_model_unavailable_reason();
  if (why.empty()) return std::make_unique<CpuInt8Classifier>(model, scales);
  std::fprintf(stderr, "mm: --precision int8 on the CPU: %s; computing in float32\n", why.c_str());
  return cpu_fp32_classifier(model);
}

}  // namespace

CudaModelOptions cuda_inference_options(const std::string& precision) {
  CudaModelOptions o;
  if (precision == "tf32") {
    o.precision = Precision::F32;
    o.allow_tf32 = true;
  } else {
    o.precision = precision_from_name(precision);  // throws on unknown names
    o.allow_tf32 = false;
  }
  return o;
}

DeviceChoice device_choice_from_name(const std::string& name) {
  if (name == "cpu") return DeviceChoice::Cpu;
  if (name == "cuda" || name == "gpu") return DeviceChoice::Cuda;
  if (name == "auto") return DeviceChoice::Auto;
  throw Error("unknown device '" + name + "' (cpu, cuda or auto)");
}

std::unique_ptr<Classifier> make_classifier(MedMamba& model, const ClassifierOptions& options) {
  const bool use_cuda = options.device == DeviceChoice::Cuda ||
                        (options.device == DeviceChoice::Auto && options.precision != "int8" && cuda_available());
  if (!use_cuda) {
    if (options.precision == "bf16") return make_cpu_bf16_classifier(model);
    if (options.precision == "int8") return make_cpu_int8_classifier(model, options.int8_scales);
    MM_CHECK(options.device == DeviceChoice::Auto || options.precision == "fp32",
             "--precision " + options.precision + " is for --device cuda; the CPU computes in fp32, bf16 or int8");
    return cpu_fp32_classifier(model);
  }
  MM_CHECK(options.precision != "int8", "--precision int8 runs on the CPU only (use --device cpu)");
  MM_CHECK(cuda_available(), "--device cuda: no CUDA GPU is available (or this build has no CUDA backend)");
  MedMambaCudaOptions gpu;
  gpu.fast_eval = true;
  gpu.fast = cuda_inference_options(options.precision);
  auto device_model = MedMambaCuda::copy_of(model, gpu);
  const std::string description = "cuda (" + device_model->device_name() + ", " + options.precision + ")";
  return std::make_unique<CudaClassifier>(std::move(device_model), description);
}

}  // namespace mm
